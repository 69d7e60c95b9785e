"""The deploy lock: a directory on the app host made with `mkdir` (atomic), holding a random
token (the holder's proof) and who took it, for which task, since when.

- Only its holder releases it: release compares the token and leaves someone else's lock alone
  (a run whose lock was broken with `lock-break` must not delete the next holder's lock).
- Released in `finally`, so also on failure and on Ctrl-C; Ctrl-C while the lock is being taken
  (the folder may exist before we heard so) removes it if it is ours, and a second Ctrl-C cannot
  cut the release short (SIGINT is held back for that one bounded command).
- `timeouts.lock_wait` (the `stale_after` here): `--wait-lock` waits at most that long, and a lock
  older than that is reported as stale, with its age (probably left by a run that died). A lock is
  never broken automatically: `break_lock` (the `lock-break` task) removes it, also one whose info
  file is missing (a run that died between making the folder and writing the file); `read_lock`
  (the `lock` task) shows the holder without trying to take it.
- After a Ctrl-C, `interrupted_note()` says definitively what became of this run's lock (never
  taken, taken and released, or possibly left behind).
Messages name the command the user ran with (`comfyume-fab lock-break` or `invoke lock-break`)."""
from __future__ import annotations

import os
import secrets
import signal
import threading
import time
from contextlib import contextmanager
from typing import Iterator

from ..errors import LockedError, UnhealthyError, clean
from ..host.actions import lock as lockact
from ..host.facts import lock as lockfacts
from ..host.session import Session
from ..host.ssh.remote import Remote
from ..inventory.model import Inventory
from .audit import now_iso, who

# The last DeployLock of this process, for the message after a Ctrl-C (see interrupted_note).
_LAST: "DeployLock | None" = None


def _cmd(task: str) -> str:
    from ..invocation import command
    return f"`{command(task)}`"

RELEASE_BOUND_S = 15.0


def describe(seen: lockfacts.LockSeen, stale_after: float | None = None) -> str:
    """The holder as shown to the user: its info line (control characters removed) and its age;
    `stale` when older than `stale_after`."""
    holder = clean(seen.holder) or "an unknown holder (the lock has no info file: the run that took it died)"
    if seen.age is None:
        return holder
    if stale_after is not None and seen.age > stale_after:
        return (f"{holder}, taken {seen.age} s ago: STALE (older than timeouts.lock_wait "
                f"{stale_after:g} s; that run probably died)")
    return f"{holder}, taken {seen.age} s ago"


