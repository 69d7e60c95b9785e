"""One task's SSH sessions: every host connected once, in parallel, and closed at the end; and
`each`, which runs a function per host in parallel and keys the results by host, with the
failures kept apart (the idea of Fabric's GroupResult)."""
from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Callable, Generic, Iterable, TypeVar

from ..errors import FabError
from ..interrupts import sigint_deferred
from ..inventory.model import Host, Inventory
from .ssh import Remote, Target

T = TypeVar("T")
R = TypeVar("R")


def target(inv: Inventory, host: Host) -> Target:
    return Target(name=host.name, address=host.address, user=host.user, port=host.port,
                  identity_file=host.identity_file, known_hosts=inv.ssh.known_hosts,
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
        pool = ThreadPoolExecutor(max_workers=min(32, len(items)))
        futures: list[Future] = []
        try:
            for item in items:  # one by one: a Ctrl-C meanwhile still finds the started ones here
                futures.append(pool.submit(guard, item))
            _wait_all(futures)
            results = [f.result() for f in futures]
        except BaseException:
            # Ctrl-C: the hosts' commands that already run are waited for (what the caller does
            # next, such as releasing the deploy lock, must come after them); a second Ctrl-C
            # stops waiting.
            pool.shutdown(wait=False, cancel_futures=True)
            try:
                _wait_all(futures)
            except KeyboardInterrupt:
                pass
            raise
        # Every thread has done its work: join them with Ctrl-C held back. An interrupt landing
        # inside Thread.join can make CPython release the thread's lock twice ("RuntimeError:
        # release unlocked lock"), which would hide the Ctrl-C behind an unexpected error.
        with sigint_deferred():
            pool.shutdown(wait=True)
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


def _wait_all(futures: list[Future]) -> None:
    """Until every future is done, waking often: a Ctrl-C the kernel hands to another thread is only
    acted on (KeyboardInterrupt) when the main thread next runs Python code."""
    while wait(futures, timeout=0.2).not_done:
        pass


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

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
