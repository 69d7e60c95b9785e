"""`invoke status --watch`: a live screen over SSH connections held open for the whole session.

One thread per host keeps that host's connection and reads it every `interval` (services and
health, GPUs: one round trip); the app host's thread also reads the queue from Redis through a
tunnel held on that same connection (depth, running, jobs completed in the last minute, each
worker's heartbeat age). Each worker's inference probe runs in its own thread every
`probe_every` s. The screen is drawn from the latest snapshots and never waits for a host: a read
that does not answer within the interval marks the host unreachable, its connection is dropped and
reopened in the background (host keys checked as on every connection) until it answers again.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from contextlib import ExitStack
from typing import Any, Callable

from ..checks.links import QUEUE_PENDING, QUEUE_RUNNING, heartbeat_key, redis_client
from ..checks.probe import run_probe
from ..errors import ExitCode, FabError
from ..host import state as hoststate
from ..host.facts.docker import by_service
from ..host.session import target
from ..host.ssh.heldshell import HeldShell, open_shell
from ..host.ssh.remote import Remote
from ..inventory.model import Inventory
from ..plan.planner import HostPlan, make_plan

QUEUE_COMPLETED = "queue:completed"
# The queue read in ONE round trip (Redis 7 runs TIME inside scripts): depth, running, jobs completed
# in the last 60 s of the server's clock, then each heartbeat key's TTL.
QUEUE_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local out = {redis.call('ZCARD', KEYS[1]), redis.call('ZCARD', KEYS[2]), redis.call('ZCOUNT', KEYS[3], now - 60, '+inf')}
for i = 4, #KEYS do out[#out + 1] = redis.call('TTL', KEYS[i]) end
return out
"""


@dataclasses.dataclass
class HostView:
    """What the screen shows of one host (a copy: the watcher thread keeps writing its own)."""
    name: str
    roles: tuple[str, ...]
    reachable: bool = False
    connecting: bool = True
    error: str = ""
    rtt_ms: float | None = None
    read_at: float = 0.0  # monotonic time of the last good read
    connects: int = 0  # SSH connections opened so far (1 for the whole session unless it dropped)
    services: list[dict] = dataclasses.field(default_factory=list)
    gpus: list[dict] | None = None  # None: no GPU (no working nvidia-smi)
    gpu_error: str = ""
    probe: dict | None = None  # {"ok", "detail", "at"}
    deleted: str = ""  # a rented host with no instance now: why (deleted on purpose, or not rented yet)


@dataclasses.dataclass
class Snapshot:
    at: float
    interval: float
    hosts: list[HostView]
    queue: dict[str, Any] | None
    queue_error: str = ""


def next_wait(started: float, interval: float, now: float) -> float:
    """Seconds to wait until the next refresh, `interval` after the start of the previous one (a
    refresh that overran its interval is followed at once)."""
    return max(0.05, started + interval - now)


