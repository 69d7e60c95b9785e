"""`invoke logs`: the compose services' logs of every host, streamed in parallel over one SSH
connection per host, each line given to `render(host, service, text)` (present/logs.py: prefixed
`host/service`, a stable colour per host on a terminal), with every secret value of the deployment
replaced by `***`.

Each host runs ONE `docker compose logs` for its selected services on a pseudo-terminal, so that
closing the channel (Ctrl-C, or the end of the task) hangs the remote process up: nothing is left
running on any host. One thread per host reads its channel and writes whole lines as they arrive
(a host's burst never holds up another's: the lock is held only for one chunk's lines).
"""
from __future__ import annotations

import base64
import json
import re
import sys
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence, TextIO
from urllib.parse import quote, quote_plus

from ..errors import ConfigError, ExitCode, FabError, clean
from ..host.commands import ComposeProject, in_workdir
from ..host.session import Session
from ..inventory.model import Inventory
from ..inventory.secrets import REDACTED
from ..plan.planner import HostPlan, make_plan

USERS = "users"  # --service users: every frontend (user001..userNNN)
# Escape sequences, removed whole before a line is masked and cleaned (Compose itself starts every
# line on a terminal with "erase line", ESC[2K, even with --no-color; a container may write colours
# or worse): CSI, OSC (to BEL or ST, or the line's end), DCS/SOS/PM/APC (to ST), and the short ESC
# forms. What is left of a control character is shown escaped by errors.clean.
_ESCAPES = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[PX^_][^\x1b]*(?:\x1b\\)?"
                      r"|[ -/]*[0-~])")
_PREFIX = re.compile(r"^(?P<label>[A-Za-z0-9][A-Za-z0-9_.-]*)\s*\| ?(?P<text>.*)$", re.S)


def select(inv: Inventory, plan_hosts: Sequence[HostPlan], hosts: Sequence[str] = (),
           services: Sequence[str] = ()) -> list[tuple[HostPlan, list[str]]]:
    """(host plan, its selected services) for each host that runs one of `services` (all when
    empty); `users` means every frontend. An unknown host or service is a ConfigError (exit 2)."""
    for name in hosts:
        inv.host(name)  # ConfigError naming the closest host
    chosen = [hp for hp in plan_hosts if not hosts or hp.name in hosts]
    known = sorted({s for hp in plan_hosts for s in hp.services})
    wanted: list[str] = []
    for svc in services:
        if svc == USERS:
            wanted += [s for s in known if re.fullmatch(r"user\d{3,}", s)]
        elif svc not in known:
            raise ConfigError(f"--service: unknown service '{svc}' (services in this deployment: "
                              f"{', '.join(known)}, or 'users' for every frontend)")
        else:
            wanted.append(svc)
    out = []
    for hp in chosen:
        mine = [s for s in hp.services if not services or s in wanted]
        if mine:
            out.append((hp, mine))
    if not out:
        where = f" on {', '.join(hosts)}" if hosts else ""
        raise ConfigError(f"--service: none of {', '.join(services)} runs{where} "
                          f"(services there: {', '.join(s for hp in chosen for s in hp.services)})")
    return out


def logs_command(compose: ComposeProject, services: Sequence[str], follow: bool = False,
                 since: str | None = None, tail: int | None = None) -> str:
    """`docker compose logs` for these services, run with `exec` so the hang-up reaches it."""
    args = ["logs", "--no-color"]
    if follow:
        args.append("--follow")
    if since:
        args += ["--since", since]
    if tail is not None:
        args += ["--tail", str(int(tail))]
    cmd = in_workdir(compose.workdir, compose.argv(*args, *services))
    head, _, argv = cmd.partition(" && ")
    return f"{head} && exec {argv}"


def service_of(label: str, services: Sequence[str]) -> str:
    """Compose's prefix (`user001-1`, or `comfyume-user001-1` on older versions) -> the service."""
    base = re.sub(r"[-_]\d+$", "", label)
    for svc in sorted(services, key=len, reverse=True):
        if base == svc or base.endswith("-" + svc) or base.endswith("_" + svc):
            return svc
    return base


MIN_ENCODED = 6  # an encoded form shorter than this is not masked: it would hide ordinary text


def encoded_forms(secret: str) -> set[str]:
    """`secret` and the forms it takes in logs: URL-encoded (either case of hex digits, + or %20
    for a space), JSON-escaped, and base64 (standard and URL-safe) at each of the 3 alignments it
    can have inside a longer base64 string (the characters that also depend on the bytes around it
    left out), which covers HTTP Basic `user:secret`. Best effort: other encodings pass."""
    forms = {secret}
    for q in (quote(secret, safe=""), quote(secret), quote_plus(secret, safe=""), quote_plus(secret)):
        forms |= {q, re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), q)}
    for escaped in (json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]):
        forms |= {escaped, escaped.replace("/", "\\/")}
    raw = secret.encode()
    for skip, start in ((0, 0), (1, 2), (2, 3)):  # bytes before it in its 3-byte group; first char all its own
        end = 8 * (skip + len(raw)) // 6  # the last character made of its bits only
        core = base64.b64encode(b"\0" * skip + raw).decode()[start:end]
        forms |= {core, core.translate(_URLSAFE)}
    return {f for f in forms if f == secret or len(f) >= MIN_ENCODED}


