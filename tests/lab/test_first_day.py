"""The first day against the lab (issue 23): the obvious Redis check works (`exec mello redis --
redis-cli ping` answers PONG: the container has REDISCLI_AUTH), and `lock` shows who holds the
deploy lock without taking it, read on mello's own file system."""
from __future__ import annotations

import pytest

from tests.support import invoke
from tests.support import fake_lock, lock_dir, remove

pytestmark = pytest.mark.lab


def test_redis_cli_ping_in_the_redis_container_answers_pong(lab, deployed):
    res = invoke("exec", "mello", "redis", "--hosts", str(deployed), "--", "redis-cli", "ping")
    assert res.returncode == 0 and res.stdout.strip() == "PONG", (res.stdout, res.stderr)
    assert lab.secrets["REDIS_PASSWORD"] not in res.stdout + res.stderr


def test_lock_shows_the_holder_without_taking_it(lab, deployed):
    path = fake_lock(lab, "ana@laptop task=start-all pid=4242 since=2026-12-03T09:00:00Z rev=cafe1234")
    try:
        res = invoke("lock", "--hosts", str(deployed))
        assert res.returncode == 0, res.stderr
        assert res.stdout.startswith("mello: the deploy lock is held by ana@laptop (task start-all, pid 4242, "
                                     "rev cafe1234) since 2026-12-03T09:00:00Z, "), res.stdout
        assert ": live (younger than timeouts.lock_wait" in res.stdout
        assert (path / "info").exists()  # only read
    finally:
        remove(path)
    res = invoke("lock", "--hosts", str(deployed))
    assert res.returncode == 0 and res.stdout.strip() == "mello: no deploy lock held", res
    assert not lock_dir(lab).exists()
