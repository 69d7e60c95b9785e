"""YAML with line numbers: plain data plus a map from key path to the line it was written on.

PyYAML's `safe_load` forgets where each value came from and silently keeps the last of two
equal keys. Here the text is composed into nodes (`yaml.compose`, SafeLoader), walked once into
plain dicts/lists/scalars, and every key path -- a tuple such as ("hosts", "verda", "roles", 0)
-- is mapped to its 1-based line. Duplicate keys are collected, not dropped. Malformed YAML
becomes one `ConfigError` line `FILE:LINE: malformed YAML: <problem> (<hint>)`, never a traceback.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ..errors import ConfigError

Path = tuple  # a key path: str for mapping keys, int for list indexes

MAX_NODES = 20000  # bounds alias expansion ("billion laughs") long before memory does
MAX_INVENTORY_BYTES = 1024 * 1024  # an inventory is a few KiB; /dev/zero or a 10 MB file is refused


class FileProblem(Exception):
    """Why a file named in the inventory (or the inventory itself) cannot be read: one clause."""


def read_regular(path: str, cap: int, inspect: "Callable[[os.stat_result], None] | None" = None) -> bytes:
    """The bytes of the REGULAR file at `path`, at most `cap` of them. A FIFO, device (/dev/zero),
    directory or socket is refused without blocking (O_NONBLOCK, then fstat); a bigger file too."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except FileNotFoundError:
        raise FileProblem("does not exist") from None
    except IsADirectoryError:
        raise FileProblem("is a directory, not a file") from None
    except PermissionError:
        raise FileProblem("is not readable by this user") from None
    except OSError as exc:
        raise FileProblem(f"cannot be opened: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise FileProblem("is a directory, not a file")
        if not stat.S_ISREG(st.st_mode):
            kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode) else
                    "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else
                    "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
            raise FileProblem(f"is {kind}, not a regular file")
        if st.st_size > cap:
            raise FileProblem(f"is {st.st_size} bytes, more than the {cap} bytes allowed")
        if inspect is not None:
            inspect(st)  # e.g. the secrets file's owner and mode; raises FileProblem
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            total += len(chunk)
            if total > cap:  # it grew while being read
                raise FileProblem(f"is more than the {cap} bytes allowed")
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise FileProblem(f"cannot be read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Duplicate:
    """A mapping key written twice: `path` is the key path, `line` the second, `first_line` the first."""

    path: Path
    line: int
    first_line: int


@dataclass(frozen=True)
class YamlDoc:
    """Parsed YAML: `data` as plain Python, `lines` key path -> line, `duplicates`, `key_problems`."""

    data: Any
    lines: Mapping[Path, int]
    duplicates: tuple[Duplicate, ...] = ()
    key_problems: tuple[tuple[Path, int, str], ...] = field(default=())

    def line_of(self, path: Path) -> int:
        """The line of `path`, or of its nearest ancestor that has one (1 for the top)."""
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), 1)


