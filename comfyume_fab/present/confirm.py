"""Asking before a change that cannot be taken back quietly: a new Redis password (start-all
recreates Redis with it), renting a GPU instance (it bills by the hour). `--yes` answers for the
user; on a terminal the question is asked; with neither, one sentence refuses (exit 2) before
anything is touched."""
from __future__ import annotations

import sys
from typing import Callable

from ..errors import ConfigError
from ..plan.diff import SecretChange, secret_refusal


def secret_confirmer(yes: bool, stdin=None, stream=None) -> Callable[[SecretChange], None]:
    """start-all's `confirm`: returns when the change may go on, raises ConfigError (exit 2) otherwise."""

    def confirm(change: SecretChange) -> None:
        if yes:
            return
        inp = stdin or sys.stdin
        out = stream or sys.stderr
        if not (getattr(inp, "isatty", lambda: False)() and getattr(out, "isatty", lambda: False)()):
            raise ConfigError(secret_refusal(change))
        out.write(f"{change.name} from {change.source} differs from the one Redis on {change.host} runs with; "
                  f"change it and recreate Redis? [y/N] ")
        out.flush()
        answer = inp.readline().strip().lower()
        if answer not in ("y", "yes"):
            raise ConfigError(secret_refusal(change))
    return confirm


def rent_confirmer(yes: bool, stdin=None, stream=None) -> Callable[[str], None]:
    """start-all's `confirm_rent`: `line` says what would be rented and its price per hour."""

    def confirm(line: str) -> None:
        if yes:
            return
        inp = stdin or sys.stdin
        out = stream or sys.stderr
        refusal = (f"{line}: not rented, as it was not confirmed (rerun with --yes to rent it, or on a terminal to "
                   "be asked)")
        if not (getattr(inp, "isatty", lambda: False)() and getattr(out, "isatty", lambda: False)()):
            raise ConfigError(refusal)
        out.write(f"{line}. Rent it now? It bills until it is deleted (stop-verda --delete). [y/N] ")
        out.flush()
        if inp.readline().strip().lower() not in ("y", "yes"):
            raise ConfigError(refusal)
    return confirm