@contextmanager
def sigint_deferred() -> Iterator[None]:
    """Hold Ctrl-C back until the block is done (main thread only; elsewhere a no-op), then
    raise it: for short, bounded steps that must not be cut in half."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


class DeployLock:
    def __init__(self, remote: Remote, workdir: str, task: str, revision: str,
                 wait: float = 0.0, say=lambda m: None, stale_after: float = 600.0):
        self.remote, self.workdir, self.task, self.wait, self.say = remote, workdir, task, wait, say
        self.warn = getattr(say, "warn", say)
        self.stale_after = stale_after
        self.token = secrets.token_hex(16)
        self.info = f"{who()} task={task} pid={os.getpid()} since={now_iso()} rev={revision}"
        self.held = False
        self.left: str | None = None  # why the lock may still be there after __exit__ (None: it is not)
        # what became of it, for interrupted_note(): taking | waiting | held | released | gone |
        # not-ours | not-taken | unknown
        self.outcome = "taking"
        self.waited_for = ""  # the holder this run was waiting for, if any
        global _LAST
        _LAST = self

    def acquire(self) -> None:
        deadline = time.monotonic() + min(self.wait, self.stale_after)
        announced = False
        while True:
            try:
                res = self.remote.run(lockact.lock_acquire(self.workdir, self.info, self.token), step="lock")
                if res.ok:
                    self.held = True
                    self.outcome = "held"
                    return
            except BaseException as exc:
                # Interrupted (or the host failed) while taking it: the folder may be there and
                # ours although we never heard so. Remove it only if it carries our token.
                fresh = isinstance(exc, KeyboardInterrupt)
                try:
                    self.outcome = self._release_if_ours(fresh)
                except KeyboardInterrupt:  # a second Ctrl-C before SIGINT was held back: once more
                    self.outcome = self._release_if_ours(fresh)
                raise
            if res.exited != 3:
                raise LockedError(f"could not take the deploy lock: {clean(res.tail())}", host=self.remote.name,
                                  step="lock")
            seen = lockfacts.parse_lock(res.stdout)
            holder = describe(seen, self.stale_after)
            stale = seen.age is not None and seen.age > self.stale_after
            if stale or time.monotonic() >= deadline:
                how = (f"if that run died, {_cmd('lock-break')} removes it" if stale or not seen.holder else
                       f"wait for it with --wait-lock, or if that run died, {_cmd('lock-break')}")
                raise LockedError(f"another deploy holds the lock: {holder}", host=self.remote.name, step="lock",
                                  hint=how)
            self.outcome, self.waited_for = "waiting", holder
            if not announced:
                self.say(f"{self.remote.name}: waiting (at most {min(self.wait, self.stale_after):g} s) "
                         f"for the deploy lock held by {holder}")
                announced = True
            try:
                time.sleep(min(2.0, max(0.1, deadline - time.monotonic())))
            except KeyboardInterrupt:  # while waiting: nothing of ours is on the host
                self.outcome = "not-taken"
                raise

    def _release_if_ours(self, fresh: bool = False) -> str:
        """After a failed or interrupted take: remove the lock if it carries our token. Returns what
        was found: released (it was ours, now gone), not-taken (no lock, or another's), unknown."""
        try:
            with sigint_deferred(), self._connection(fresh) as remote:
                res = remote.run(lockact.lock_release(self.workdir, self.token), step="unlock",
                                 timeout=self._release_bound())
        except BaseException:  # noqa: BLE001 - the first failure is the one to report
            return "unknown"
        if res.ok and res.stdout.strip().splitlines()[:1] == ["released"]:
            return "released"
        return "not-taken" if res.exited in (4, 5) else "unknown"

    @contextmanager
    def _connection(self, fresh: bool) -> Iterator[Remote]:
        """The connection to release over. After a Ctrl-C, a new one: the interrupt may have landed
        inside the SSH library while it held one of its own locks (its next send would then wait
        forever), so the task's connection is not trusted with the release."""
        if not fresh:
            yield self.remote
            return
        remote = Remote(self.remote.target).open()
        try:
            yield remote
        finally:
            remote.close()

    def _release_bound(self) -> float:
        """How long a release may take: Ctrl-C is held back meanwhile, so not a whole command timeout."""
        return min(float(self.remote.target.command_timeout), RELEASE_BOUND_S)

    def release(self, fresh: bool = False) -> None:
        """Remove the lock if it is still ours; say what was found. Raises when it cannot be checked.
        `fresh`: over a new connection (after a Ctrl-C, see `_connection`)."""
        if not self.held:
            return
        with sigint_deferred():  # a Ctrl-C meanwhile is raised once the outcome is known and said
            with self._connection(fresh) as remote:
                res = remote.run(lockact.lock_release(self.workdir, self.token), step="unlock",
                                 timeout=self._release_bound())
            self.held = False
            self._said(res)

    def _said(self, res) -> None:
        name = self.remote.name
        first = res.stdout.strip().splitlines()[:1]
        if res.ok and first == ["released"]:
            self.outcome = "released"
            self.say(f"{name}: deploy lock released")
        elif res.exited == 4:
            self.outcome = "gone"
            self.warn(f"{name}: the deploy lock was already gone when this run ended "
                      "(someone ran `lock-break` while it was held)")
        elif res.exited == 5:
            self.outcome = "not-ours"
            other = describe(lockfacts.parse_lock(res.stdout), self.stale_after)
            self.warn(f"{name}: the deploy lock is no longer this run's (its token does not match: it was broken "
                      f"and taken again by {other}); left it in place for its holder")
        else:
            self.held = True
            raise UnhealthyError(f"could not release the deploy lock: {clean(res.tail())}", host=name, step="unlock",
                                 hint=f"{_cmd('lock-break')} removes it")

    def __enter__(self) -> "DeployLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        interrupted = False
        for _ in range(2):  # once more when a Ctrl-C landed before SIGINT was held back
            try:
                self.release(fresh=interrupted or (exc[0] is not None and issubclass(exc[0], KeyboardInterrupt)))
                break
            except KeyboardInterrupt:
                interrupted = True
                if not self.held:  # released (and said so); the Ctrl-C came meanwhile
                    break
            except BaseException as failure:  # noqa: BLE001 - could not reach or check the host
                self._left(str(failure) or type(failure).__name__, exc[1])
                if exc[0] is None and not interrupted:
                    raise
                break
        if self.held and self.left is None:
            self._left("interrupted twice", exc[1])
        if interrupted and exc[0] is None:
            raise KeyboardInterrupt

    def _left(self, why: str, pending: BaseException | None) -> None:
        """Say that the lock may still be there; tell the failure in flight (taskrun prints it)."""
        self.outcome = "unknown"
        self.left = (f"the deploy lock on {self.remote.name} may be left behind ({why}); {_cmd('lock')} shows it, "
                     f"{_cmd('lock-break')} removes it")
        if pending is not None:
            try:
                pending.cfab_lock_left = self.left
            except AttributeError:
                pass
        self.warn(self.left)


def interrupted_note() -> str:
    """What became of this process's deploy lock, said after a Ctrl-C: definitive where the host
    answered (never taken; taken and released), a warning where it could not be checked."""
    lock = _LAST
    if lock is None:
        return "the deploy lock was not taken by this run"
    where = lock.remote.name
    if lock.left:
        return f"WARNING: {lock.left}"
    notes = {
        "taking": f"the deploy lock on {where} was not taken",
        "not-taken": (f"the deploy lock on {where} was not taken (this run was still waiting for it; "
                      f"{lock.waited_for or 'another run'} still holds it)" if lock.waited_for else
                      f"the deploy lock on {where} was not taken"),
        "waiting": (f"the deploy lock on {where} was not taken (this run was still waiting for it; "
                    f"{lock.waited_for} still holds it)"),
        "released": f"the deploy lock on {where} was held by this run and has been released",
        "gone": f"the deploy lock on {where} was held by this run; it had already been removed (lock-break)",
        "not-ours": f"the deploy lock on {where} had been broken and taken by another run; left in place for it",
        "held": (f"WARNING: the deploy lock on {where} may still be held by this run; {_cmd('lock')} shows it, "
                 f"{_cmd('lock-break')} removes it"),
        "unknown": (f"WARNING: the deploy lock on {where} may have been taken as Ctrl-C came and could not be "
                    f"checked; {_cmd('lock')} shows it, {_cmd('lock-break')} removes it"),
    }
    return notes.get(lock.outcome, notes["unknown"])


def read_lock(inv: Inventory) -> tuple[str, "lockfacts.LockSeen | None"]:
    """The `lock` task: the app host's name and its deploy lock as read (None: no lock), without
    trying to take it."""
    app = inv.app_host
    with Session(inv, [app]) as s:
        s.connect()
        s.require_all()
        res = s[app.name].run(lockfacts.lock_read(app.workdir), step="lock")
    first = res.stdout.strip().splitlines()[:1]
    if first == ["absent"]:
        return app.name, None
    if first != ["present"]:
        raise UnhealthyError(f"could not read the deploy lock: {clean(res.tail())}", host=app.name, step="lock")
    return app.name, lockfacts.parse_lock(res.stdout)


def break_lock(inv: Inventory) -> str:
    """The `lock-break` task: remove the deploy lock on the app host, saying who held it (also a lock
    whose info file is missing)."""
    app = inv.app_host
    with Session(inv, [app]) as s:
        s.connect()
        s.require_all()
        remote = s[app.name]
        res = remote.run(lockfacts.lock_read(app.workdir), step="lock-break")
        if res.stdout.strip().splitlines()[:1] != ["present"]:
            if res.stdout.strip().splitlines()[:1] == ["absent"]:
                return f"{app.name}: no deploy lock held"
            raise UnhealthyError(f"could not read the deploy lock: {clean(res.tail())}", host=app.name,
                                 step="lock-break")
        holder = describe(lockfacts.parse_lock(res.stdout), inv.timeouts.lock_wait)
        with sigint_deferred():
            res = remote.run(lockact.lock_break(app.workdir), step="lock-break")
        if not (res.ok and res.stdout.strip() == "removed"):
            raise UnhealthyError(f"could not remove the deploy lock: {clean(res.tail())}", host=app.name,
                                 step="lock-break", hint="remove the .deploy-lock folder in the remote folder by hand")
        return f"{app.name}: removed the deploy lock held by {holder}"
