"""The fault matrix (issue 6): each row a real fault in the lab, and what the user sees.

Every row asserts the exit code, ONE `error:` line naming the host, the step and the cause (or, for
`status`, the failing check's line), no traceback, the time to give up against its configured bound
(short timeouts in the test inventories), and what runs afterwards on each host, read from the
hosts' own Docker engines. Every test undoes its fault (`healed` + try/finally) and leaves the
dual-server deployment up and healthy. docs/reliability.md tables these rows.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from comfyume_fab.checks.links import redis_client
from comfyume_fab.errors import ExitCode, UnreachableError
from comfyume_fab.lab import faults, hostsvc
from comfyume_fab.ops.lock import DeployLock
from comfyume_fab.host.ssh.remote import CHUNK
from tests.support import (APP, FAST, HOSTS, NEVER_HEALTHY, SLACK, WORKER, Watched, assert_up, cli, containers,
                           converge, edit_inventory, fast_inventory, invoke, lab_remote, lock_dir, one_error,
                           snapshot, status_checks, stop_containers, workdir_file, worker_exec)

pytestmark = pytest.mark.lab


# ------------------------------------------------------------------ 1. app host unreachable
def test_01_app_host_cut_off_during_start_all_gives_up_at_connect_and_touches_nothing(lab, deployed, tmp_path):
    fast = fast_inventory(lab, tmp_path)
    before = snapshot(lab)
    faults.cut("mello")
    try:
        res, took = cli("start-all", "--hosts", str(fast))
        running_meanwhile = containers(lab, "mello")
    finally:
        faults.reconnect("mello")
    one_error(res, ExitCode.UNREACHABLE, "mello", "connect", "cannot reach 100.64.0.1:22")
    assert took < FAST["connect"] + SLACK
    # the cut host's containers kept running; nothing was started, stopped or locked anywhere
    assert all(c["state"] == "running" for c in running_meanwhile.values())
    assert_up(lab, "mello", same_as=before)
    assert_up(lab, "verda", same_as=before)
    assert not lock_dir(lab).exists()


def test_01_app_host_cut_off_during_status_is_reported_with_everything_else(lab, deployed, tmp_path):
    fast = fast_inventory(lab, tmp_path)
    faults.cut("mello")
    try:
        res, took = cli("status", "--hosts", str(fast))
    finally:
        faults.reconnect("mello")
    assert res.returncode == ExitCode.UNREACHABLE
    checks = status_checks(res)
    mark, detail = checks["reachable-mello"]
    assert mark == "FAIL" and detail.startswith("host mello, step connect: cannot reach 100.64.0.1:22")
    assert "mello: UNREACHABLE  host mello, step connect: cannot reach 100.64.0.1:22" in res.stdout
    # the rest is still reported in the same pass: verda's services, and the link to the lost host
    assert checks["services-verda"][0] == "ok"
    assert checks["redis-from-verda"] == ("FAIL", checks["redis-from-verda"][1])
    assert "no answer from 100.64.0.1:6379 within 2 s" in checks["redis-from-verda"][1]
    # connect (parallel) + verda's Redis and queue-manager checks, each bounded by timeouts.redis
    assert took < FAST["connect"] + 2 * FAST["redis"] + SLACK


# ------------------------------------------------------ 2. worker host lost after the app host came up
def test_02_worker_cut_off_after_the_app_host_came_up_leaves_the_app_host_running(lab, deployed, tmp_path):
    fast = fast_inventory(lab, tmp_path)
    # Make this run really bring the app host up, and really start the worker.
    stop_containers(lab, "mello", APP)
    stop_containers(lab, "verda", WORKER)
    run = Watched("start-all", "--hosts", str(fast), trigger="verda: docker compose up -d",
                  action=lambda _run: faults.cut("verda"))
    try:
        rc = run.wait(timeout=FAST["command"] + FAST["health"] + 60)
        ended = time.monotonic()
    finally:
        faults.reconnect("verda")
    assert run.action_error is None and run.fired_at is not None, run.stderr
    res = subprocess.CompletedProcess([], rc, run.stdout, run.stderr)
    print(f"GIVE-UP start-all, verda cut mid-run: exit {rc} {ended - run.fired_at:.1f} s after the cut")
    # the cut meets `compose up` (or, if that was quicker than the cut, the health wait after it)
    line = one_error(res, ExitCode.UNREACHABLE, "verda", ("compose up", "wait healthy"),
                     "the app host was left running")
    assert re.search(r"the host stopped answering over SSH \(no reply within 3 s\) before `.*` could start"
                     r"|`.*` did not finish within 20 s", line), line
    # the app host came up in this run before the worker was lost ...
    trigger_at = next(i for i, ln in enumerate(run.lines) if "verda: docker compose up -d" in ln)
    assert any("mello: user003 healthy" in ln for ln in run.lines[:trigger_at]), run.stderr
    # ... gave up within the command bound after the cut, and the app host stays up, unlocked
    assert ended - run.fired_at < FAST["command"] + SLACK
    assert_up(lab, "mello")
    assert not lock_dir(lab).exists()
    converge(fast)


# -------------------------------------------------------------- 3. SSH auth refused, host key changed
def test_03_ssh_login_refused_with_the_wrong_key(lab, deployed, tmp_path):
    key = tmp_path / "not-authorized"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    fast = edit_inventory(fast_inventory(lab, tmp_path),
                          lambda d: d["hosts"]["verda"].update(identity_file=str(key)))
    before = snapshot(lab)
    res, took = cli("start-all", "--hosts", str(fast))
    one_error(res, ExitCode.UNREACHABLE, "verda", "connect",
              f"SSH login as cfab-verda@100.64.0.2 was refused: offered {key} (ssh-ed25519 SHA256:",
              "): refused by the server", "add the matching public key to ~cfab-verda/.ssh/authorized_keys")
    assert took < FAST["connect"] + SLACK
    assert_up(lab, "mello", same_as=before)
    assert_up(lab, "verda", same_as=before)
    assert not lock_dir(lab).exists()


def test_03_changed_host_key_is_refused_never_accepted(lab, deployed, tmp_path):
    fast = fast_inventory(lab, tmp_path)
    h = lab.hosts["verda"]
    priv, pub = h.host_key.read_bytes(), Path(str(h.host_key) + ".pub").read_bytes()
    known = lab.known_hosts.read_bytes()
    before = snapshot(lab)
    faults.replace_host_key("verda")
    try:
        res, took = cli("start-all", "--hosts", str(fast))
    finally:
        faults.restore_host_key("verda", priv, pub)
    one_error(res, ExitCode.UNREACHABLE, "verda", "connect",
              f"the SSH host key of 100.64.0.2 has CHANGED since it was recorded in {lab.known_hosts}; "
              "refusing to connect")
    assert took < FAST["connect"] + SLACK
    assert lab.known_hosts.read_bytes() == known  # never auto-updated
    assert_up(lab, "mello", same_as=before)
    assert_up(lab, "verda", same_as=before)


# -------------------------------------------------------------- 4. engine stopped, Compose v2 missing
def test_04_engine_stopped_on_the_worker_host(lab, deployed, tmp_path):
    fast = fast_inventory(lab, tmp_path)
    before = snapshot(lab)
    faults.stop_engine("verda")
    try:
        res, took = cli("start-all", "--hosts", str(fast))
        one_error(res, ExitCode.UNHEALTHY, "verda", "preflight", "the Docker engine is not answering",
                  "start it on the host")
        assert took < FAST["connect"] + SLACK
        st, st_took = cli("status", "--hosts", str(fast))
        assert st.returncode == ExitCode.UNHEALTHY
        checks = status_checks(st)
        assert checks["engine-verda"][0] == "FAIL"
        assert checks["engine-verda"][1].startswith("the Docker engine is not answering")
        assert "engine DOWN" in st.stdout
        assert st_took < FAST["connect"] + FAST["probe"] + SLACK
    finally:
        faults.start_engine("verda")
    assert_up(lab, "mello", same_as=before)  # preflight failed before the lock: nothing touched
    converge(fast)


def test_04_compose_v2_missing_on_the_worker_host(lab, deployed, tmp_path):
    fast = fast_inventory(lab, tmp_path)
    before = snapshot(lab)
    faults.hide_compose("verda")
    try:
        res, took = cli("start-all", "--hosts", str(fast))
    finally:
        faults.restore_compose("verda")
    one_error(res, ExitCode.UNHEALTHY, "verda", "preflight", "Compose v2 (`docker compose`) is not installed",
              "install the docker-compose-plugin package")
    assert took < FAST["connect"] + SLACK
    assert_up(lab, "mello", same_as=before)
    assert_up(lab, "verda", same_as=before)
    assert not lock_dir(lab).exists()


# ------------------------------------------------------------- 5. a service that never becomes healthy
def test_05_worker_that_never_becomes_healthy_is_named_with_its_logs(lab, deployed, tmp_path):
    # A real image whose process never answers the worker's healthcheck (Redis, not ComfyUI).
    hostsvc.docker(lab.hosts["verda"], "tag", "redis:7-alpine", NEVER_HEALTHY)
    fast = fast_inventory(lab, tmp_path)
    broken = fast_inventory(lab, tmp_path, "broken", timeouts={"health": 10}, images={"worker": NEVER_HEALTHY})
    before = snapshot(lab)
    try:
        res, took = cli("start-all", "--hosts", str(broken))
        line = one_error(res, ExitCode.UNHEALTHY, "verda", "wait healthy",
                         "service worker did not become healthy within 10 s", "last log lines:",
                         "Ready to accept connections", "the app host was left running")
        assert "unhealthy" in line or "starting" in line
        # bounded by timeouts.health (10 s) plus the steps before it
        assert took < 10 + 2 * SLACK
        assert_up(lab, "mello", same_as=before)
        assert containers(lab, "verda")["worker"]["state"] == "running"  # said so: it runs, unhealthy
    finally:
        converge(fast)
        hostsvc.docker(lab.hosts["verda"], "rmi", NEVER_HEALTHY, check=False)


def test_05_app_service_that_never_becomes_healthy_names_it_and_what_it_held_back(lab, deployed, tmp_path):
    # queue-manager never healthy: Compose's depends_on chain fails `up -d` itself.
    hostsvc.docker(lab.hosts["mello"], "tag", "redis:7-alpine", NEVER_HEALTHY)
    fast = fast_inventory(lab, tmp_path)
    broken = fast_inventory(lab, tmp_path, "broken", images={"queue_manager": NEVER_HEALTHY})
    try:
        res, took = cli("start-all", "--hosts", str(broken))
        # Only queue-manager's own settings changed (issue 13): it alone is recreated, and it is the
        # one named, with its last log lines; what depends on it keeps running and serving.
        one_error(res, ExitCode.UNHEALTHY, "mello", "wait healthy",
                  "service queue-manager did not become healthy within 20 s: running, unhealthy",
                  "last log lines:", "Ready to accept connections")
        assert took < FAST["health"] + FAST["connect"] + SLACK
        now = containers(lab, "mello")
        assert now["redis"]["state"] == "running"  # nothing lost
        assert now["admin"]["state"] == "running" and now["user001"]["state"] == "running"
        assert "worker" in containers(lab, "verda")  # the worker stage never ran: the worker is untouched
    finally:
        converge(fast)
        hostsvc.docker(lab.hosts["mello"], "rmi", NEVER_HEALTHY, check=False)
    assert_up(lab, "mello")


# ------------------------------------------------------------------------- 6. a crash-looping worker
def test_06_crash_looping_worker_shows_restarts_and_last_log_lines(lab, deployed, tmp_path):
    fast = fast_inventory(lab, tmp_path)
    before = snapshot(lab)
    worker_exec(lab, "touch", "/tmp/standin-crash")
    os.kill(containers(lab, "verda")["worker"]["pid"], signal.SIGKILL)  # a crash (as the OOM killer would)
    try:
        deadline = time.monotonic() + 30
        while containers(lab, "verda")["worker"]["restarts"] < 3:
            assert time.monotonic() < deadline, "the worker never crash-looped"
            time.sleep(0.3)
        res, took = cli("status", "--hosts", str(fast))
        assert res.returncode == ExitCode.UNHEALTHY
        mark, detail = status_checks(res)["services-verda"]
        assert mark == "FAIL"
        assert re.search(r"CRASH LOOP: worker \(\d+ restarts\)", detail), detail
        assert "worker last log lines: " in detail and "crash requested by /tmp/standin-crash" in detail
        assert re.search(r"^\s+worker\s+\S+\s+\S+\s+\d+\s+.*<-- CRASH LOOP$", res.stdout, re.M), res.stdout
        assert took < FAST["connect"] + FAST["probe"] + SLACK
        start, start_took = cli("start-all", "--hosts", str(fast))
        line = one_error(start, ExitCode.UNHEALTHY, "verda", ("wait healthy", "compose up"), "service worker ",
                         "crash requested by /tmp/standin-crash", "the app host was left running")
        assert re.search(r"service worker (is crash-looping \(\d+ restarts\)|failed while `docker compose up -d` "
                         r"waited for it): restarting", line) or "is crash-looping" in line, line
        assert start_took < FAST["health"] + SLACK
        assert_up(lab, "mello", same_as=before)
    finally:
        hostsvc.docker(lab.hosts["verda"], "rm", "-f", containers(lab, "verda")["worker"]["id"], check=False)
    converge(fast)


# ---------------------------------------------------- 7. Redis down, password mismatch, loopback bind
def test_07_redis_down_is_diagnosed_and_the_next_start_all_brings_it_back(lab, deployed, tmp_path):
    fast = fast_inventory(lab, tmp_path)
    before = snapshot(lab)
    stop_containers(lab, "mello", ["redis"])
    res, took = cli("status", "--hosts", str(fast))
    assert res.returncode == ExitCode.UNHEALTHY
    checks = status_checks(res)
    assert checks["services-mello"][0] == "FAIL" and "redis exited" in checks["services-mello"][1]
    assert "redis last log lines: " in checks["services-mello"][1]
    assert checks["redis-from-verda"] == (
        "FAIL", "nothing accepts connections on 100.64.0.1:6379 as seen from verda: Redis on mello is bound to "
        "127.0.0.1 or not running; set REDIS_BIND_IP to the tailnet address 100.64.0.1 (the planner does this "
        "for a remote worker) and rerun start-all")
    assert checks["queue"][0] == "FAIL"
    # the queue manager says it lost Redis, or (its Redis client waiting on a name that no longer
    # resolves) does not answer in time; either way users' jobs fail at submission
    qm_mark, qm_detail = checks["queue-manager-mello"]
    assert qm_mark == "FAIL" and ("the queue manager lost Redis" in qm_detail or "within 2 s" in qm_detail)
    assert checks["job-probe"][0] == "FAIL" and checks["job-probe"][1].startswith("users' jobs fail at submission")
    # the job probe waits for the queue manager's answer, bounded by timeouts.probe
    assert took < FAST["connect"] + 2 * FAST["redis"] + FAST["probe"] + SLACK
    assert_up(lab, "verda", same_as=before)  # the worker keeps running
    converge(fast)
    assert_up(lab, "mello", same_as=before)  # the same Redis container started again: its data kept


def test_07_redis_password_mismatch_on_the_worker_host(lab, deployed, tmp_path):
    fast = fast_inventory(lab, tmp_path)
    env = workdir_file(lab, "verda", ".env")
    original = env.read_text()
    assert "REDIS_PASSWORD=" in original
    env.write_text(re.sub(r"(?m)^REDIS_PASSWORD=.*$", "REDIS_PASSWORD='not-the-password'", original))
    try:
        res, took = cli("status", "--hosts", str(fast))
        # the real worker talks HTTP only to the queue manager: jobs still complete, so the broken
        # link the design requires degrades the verdict, naming the link and the cause
        assert res.returncode == 0 and "comfyume status: DEGRADED" in res.stdout
        mark, detail = status_checks(res)["redis-from-verda"]
        assert mark == "warn" and detail.startswith("DEGRADED: the link verda -> Redis fails (Redis at 100.64.0.1:6379 "
                                                    "rejected the password that verda uses: REDIS_PASSWORD differs "
                                                    "between the hosts; rerun start-all to upload the same secret "
                                                    "everywhere)")
        assert took < FAST["connect"] + 2 * FAST["redis"] + SLACK
        assert "not-the-password" not in res.stdout + res.stderr
        # the advice works: start-all replaces the hand-edited file
        converge(fast)
        assert env.read_text() == original
    finally:
        if env.read_text() != original:
            env.write_text(original)
    assert invoke("status", "--no-probe", "--hosts", str(fast)).returncode == 0


def test_07_redis_bound_to_loopback_with_a_remote_worker(lab, deployed, tmp_path):
    fast = fast_inventory(lab, tmp_path)
    env = workdir_file(lab, "mello", ".env")
    original = env.read_text()
    assert "REDIS_BIND_IP='100.64.0.1'" in original
    env.write_text(original.replace("REDIS_BIND_IP='100.64.0.1'", "REDIS_BIND_IP='127.0.0.1'"))
    up_redis = "cd comfyume && docker compose -p comfyume --env-file .env -f app.yml -f frontends.yml up -d redis"
    try:
        with lab_remote(fast, "mello") as mello:  # by hand on the host, as someone "fixing" things would
            assert mello.run(up_redis, timeout=60).ok
        res, took = cli("status", "--hosts", str(fast))
        assert res.returncode == ExitCode.UNHEALTHY
        checks = status_checks(res)
        assert checks["redis-bind-mello"] == (
            "FAIL", "Redis is published on 127.0.0.1:6379 (loopback) but a worker runs on another host: set "
            "REDIS_BIND_IP to the tailnet address (start-all does this for dual-server)")
        assert checks["redis-from-verda"][0] == "warn"  # jobs complete: the link degrades, redis-bind fails
        assert checks["redis-from-verda"][1].startswith("DEGRADED: the link verda -> Redis fails (nothing accepts "
                                                        "connections on 100.64.0.1:6379 as seen from verda: Redis on "
                                                        "mello is bound to 127.0.0.1")
        assert took < FAST["connect"] + 2 * FAST["redis"] + SLACK
        converge(fast)  # start-all re-uploads the .env and recreates Redis on the tailnet address
        assert env.read_text() == original
        ports = hostsvc.docker(lab.hosts["mello"], "port", containers(lab, "mello")["redis"]["id"], "6379").stdout
        assert ports.strip() == "100.64.0.1:6379"
    finally:
        if env.read_text() != original:
            env.write_text(original)
            with lab_remote(fast, "mello") as mello:
                mello.run(up_redis, timeout=60)
    assert_up(lab, "mello")


# ------------------------------------------------------ 8. tailnet cut between worker and app host
def test_08_tailnet_partition_between_worker_and_app_host(lab, deployed, tmp_path):
    fast = fast_inventory(lab, tmp_path)
    before = snapshot(lab)
    faults.partition("verda", "mello")  # both stay reachable from the operator
    try:
        res, took = cli("status", "--hosts", str(fast))
        assert res.returncode == ExitCode.UNHEALTHY
        checks = status_checks(res)
        assert checks["reachable-mello"][0] == "ok" and checks["reachable-verda"][0] == "ok"
        assert checks["redis-from-verda"] == (
            "FAIL", "no answer from 100.64.0.1:6379 within 2 s as seen from verda: the tailnet or a firewall "
            "between the hosts drops the traffic (is tailscale up on both, and did the app host's tailnet "
            "address change?)")
        assert checks["queue-manager-from-verda"][0] == "FAIL"
        assert took < FAST["connect"] + 2 * FAST["redis"] + SLACK
        start, start_took = cli("start-all", "--hosts", str(fast))
        one_error(start, ExitCode.UNHEALTHY, "verda", "redis from worker",
                  "no answer from 100.64.0.1:6379 within 2 s as seen from verda",
                  "the app host was left running; fix this and rerun start-all")
        assert start_took < FAST["connect"] + FAST["redis"] + SLACK
    finally:
        faults.heal_network("verda")
    assert_up(lab, "mello", same_as=before)
    assert_up(lab, "verda", same_as=before)  # the worker was never stopped or recreated
    assert not lock_dir(lab).exists()


# ------------------------------------------------------------ 9. the worker's ComfyUI: 500 or a hang
@pytest.mark.parametrize("fault", ["500", "hang"])
def test_09_worker_comfyui_failing_fails_the_probe_within_its_bound(lab, deployed, tmp_path, fault):
    fast = fast_inventory(lab, tmp_path)
    before = snapshot(lab)
    worker_exec(lab, "sh", "-c", f"echo {fault} > /tmp/standin-fault")
    try:
        res, took = cli("status", "--hosts", str(fast))
        assert res.returncode == ExitCode.UNHEALTHY
        mark, detail = status_checks(res)["inference-verda"]
        assert mark == "FAIL" and detail.startswith("the worker's ComfyUI on verda (127.0.0.1:8300) ")
        start, start_took = cli("start-all", "--hosts", str(fast))
        line = one_error(start, ExitCode.UNHEALTHY, "verda", "inference probe",
                         "the worker's ComfyUI on verda (127.0.0.1:8300)",
                         "the app host and the worker were left running")
        if fault == "hang":
            assert "gave no answer within 5 s" in detail and "gave no answer within 5 s" in line
        else:
            for text in (detail, line):
                # the probe reads the queue first (issue 13): the 500 shows there, as a server error
                assert "failed with a server error: ComfyUI answered GET /queue with HTTP 500" in text
        assert took < FAST["connect"] + FAST["probe"] + SLACK
        assert start_took < FAST["connect"] + FAST["probe"] + SLACK
    finally:
        worker_exec(lab, "rm", "-f", "/tmp/standin-fault")
    assert_up(lab, "mello", same_as=before)
    assert_up(lab, "verda", same_as=before)
    assert not lock_dir(lab).exists()


# --------------------------------------------------------------- 10. the deploy lock, and Ctrl-C
def test_10_second_deploy_while_the_lock_is_held_is_refused_with_the_holder(lab, deployed, tmp_path):
    fast = fast_inventory(lab, tmp_path)
    before = snapshot(lab)
    with lab_remote(fast, "mello") as mello:
        with DeployLock(mello, "comfyume", "start-all", "cafe1234"):
            res, took = cli("start-all", "--hosts", str(fast))
            line = one_error(res, ExitCode.LOCKED, "mello", "lock", "another deploy holds the lock: ",
                             "task=start-all", "rev=cafe1234", "wait for it with --wait-lock", "lock-break")
            assert re.search(r"lock: \S+@\S+ task=start-all pid=\d+ since=\S+Z rev=cafe1234", line), line
            assert took < FAST["connect"] + SLACK
            stop, _ = cli("stop-all", "--hosts", str(fast))
            one_error(stop, ExitCode.LOCKED, "mello", "lock", "another deploy holds the lock: ")
            assert snapshot(lab) == before
    assert not lock_dir(lab).exists()
    # --wait-lock waits (bounded by timeouts.lock_wait) and goes on once the holder is done
    with lab_remote(fast, "mello") as mello:
        held = DeployLock(mello, "comfyume", "start-all", "cafe1234")
        held.acquire()
        releaser = threading.Timer(3.0, held.release)
        releaser.start()
        try:
            res, took = cli("start-all", "--wait-lock", "--hosts", str(fast))
        finally:
            releaser.join()
    assert res.returncode == 0, res.stderr
    assert "for the deploy lock held by" in res.stderr and "waiting (at most 30 s)" in res.stderr
    assert 3.0 <= took < FAST["lock_wait"]
    assert snapshot(lab) == before


def test_10_ctrl_c_in_the_middle_of_start_all_releases_the_lock_and_the_rerun_converges(lab, deployed, tmp_path):
    fast = fast_inventory(lab, tmp_path)
    stop_containers(lab, "mello", APP)  # so that the app host stage has real work to interrupt
    run = Watched("start-all", "--hosts", str(fast), trigger="mello: docker compose up -d",
                  action=lambda me: me.proc.send_signal(signal.SIGINT))
    rc = run.wait(timeout=60)
    ended = time.monotonic()
    assert run.fired_at is not None and run.action_error is None, run.stderr
    assert rc == ExitCode.INTERRUPTED, run.stderr
    assert "Traceback" not in run.stderr + run.stdout
    assert ("start-all: interrupted; the deploy lock on mello was held by this run and has been released; "
            "rerun to converge") in run.stderr
    print(f"GIVE-UP start-all, SIGINT: exit {rc} {ended - run.fired_at:.1f} s after the signal")
    assert ended - run.fired_at < SLACK
    assert not lock_dir(lab).exists()
    converge(fast)
    assert_up(lab, "mello")
    assert_up(lab, "verda")


# ----------------------------------------------------------- 11. a connection dropped mid-upload
def test_11_upload_dropped_mid_transfer_leaves_the_previous_env_file_in_use(lab, deployed, tmp_path):
    fast = fast_inventory(lab, tmp_path)
    env = workdir_file(lab, "mello", ".env")
    original, stat = env.read_bytes(), env.stat()
    big = b"# a new env file, bigger than one SFTP chunk\n" + b"PADDING=" + b"x" * (8 * CHUNK) + b"\n"
    sent = []
    remote = lab_remote(fast, "mello").open()

    def drop_after_first_chunk(n: int) -> None:
        sent.append(n)
        if len(sent) == 2:
            remote.transport.close()  # the connection dies mid-transfer
    try:
        with pytest.raises(UnreachableError) as err:
            remote.put("comfyume/.env", big, on_chunk=drop_after_first_chunk)
    finally:
        remote.close()
    assert str(err.value).startswith("host mello, step upload: uploading comfyume/.env failed: ")
    assert "the previous file (if any) is still the one in use" in str(err.value)
    assert len(sent) == 2  # really mid-transfer: 2 of 9 chunks were written
    assert env.read_bytes() == original  # the file in use is untouched, same inode
    assert env.stat().st_ino == stat.st_ino
    partial = list(env.parent.glob(".env.part-*"))
    assert partial
    for p in partial:  # what was left is a side file, private, never the one Compose reads
        assert (p.stat().st_mode & 0o777) == 0o600 and 0 < p.stat().st_size < len(big)
    res = invoke("status", "--no-probe", "--hosts", str(fast))
    assert res.returncode == 0, res.stdout
    assert "deployed config matches the local one" in res.stdout
    res = invoke("start-all", "--hosts", str(fast))  # the next deploy sweeps the side file away
    assert res.returncode == 0, res.stderr
    assert not list(env.parent.glob(".env.part-*"))


# ------------------------------------------------------- 12. Redis data survives stop-all, start-all
def test_12_redis_data_survives_stop_all_then_start_all(lab, deployed, tmp_path):
    fast = fast_inventory(lab, tmp_path)
    password = lab.secrets["REDIS_PASSWORD"]
    value = os.urandom(8).hex()

    def redis(fn):
        with lab_remote(fast, "mello") as mello, mello.tunnel("100.64.0.1", 6379, 3) as sock:
            return fn(redis_client(sock, password, 3))
    assert redis(lambda r: r.set("cfab-test:survives", value))
    try:
        for down in (False, True):  # stopped, then removed (`--down`): the volume is kept either way
            res, _ = cli("stop-all", *(["--down"] if down else []), "--hosts", str(fast))
            assert res.returncode == 0, res.stderr
            assert res.stdout.strip() == "stop-all: stopped mello, verda"
            for name in HOSTS:
                left = containers(lab, name)
                assert (left == {}) if down else all(c["state"] == "exited" for c in left.values()), left
            volumes = hostsvc.docker(lab.hosts["mello"], "volume", "ls", "--format", "{{.Name}}").stdout.split()
            assert "comfyume_redis-data" in volumes
            converge(fast)
            assert redis(lambda r: r.get("cfab-test:survives")) == value
    finally:
        if invoke("status", "--no-probe", "--hosts", str(fast)).returncode != 0:
            converge(fast)
        redis(lambda r: r.delete("cfab-test:survives"))
