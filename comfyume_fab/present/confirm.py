"""Asking before a change that cannot be taken back quietly: a new Redis password (start-all
recreates Redis with it), renting a GPU instance (it bills by the hour). `--yes` answers for the
user; on a terminal the question is asked; with neither, one sentence refuses (exit 2) before
anything is touched."""
from __future__ import annotations

import sys
from typing import Callable

from ..errors import ConfigError
from ..plan.diff import SecretChange, secret_refusal


def _ask(question: str, refusal: str, stdin=None, stream=None) -> None:
    """Ask `question` on a terminal and return on yes; raise ConfigError(refusal) on anything else, or
    when stdin and the output are not both a terminal."""
    inp = stdin or sys.stdin
    out = stream or sys.stderr
    if not (getattr(inp, "isatty", lambda: False)() and getattr(out, "isatty", lambda: False)()):
        raise ConfigError(refusal)
    out.write(question)
    out.flush()
    if inp.readline().strip().lower() not in ("y", "yes"):
        raise ConfigError(refusal)


def secret_confirmer(yes: bool, stdin=None, stream=None) -> Callable[[SecretChange], None]:
    """start-all's `confirm`: returns when the change may go on, raises ConfigError (exit 2) otherwise."""

    def confirm(change: SecretChange) -> None:
        if not yes:
            _ask(f"{change.name} from {change.source} differs from the one Redis on {change.host} runs with; "
                 "change it and recreate Redis? [y/N] ", secret_refusal(change), stdin, stream)
    return confirm


def rent_confirmer(yes: bool, stdin=None, stream=None) -> Callable[[str], None]:
    """start-all's `confirm_rent`: `line` says what would be rented and its price per hour."""

    def confirm(line: str) -> None:
        if not yes:
            _ask(f"{line}. Rent it now? It bills until it is deleted (stop-verda --delete). [y/N] ",
                 f"{line}: not rented, as it was not confirmed (rerun with --yes to rent it, or on a terminal to "
                 "be asked)", stdin, stream)
    return confirm
