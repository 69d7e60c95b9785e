"""Colour on a terminal: every ANSI code this tool writes is defined here, once."""
from __future__ import annotations

import re
import zlib
from typing import TextIO

from ..errors import clean

_COLOURS = {"ok": "32", "warn": "33", "FAIL": "31", "dim": "2", "bold": "1"}
# Foreground colours that read on dark and light terminals (no black/white), picked by a hash of the
# host name so a host keeps its colour whatever else is in the inventory.
PALETTE = ("36", "33", "35", "32", "34", "31", "96", "93", "95", "92", "94", "91")
RESET = "\x1b[0m"
ERASE_LINE = "\r\x1b[K"  # back to the line's start and erase it (a progress line rewritten in place)


def paint(text: str, style: str, colour: bool) -> str:
    return f"\x1b[{_COLOURS[style]}m{text}{RESET}" if colour else text


def clean_keeping_colour(line: str) -> str:
    parts = re.split(r"(\x1b\[[0-9;]*m)", line)
    return "".join(p if p.startswith("\x1b[") and p.endswith("m") else clean(p) for p in parts)


def host_colour(name: str) -> str:
    return PALETTE[zlib.crc32(name.encode()) % len(PALETTE)]


def use_colour(stream: TextIO) -> bool:
    """Colour only on a terminal and only when NO_COLOR (https://no-color.org) is unset or empty."""
    import os
    return bool(getattr(stream, "isatty", lambda: False)()) and not os.environ.get("NO_COLOR")
