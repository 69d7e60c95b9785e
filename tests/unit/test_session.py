"""`each`/`gather`: results keyed by host in the order given, failures kept apart (no SSH)."""
from __future__ import annotations

import os
import signal
import threading
import time
from types import SimpleNamespace

import pytest

from comfyume_fab.errors import UnhealthyError
from comfyume_fab.host.session import each, gather

HOSTS = [SimpleNamespace(name=n) for n in ("mello", "verda", "verda-2")]


def H(name: str) -> SimpleNamespace:
    return SimpleNamespace(name=name)


def test_each_keys_results_by_host_and_separates_failures():
    def fn(h):
        if h.name == "verda":
            raise UnhealthyError("boom", host=h.name)
        return h.name.upper()
    res = each(fn, HOSTS)
    assert list(res) == ["mello", "verda-2"] and res["verda-2"] == "VERDA-2"
    assert list(res.failed) == ["verda"] and not res.ok


def test_each_runs_in_parallel():
    barrier = threading.Barrier(3, timeout=5)  # deadlocks (BrokenBarrierError) unless all 3 run at once
    res = each(lambda h: barrier.wait() is not None, HOSTS)
    assert res.ok and len(res) == 3


def test_gather_raises_the_first_failure_with_the_hint():
    def fn(h):
        raise UnhealthyError(f"{h.name} broke", host=h.name, hint="look")
    with pytest.raises(UnhealthyError) as info:
        gather(fn, HOSTS, hint="the app host was left running")
    assert info.value.host == "mello" and info.value.hint == "look; the app host was left running"


def test_gather_returns_every_result_in_order():
    assert list(gather(lambda h: len(h.name), HOSTS).values()) == [5, 5, 7]


def _interrupting(second_ctrl_c: bool):
    """A host that sends Ctrl-C to this process once both hosts are at work, and one whose work
    ends when `release` is set (by a timer, or never when a second Ctrl-C is to stop the wait)."""
    release, finished = threading.Event(), threading.Event()
    started = threading.Barrier(2, timeout=5)

    def fn(h):
        started.wait()
        if h.name == "a":
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.3)
            if second_ctrl_c:
                os.kill(os.getpid(), signal.SIGINT)
            else:
                release.set()
            return 1
        release.wait(30)
        finished.set()
        return 2
    return fn, release, finished


def test_ctrl_c_during_a_parallel_step_waits_for_the_running_hosts_then_raises():
    """What the caller does after a Ctrl-C (release the deploy lock) comes after the commands
    already running on the other hosts."""
    fn, release, finished = _interrupting(second_ctrl_c=False)
    try:
        with pytest.raises(KeyboardInterrupt):
            each(fn, [H("a"), H("b")])
        assert finished.is_set()
    finally:
        release.set()


def test_a_second_ctrl_c_stops_waiting_for_the_other_hosts():
    fn, release, finished = _interrupting(second_ctrl_c=True)
    try:
        with pytest.raises(KeyboardInterrupt):
            each(fn, [H("a"), H("b")])
        assert not finished.is_set()
    finally:
        release.set()


def test_ctrl_c_as_the_threads_end_is_a_keyboardinterrupt_never_another_error():
    """An interrupt landing while the finished threads are joined must come out as the Ctrl-C
    (exit 130), not as CPython's "release unlocked lock" from inside Thread.join."""
    for _ in range(40):
        def fn(h):
            if h.name == "b":
                os.kill(os.getpid(), signal.SIGINT)
            return h.name
        try:
            each(fn, [H("a"), H("b"), H("c")])
        except KeyboardInterrupt:
            pass
        else:  # the signal is handled in the main thread once each() has returned: give it its turn
            with pytest.raises(KeyboardInterrupt):
                for _ in range(1000):
                    time.sleep(0.001)
