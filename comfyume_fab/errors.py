"""One base error and the exit codes, so that one place can print a sentence and pick a code.

Every failure the tool expects is a `FabError` (or subclass) that carries where it happened
(file:line or host and step), what was wrong and how to fix it. Tasks turn it into one line
on stderr and the matching exit code; a traceback only with `--verbose`.
"""
from __future__ import annotations

import enum
import re

# C0 controls but tab and newline, DEL, C1 controls, and the Unicode line separators and bidi
# overrides that can make a terminal show something other than what was sent.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def clean(text: object) -> str:
    """`text` safe to print on a terminal: every control character (an ESC of a colour or cursor
    sequence, a carriage return, a bell, ...) shown escaped as `\\x1b`; tabs and newlines kept.
    Used for every string that comes from a file or a host before it is printed."""
    return _CONTROL.sub(_escape, str(text))


class ExitCode(enum.IntEnum):
    OK = 0
    FAILURE = 1  # an unexpected error (a bug): printed with a hint to rerun with --verbose
    CONFIG = 2  # the inventory (hosts.yaml), a secret or an option is wrong; no host was touched
    UNREACHABLE = 3  # a host could not be reached or logged into over SSH
    UNHEALTHY = 4  # a service, cross-host link, GPU or inference check failed
    LOCKED = 5  # another deploy holds the lock
    STOPPED = 6  # status: a worker is stopped on purpose (stop-verda/stop-all), and nothing else is wrong
    MISSING_IMAGE = 7  # a host lacks an image that a service to (re)create there needs; nothing was touched
    INTERRUPTED = 130  # Ctrl-C


# What each exit code means: the one source of the table that `comfyume-fab --help` prints and the
# README shows (tests/unit/test_cli_help.py checks that the README's table is this one).
EXIT_MEANINGS = {
    ExitCode.OK: "done / everything healthy",
    ExitCode.FAILURE: "unexpected error (a bug; rerun with `--verbose`)",
    ExitCode.CONFIG: "the inventory, a secret or an option is wrong (nothing was touched), or the inventory no longer "
                     "matches a host (a moved tailnet address)",
    ExitCode.UNREACHABLE: "a host is unreachable or refused the SSH login or host key",
    ExitCode.UNHEALTHY: "a service, cross-host link, GPU or inference check failed",
    ExitCode.LOCKED: "another deploy holds the lock",
    ExitCode.STOPPED: "`status` only: a worker was stopped on purpose (`stop-verda`/`stop-all` recorded who and when) "
                      "or its rented instance deleted on purpose (`stop-verda --delete`, autostop), and nothing else "
                      "is wrong; `start-all` clears it",
    ExitCode.MISSING_IMAGE: "a host lacks an image that a service to be (re)created there needs, and the inventory "
                            "gives it no source (nothing was touched; the message names the host, the image and "
                            "`copy-image` from a host that has it)",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C) at any step; the message says whether the deploy lock was held and "
                          "released (a warning says so when the host could not be reached to release it)",
}


class FabError(Exception):
    """An expected failure: one sentence for the user, an exit code for scripts."""

    code = ExitCode.FAILURE

    def __init__(self, cause: str, *, host: str | None = None, step: str | None = None,
                 hint: str | None = None, where: str | None = None):
        self.cause = cause
        self.host = host
        self.step = step
        self.hint = hint
        self.where = where
        super().__init__(self.sentence())

    def sentence(self) -> str:
        prefix = []
        if self.where:
            prefix.append(self.where)
        if self.host:
            prefix.append(f"host {self.host}")
        if self.step:
            prefix.append(f"step {self.step}")
        head = ", ".join(prefix)
        text = f"{head}: {self.cause}" if head else self.cause
        if self.hint:
            text = f"{text} ({self.hint})"
        return clean(text)


class ConfigError(FabError):
    """The inventory or an option is wrong. `problems` holds every line found, reported at once."""

    code = ExitCode.CONFIG

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        Exception.__init__(self, "\n".join(self.problems))
        self.cause, self.host, self.step, self.hint, self.where = "\n".join(self.problems), None, None, None, None

    def sentence(self) -> str:
        return "\n".join(clean(p) for p in self.problems)


class UnreachableError(FabError):
    code = ExitCode.UNREACHABLE


class UnhealthyError(FabError):
    code = ExitCode.UNHEALTHY


class LockedError(FabError):
    code = ExitCode.LOCKED


class MissingImageError(FabError):
    """A host lacks an image it needs (a host-side problem, not the inventory's): exit 7."""

    code = ExitCode.MISSING_IMAGE


class DriftError(FabError):
    """The inventory no longer matches the host (e.g. a moved tailnet address): fix hosts.yaml."""

    code = ExitCode.CONFIG


class TunnelError(UnhealthyError):
    """A TCP connection started on the far host failed (a cross-host link is down, exit 4);
    `kind` is refused | timeout | prohibited | broken."""

    def __init__(self, kind: str, cause: str, **kw):
        self.kind = kind
        super().__init__(cause, **kw)
