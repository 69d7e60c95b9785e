"""The checking half of the inventory: typed reads of YAML values that collect problems as lines.

`Checker` reads one value at a time from the parsed document, with its default, and records a
problem line `<file>:<line> <key.path>: <what is wrong> (<hint>)` for every mistake instead of
stopping, so that `load_inventory` can report the whole file at once.
"""
from __future__ import annotations

import ipaddress
import math
import os
import re
from typing import Any, Callable, Sequence

from .model import suggest  # noqa: F401 - re-exported for the readers
from .yamlsrc import FileProblem, Path, YamlDoc, format_path, read_regular

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
NAME_HINT = "use lowercase letters, digits, '-' and '_', starting with a letter or digit"
ADDRESS_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")
USER_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")
WORKDIR_RE = re.compile(r"^[A-Za-z0-9._/~-]+$")
IMAGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$")
DURATION_RE = re.compile(r"^\d+(ms|s|m)$")
URL_RE = re.compile(r"^https?://[A-Za-z0-9._~:/?#\[\]@!$&()*+,;=%-]+$")

MAX_STRING = 4096  # no value of an inventory is longer; a 10 MB project name is refused
MAX_NAME = 63  # host, project and worker names: a DNS label / compose project name fits
MAX_KEY_FILE = 1024 * 1024  # identity_file, ssh config_file: regular files, this big at most

_MISSING = object()


def kind_of(value: Any) -> str:
    """How a YAML value reads to a user: 'an integer', 'a string', ..."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if value is None:
        return "an empty value"
    return f"a {type(value).__name__}"


def shown(value: Any) -> str:
    """A short, safe rendering of a (non-secret) value for a message."""
    if isinstance(value, (dict, list)):
        return ""
    text = repr(value) if isinstance(value, str) else str(value)
    return f" {text[:60]}{'...' if len(text) > 60 else ''}"




_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _one_line(text: str) -> str:
    """Control characters (newlines, terminal escapes) shown as Python escapes: one line, inert."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class Checker:
    """Collects problems for one inventory file."""

    def __init__(self, doc: YamlDoc, filename: str):
        self.doc = doc
        self.filename = filename
        self.found: list[tuple[int, str]] = []

    def err(self, path: Path, what: str, hint: str, line: int | None = None) -> None:
        """Record one problem at `path` (line: its own, or its nearest ancestor's)."""
        line = line if line is not None else self.doc.line_of(path)
        what, hint = _one_line(what), _one_line(hint)  # a quoted value may hold a newline or an escape
        self.found.append((line, f"{self.filename}:{line} {format_path(path) or '(top level)'}: {what} ({hint})"))

    @property
    def problems(self) -> list[str]:
        """Every problem, in file order (stable for problems on one line)."""
        return [text for _, text in sorted(self.found, key=lambda item: item[0])]

    def mapping(self, path: Path, value: Any, allowed: Sequence[str], example: str) -> dict:
        """`value` as a mapping whose keys are all in `allowed`; {} (and a problem) otherwise."""
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.err(path, f"expected a mapping, got {kind_of(value)}", f"e.g. {example}")
            return {}
        for key in value:
            if key not in allowed:
                close = suggest(key, allowed)
                hint = f"did you mean '{close}'?" if close else f"expected one of: {', '.join(allowed)}"
                self.err(path + (key,), f"unknown key '{key}'", hint)
        return value

    def get(self, section: dict, path: Path, key: str, kind: str, default: Any = None, *,
            required: str | None = None, example: str | None = None,
            check: Callable[[Any], tuple[str, str] | None] | None = None) -> Any:
        """Read `section[key]` as `kind` ('str', 'int', 'number', 'bool'); problems are recorded.

        `required` is the hint when the key must be present; `check` returns (what, hint) for a
        value of the right type that is still wrong. Returns the value, or `default` after a problem.
        """
        where = path + (key,)
        value = section.get(key, _MISSING)
        if value is _MISSING or value is None:
            if required:
                self.err(where, "required key is missing" if value is _MISSING else "has no value", required)
            return default
        ok = {"str": lambda v: isinstance(v, str),
              "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
              "number": is_number,
              "bool": lambda v: isinstance(v, bool),
              "list": lambda v: isinstance(v, list)}[kind](value)
        if ok and kind == "str" and len(value) > MAX_STRING:
            self.err(where, f"the value is {len(value)} characters long, more than the {MAX_STRING} allowed",
                     f"e.g. {key}: {example if example is not None else default}")
            return default
        if ok and kind == "number" and not math.isfinite(value):
            self.err(where, f"{value} is not a finite number", f"e.g. {key}: {example if example is not None else default}")
            return default
        if not ok:
            want = {"str": "a string", "int": "an integer", "number": "a number",
                    "bool": "true or false", "list": "a list"}[kind]
            self.err(where, f"expected {want}, got {kind_of(value)}{shown(value)}",
                     f"e.g. {key}: {example if example is not None else default}")
            return default
        if check is not None:
            bad = check(value)
            if bad:
                self.err(where, *bad)
                return default
        return value


