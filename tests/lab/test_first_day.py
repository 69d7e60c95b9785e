"""The first day against the lab (issue 23): the obvious Redis check works (`exec mello redis --
redis-cli ping` answers PONG: the container has REDISCLI_AUTH), and `lock` shows who holds the
deploy lock without taking it, read on mello's own file system; start-all says each thing once, in
plan order, and what happened to each service."""
from __future__ import annotations

import pytest

from tests.support import invoke
from comfyume_fab.lab import hostsvc
from tests.support import APP, containers, fake_lock, lock_dir, remove, status_checks, stop_containers

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


def test_start_all_says_each_thing_once_in_plan_order_and_what_happened(lab, deployed):
    """Issue 23 item 5: a stopped frontend is started again; every service's "healthy" line once,
    each warning once, the summary's services in plan order with what happened to each."""
    stop_containers(lab, "mello", ["user002"])
    before = containers(lab, "mello")
    res = invoke("start-all", "--hosts", str(deployed))
    assert res.returncode == 0, res.stderr[-3000:]
    healthy = [ln.split("] ", 1)[1] for ln in res.stderr.splitlines() if " healthy (" in ln]
    names = [ln.split(" healthy (")[0] for ln in healthy]
    assert len(names) == len(set(names)), healthy
    warnings = [ln.split("WARNING: ", 1)[1] for ln in res.stderr.splitlines() if "WARNING: " in ln]
    assert len(warnings) == len(set(warnings)), warnings
    assert all(w not in res.stdout for w in warnings), res.stdout
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("  mello: "))
    # what the summary says happened is what happened: the same container started, or a new one
    same = containers(lab, "mello")["user002"]["id"] == before["user002"]["id"]
    assert f"{'started' if same else 'recreated'} user002" in line and "(re)created" not in line, line
    unchanged = line.split("unchanged ", 1)[1].split(", ")
    assert unchanged == [svc for svc in APP if svc != "user002"], line  # plan order


def test_a_running_workers_gone_image_warns_and_goes_on_then_copy_image_fixes_it(lab, deployed):
    """Issue 23 item 3: the worker's image removed from verda while the worker runs: status shows it,
    start-all (nothing to recreate there) warns and goes on (exit 0), and `copy-image` from mello,
    which the warning names, puts it back."""
    verda = lab.hosts["verda"]
    image = hostsvc.docker(verda, "inspect", "--format", "{{.Config.Image}}", containers(lab, "verda")["worker"]["id"]
                           ).stdout.strip()
    assert hostsvc.docker(lab.hosts["mello"], "image", "inspect", image, check=False).returncode == 0, image
    hostsvc.docker(verda, "rmi", "-f", image)
    try:
        res = invoke("status", "--hosts", str(deployed))
        checks = status_checks(res)
        assert checks["images-verda"][0] == "warn", res.stdout
        assert f"worker runs {image}, which is no longer on verda" in checks["images-verda"][1]
        res = invoke("start-all", "--hosts", str(deployed))
        assert res.returncode == 0, res.stderr[-3000:]
        assert f"WARNING: verda has no image {image} any more, but nothing there is to be (re)created" in res.stderr
        assert f"copy-image --source mello --target verda --image {image}" in res.stderr
    finally:
        res = invoke("copy-image", "--hosts", str(deployed), "--source", "mello", "--target", "verda", "--image", image)
        assert res.returncode == 0, res.stderr[-2000:]
    assert "images-verda" not in status_checks(invoke("status", "--hosts", str(deployed)))


def test_a_mistyped_redis_password_is_named_and_never_deployed_without_yes(lab, deployed):
    """Issue 23 item 1: REDIS_PASSWORD mistyped (here in the environment, which wins over the secrets
    file): status names the secret and its source instead of "run start-all to apply"; start-all
    without a terminal and without --yes refuses in one sentence (exit 2) and touches nothing."""
    typo = lab.secrets["REDIS_PASSWORD"] + "x"
    env = {"REDIS_PASSWORD": typo}
    before = containers(lab, "mello")
    res = invoke("status", "--hosts", str(deployed), env=env)
    checks = status_checks(res)
    assert res.returncode == 4, res.stdout
    assert checks["queue"][0] == "FAIL" and checks["queue"][1].startswith(
        "Redis on mello refuses the local REDIS_PASSWORD (from the environment variable REDIS_PASSWORD): it differs "
        "from the one Redis runs with"), checks["queue"]
    assert "run start-all to apply" not in checks["config-mello"][1], checks["config-mello"]
    assert "REDIS_PASSWORD from the environment variable REDIS_PASSWORD differs" in checks["config-mello"][1]
    res = invoke("diff", "--hosts", str(deployed), env=env)
    assert res.returncode == 0 and ("WARNING: REDIS_PASSWORD from the environment variable REDIS_PASSWORD differs "
                                    "from the value the running redis") in res.stderr, res.stderr
    res = invoke("start-all", "--hosts", str(deployed), env=env)
    assert res.returncode == 2, res.stderr[-3000:]
    assert res.stderr.strip().splitlines()[-1:] == ["start-all: not changing REDIS_PASSWORD: the value from the environment variable "
                      "REDIS_PASSWORD differs from the one Redis on mello runs with, and changing it recreates Redis "
                      "(queue manager and workers reconnect); nothing was touched: fix the environment variable "
                      "REDIS_PASSWORD if that value is a typo, or rerun with --yes to change it"], res.stderr
    assert typo not in res.stdout + res.stderr
    assert {s: c["id"] for s, c in containers(lab, "mello").items()} == {s: c["id"] for s, c in before.items()}
    assert not lock_dir(lab).exists()
