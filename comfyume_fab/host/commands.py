"""The pure building blocks of the command lines run on hosts. Nothing here runs anything.

Every user-derived value is quoted once, here, with shlex (`q`). The host's remote folder (its
paths and the names of the files in it), and `ComposeProject`, a host's compose invocation.
Multi-part reads are built as one "sectioned" script, so a status needs one round trip per host;
`split_sections` parses what it prints. What a host says is read by `facts`; what changes a host
is built by `actions`.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Sequence

ENV_FILE = ".env"
AUDIT_LOG = "audit.log"
DEPLOYED = "deployed.json"
SECTION = "@@cfab"


def q(value: str) -> str:
    return shlex.quote(str(value))


def workdir_path(workdir: str, name: str = "") -> str:
    """A path under the host's remote folder, relative to the login home unless absolute."""
    base = workdir[2:] if workdir.startswith("~/") else workdir
    return f"{base.rstrip('/')}/{name}" if name else base


def compose(project: str, files: Sequence[str], *args: str) -> list[str]:
    argv = ["docker", "compose", "-p", project, "--env-file", ENV_FILE]
    for f in files:
        argv += ["-f", f]
    return argv + list(args)


def in_workdir(workdir: str, argv: Sequence[str]) -> str:
    return f"cd {q(workdir_path(workdir))} && {shlex.join(argv)}"


@dataclass(frozen=True)
class ComposeProject:
    """A host's compose context: where its files are, the project name and the files in -f order.
    Its methods build the command lines; they run nothing (`actions.compose` builds `up` and `stop`
    on it)."""
    workdir: str
    project: str
    files: tuple[str, ...]

    def argv(self, *args: str) -> list[str]:
        return compose(self.project, self.files, *args)

    def run(self, *args: str) -> str:
        """`docker compose ARGS...` in the workdir."""
        return in_workdir(self.workdir, self.argv(*args))

    def logs(self, service: str, tail: int = 15) -> str:
        return self.run("logs", "--no-color", "--tail", str(tail), service)


def sections(parts: Sequence[tuple[str, str]], parallel: bool = True) -> str:
    """Run several shell snippets in one round trip; each one's output and exit status is
    framed by marker lines that `split_sections` reads back. With `parallel` (the default) the
    snippets run at the same time, each in a subshell writing to its own file in a private
    temporary folder, and are printed in order afterwards (the host-state read waits for its
    slowest snippet instead of their sum); without a temporary folder they run one by one."""
    chunks = []
    for name, snippet in parts:
        chunks.append(f"echo {SECTION}-begin {name}; {{ {snippet} ; }} 2>&1; echo {SECTION}-end {name} $?")
    serial = "; ".join(chunks)
    if not parallel or len(parts) < 2:
        return serial
    start = " ".join(f"( {{ {snippet} ; }} >\"$cfab_d/{i}\" 2>&1; echo $? >\"$cfab_d/{i}.rc\" ) &"
                     for i, (_, snippet) in enumerate(parts))
    show = "; ".join(f"echo {SECTION}-begin {name}; cat \"$cfab_d/{i}\"; "
                     f"echo {SECTION}-end {name} $(cat \"$cfab_d/{i}.rc\" 2>/dev/null || echo 255)"
                     for i, (name, _) in enumerate(parts))
    return (f"cfab_d=$(mktemp -d 2>/dev/null); if [ -n \"$cfab_d\" ]; then {start} wait; {show}; "
            f"rm -rf \"$cfab_d\"; else {serial}; fi")


def split_sections(text: str) -> dict[str, tuple[int, str]]:
    out: dict[str, tuple[int, str]] = {}
    current, lines = None, []
    for line in text.splitlines():
        if line.startswith(f"{SECTION}-begin "):
            current, lines = line.split(" ", 1)[1], []
        elif line.startswith(f"{SECTION}-end ") and current is not None:
            _, name, code = line.split(" ")
            out[name] = (int(code), "\n".join(lines))
            current = None
        elif current is not None:
            lines.append(line)
    return out


def read_file(workdir: str, name: str) -> str:
    return f"cat {q(workdir_path(workdir, name))} 2>/dev/null"
