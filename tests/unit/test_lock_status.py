"""The deploy lock seen by a user (issue 23, item 7): the `lock` task's rendering of the holder
(who, which command, since when, live or stale); after Ctrl-C the message says definitively
whether this run held the lock and released it; lock messages name the command the user ran with.

The lock's command lines run for real in a local bash, a folder in tmp standing for the app
host's remote folder: `LocalRemote` is a stand-in for `host.ssh.Remote` (no SSH here) that speaks
its contract for `run(command, step=, timeout=)` -> `Result`."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from invoke.exceptions import Exit

from comfyume_fab import taskrun
from comfyume_fab.host.actions import lock as lockact
from comfyume_fab.host.facts import lock as lockfacts
from comfyume_fab.host.ssh.remote import Result
from comfyume_fab.ops import lock as lockmod


@dataclass
class _Target:
    command_timeout: float = 10.0


class LocalRemote:
    """STAND-IN for host.ssh.Remote: runs the command in a local bash in `home` (the login home)."""

    def __init__(self, home: Path, name: str = "mello"):
        self.home, self.name, self.target = home, name, _Target()

    def run(self, command: str, step: str = "", timeout: float | None = None) -> Result:
        t0 = time.monotonic()
        res = subprocess.run(["bash", "-c", command], cwd=self.home, capture_output=True, text=True, timeout=10)
        return Result(command, res.stdout, res.stderr, res.returncode, time.monotonic() - t0)


def test_the_lock_task_shows_the_holder_live_or_stale_without_taking_it(tmp_path):
    from comfyume_fab.present.reports import lock_text
    info = "ana@laptop task=start-all pid=4242 since=2026-12-03T09:00:00Z rev=cafe1234abcd"
    assert subprocess.run(["bash", "-c", lockact.lock_acquire("comfyume", info, "tok")], cwd=tmp_path).returncode == 0
    out = LocalRemote(tmp_path).run(lockfacts.lock_read("comfyume")).stdout
    seen = lockfacts.parse_lock(out)
    text = lock_text("mello", seen, 600, "comfyume-fab")
    assert text.startswith("mello: the deploy lock is held by ana@laptop (task start-all, pid 4242, rev cafe1234abcd) "
                           "since 2026-12-03T09:00:00Z, ")
    assert text.endswith(": live (younger than timeouts.lock_wait 600 s; `comfyume-fab start-all --wait-lock` "
                         "waits for it)")
    stale = lock_text("mello", lockfacts.LockSeen(3600, info), 600, "invoke")
    assert stale.endswith("3600 s ago: STALE (older than timeouts.lock_wait 600 s; that run probably died: "
                          "`invoke lock-break` removes it)")
    assert lock_text("mello", None, 600) == "mello: no deploy lock held"
    assert "no info file" in lock_text("mello", lockfacts.LockSeen(5, ""), 600)
    assert (tmp_path / "comfyume" / ".deploy-lock" / "token").read_text() == "tok\n"  # reading left it as it was


def _interrupt_soon(after: float) -> threading.Timer:
    timer = threading.Timer(after, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    return timer


def test_ctrl_c_while_waiting_for_the_lock_says_it_was_not_taken_and_who_holds_it(tmp_path, capsys):
    other = "bo@desk task=stop-all pid=7 since=2026-12-03T09:00:00Z rev=beef"
    subprocess.run(["bash", "-c", lockact.lock_acquire("comfyume", other, "theirs")], cwd=tmp_path, check=True)
    said = []
    with pytest.raises(Exit) as info:
        with taskrun.reported(task="start-all"):
            timer = _interrupt_soon(0.5)
            try:
                with lockmod.DeployLock(LocalRemote(tmp_path), "comfyume", "start-all", "rev", wait=30,
                                        say=said.append, stale_after=600):
                    pytest.fail("the lock is someone else's")
            finally:
                timer.cancel()
    err = capsys.readouterr().err
    assert info.value.code == 130
    assert any("waiting (at most 30 s) for the deploy lock held by bo@desk" in m for m in said), said
    assert ("start-all: interrupted; the deploy lock on mello was not taken (this run was still waiting for it; "
            "bo@desk task=stop-all") in err and "still holds it); rerun to converge" in err, err
    assert "(if held)" not in err
    assert (tmp_path / "comfyume" / ".deploy-lock" / "token").read_text() == "theirs\n"  # theirs is untouched


def test_ctrl_c_after_the_lock_was_held_says_it_was_released(tmp_path, capsys):
    said = []
    with pytest.raises(Exit) as info:
        with taskrun.reported(task="stop-all"):
            with lockmod.DeployLock(LocalRemote(tmp_path), "comfyume", "stop-all", "rev", say=said.append):
                assert (tmp_path / "comfyume" / ".deploy-lock").is_dir()
            raise KeyboardInterrupt  # a later step (after the lock's block ended and released it)
    err = capsys.readouterr().err
    assert info.value.code == 130 and said == ["mello: deploy lock released"]
    assert ("stop-all: interrupted; the deploy lock on mello was held by this run and has been released; "
            "rerun to converge") in err
    assert not (tmp_path / "comfyume" / ".deploy-lock").exists()


def test_ctrl_c_before_the_lock_step_and_in_a_task_without_a_lock(capsys):
    for task, expected in (("start-all", "start-all: interrupted; the deploy lock was not taken by this run; "
                                         "rerun to converge"),
                           ("status", "status: interrupted\n")):
        with pytest.raises(Exit):
            with taskrun.reported(task=task):
                raise KeyboardInterrupt
        assert expected in capsys.readouterr().err


def test_lock_messages_name_the_command_the_user_ran_with(tmp_path, monkeypatch):
    subprocess.run(["bash", "-c", lockact.lock_acquire("comfyume", "x task=start-all", "theirs")], cwd=tmp_path,
                   check=True)
    for argv0, name in (("/usr/local/bin/comfyume-fab", "comfyume-fab"), ("/repo/.venv/bin/invoke", "invoke")):
        monkeypatch.setattr(sys, "argv", [argv0, "start-all"])
        with pytest.raises(lockmod.LockedError) as info:
            lockmod.DeployLock(LocalRemote(tmp_path), "comfyume", "start-all", "rev").acquire()
        assert f"if that run died, `{name} lock-break`" in info.value.sentence()
        assert ("comfyume-fab" if name == "invoke" else "invoke lock-break") not in info.value.sentence()