class HostWatcher(threading.Thread):
    """Holds one host's connection and refreshes its view every interval; reconnects when it drops."""

    def __init__(self, inv: Inventory, hp: HostPlan, interval: float, stop: threading.Event,
                 queue_reader: Callable[[Remote], dict] | None = None):
        super().__init__(daemon=True, name=f"watch-{hp.name}")
        self.inv, self.hp, self.interval, self.stop = inv, hp, interval, stop
        self.queue_reader = queue_reader
        self.view = HostView(hp.name, tuple(hp.roles))
        self.queue: dict | None = None
        self.queue_error = ""
        self.remote: Remote | None = None
        self.shell: HeldShell | None = None  # one shell held open on the connection for every read
        self.lock = threading.Lock()
        self._tunnel: ExitStack | None = None
        self._redis = None
        self._reader: threading.Thread | None = None  # the queue read in flight, if any
        self._queue_result: tuple[dict | None, str] | None = None  # its answer, not yet shown
        self.busy_since: float | None = None

    # -- connection ---------------------------------------------------------------------------
    def _connect(self) -> None:
        t = dataclasses.replace(target(self.inv, self.hp.host),
                                connect_timeout=min(float(self.inv.timeouts.connect), max(2.0, self.interval * 2)))
        remote = Remote(t).open()
        try:
            shell = open_shell(remote)
        except FabError:
            remote.close()
            raise
        with self.lock:
            self.shell = shell
            self.remote = remote
            self.view.connects += 1
            self.view.connecting = False

    def _drop(self, error: str) -> None:
        self._close_redis()
        with self.lock:
            remote, self.remote, self.shell = self.remote, None, None
            self.view.reachable = False
            self.view.error = error
            self.view.connecting = True
        if remote is not None:
            threading.Thread(target=remote.close, daemon=True).start()  # never wait on a dead socket

    def _close_redis(self) -> None:
        if self._tunnel is not None:
            try:
                self._tunnel.close()
            except Exception:
                pass
        self._tunnel, self._redis = None, None

    def mark_stale(self, now: float) -> None:
        """Called by the screen: a read that has not answered within the interval means the host
        is unreachable now, whatever the read's own timeout says."""
        with self.lock:
            if self.busy_since is not None and now - self.busy_since > self.interval and self.view.reachable:
                self.view.reachable = False
                self.view.error = f"no answer for {now - self.busy_since:.0f} s"

    # -- loop -----------------------------------------------------------------------------------
    def run(self) -> None:
        """Read every `interval`, measured from the start of the previous read (a read that took
        longer than the interval is followed at once by the next)."""
        while not self.stop.is_set():
            t0 = time.monotonic()
            try:
                if self.remote is None:
                    self._connect()
                self.busy_since = t0
                self._read()
            except FabError as exc:
                self._drop(exc.sentence())
            except Exception as exc:  # a broken connection in a library: shown, then reconnected
                self._drop(f"{type(exc).__name__}: {exc}")
            finally:
                self.busy_since = None
            self.stop.wait(next_wait(t0, self.interval, time.monotonic()))
        self._close_redis()
        if self.remote is not None:
            self.remote.close()

    def _read(self) -> None:
        remote = self.remote
        timeout = max(1.0, self.interval)
        reader = None
        started = time.monotonic()
        # the Redis read runs beside the host read, not after it; one at a time (a slow one is
        # left to finish while the host keeps its interval; its answer is used by the next refresh)
        if self.queue_reader is not None and (self._reader is None or not self._reader.is_alive()):
            def read_queue() -> None:
                result = self._queue_or_error(remote, timeout)
                with self.lock:
                    self._queue_result = result
            reader = threading.Thread(target=read_queue, daemon=True, name=f"watch-queue-{self.hp.name}")
            self._reader = reader
            reader.start()
        st = hoststate.read(self.shell, self.inv.project, self.hp.host.workdir, timeout=timeout,
                            preflight=("engine", "nvidia"))
        current = by_service(st.containers)
        services = []
        for svc in self.hp.services:
            c = current.get(svc)
            services.append({"service": svc, "state": c.state if c else "missing",
                             "health": (c.health or "none") if c else "none",
                             "restarts": c.restart_count if c else 0, "ok": bool(c and c.ok),
                             "image": c.image if c else None})
        queue, queue_error = self.queue, self.queue_error
        if reader is not None:
            reader.join(next_wait(started, self.interval, time.monotonic()))
        with self.lock:
            result, self._queue_result = self._queue_result, None
        if result is not None:
            queue, queue_error = result
            queue = queue if queue is not None else self.queue
        elif self.queue is not None and self._reader is not None and self._reader.is_alive():
            queue_error = queue_error or f"the queue read has not answered within {self.interval:g} s"
        with self.lock:
            v = self.view
            v.reachable, v.error, v.rtt_ms, v.read_at = True, "", round(st.rtt_s * 1000, 1), time.monotonic()
            v.services = services
            v.gpus = [dataclasses.asdict(g) for g in st.gpus] if st.gpus else None
            v.gpu_error = st.gpu_error
            if not st.engine:
                v.error = f"Docker engine not answering ({st.engine_error})"
            self.queue, self.queue_error = queue, queue_error

    def _queue_or_error(self, remote: Remote, timeout: float) -> tuple[dict | None, str]:
        try:
            return self._read_queue(remote, timeout), ""
        except FabError as exc:
            self._close_redis()
            return None, exc.sentence()
        except Exception as exc:  # Redis refused / timed out: shown on the screen
            self._close_redis()
            return None, f"{type(exc).__name__}: {exc}"

    def _read_queue(self, remote: Remote, timeout: float) -> dict:
        if self._redis is None:
            host, port, password = self.queue_reader(remote)
            stack = ExitStack()
            sock = stack.enter_context(remote.tunnel(host, port, timeout))
            self._tunnel, self._redis = stack, redis_client(sock, password, timeout)
        workers = [hp.host.worker_id for hp in self.worker_plans]
        keys = [QUEUE_PENDING, QUEUE_RUNNING, QUEUE_COMPLETED] + [heartbeat_key(w) for w in workers]
        res = self._redis.eval(QUEUE_SCRIPT, len(keys), *keys)
        hb = self.inv.worker.heartbeat_timeout
        ages = {wid: (hb - ttl if ttl is not None and ttl >= 0 else None) for wid, ttl in zip(workers, res[3:])}
        return {"depth": res[0], "running": res[1], "completed_per_min": res[2], "heartbeat_age_s": ages}

    worker_plans: list = []

    def snapshot(self) -> tuple[HostView, dict | None, str]:
        with self.lock:
            return dataclasses.replace(self.view, services=list(self.view.services)), self.queue, self.queue_error


