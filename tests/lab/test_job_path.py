"""The path a user's job takes, proven on the lab (stand-ins held to the real contracts):
the job probe through the queue manager, health by the queue manager's own /health body,
Redis from an HTTP-only worker degrading (not failing) while jobs complete, a probe behind
slow users' jobs, a held worker said to be stopped, and poll_interval refused unless whole."""
from __future__ import annotations

import json
import time
import urllib.request

from comfyume_fab.checks.jobprobe import PROBE_USER
from comfyume_fab.errors import ExitCode
from comfyume_fab.lab import faults, hostsvc
from tests.support import QM, cli, containers, fast_inventory, invoke, job_status, status_checks, submit_job



def status_json(inv) -> tuple[int, dict, dict]:
    res = invoke("status", "--json", "--hosts", str(inv))
    assert "Traceback" not in res.stdout + res.stderr, res.stderr
    data = json.loads(res.stdout)
    return res.returncode, data, {c["name"]: c for c in data["checks"]}


def redis_cli(lab, *args: str) -> str:
    """redis-cli in mello's Redis container; the password from the container's own environment."""
    rid = containers(lab, "mello")["redis"]["id"]
    script = 'REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli --no-auth-warning "$@"'
    return hostsvc.docker(lab.hosts["mello"], "exec", rid, "sh", "-c", script, "sh", *args).stdout


def probe_traces(lab, job_id: str | None) -> list[str]:
    keys = [k for k in redis_cli(lab, "--scan", "--pattern", f"user:{PROBE_USER}*").split() if k]
    if job_id:
        keys += [k for k in redis_cli(lab, "--scan", "--pattern", f"job:{job_id}").split() if k]
        for q in ("pending", "running", "completed", "failed"):
            if redis_cli(lab, "ZSCORE", f"queue:{q}", job_id).strip():
                keys.append(f"queue:{q}")
    return keys


