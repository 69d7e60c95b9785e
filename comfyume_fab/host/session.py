"""One task's SSH sessions: every host connected once, in parallel, and closed at the end; and
`each`, which runs a function per host in parallel and keys the results by host, with the
failures kept apart (the idea of Fabric's GroupResult)."""
from __future__ import annotations

import threading
import time
from typing import Callable, Generic, Iterable, TypeVar

from ..errors import FabError, UnreachableError
from ..inventory.model import Host, Inventory
from .ssh.connect import Target
from .ssh.remote import Remote

T = TypeVar("T")
R = TypeVar("R")


def target(inv: Inventory, host: Host) -> Target:
    return Target(name=host.name, address=host.address, user=host.user, port=host.port,
                  identity_file=host.identity_file, known_hosts=inv.ssh.known_hosts,
                  tool_known_hosts=inv.generated_known_hosts if host.provider is not None else None,
                  accept_new_host_keys=inv.ssh.accept_new_host_keys, ssh_config=inv.ssh.config_file,
                  connect_timeout=float(inv.timeouts.connect), command_timeout=float(inv.timeouts.command))


class GroupResult(dict, Generic[R]):
    """Key (a host's name) -> the value its function returned, in the order given; the keys whose
    function raised are in `.failed` instead, with the exception."""

    def __init__(self) -> None:
        super().__init__()
        self.failed: dict[str, Exception] = {}

    @property
    def ok(self) -> bool:
        return not self.failed

    def raise_first(self, hint: str | None = None) -> "GroupResult[R]":
        """Raise the first failure (a FabError gets `hint` appended: what was left running), else self."""
        for exc in self.failed.values():
            if hint and isinstance(exc, FabError):
                exc.hint = f"{exc.hint}; {hint}" if exc.hint else hint
            raise exc
        return self


def _name(item) -> str:
    return item.name


def each(fn: Callable[[T], R], items: Iterable[T], key: Callable[[T], str] = _name) -> GroupResult[R]:
    """`fn` over `items` in threads; results keyed by `key(item)` (default: `.name`) in item order."""
    items = list(items)
    out: GroupResult[R] = GroupResult()

    def guard(item):
        try:
            return True, fn(item)
        except Exception as exc:  # kept, reported by the caller with the host's name
            return False, exc
    if len(items) <= 1:
        results = [guard(item) for item in items]
    else:
        results = _in_threads(guard, items, [key(item) for item in items])
    for item, (ok, value) in zip(items, results):
        if ok:
            out[key(item)] = value
        else:
            out.failed[key(item)] = value
    return out


def gather(fn: Callable[[T], R], items: Iterable[T], hint: str | None = None,
           key: Callable[[T], str] = _name) -> GroupResult[R]:
    """`each`, for ordered steps: the first failure is raised (with `hint`), else every result."""
    return each(fn, items, key).raise_first(hint)


# After a Ctrl-C, how long the hosts' commands that already run are waited for before the caller
# goes on (releasing the deploy lock); a second Ctrl-C stops waiting at once.
WAIT_AFTER_INTERRUPT_S = 30.0


def _in_threads(guard: Callable, items: list, names: list[str]) -> list:
    """guard(item) for every item, each in its own daemon thread (one that the SSH library left
    stuck after a Ctrl-C can never hold up the process's exit, as a pool's threads would).
    Waited for through per-thread events, never Thread.join: a Ctrl-C landing inside join can make
    CPython release the thread's lock twice ("RuntimeError: release unlocked lock")."""
    results: list = [None] * len(items)
    finished = [threading.Event() for _ in items]

    def run(i: int) -> None:
        try:
            results[i] = guard(items[i])
        except BaseException as exc:  # noqa: BLE001 - e.g. SystemExit in a thread: kept as a failure
            results[i] = (False, exc)
        finally:
            finished[i].set()
    threads = [threading.Thread(target=run, args=(i,), name=f"cfab-{names[i]}", daemon=True)
               for i in range(len(items))]
    try:
        for thread in threads:
            thread.start()
        _wait_all(finished)
    except BaseException:
        # Ctrl-C: what the caller does next (release the deploy lock) should come after the
        # commands already running on the other hosts; bounded, and a second Ctrl-C stops waiting.
        # A thread counts as running once it has an ident (a Ctrl-C can land just after start()).
        running = [done for done, thread in zip(finished, threads) if thread.ident is not None]
        try:
            _wait_all(running, deadline=time.monotonic() + WAIT_AFTER_INTERRUPT_S)
        except KeyboardInterrupt:
            pass
        raise
    return results


class Background:
    """fn(*args) in a daemon thread while the caller goes on; `result()` waits for it (its value,
    or its exception raised). Ctrl-C while waiting is raised at once: nothing joins the thread,
    which ends with the process (a pool's exit would wait out, say, an SSH banner timeout)."""

    def __init__(self, fn: Callable[..., R], *args, name: str = "cfab-background"):
        self._done = threading.Event()
        self._value = None
        self._error: BaseException | None = None

        def run() -> None:
            try:
                self._value = fn(*args)
            except BaseException as exc:  # noqa: BLE001 - handed to whoever asks for the result
                self._error = exc
            finally:
                self._done.set()
        threading.Thread(target=run, name=name, daemon=True).start()

    def result(self):
        _wait_all([self._done])
        if self._error is not None:
            raise self._error
        return self._value


def _wait_all(events: list[threading.Event], deadline: float | None = None) -> bool:
    """Until every event is set (True) or the deadline passes (False), waking often: a Ctrl-C the
    kernel hands to another thread is acted on only when the main thread next runs Python code."""
    for ev in events:
        while not ev.wait(0.2):
            if deadline is not None and time.monotonic() > deadline:
                return False
    return True


class Session:
    """Remotes for the hosts a task touches. `connect()` opens them all in parallel and
    records each host's SSH round trip; unreachable hosts are kept in `.errors`."""

    def __init__(self, inv: Inventory, hosts: Iterable[Host]):
        self.inv = inv
        self.hosts = list(hosts)
        self.remotes: dict[str, Remote] = {}
        self.errors: dict[str, FabError] = {}
        self.connect_s: dict[str, float] = {}

    def connect(self) -> "Session":
        def one(host: Host):
            if host.provider is not None and not host.address:
                raise UnreachableError(f"{host.name} is rented (provider: {host.provider.name}) and no instance of "
                                       "it is recorded now", host=host.name, step="connect",
                                       hint="start-all rents one; `status` says whether it was deleted on purpose")
            t0 = time.monotonic()
            remote = Remote(target(self.inv, host)).open()
            self.connect_s[host.name] = time.monotonic() - t0
            return remote
        res = each(one, self.hosts)
        self.remotes.update(res)
        for name, exc in res.failed.items():
            if not isinstance(exc, FabError):
                raise exc  # a bug, not a host problem
            self.errors[name] = exc
        return self

    def require_all(self) -> None:
        if self.errors:
            first = next(iter(self.errors.values()))
            if len(self.errors) > 1:
                first.cause += f" (and {len(self.errors) - 1} more host(s) unreachable: " \
                               f"{', '.join(list(self.errors)[1:])})"
            raise first

    def __getitem__(self, name: str) -> Remote:
        return self.remotes[name]

    def close(self) -> None:
        for r in self.remotes.values():
            r.close()

    def abort(self) -> None:
        """After a Ctrl-C: drop every connection without the SSH library's close (see Remote.abort)."""
        for r in self.remotes.values():
            r.abort()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
            self.abort()
        else:
            self.close()
