"""`each`/`gather`: results keyed by host in the order given, failures kept apart (no SSH)."""
from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from comfyume_fab.errors import UnhealthyError
from comfyume_fab.host.session import each, gather

HOSTS = [SimpleNamespace(name=n) for n in ("mello", "verda", "verda-2")]


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
