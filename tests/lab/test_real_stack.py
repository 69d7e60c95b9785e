"""The tool against the team's REAL services (issue 19, items 4 and 5), in the lab.

The images are built from ../shared/comfyume-real and ../shared/comfyui-0.8.0 by the lab's "real"
profile (comfyume_fab/lab/real.py: lab base image, venvs made on this machine, real code and real
commands unchanged, every shim listed there), cached as one tarball and only loaded when an
engine lacks them. One module-scoped deployment is shared by the tests, in order:

a. at the pinned commits, `status` exits non-zero and its job probe says users' jobs fail at
   submission, with the queue manager's own message;
b. with the pinned services' defects mended IN THIS TEST ONLY (PATCHES below, applied to a
   temporary copy of ../shared/comfyume-real and layered over the real images; ../shared is never
   touched), the job probe completes through the real queue manager, worker and ComfyUI, `status`
   is HEALTHY, and the probe left nothing behind in Redis or the queue;
c. `stop-verda` stops the real worker in well under its grace period without SIGKILL, and
   `start-all` brings it back.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import yaml

from comfyume_fab.lab import hostsvc, real
from tests.support import invoke

# The smallest mends of the pinned code, applied to a temporary copy only: (file, old text, new text).
PATCHES = [
    # POST /api/jobs answers 500 "Object of type datetime is not JSON serializable": the job-created
    # (and job-updated) event is json.dumps()ed from model_dump(), which keeps datetimes.
    ("mello-track/queue-manager/redis_client.py",
     'self._publish_event("job_created", job.model_dump())',
     'self._publish_event("job_created", job.model_dump(mode="json"))'),
    ("mello-track/queue-manager/redis_client.py",
     'self._publish_event("job_updated", job.model_dump())',
     'self._publish_event("job_updated", job.model_dump(mode="json"))'),
    # complete-job expects {"result": {...}} (JobCompletionRequest); the worker sends the bare result (422).
    ("verda-track/comfyui-worker/worker.py",
     "                params={\"job_id\": job_id},\n                json=result\n",
     "                params={\"job_id\": job_id},\n                json={\"result\": result}\n"),
    # fail-job expects {"error": "..."} (JobFailureRequest) in the body; the worker sends it as a query (422).
    ("verda-track/comfyui-worker/worker.py",
     'params={"job_id": job_id, "error": error}',
     'params={"job_id": job_id},\n                json={"error": error}'),
]
MENDED = {"queue_manager": ("mello", "/app/redis_client.py", "mello-track/queue-manager/redis_client.py"),
          "worker": ("verda", "/workspace/worker.py", "verda-track/comfyui-worker/worker.py")}
GRACE_S = 20  # compose/worker.yml stop_grace_period


def _patched_copy(tmp: Path) -> Path:
    copy = tmp / "comfyume-real"
    shutil.copytree(real.SHARED / "comfyume-real", copy)
    for rel, old, new in PATCHES:
        path = copy / rel
        path.chmod(0o644)
        text = path.read_text()
        assert text.count(old) == 1, f"{rel}: the pinned text to mend is not there once: {old!r}"
        path.write_text(text.replace(old, new))
    return copy


def _inventory(lab, tmp: Path, images: dict | None = None) -> Path:
    data = real.inventory_dict([lab.hosts["mello"], lab.hosts["verda"]], lab.key, lab.known_hosts,
                               str(lab.dir / "secrets.env"), images=images)
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "hosts.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def stack(lab, tmp_path_factory):
    """The real images in both engines, the mended ones layered over them, both inventories."""
    t0 = time.monotonic()
    times = real.ensure([lab.hosts["mello"], lab.hosts["verda"]])
    tmp = tmp_path_factory.mktemp("real")
    copy = _patched_copy(tmp)
    mended = {}
    for key, (host, target, rel) in MENDED.items():
        mended[key] = real.overlay(lab.hosts[host], real.IMAGES[key], f"{real.IMAGES[key]}-mended", {target: copy / rel})
    print(f"MEASURED real images ready in {time.monotonic() - t0:.0f} s {times}")
    yield {"pinned": _inventory(lab, tmp / "pinned"), "mended": _inventory(lab, tmp / "mended", mended)}
    invoke("stop-all", "--hosts", str(tmp / "mended" / "hosts.yaml"))  # four ComfyUIs off the two cores


def _containers(lab, name: str) -> dict[str, dict]:
    h = lab.hosts[name]
    ids = hostsvc.docker(h, "ps", "-aq", "--filter", "label=com.docker.compose.project=comfyume").stdout.split()
    out = {}
    for c in json.loads(hostsvc.docker(h, "inspect", *ids).stdout) if ids else []:
        out[c["Config"]["Labels"]["com.docker.compose.service"]] = c
    return out


def _assert_running_real(lab, expected: dict[str, str]) -> None:
    """Every service runs, healthy, on the image the inventory names (the real one)."""
    for host, services in (("mello", ("redis", "queue-manager", "admin", "user001")), ("verda", ("worker",))):
        now = _containers(lab, host)
        for svc in services:
            c = now.get(svc)
            assert c, f"{host}: no {svc} container"
            state = c["State"]
            assert state["Status"] == "running" and (state.get("Health") or {}).get("Status") == "healthy", \
                f"{host} {svc}: {state['Status']} {(state.get('Health') or {}).get('Status')}"
            if svc in expected:
                assert c["Config"]["Image"] == expected[svc], (svc, c["Config"]["Image"])


def _start_all(inv: Path):
    t0 = time.monotonic()
    res = invoke("start-all", "--hosts", str(inv), timeout=900)
    print(f"MEASURED start-all {time.monotonic() - t0:.1f} s exit {res.returncode}")
    assert "Traceback" not in res.stdout + res.stderr
    return res


def _status(inv: Path):
    res = invoke("status", "--hosts", str(inv), "--json", timeout=600)
    assert "Traceback" not in res.stdout + res.stderr
    return res, json.loads(res.stdout)


def _job_probe(report: dict) -> dict:
    probes = [c for c in report["checks"] if c.get("name") == "job-probe"]
    assert probes, f"status --json has no job-probe check: {[c.get('name') for c in report['checks']]}"
    return probes[0]


def _redis(lab, *args: str) -> str:
    """redis-cli in the app host's Redis container (the password from its own environment)."""
    cid = _containers(lab, "mello")["redis"]["Id"]
    cmd = 'REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli --raw ' + " ".join(args)
    return hostsvc.docker(lab.hosts["mello"], "exec", cid, "sh", "-c", cmd).stdout