def format_path(path: Path) -> str:
    """("hosts", "verda", "roles", 0) -> 'hosts.verda.roles[0]'."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _hint_for(problem: str) -> str:
    text = problem.lower()
    if "'\\t'" in text or "tab" in text:
        return "indent with spaces; YAML does not allow tabs for indentation"
    if "quoted scalar" in text or "end of stream" in text and "quote" in text:
        return "a quote was opened and never closed"
    if "mapping values are not allowed" in text:
        return "quote a value that contains ': ', or check the indentation of this key"
    if "expected <block end>" in text or "did not find expected key" in text:
        return "check the indentation: keys of one mapping must line up"
    if "flow sequence" in text or "flow mapping" in text:
        return "close each '[' with ']' and each '{' with '}', and separate items with ', '"
    if "expected a single document" in text:
        return "remove the '---' separator: the inventory is one YAML document"
    if "alias" in text or "anchor" in text:
        return "define each &anchor before its *alias, once"
    return "check the indentation and quoting near this line"


def _malformed(filename: str, line: int, problem: str, hint: str | None = None) -> ConfigError:
    return ConfigError(f"{filename}:{line}: malformed YAML: {problem} ({hint or _hint_for(problem)})")


# A list or mapping may carry only its own plain tag (what a scalar may carry, SafeConstructor decides).
_PLAIN_TAGS = {SequenceNode: ("tag:yaml.org,2002:seq",), MappingNode: ("tag:yaml.org,2002:map",)}


class _Walker:
    """Turns a node tree into plain data, recording lines, duplicates and bad keys."""

    def __init__(self, filename: str):
        self.filename = filename
        self.lines: dict[Path, int] = {(): 1}
        self.duplicates: list[Duplicate] = []
        self.key_problems: list[tuple[Path, int, str]] = []
        self.constructor = SafeConstructor()
        self.count = 0
        self.active: set[int] = set()
        self.key_line = 1  # the line of the key being read: where an over-long expansion is reported

    def walk(self, node: Node, path: Path) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise _malformed(self.filename, self.key_line,
                             f"more than {MAX_NODES} values (aliases expand too far)",
                             "an inventory is small; remove the nested aliases")
        if id(node) in self.active:
            raise _malformed(self.filename, node.start_mark.line + 1, "an alias refers to itself",
                             "an &anchor cannot be used inside its own value")
        if isinstance(node, ScalarNode):
            try:
                return self.constructor.construct_object(node, deep=True)
            except (ValueError, TypeError, OverflowError):
                raise _malformed(self.filename, node.start_mark.line + 1,
                                 f"'{node.value}' is not a valid {node.tag.rsplit(':', 1)[-1]}",
                                 "quote the value to keep it as text") from None
        if node.tag not in _PLAIN_TAGS.get(type(node), ()):  # e.g. !!python/tuple [a]: refused like on a value
            raise _malformed(self.filename, node.start_mark.line + 1,
                             f"could not determine a constructor for the tag '{node.tag}'",
                             "remove the !tag or quote the value")
        self.active.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                out = []
                for index, item in enumerate(node.value):
                    self.lines.setdefault(path + (index,), item.start_mark.line + 1)
                    out.append(self.walk(item, path + (index,)))
                return out
            if isinstance(node, MappingNode):
                return self._mapping(node, path)
        finally:
            self.active.discard(id(node))
        raise _malformed(self.filename, node.start_mark.line + 1, f"unexpected node {node.id}")

    def _mapping(self, node: MappingNode, path: Path) -> dict:
        out: dict = {}
        first: dict[str, int] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, ScalarNode):
                self.key_problems.append((path, line, "a key must be a plain word, not a list or mapping"))
                continue
            key = key_node.value  # the text as written: 'yes' stays 'yes', '8188' stays '8188'
            if key == "<<":
                self.key_problems.append((path, line, "merge keys ('<<') are not supported"))
                continue
            if key in first:
                self.duplicates.append(Duplicate(path + (key,), line, first[key]))
                continue  # the first one wins: it is the one the user reads first
            first[key] = line
            self.lines[path + (key,)] = line
            self.key_line = line
            out[key] = self.walk(value_node, path + (key,))
        return out


def _compose(text: str):
    """libyaml's parser when PyYAML has it (several times faster, the same nodes and marks); a
    text it refuses is parsed again by the pure-Python one, whose messages are the ones shown."""
    fast = getattr(yaml, "CSafeLoader", None)
    if fast is not None:
        try:
            return yaml.compose(text, Loader=fast)
        except yaml.YAMLError:
            pass
    return yaml.compose(text, Loader=yaml.SafeLoader)


def parse_yaml(text: str, filename: str) -> YamlDoc:
    """Parse `text` (named `filename` in messages). Raises ConfigError for malformed YAML."""
    try:
        root = _compose(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        if exc.context_mark is not None and "quoted scalar" in (exc.context or ""):
            mark = exc.context_mark  # where the quote was opened, not the end of the file
        line = mark.line + 1 if mark is not None else 1
        problem = exc.problem or exc.context or "not valid YAML"
        if exc.problem == "second occurrence" and exc.context:
            problem = exc.context.split(";")[0]
        elif exc.context and exc.problem:
            problem = (f"{exc.problem} {exc.context}" if exc.context.startswith("while")
                       else f"{exc.context}, {exc.problem}")
        raise _malformed(filename, line, problem) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, max(exc.position, 0)) + 1
        char = exc.character if isinstance(exc.character, int) else ord(exc.character[:1] or "\0")
        raise _malformed(filename, line, f"character U+{char:04X} is not allowed",
                         "remove the control character; save the file as UTF-8 text") from None
    except yaml.YAMLError as exc:  # any other PyYAML failure: still one line
        raise _malformed(filename, 1, str(exc).splitlines()[0] if str(exc) else "not valid YAML") from None
    except RecursionError:  # PyYAML's composer recurses once per nesting level
        raise _malformed(filename, 1, "the values are nested too deeply",
                         "an inventory needs only a few levels") from None
    if root is None:
        raise _malformed(filename, 1, "the file is empty",
                         "start with 'mode: dual-server' and a 'hosts:' mapping; see docs/inventory.md")
    walker = _Walker(filename)
    try:
        data = walker.walk(root, ())
    except yaml.YAMLError as exc:  # e.g. a bad timestamp or an unknown !tag
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise _malformed(filename, mark.line + 1 if mark else 1, problem,
                         "remove the !tag or quote the value") from None
    except RecursionError:
        raise _malformed(filename, 1, "the values are nested too deeply",
                         "an inventory needs only a few levels") from None
    if not isinstance(data, dict):
        kind = "a list" if isinstance(data, list) else f"a single value ({type(data).__name__})"
        raise _malformed(filename, root.start_mark.line + 1, f"the top level is {kind}, not a mapping",
                         "the inventory is a mapping of keys such as 'mode:' and 'hosts:'")
    return YamlDoc(data, walker.lines, tuple(walker.duplicates), tuple(walker.key_problems))


def load_yaml_file(path: str, shown: str | None = None) -> YamlDoc:
    """Read and parse a YAML file; `shown` is the name used in messages (default: `path`)."""
    shown = shown or str(path)
    try:
        raw = read_regular(path, MAX_INVENTORY_BYTES)
    except FileProblem as exc:
        raise ConfigError(f"{shown}: cannot read the inventory: it {exc} "
                          f"(check the path, or name another with --hosts PATH or $COMFYUME_HOSTS)") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise _malformed(shown, line, "the file is not UTF-8 text", "save it as UTF-8") from None
    return parse_yaml(text, shown)
