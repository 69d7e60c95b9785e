"""Secrets by reference: a redacting wrapper, an env-file reader, and resolution with checks.

A secret is named in the inventory, never written in it: its value comes from the environment
variable of that name, else from the optional local env file (`secrets.env_file`). The value is
wrapped in `Secret`, which prints as `***` everywhere (str, repr, f-strings, logging, dataclass
reprs); only `.reveal()` gives it, and only the code that writes the host's `.env` calls that.
"""
from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from typing import Mapping

REDACTED = "***"

REQUIRED_ALWAYS = ("REDIS_PASSWORD",)
REQUIRED_WITH_ADMIN = ("ADMIN_PASSWORD",)
# SERVERLESS_API_KEY: the serverless endpoints' inference key (Bearer); VERDA_CLIENT_ID and
# VERDA_CLIENT_SECRET: the provider's deployment API (replicas, scaling: `invoke warm`, status).
OPTIONAL = ("SERVERLESS_API_KEY", "VERDA_CLIENT_ID", "VERDA_CLIENT_SECRET")

# What a value may not hold: the host's .env is written KEY='value' (no escape inside single
# quotes) and Redis reads `requirepass "value"` (a quote or backslash there changes the value).
_UNSAFE = re.compile(r"['\"\\\x00-\x1f\x7f]")
UNSAFE_CHARS_TEXT = ("the env file and the Redis config cannot carry single quotes, double quotes, "
                     "backslashes, newlines or other control characters safely")

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Secret:
    """A secret string that never shows itself: str/repr/format give '***'; `.reveal()` the value."""

    __slots__ = ("_value", "origin", "source")

    def __init__(self, value: str, origin: str | None = None, source: str | None = None):
        if isinstance(value, Secret):
            value = value.reveal()
        if not isinstance(value, str):
            raise TypeError("Secret wraps a str")
        object.__setattr__(self, "_value", value)
        # where it was read (the secrets file's identity), never derived from the value
        object.__setattr__(self, "origin", origin)
        # where its value comes from, for messages: "the environment variable X" or "the secrets file F"
        object.__setattr__(self, "source", source)

    def reveal(self) -> str:
        """The real value: call this only where it is written to a 0600 file or a socket."""
        return self._value

    def __repr__(self) -> str:
        return REDACTED

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return REDACTED

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __setattr__(self, name, value):
        raise AttributeError("Secret is immutable")

    def __reduce__(self):  # pickling would carry the value to wherever the pickle goes
        raise TypeError("a Secret cannot be pickled")


@dataclass(frozen=True)
class EnvFile:
    """A parsed KEY=value file: `values`, and `problems` as (line, text) for lines it could not read."""

    values: Mapping[str, str]
    problems: tuple[tuple[int, str], ...] = ()
    identity: str | None = None  # path, inode, size, mtime, ctime as read (any edit changes it)


