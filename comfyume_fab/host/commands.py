"""Pure builders of the command lines run on hosts. Nothing here runs anything.

Every user-derived value is quoted once, here, with shlex (`q`). Multi-part reads are built
as one "sectioned" script, so a status needs one round trip per host; `split_sections`
parses what it prints.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Iterable, Sequence

ENV_FILE = ".env"
LOCK_DIR = ".deploy-lock"
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
    Its methods build the command lines; they run nothing."""
    workdir: str
    project: str
    files: tuple[str, ...]

    def argv(self, *args: str) -> list[str]:
        return compose(self.project, self.files, *args)

    def run(self, *args: str) -> str:
        """`docker compose ARGS...` in the workdir."""
        return in_workdir(self.workdir, self.argv(*args))

    def up(self, services: Iterable[str], no_deps: bool = False) -> str:
        # `up -d` (never `docker restart`): a changed .env or image recreates the container.
        # `no_deps`: touch exactly these services (a rolling batch), not what they depend on.
        return self.run("up", "-d", "--no-color", "--quiet-pull", "--remove-orphans",
                        *(("--no-deps",) if no_deps else ()), *services)

    def stop(self, services: Iterable[str] = (), remove: bool = False) -> str:
        if remove:
            # `rm -s -f` / `down` never ask a question and never delete volumes (Redis data stays).
            return self.run(*(("rm", "-s", "-f", *services) if services else ("down", "--remove-orphans")))
        return self.run("stop", *services)

    def logs(self, service: str, tail: int = 15) -> str:
        return self.run("logs", "--no-color", "--tail", str(tail), service)


def remove_containers(ids: Sequence[str], grace: int = 10) -> str:
    """Stop (SIGTERM, then `grace` s) and remove these containers; never their volumes or bind mounts."""
    return (f"{shlex.join(['docker', 'stop', '-t', str(int(grace)), *ids])} >/dev/null && "
            f"{shlex.join(['docker', 'rm', *ids])} >/dev/null")


def published_port(project: str, service: str, port: int) -> str:
    """Where the running container of a compose service publishes `port`: the same answer as
    `docker compose port`, from the engine alone (no compose files to load: ~0.1 s less CPU)."""
    ps = shlex.join(["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={project}",
                     "--filter", f"label=com.docker.compose.service={service}"])
    return f"set -- $({ps}) && [ $# -gt 0 ] && docker port \"$1\" {int(port)}/tcp"


def mkdir(workdir: str) -> str:
    # chmod too: `-m` applies only to a folder mkdir creates, not to one an older run left 0755
    path = workdir_path(workdir)
    return f"{shlex.join(['mkdir', '-p', '-m', '700', path])} && {shlex.join(['chmod', '700', path])}"


def clean_partials(workdir: str) -> str:
    """Remove what an upload cut off mid-transfer left beside the real files (never in use)."""
    base = q(workdir_path(workdir))
    return f"rm -f -- {base}/.*.part-* {base}/*.part-*"


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


def _lock_describe(d: str) -> str:
    """Print `age=<seconds since the lock folder was made, by the host's clock>` and the holder's
    info (nothing when the run that took it died before writing it)."""
    return (f"echo \"age=$(( $(date +%s) - $(stat -c %Y {d} 2>/dev/null || date +%s) ))\"; "
            f"cat {d}/info 2>/dev/null || true")


def lock_acquire(workdir: str, info: str, token: str) -> str:
    """Take the lock: exit 0 and print `acquired`, or exit 3 and print what `parse_lock` reads.
    The token (the holder's proof, compared on release) is written before the info."""
    d = q(workdir_path(workdir, LOCK_DIR))
    # mkdir is atomic: exactly one of two racing deploys creates the directory.
    return (f"mkdir -p -m 700 {q(workdir_path(workdir))} && if mkdir -m 700 {d} 2>/dev/null; then "
            f"printf '%s\\n' {q(token)} > {d}/token && printf '%s\\n' {q(info)} > {d}/info && echo acquired; "
            f"else {_lock_describe(d)}; exit 3; fi")


def lock_release(workdir: str, token: str) -> str:
    """Remove the lock only when its token is `token`. Prints `released` (exit 0, and the folder is
    gone), `gone` (exit 4: no lock any more) or `other` + what `parse_lock` reads (exit 5: someone
    else's lock, left in place)."""
    d = q(workdir_path(workdir, LOCK_DIR))
    return (f"if [ ! -d {d} ]; then echo gone; exit 4; fi; "
            f"if [ \"$(cat {d}/token 2>/dev/null)\" = {q(token)} ]; then rm -rf {d} && [ ! -e {d} ] && echo released; "
            f"else echo other; {_lock_describe(d)}; exit 5; fi")


def lock_read(workdir: str) -> str:
    """`absent`, or `present` + what `parse_lock` reads (a lock without its info file included)."""
    d = q(workdir_path(workdir, LOCK_DIR))
    return f"if [ -d {d} ]; then echo present; {_lock_describe(d)}; else echo absent; fi"


def lock_break(workdir: str) -> str:
    """Remove the lock whoever holds it (`invoke lock-break`); prints `removed` once it is gone."""
    d = q(workdir_path(workdir, LOCK_DIR))
    return f"rm -rf {d} && [ ! -e {d} ] && echo removed"


@dataclass(frozen=True)
class LockSeen:
    """A lock as read on the host: its age in seconds (None when unknown) and its holder line."""
    age: int | None
    holder: str


def parse_lock(text: str) -> LockSeen:
    """Read what `_lock_describe` printed (after any `present`/`other` marker line)."""
    age, holder = None, []
    for line in text.splitlines():
        if line.startswith("age="):
            try:
                age = max(0, int(line[4:]))
            except ValueError:
                age = None
        elif line.strip() and line.strip() not in ("present", "other", "absent", "gone"):
            holder.append(line.strip())
    return LockSeen(age, " ".join(holder))


def audit(workdir: str, line: str) -> str:
    path = q(workdir_path(workdir, AUDIT_LOG))
    return f"printf '%s\\n' {q(line)} >> {path} && chmod 600 {path}"


def read_file(workdir: str, name: str) -> str:
    return f"cat {q(workdir_path(workdir, name))} 2>/dev/null"


def run_job(workdir: str, name: str, label: str, env_file: str, image: str, argv: Sequence[str]) -> str:
    """Replace the detached container `name` with a new one of `image` running `argv`, its
    environment from `env_file` (in the workdir, never in argv), on the host's network, restarted
    after a reboot (`invoke warm`'s job that lowers replicas later)."""
    return (f"docker rm -f {q(name)} >/dev/null 2>&1; cd {q(workdir_path(workdir))} && "
            + shlex.join(["docker", "run", "-d", "--name", name, "--restart", "unless-stopped", "--network", "host",
                          "--label", label, "--env-file", env_file, image, *argv]))