class ProbeWatcher(threading.Thread):
    """Runs the inference probe on one worker every `every` s over that host's held connection."""

    def __init__(self, inv: Inventory, host: HostWatcher, every: float, stop: threading.Event):
        super().__init__(daemon=True, name=f"probe-{host.hp.name}")
        self.inv, self.host, self.every, self.stop = inv, host, every, stop

    def run(self) -> None:
        while not self.stop.wait(0 if self.host.view.probe is None and self.host.remote else 0.5):
            remote = self.host.remote
            last = self.host.view.probe
            if remote is None or (last and time.monotonic() - last["at"] < self.every):
                continue
            try:
                r = run_probe(remote, self.inv.ports.worker_comfyui, min(self.inv.timeouts.probe, self.every),
                              self.inv.probe.workflow_graph, name=f"inference-{self.host.hp.name}")
                probe = {"ok": r.ok, "detail": r.detail, "ms": round(r.duration * 1000), "at": time.monotonic()}
            except Exception as exc:
                probe = {"ok": False, "detail": getattr(exc, "cause", str(exc)), "ms": None, "at": time.monotonic()}
            with self.host.lock:
                self.host.view.probe = probe


class Watch:
    """The whole session: one HostWatcher per host (the app host's also reads the queue) and one
    ProbeWatcher per worker; `snapshot()` is what the screen draws."""

    def __init__(self, inv: Inventory, interval: float = 2.0, probe_every: float = 30.0):
        self.inv, self.interval = inv, interval
        self.plan = make_plan(inv)
        self.stop_event = threading.Event()
        redis_on_app = "redis" in self.plan.app.services
        self.watchers: list[HostWatcher] = []
        for hp in self.plan.hosts:
            reader = self._queue_target if (hp is self.plan.app and redis_on_app) else None
            w = HostWatcher(inv, hp, interval, self.stop_event, reader)
            w.worker_plans = [p for p in self.plan.hosts if p.worker_services]
            self.watchers.append(w)
        # A rented host without an instance now is not watched (nothing to connect to): it is shown
        # as deleted on purpose, as `status` says it, never as unreachable.
        gone = not_rented(inv)
        for w in self.watchers:
            if w.hp.name in gone:
                w.view.deleted, w.view.connecting = gone[w.hp.name], False
        self.probes = [ProbeWatcher(inv, w, probe_every, self.stop_event) for w in self.watchers
                       if w.hp.worker_services and probe_every > 0 and not w.view.deleted]

    def _queue_target(self, remote: Remote):
        host = str(self.plan.app.env.get("REDIS_BIND_IP", "127.0.0.1"))
        return host, self.inv.ports.redis, self.inv.secrets["REDIS_PASSWORD"].reveal()

    def _running(self) -> list[threading.Thread]:
        return [w for w in self.watchers if not w.view.deleted] + self.probes

    def start(self) -> "Watch":
        for t in self._running():
            t.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        for t in self._running():
            t.join(3)

    def reachability(self) -> tuple[bool, ...]:
        """Each host's reachable flag now (cheap: the screen polls it to redraw at once on a change)."""
        now = time.monotonic()
        for w in self.watchers:
            w.mark_stale(now)
        return tuple(w.view.reachable for w in self.watchers)

    def snapshot(self) -> Snapshot:
        now = time.monotonic()
        views, queue, queue_error = [], None, ""
        for w in self.watchers:
            w.mark_stale(now)
            view, q, qe = w.snapshot()
            views.append(view)
            if w.queue_reader is not None:
                queue, queue_error = q, qe
                if not view.reachable and (view.read_at or view.error):  # not while first connecting
                    queue_error = queue_error or f"{view.name} unreachable"
        return Snapshot(now, self.interval, views, queue, queue_error)