def parse_env_text(text: str) -> EnvFile:
    """Parse KEY=value lines: '#' comments, blank lines, optional 'export ', optional quotes."""
    values: dict[str, str] = {}
    problems: list[tuple[int, str]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not _KEY.match(key):
            problems.append((number, "expected KEY=value"))
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif value[:1] in ("'", '"'):
            problems.append((number, f"{key}: the value's opening quote is never closed"))
            continue
        values[key] = value
    return EnvFile(values, tuple(problems))


MAX_ENV_FILE = 64 * 1024  # a few secrets; /dev/zero or a huge file is refused


class EnvFileProblem(Exception):
    """Why the secrets file cannot be used: `what` (one clause after its name) and `hint`."""

    def __init__(self, what: str, hint: str):
        super().__init__(what)
        self.what, self.hint = what, hint


def _private(path: str):
    def inspect(st: os.stat_result) -> None:
        me = os.geteuid()
        if st.st_uid != me:
            raise EnvFileProblem(f"is owned by uid {st.st_uid}, not by this user (uid {me})",
                                 f"a secrets file must be yours alone: `chown {me} {path}` and `chmod 600 {path}`")
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            who = " and ".join(w for w, bits in (("its group", 0o070), ("other users", 0o007)) if mode & bits)
            raise EnvFileProblem(f"can be read or changed by {who} (mode {mode:04o})",
                                 f"run `chmod 600 {path}`; like ssh with a private key, a secrets file that "
                                 "others can read is refused")
    return inspect


def load_env_file(path: str) -> EnvFile:
    """The secrets file at `path` (absolute), checked the way OpenSSH checks a private key: a regular
    file, owned by this user, mode 0600 or stricter, at most MAX_ENV_FILE bytes, UTF-8 text.
    EnvFileProblem otherwise (a missing file is named as missing)."""
    from .yamlsrc import FileProblem, read_regular
    seen: list[os.stat_result] = []
    check = _private(path)

    def inspect(st: os.stat_result) -> None:
        check(st)
        seen.append(st)
    try:
        raw = read_regular(path, MAX_ENV_FILE, inspect=inspect)
    except FileProblem as exc:
        hint = ("create it (mode 0600) with lines like REDIS_PASSWORD=..., or remove secrets.env_file and "
                "export the secrets instead" if str(exc) == "does not exist" else
                "name a regular file of KEY=value lines, mode 0600, owned by you")
        raise EnvFileProblem(str(exc), hint) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise EnvFileProblem(f"is not UTF-8 text (line {line})", "save it as UTF-8; a secret is never guessed "
                             "from bytes that are not text") from None
    parsed = parse_env_text(text)
    return EnvFile(parsed.values, parsed.problems, _identity(path, seen[0]) if seen else None)


def _identity(path: str, before: os.stat_result) -> str | None:
    """The file as it was read; None when it changed while being read."""
    try:
        after = os.stat(path)
    except OSError:
        return None
    fields = ("st_dev", "st_ino", "st_size", "st_mtime_ns", "st_ctime_ns")
    if any(getattr(after, f) != getattr(before, f) for f in fields):
        return None
    return "|".join([os.path.realpath(path), *(str(getattr(before, f)) for f in fields)])


def unsafe_reason(value: str) -> str | None:
    """Why `value` cannot be carried safely, or None when it can."""
    return UNSAFE_CHARS_TEXT if _UNSAFE.search(value) else None


class Unset(Secret):
    """A required secret that was not given, allowed only where nothing is deployed (`plan`,
    `--dry-run`): shown as `unset`, and it has no value to reveal."""

    __slots__ = ()

    def __init__(self, name: str):
        object.__setattr__(self, "_value", name)
        object.__setattr__(self, "origin", None)
        object.__setattr__(self, "source", None)

    def reveal(self) -> str:
        from ..errors import ConfigError
        raise ConfigError(f"{self._value} is not set (export {self._value}=... or add it to the secrets.env_file)")

    def __repr__(self) -> str:
        return "unset"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return "unset"

    def __bool__(self) -> bool:
        return False

    def __eq__(self, other: object) -> bool:  # never equal to a real secret that happens to be the name
        return isinstance(other, Unset) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Unset", self._value))


@dataclass(frozen=True)
class Resolution:
    """The outcome of resolving secrets: the found ones, and (what, hint) per problem (never a value)."""

    secrets: Mapping[str, Secret]
    problems: tuple[tuple[str, str], ...]


def resolve_secrets(required: tuple[str, ...], optional: tuple[str, ...], environ: Mapping[str, str],
                    env_file: EnvFile | None, env_file_name: str | None, allow_unset: bool = False) -> Resolution:
    """Look up each name in `environ`, then in `env_file`; check presence, emptiness and characters.

    Problems are (`"<NAME> <what is wrong>"`, hint); the caller adds file, line and key path.
    """
    found: dict[str, Secret] = {}
    problems: list[tuple[str, str]] = []
    file_values = env_file.values if env_file else {}
    where = (f"export {{name}}=... or add it to {env_file_name}" if env_file_name
             else "export {name}=... or name an env file that has it in secrets.env_file")
    for name in required + optional:
        value = environ.get(name) or file_values.get(name)
        was_empty = name in environ or name in file_values
        if not value:
            if name in optional:
                continue
            if allow_unset and not was_empty:  # plan / --dry-run: shown as `unset`
                found[name] = Unset(name)
                continue
            if was_empty:
                why = ("Redis across the tailnet must always require a password"
                       if name == "REDIS_PASSWORD" else "an empty password lets anyone in")
                problems.append((f"{name} is empty", f"{why}; set a non-empty value"))
            else:
                problems.append((f"{name} is not set", where.format(name=name)))
            continue
        if unsafe_reason(value):
            problems.append((f"{name} contains a character that cannot be used",
                             f"{UNSAFE_CHARS_TEXT}; choose a value without them"))
            continue
        from_file = not environ.get(name)  # the environment wins (see `value` above)
        origin = f"{env_file.identity}|{name}" if from_file and env_file and env_file.identity else None
        source = (f"the environment variable {name}" if not from_file
                  else f"the secrets file {env_file_name}" if env_file_name else "the secrets file")
        found[name] = Secret(value, origin, source)
    return Resolution(found, tuple(problems))