GRAPH = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
         "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "lab-real"}}}
USER = "lab-test-real"  # this module's own jobs, removed from Redis after each check


def _qm(lab, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    """An HTTP request to the real queue manager from inside its container (curl, as a frontend would)."""
    cid = _containers(lab, "mello")["queue-manager"]["Id"]
    argv = ["exec", "-i", cid, "curl", "-sS", "-X", method, "-w", "\\n%{http_code}",
            "-H", "Content-Type: application/json", f"http://127.0.0.1:3000{path}"]
    if body is not None:
        argv[-1:-1] = ["--data-binary", "@-"]
    out = hostsvc.docker(lab.hosts["mello"], *argv, input=json.dumps(body) if body is not None else None).stdout
    text, _, code = out.rpartition("\n")
    return int(code), (json.loads(text) if text.strip().startswith(("{", "[")) else {"raw": text})


def _forget(lab, job_id: str) -> None:
    """Remove one of this module's jobs from Redis (a completed job cannot be deleted through the API)."""
    _redis(lab, "DEL", f"job:{job_id}", f"user:{USER}:jobs", f"user:{USER}:completed")
    for queue in ("queue:pending", "queue:running", "queue:completed", "queue:failed"):
        _redis(lab, "ZREM", queue, job_id)


def test_pinned_commits_status_says_jobs_fail_at_submission(lab, stack):
    _start_all(stack["pinned"])  # with the job probe in start-all it fails too; the services run regardless
    _assert_running_real(lab, {"queue-manager": real.IMAGES["queue_manager"], "admin": real.IMAGES["admin"],
                               "user001": real.IMAGES["frontend"], "worker": real.IMAGES["worker"]})
    # The defect itself, as a frontend meets it: the job is stored, then the answer is 500.
    code, body = _qm(lab, "POST", "/api/jobs", {"user_id": USER, "workflow": GRAPH})
    assert code == 500 and "datetime is not JSON serializable" in body.get("detail", ""), (code, body)
    for job_id in _redis(lab, "SMEMBERS", f"user:{USER}:jobs").split():
        _forget(lab, job_id)
    res, report = _status(stack["pinned"])
    assert res.returncode != 0 and report["ok"] is False
    probe = _job_probe(report)
    assert probe["ok"] is False and probe["stage"] == "rejected", probe
    assert probe["detail"].startswith("users' jobs fail at submission"), probe["detail"]
    assert probe["http_status"] == 500 and "datetime is not JSON serializable" in probe["message"], probe
    assert "datetime is not JSON serializable" in probe["detail"]
    assert len(res.stdout.strip().splitlines()) >= 1 and "Traceback" not in res.stderr


def test_mended_services_complete_the_job_probe_and_status_is_healthy(lab, stack):
    res = _start_all(stack["mended"])
    assert res.returncode == 0, res.stderr + res.stdout
    _assert_running_real(lab, {"queue-manager": f"{real.IMAGES['queue_manager']}-mended",
                               "worker": f"{real.IMAGES['worker']}-mended", "user001": real.IMAGES["frontend"]})
    # The path a user's job takes, by hand: submitted to the real queue manager, taken by the real
    # worker, run by real ComfyUI, completed with its output.
    code, body = _qm(lab, "POST", "/api/jobs", {"user_id": USER, "workflow": GRAPH})
    assert code == 201 and body["status"] == "pending", (code, body)
    job_id = body["id"]
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            code, job = _qm(lab, "GET", f"/api/jobs/{job_id}")
            if job.get("status") in ("completed", "failed"):
                break
            time.sleep(1)
        assert job.get("status") == "completed" and job["worker_id"] == "worker-1", job
        images = [img for out in job["result"]["outputs"].values() for img in out.get("images", [])]
        assert images and images[0]["filename"].startswith("lab-real"), job["result"]
    finally:
        _forget(lab, job_id)
    res, report = _status(stack["mended"])
    probe = _job_probe(report)
    assert probe["ok"] is True and probe["stage"] == "completed", probe
    assert res.returncode == 0 and report["ok"] is True, res.stdout[-2000:]
    job_id = probe["job_id"]
    assert job_id
    keys = _redis(lab, "--scan").split()
    assert not [k for k in keys if job_id in k], f"the probe job {job_id} left keys behind: {keys}"
    for queue in ("queue:pending", "queue:running", "queue:completed", "queue:failed"):
        assert job_id not in _redis(lab, "ZRANGE", queue, "0", "-1"), f"{job_id} still in {queue}"
    assert _redis(lab, "ZCARD", "queue:pending").strip() == "0"
    assert _redis(lab, "ZCARD", "queue:running").strip() == "0"


def test_stop_verda_stops_the_real_worker_cleanly_and_start_all_brings_it_back(lab, stack):
    inv = stack["mended"]
    before = _containers(lab, "verda")["worker"]
    assert before["State"]["Status"] == "running"
    t0 = time.monotonic()
    res = invoke("stop-verda", "--hosts", str(inv), timeout=300)
    took = time.monotonic() - t0
    print(f"MEASURED stop-verda {took:.1f} s")
    assert res.returncode == 0, res.stderr + res.stdout
    after = _containers(lab, "verda")["worker"]
    state = after["State"]
    assert after["Id"] == before["Id"] and state["Status"] == "exited", state
    assert state["ExitCode"] != 137 and not state["OOMKilled"], f"the real worker was killed: {state}"
    assert state["ExitCode"] == 0, state
    assert took < GRACE_S / 2, f"stop-verda took {took:.1f} s (grace period {GRACE_S} s)"
    logs = hostsvc.docker(lab.hosts["verda"], "logs", "--tail", "40", after["Id"]).stdout + \
        hostsvc.docker(lab.hosts["verda"], "logs", "--tail", "40", after["Id"]).stderr
    assert "Worker shutdown complete" in logs, logs[-2000:]  # worker.py's own graceful path ran
    res = _start_all(inv)
    assert res.returncode == 0, res.stderr + res.stdout
    _assert_running_real(lab, {"worker": f"{real.IMAGES['worker']}-mended"})