def not_rented(inv: Inventory) -> dict[str, str]:
    """Rented hosts with no live instance recorded -> the sentence status gives for them."""
    from ..cloud import record
    from .bill import deleted_sentence
    out = {}
    for host in inv.provider_hosts:
        rec = record.load(inv, host.name)
        if not record.live(rec):
            out[host.name] = (deleted_sentence(host.name, rec) if rec and rec.get("deleted_by") else
                              "not rented: no instance is recorded for it (start-all rents one)")
    return out


def watch(inv: Inventory, render: Callable[[Snapshot], Any], interval: float = 2.0, probe_every: float = 30.0,
          keys=None, screen=None) -> int:
    """Run the live screen until `q` or Ctrl-C; returns 0 (130 after Ctrl-C). `render(snapshot)`
    gives what rich draws; `keys()` returns a pressed key or None within a timeout (q quits)."""
    from rich.console import Console
    from rich.live import Live
    if interval <= 0:
        from ..errors import ConfigError
        raise ConfigError(f"--interval must be more than 0 seconds (got {interval:g})")
    w = Watch(inv, interval, probe_every).start()
    console = screen or Console()
    code = ExitCode.OK
    try:
        with _keyboard() as key, Live(render(w.snapshot()), console=console, auto_refresh=False,
                                      screen=False, transient=False) as live:
            next_at = time.monotonic()
            shown = w.reachability()
            while True:
                next_at += interval
                while True:
                    left = next_at - time.monotonic()
                    if left <= 0:
                        break
                    pressed = key(min(left, 0.25))
                    if pressed in ("q", "Q", "\x03"):
                        return int(code)
                    if w.reachability() != shown:  # a host dropped or came back: show it now
                        break
                shown = w.reachability()
                live.update(render(w.snapshot()), refresh=True)
                next_at = max(next_at, time.monotonic() - interval)
    except KeyboardInterrupt:
        code = ExitCode.INTERRUPTED
        return int(code)
    finally:
        w.stop()


class _keyboard:
    """Single key presses from a terminal (cbreak mode, restored on exit); a plain wait otherwise."""

    def __enter__(self):
        import os
        import select
        import sys
        self.fd = sys.stdin.fileno() if sys.stdin is not None else -1
        self.old = None
        if self.fd >= 0 and os.isatty(self.fd):
            import termios
            import tty
            self.old = termios.tcgetattr(self.fd)
            tty.setcbreak(self.fd)

        def key(timeout: float):
            if self.old is None:
                time.sleep(timeout)
                return None
            ready, _, _ = select.select([self.fd], [], [], timeout)
            return os.read(self.fd, 1).decode(errors="replace") if ready else None
        return key

    def __exit__(self, *exc):
        if self.old is not None:
            import termios
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self.old)