def slow(seconds: float, color: int) -> dict:
    """~`seconds` of work on the stand-in worker (ImageBlur waits w*h*radius / 2e6 s)."""
    radius = max(1, round(seconds * 2))
    return {"1": {"class_type": "EmptyImage", "inputs": {"width": 1000, "height": 1000, "batch_size": 1,
                                                         "color": color}},
            "2": {"class_type": "ImageBlur", "inputs": {"image": ["1", 0], "blur_radius": radius, "sigma": 1.0}},
            "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "job-path-slow"}}}


def test_job_probe_completes_and_leaves_nothing_behind(lab, deployed, tmp_path):
    code, data, checks = status_json(fast_inventory(lab, tmp_path))
    probe = checks["job-probe"]
    assert code == 0 and data["verdict"] == "healthy", probe
    assert (probe["ok"], probe["stage"], probe["host"], probe["http_status"]) == (True, "completed", "mello", 201)
    assert probe["detail"].startswith("a user's job completes: worker-1 took the probe job")
    assert probe["job_id"] and probe["outputs"]
    assert checks["queue-manager-mello"]["ok"] and checks["queue-manager-mello"]["redis_connected"] is True
    assert probe_traces(lab, probe["job_id"]) == []  # nothing left in Redis or the queues


def test_queue_manager_cut_from_redis_names_the_cause_not_the_heartbeat(lab, deployed, tmp_path):
    inv = fast_inventory(lab, tmp_path)
    qm = containers(lab, "mello")["queue-manager"]["id"]
    faults.cut_container_from_port("mello", qm, 6379)
    try:
        redis_cli(lab, "DEL", "worker:worker-1:heartbeat")  # as if it expired: the queue manager cannot rewrite it
        with urllib.request.urlopen(f"{QM}/health", timeout=5) as resp:  # the real contract: 200, verdict in the body
            assert resp.status == 200 and json.loads(resp.read())["status"] == "unhealthy"
        res, _ = cli("status", "--hosts", str(inv))
        checks = status_checks(res)
        assert res.returncode == ExitCode.UNHEALTHY
        assert checks["queue-manager-mello"][0] == "FAIL"
        assert "the queue manager lost Redis" in checks["queue-manager-mello"][1]
        assert checks["job-probe"][0] == "FAIL"
        assert checks["job-probe"][1].startswith("users' jobs fail at submission: the queue manager answered 500")
        mark, detail = checks["heartbeat-worker-1"]
        assert mark == "warn" and "the queue manager cannot record heartbeats (it lost Redis)" in detail
        assert "NOT HEALTHY" in res.stdout
    finally:
        faults.mend_container("mello", qm)
    assert invoke("status", "--hosts", str(inv)).returncode == 0 or \
        status_json(inv)[2]["heartbeat-worker-1"]["ok"]  # the worker polls again within a second


def test_redis_blocked_from_the_worker_degrades_while_jobs_complete(lab, deployed, tmp_path):
    inv = fast_inventory(lab, tmp_path)
    faults.block_port("mello", 6379, "verda")
    try:
        res, _ = cli("status", "--hosts", str(inv))
        checks = status_checks(res)
        assert res.returncode == 0, res.stdout
        assert "comfyume status: DEGRADED" in res.stdout
        mark, detail = checks["redis-from-verda"]
        assert mark == "warn" and detail.startswith("DEGRADED: the link verda -> Redis fails (no answer from "
                                                    "100.64.0.1:6379")
        assert checks["job-probe"][0] == "ok"
        code, data, by_name = status_json(inv)
        assert code == 0 and data["verdict"] == "degraded" and by_name["redis-from-verda"]["verdict"] == "degraded"
    finally:
        faults.heal_network("verda")


def test_job_probe_behind_slow_users_jobs_is_ok_with_progress(lab, deployed, tmp_path):
    inv = fast_inventory(lab, tmp_path, timeouts={"probe": 5})
    users = [submit_job(f"user00{i}", slow(1.5, 0x101010 * i)) for i in range(1, 7)]
    code, data, checks = status_json(inv)
    probe = checks["job-probe"]
    assert code == 0 and probe["ok"] and probe["stage"] == "queued-progress", probe
    assert probe["detail"].startswith("queued behind ") and "making progress" in probe["detail"]
    assert probe_traces(lab, probe["job_id"]) == []  # withdrawn: the users go first
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(job_status(j) != "completed" for j in users):
        time.sleep(0.5)
    assert [job_status(j) for j in users] == ["completed"] * len(users)  # no user starved


def test_stop_verda_says_how_the_worker_ended_and_status_says_stopped(lab, deployed, tmp_path):
    inv = fast_inventory(lab, tmp_path)
    try:
        res = invoke("stop-verda", "--hosts", str(inv))
        out = res.stdout + res.stderr
        assert res.returncode == 0, out
        assert "stopped cleanly" in out and "KILLED" not in out
        code, data, checks = status_json(inv)
        assert code == ExitCode.STOPPED
        services = checks["services-verda"]["detail"]
        assert "all running and healthy" not in services and "stopped on purpose: worker exited" in services
        assert checks["job-probe"]["stage"] == "skipped"
    finally:
        assert invoke("start-all", "--hosts", str(inv)).returncode == 0


def test_poll_interval_must_be_whole_seconds(lab, tmp_path):
    inv = lab.inventory(tmp_path, worker={"poll_interval": 0.5})
    res = invoke("status", "--hosts", str(inv))
    assert res.returncode == ExitCode.CONFIG
    assert "worker.poll_interval: 0.5 is not a whole number of seconds: the worker reads WORKER_POLL_INTERVAL " \
           "with int() and would not start (give a whole number of seconds, e.g. poll_interval: 1)" in res.stderr
    assert "Traceback" not in res.stderr


def test_a_busy_workers_aged_heartbeat_is_not_reported_dead(lab, healed, tmp_path):
    """The queue manager refreshes the heartbeat only on next-job: a worker running a job longer than
    heartbeat_timeout (4 s here) is busy, not dead."""
    inv = lab.inventory(tmp_path, worker={"heartbeat_timeout": 4})
    try:
        assert invoke("start-all", "--hosts", str(inv)).returncode == 0
        job = submit_job("user001", slow(12, 0x123456))
        deadline = time.monotonic() + 20
        while job_status(job) != "running" and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(6)  # the heartbeat (TTL 4 s) expires while the job runs
        code, data, checks = status_json_args(inv, "--no-probe")
        beat = checks["heartbeat-worker-1"]
        assert beat["ok"] and beat["warning"] and beat["diagnosis"] == "busy", beat
        assert "busy with a job (its ComfyUI runs prompt" in beat["detail"]
        assert code == 0
    finally:
        invoke("start-all", "--hosts", str(lab.inventory(tmp_path / "restore")))


def status_json_args(inv, *args: str) -> tuple[int, dict, dict]:
    res = invoke("status", "--json", *args, "--hosts", str(inv))
    assert "Traceback" not in res.stdout + res.stderr, res.stderr
    data = json.loads(res.stdout)
    return res.returncode, data, {c["name"]: c for c in data["checks"]}
