"""One task's SSH sessions: every host connected once, in parallel, and closed at the end."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, TypeVar

from .errors import FabError
from .inventory import Host, Inventory
from .remote import Remote, Target

T = TypeVar("T")


def target(inv: Inventory, host: Host) -> Target:
    return Target(name=host.name, address=host.address, user=host.user, port=host.port,
                  identity_file=host.identity_file, known_hosts=inv.ssh.known_hosts,
                  accept_new_host_keys=inv.ssh.accept_new_host_keys, ssh_config=inv.ssh.config_file,
                  connect_timeout=float(inv.timeouts.connect), command_timeout=float(inv.timeouts.command))


def parallel(fn: Callable[[T], object], items: Iterable[T]) -> list[object]:
    """fn over items in threads; each result is the return value or the exception raised."""
    items = list(items)
    if not items:
        return []

    def guard(item):
        try:
            return fn(item)
        except Exception as exc:  # collected, reported by the caller with the host's name
            return exc
    if len(items) == 1:
        return [guard(items[0])]
    with ThreadPoolExecutor(max_workers=min(32, len(items))) as pool:
        return list(pool.map(guard, items))


def gather(fn: Callable[[T], object], items: Iterable[T], hint: str | None = None) -> list[object]:
    """`parallel`, for ordered steps: the first exception is raised (a FabError gets `hint`
    appended: what was left running), else the results come back in order."""
    results = parallel(fn, items)
    for res in results:
        if isinstance(res, Exception):
            if hint and isinstance(res, FabError):
                res.hint = f"{res.hint}; {hint}" if res.hint else hint
            raise res
    return results


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
        for host, res in zip(self.hosts, parallel(one, self.hosts)):
            if isinstance(res, Remote):
                self.remotes[host.name] = res
            elif isinstance(res, FabError):
                self.errors[host.name] = res
            else:
                raise res  # a bug, not a host problem
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
