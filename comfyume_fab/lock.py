"""The deploy lock: a directory on the app host made with `mkdir` (atomic), holding who
took it, for which task, since when. Released in `finally`, so also on failure and Ctrl-C."""
from __future__ import annotations

import getpass
import os
import socket
import time
from datetime import datetime, timezone

from . import commands as cmd
from .errors import LockedError
from .remote import Remote


def who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


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
