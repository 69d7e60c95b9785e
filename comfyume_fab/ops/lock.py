"""The deploy lock: a directory on the app host made with `mkdir` (atomic), holding who
took it, for which task, since when. Released in `finally`, so also on failure and Ctrl-C;
`break_lock` removes one left by a run that died (explicitly, never automatically)."""
from __future__ import annotations

import os
import time

from ..errors import LockedError, UnhealthyError
from ..host import commands as cmd
from ..host.session import Session
from ..host.ssh import Remote
from ..inventory.model import Inventory
from .audit import now_iso, who


class DeployLock:
    def __init__(self, remote: Remote, workdir: str, task: str, revision: str,
                 wait: float = 0.0, say=lambda m: None):
        self.remote, self.workdir, self.task, self.wait, self.say = remote, workdir, task, wait, say
        self.info = f"{who()} task={task} pid={os.getpid()} since={now_iso()} rev={revision}"
        self.held = False

    def acquire(self) -> None:
        deadline = time.monotonic() + self.wait
        announced = False
        while True:
            res = self.remote.run(cmd.lock_acquire(self.workdir, self.info), step="lock")
            if res.ok:
                self.held = True
                return
            holder = res.stdout.strip() or "an unknown holder"
            if res.exited != 3:
                raise LockedError(f"could not take the deploy lock: {res.tail()}", host=self.remote.name, step="lock")
            if time.monotonic() >= deadline:
                raise LockedError(
                    f"another deploy holds the lock: {holder}", host=self.remote.name, step="lock",
                    hint="wait for it with --wait-lock, or if that run died, `invoke lock-break`")
            if not announced:
                self.say(f"{self.remote.name}: waiting for the deploy lock held by {holder}")
                announced = True
            time.sleep(min(2.0, max(0.1, deadline - time.monotonic())))

    def release(self) -> None:
        if self.held:
            self.remote.run(cmd.lock_release(self.workdir), step="unlock")
            self.held = False

    def __enter__(self) -> "DeployLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.release()
        except Exception:
            if exc[0] is None:
                raise  # otherwise keep the original failure; the lock can be broken with lock-break


def break_lock(inv: Inventory) -> str:
    """`invoke lock-break`: remove the deploy lock on the app host, saying who held it."""
    app = inv.app_host
    with Session(inv, [app]) as s:
        s.connect()
        s.require_all()
        holder = s[app.name].run(cmd.lock_read(app.workdir), step="lock-break").stdout.strip()
        if not holder:
            return f"{app.name}: no deploy lock held"
        res = s[app.name].run(cmd.lock_release(app.workdir), step="lock-break")
        if not res.ok:
            raise UnhealthyError(f"could not remove the deploy lock: {res.tail()}", host=app.name, step="lock-break",
                                 hint="remove the .deploy-lock folder in the remote folder by hand")
        return f"{app.name}: removed the deploy lock held by {holder}"