# --- value checks: each returns None when fine, else (what is wrong, hint) ------------------------


def in_range(lo: int | float, hi: int | float | None, noun: str) -> Callable[[Any], tuple[str, str] | None]:
    def check(value):
        if value < lo or (hi is not None and value > hi):
            span = f"from {lo} to {hi}" if hi is not None else f"greater than {lo}"
            return f"{value} is out of range", f"expected {noun} {span}"
        return None
    return check


def positive(value: Any) -> tuple[str, str] | None:
    if value <= 0:
        return f"{value} is not greater than 0", "give a number of seconds greater than 0"
    return None


def seconds(minimum: float, why: str) -> Callable[[Any], tuple[str, str] | None]:
    """A finite number of seconds (finiteness is checked by `Checker.get`), > 0 and >= `minimum`."""
    def check(value):
        bad = positive(value)
        if bad:
            return bad
        if value < minimum:
            return f"{value} is below the minimum of {minimum:g} s", f"{why}; give {minimum:g} or more"
        return None
    return check


def one_of(choices: Sequence[str], noun: str) -> Callable[[Any], tuple[str, str] | None]:
    def check(value):
        if value not in choices:
            return f"unknown {noun} '{value}'", f"expected one of: {', '.join(choices)}"
        return None
    return check


def name_check(noun: str) -> Callable[[Any], tuple[str, str] | None]:
    def check(value):
        if not NAME_RE.fullmatch(value):
            return f"{noun} '{value}' is not allowed", NAME_HINT
        if len(value) > MAX_NAME:
            return f"{noun} is {len(value)} characters long", f"at most {MAX_NAME}"
        return None
    return check


def pattern(regex: re.Pattern, what: str, hint: str) -> Callable[[Any], tuple[str, str] | None]:
    def check(value):
        if not regex.fullmatch(value):
            return f"'{value}' {what}", hint
        return None
    return check


def _scoped(value: str) -> tuple[str, str] | None:
    if "%" in value:
        return (f"'{value}' has an IPv6 scope id ('%...')",
                "give a routable address without '%': a scope id names a local interface, not a host")
    return None


def is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return False


def address_check(value: str) -> tuple[str, str] | None:
    bad = _scoped(value)
    if bad or is_ip(value) or ADDRESS_RE.fullmatch(value):
        return bad
    return (f"'{value}' is not a hostname, IP address or ssh_config alias",
            "letters, digits, '-', '.' and '_' only, not starting with '-'")


def ip_check(value: str) -> tuple[str, str] | None:
    bad = _scoped(value)
    if bad or is_ip(value):
        return bad
    return f"'{value}' is not an IP address", "run 'tailscale ip -4' on that host and copy its address"


WORKDIR_HINT = ("give a relative path such as comfyume: it starts at the login user's home; "
                "no leading '/', no '..', not the home itself")


def workdir_check(value: str) -> tuple[str, str] | None:
    """A folder UNDER the login home: the tool runs `chmod 700` on it and keeps its lock there, so `/`,
    `/etc`, `~/` (the home itself) or `~//etc` (= /etc) must never get through."""
    if not WORKDIR_RE.fullmatch(value) or ".." in value.split("/") or value.startswith("-"):
        return (f"'{value}' is not a safe folder name",
                "letters, digits and . _ / ~ - only, no '..', not starting with '-'; "
                "a relative path starts at the login user's home")
    rest = value[2:] if value.startswith("~/") else value
    parts = [p for p in rest.split("/") if p not in ("", ".")]
    if rest.startswith("/") or value.startswith("~") and not value.startswith("~/"):
        return f"'{value}' is not a folder under the login user's home", WORKDIR_HINT
    if not parts or any("~" in p for p in parts):
        return f"'{value}' is not a folder under the login user's home", WORKDIR_HINT
    return None


def expand(given: str, base: str) -> str:
    """`~` expanded; a relative path is taken relative to the inventory's folder."""
    full = os.path.expanduser(given)
    return full if os.path.isabs(full) else os.path.normpath(os.path.join(base, full))


def readable_file(c: Checker, path: tuple, given: str, base: str, hint: str,
                  cap: int = MAX_KEY_FILE) -> str | None:
    """The expanded path of `given` when it is a readable REGULAR file of at most `cap` bytes
    (never a FIFO that would hang the reader, nor /dev/zero); a problem and None otherwise."""
    full = expand(given, base)
    try:
        read_regular(full, cap)
    except FileProblem as exc:
        c.err(path, f"'{given}' {exc}", hint)
        return None
    return full