_URLSAFE = str.maketrans("+/", "-_")


@dataclass
class Masker:
    """Replaces every secret value in a line by ***, in its encoded forms too (`encoded_forms`),
    longest first (a secret containing another)."""
    values: Sequence[str] = ()

    def __post_init__(self):
        self.values = sorted({f for v in self.values if v for f in encoded_forms(v)}, key=len, reverse=True)

    def __call__(self, line: str) -> str:
        for v in self.values:
            if v in line:
                line = line.replace(v, REDACTED)
        return line


def plain_line(host: str, service: str, text: str) -> str:
    """A log line as written when no renderer is given: `host/service text`."""
    return f"{host}/{service} {text}\n"


@dataclass
class LineSink:
    """Turns one host's byte chunks into prefixed, masked, filtered lines on `out`."""
    host: str
    services: Sequence[str]
    out: TextIO
    lock: threading.Lock
    mask: Masker
    grep: re.Pattern | None = None
    render: Callable[[str, str, str], str] = plain_line
    lines: int = 0
    _buf: bytes = b""
    _services: dict = field(default_factory=dict)  # Compose's label -> service, found once each

    def feed(self, data: bytes) -> None:
        data = self._buf + data
        cut = data.rfind(b"\n")
        if cut < 0:
            self._buf = data
            return
        self._buf = data[cut + 1:]
        self._emit(data[:cut].decode(errors="replace").split("\n"))

    def flush(self) -> None:
        if self._buf:
            self._emit([self._buf.decode(errors="replace")])
            self._buf = b""

    def _emit(self, raw: Iterable[str]) -> None:
        shown = []
        for line in raw:
            line = line.rstrip("\r")
            if "\x1b" in line:
                line = _ESCAPES.sub("", line)
            if not line:
                continue
            m = _PREFIX.match(line)
            if m:
                label = m["label"]
                svc = self._services.get(label)
                if svc is None:
                    svc = self._services[label] = service_of(label, self.services)
                text = m["text"]
            else:
                svc, text = "compose", line  # Compose's own message (e.g. an error)
            text = clean(self.mask(text))  # masked, then every control character shown escaped
            if self.grep is not None and not self.grep.search(text):
                continue
            shown.append(self.render(self.host, svc, text))
        if shown:
            self.lines += len(shown)
            with self.lock:
                self.out.write("".join(shown))
                self.out.flush()


def logs(inv: Inventory, *, hosts: Sequence[str] = (), services: Sequence[str] = (), follow: bool = False,
         since: str | None = None, tail: int | None = None, grep: str | None = None,
         out: TextIO | None = None, err: TextIO | None = None,
         render: Callable[[str, str, str], str] = plain_line,
         say: Callable[[str], None] | None = None) -> int:
    """Stream the selected logs; return the exit code: 0, 3 when a host could not be read, 130
    after Ctrl-C (every remote stream closed first)."""
    out = out or sys.stdout
    err = err or sys.stderr
    if tail is not None and int(tail) < 0:
        raise ConfigError(f"--tail must be 0 or more (got {tail})")
    try:
        pattern = re.compile(grep) if grep else None
    except re.error as exc:
        raise ConfigError(f"--grep: '{grep}' is not a valid regular expression ({exc})") from None
    plan = make_plan(inv)
    selected = select(inv, plan.hosts, hosts, services)
    mask = Masker([s.reveal() for s in inv.secrets.values() if s])
    lock = threading.Lock()
    stop = threading.Event()
    failed: dict[str, str] = {}
    code = ExitCode.OK
    with Session(inv, [hp.host for hp, _ in selected]) as s:
        if say:
            say(f"connecting to {', '.join(hp.name for hp, _ in selected)}")
        s.connect()
        for name, exc in s.errors.items():
            failed[name] = exc.sentence()
            print(f"error: logs: {exc.sentence()}", file=err, flush=True)

        def one(hp: HostPlan, svcs: list[str]) -> None:
            sink = LineSink(hp.name, svcs, out, lock, mask, pattern, render)
            try:
                rc = s[hp.name].stream(logs_command(hp.compose, svcs, follow, since, tail), sink.feed,
                                       pty=True, stop=stop, step="logs")
            except FabError as exc:
                failed[hp.name] = exc.sentence()
                with lock:
                    print(f"error: logs: {exc.sentence()}", file=err, flush=True)
                return
            except BrokenPipeError:  # `invoke logs | head`: the reader left; end every stream
                stop.set()
                return
            finally:
                try:
                    sink.flush()
                except BrokenPipeError:
                    stop.set()
            if rc not in (0, None):
                failed[hp.name] = f"docker compose logs exited {rc}"
        threads = [threading.Thread(target=one, args=(hp, svcs), daemon=True, name=f"logs-{hp.name}")
                   for hp, svcs in selected if hp.name in s.remotes]
        for t in threads:
            t.start()
        try:
            for t in threads:
                while t.is_alive():
                    t.join(0.25)
        except KeyboardInterrupt:
            stop.set()
            for t in threads:
                t.join(5)
            return ExitCode.INTERRUPTED
    if failed:
        code = ExitCode.UNREACHABLE if any(n in s.errors or "SSH" in m for n, m in failed.items()) \
            else ExitCode.UNHEALTHY
    return code
