"""start-all, stop-verda, stop-all and status against the lab (issue 4). Every claim is read
back from the hosts themselves: engine events, container ids, sshd's own log."""
from __future__ import annotations

import json
import subprocess
import time
from datetime import datetime, timezone

import pytest

from comfyume_fab.lab import hostsvc
from tests.support import INVOKE, REPO, invoke

pytestmark = pytest.mark.lab
APP_SERVICES = ["redis", "queue-manager", "admin", "user001", "user002", "user003"]


def containers(lab, host, *filters):
    out = hostsvc.docker(lab.hosts[host], "ps", "-a", "--filter", "label=com.docker.compose.project=comfyume",
                         *filters, "--format", "{{.ID}} {{.Label \"com.docker.compose.service\"}} {{.State}}").stdout
    return sorted(tuple(line.split()) for line in out.splitlines())


def accepted(lab, host) -> int:
    log = lab.hosts[host].sshd_log
    return log.read_text().count("Accepted publickey") if log.exists() else 0


def test_order_app_healthy_before_first_worker_container_is_created(lab, inv, healed):
    assert invoke("stop-all", "--down", "--hosts", str(inv)).returncode == 0
    assert containers(lab, "verda") == []
    since = str(int(time.time()) - 1)
    res = invoke("start-all", "--hosts", str(inv))
    assert res.returncode == 0, res.stderr
    until = str(int(time.time()) + 1)
    events = hostsvc.docker(lab.hosts["mello"], "events", "--since", since, "--until", until, "--filter",
                            "type=container", "--filter", "event=health_status: healthy", "--format", "{{json .}}").stdout
    healthy_at = {}
    for line in events.splitlines():
        ev = json.loads(line)
        svc = ev["Actor"]["Attributes"].get("com.docker.compose.service")
        healthy_at.setdefault(svc, ev["timeNano"] / 1e9)
    assert set(APP_SERVICES) <= set(healthy_at), healthy_at
    (worker_id,) = [c[0] for c in containers(lab, "verda")]
    created = hostsvc.docker(lab.hosts["verda"], "inspect", "--format", "{{.Created}}", worker_id).stdout.strip()
    created_at = _rfc3339(created)
    assert max(healthy_at[s] for s in APP_SERVICES) < created_at


def _rfc3339(text: str) -> float:
    """Docker's Created (nanosecond RFC 3339, UTC) as epoch seconds."""
    head, _, frac = text.rstrip("Z").partition(".")
    return datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp() \
        + float("0." + (frac or "0"))


def test_rerun_on_a_healthy_deployment_changes_nothing_and_says_so(lab, deployed):
    before = containers(lab, "mello") + containers(lab, "verda")
    res = invoke("start-all", "--hosts", str(deployed))
    assert res.returncode == 0, res.stderr
    assert "nothing changed" in res.stdout
    assert containers(lab, "mello") + containers(lab, "verda") == before


def test_stop_verda_touches_nothing_else_and_start_all_brings_it_back(lab, deployed):
    app_before = containers(lab, "mello")
    t0 = time.monotonic()
    res = invoke("stop-verda", "--hosts", str(deployed))
    took = time.monotonic() - t0
    assert res.returncode == 0, res.stderr
    assert "app host untouched" in res.stdout
    assert containers(lab, "mello") == app_before  # same ids, all still running
    assert all(state == "running" for _, _, state in app_before)
    assert [c[2] for c in containers(lab, "verda")] == ["exited"]
    # a clean stop, not a SIGKILL after the 20 s grace period (tests/lab/test_real_stack.py: the real worker)
    state = json.loads(hostsvc.docker(lab.hosts["verda"], "inspect", containers(lab, "verda")[0][0]).stdout)[0]["State"]
    assert state["ExitCode"] != 137 and not state["OOMKilled"], state
    assert took < 10, f"stop-verda took {took:.1f} s"
    status = invoke("status", "--json", "--no-probe", "--hosts", str(deployed))
    assert status.returncode == 6  # stopped on purpose (issue 13), not a failure
    data = json.loads(status.stdout)
    assert data["ok"] is False and data["hosts"]["mello"]["reachable"] is True
    assert data["hosts"]["verda"]["stopped_on_purpose"]["task"] == "stop-verda"
    assert data["hosts"]["verda"]["services"][0]["state"] == "exited"
    assert all(s["state"] == "running" for s in data["hosts"]["mello"]["services"])
    res = invoke("start-all", "--hosts", str(deployed))
    assert res.returncode == 0, res.stderr
    assert [c[2] for c in containers(lab, "verda")] == ["running"]
    assert containers(lab, "mello") == app_before


def test_status_json_shape_on_a_healthy_lab(lab, deployed):
    res = invoke("status", "--json", "--hosts", str(deployed))
    assert res.returncode == 0, res.stderr + res.stdout
    data = json.loads(res.stdout)
    assert data["ok"] is True
    for name in ("mello", "verda"):
        host = data["hosts"][name]
        assert host["reachable"] is True
        for svc in host["services"]:
            assert set(svc) >= {"service", "state", "health"}
            assert (svc["state"], svc["health"]) == ("running", "healthy")
    assert [s["service"] for s in data["hosts"]["mello"]["services"]] == APP_SERVICES
    names = {c["name"]: c for c in data["checks"]}
    for check in data["checks"]:
        assert set(check) >= {"name", "ok", "detail"}
    assert names["redis-from-verda"]["ok"] and names["redis-from-verda"]["rtt_ms"] > 0
    assert names["inference-verda"]["ok"] and names["inference-verda"]["latency_ms"] > 0
    assert names["heartbeat-worker-1"]["ok"] and names["heartbeat-worker-1"]["age_s"] <= 5
    assert data["queue"]["depth"] == 0


def test_status_shows_a_crash_looping_worker(lab, deployed):
    verda = lab.hosts["verda"]
    (cid,) = [c[0] for c in containers(lab, "verda")]
    hostsvc.docker(verda, "exec", cid, "touch", "/tmp/standin-crash")
    # End PID 1 from inside (a crash, not a manual `docker kill`, which the restart policy ignores).
    hostsvc.docker(verda, "exec", cid, "kill", "1")
    try:
        deadline = time.monotonic() + 30
        while int(hostsvc.docker(verda, "inspect", "--format", "{{.RestartCount}}", cid).stdout) < 3:
            assert time.monotonic() < deadline, "the worker never crash-looped"
            time.sleep(0.3)
        res = invoke("status", "--json", "--no-probe", "--hosts", str(deployed))
        assert res.returncode == 4
        data = json.loads(res.stdout)
        (svc,) = data["hosts"]["verda"]["services"]
        assert svc["restarts"] >= 3 and svc["ok"] is False
        services = {c["name"]: c for c in data["checks"]}["services-verda"]
        assert "CRASH LOOP" in services["detail"] and not services["ok"]
        text = invoke("status", "--no-probe", "--hosts", str(deployed))
        assert "CRASH LOOP" in text.stdout and text.returncode == 4
    finally:
        hostsvc.docker(verda, "rm", "-f", cid, check=False)
    assert invoke("start-all", "--hosts", str(deployed)).returncode == 0


@pytest.mark.parametrize("task", [["status", "--no-probe"], ["start-all"], ["stop-verda"]])
def test_exactly_one_ssh_connection_per_host_per_task(lab, deployed, task):
    before = {h: accepted(lab, h) for h in ("mello", "verda")}
    res = invoke(*task, "--hosts", str(deployed))
    after = {h: accepted(lab, h) for h in ("mello", "verda")}
    assert res.returncode in (0, 4), res.stderr
    assert {h: after[h] - before[h] for h in after} == {"mello": 1, "verda": 1}
    if task[0] == "stop-verda":
        assert invoke("start-all", "--hosts", str(deployed)).returncode == 0


def test_a_second_start_all_is_refused_while_the_first_holds_the_lock(lab, deployed):
    assert invoke("stop-verda", "--hosts", str(deployed)).returncode == 0  # make the first run do real work
    first = subprocess.Popen([INVOKE, "start-all", "--hosts", str(deployed)], cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        lock = lab.hosts["mello"].home / "comfyume" / ".deploy-lock"
        deadline = time.monotonic() + 20
        while not lock.exists():
            assert time.monotonic() < deadline and first.poll() is None, "the first start-all never took the lock"
            time.sleep(0.02)
        t0 = time.monotonic()
        second = invoke("start-all", "--hosts", str(deployed))
        assert second.returncode == 5
        assert time.monotonic() - t0 < 10
        assert "another deploy holds the lock" in second.stderr and "task=start-all" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert not lock.exists()


def test_stale_lock_is_broken_only_on_request(lab, deployed):
    lock = lab.hosts["mello"].home / "comfyume" / ".deploy-lock"
    lock.mkdir()
    (lock / "info").write_text("ghost@old-laptop task=start-all pid=1 since=2026-01-01T00:00:00Z rev=abc\n")
    subprocess.run(["chown", "-R", lab.hosts["mello"].user, str(lock)], check=True)  # as that deploy left it
    try:
        res = invoke("start-all", "--hosts", str(deployed))
        assert res.returncode == 5 and "ghost@old-laptop" in res.stderr
        res = invoke("lock-break", "--hosts", str(deployed))
        assert res.returncode == 0 and "ghost@old-laptop" in res.stdout
        assert not lock.exists()
    finally:
        subprocess.run(["rm", "-rf", str(lock)])


@pytest.mark.parametrize("task", [["start-all"], ["stop-verda"], ["stop-all"]])
def test_dry_run_touches_nothing(lab, deployed, task):
    before = {h: containers(lab, h) for h in ("mello", "verda")}
    conns = {h: accepted(lab, h) for h in ("mello", "verda")}
    res = invoke(*task, "--dry-run", "--hosts", str(deployed))
    assert res.returncode == 0, res.stderr
    assert "docker compose -p comfyume" in res.stdout
    assert {h: containers(lab, h) for h in ("mello", "verda")} == before
    assert {h: accepted(lab, h) for h in ("mello", "verda")} == conns


def test_stop_all_stops_workers_first_then_the_app_host(lab, deployed):
    since = str(int(time.time()) - 1)
    res = invoke("stop-all", "--hosts", str(deployed))
    assert res.returncode == 0, res.stderr
    until = str(int(time.time()) + 1)

    def stops(host):
        out = hostsvc.docker(lab.hosts[host], "events", "--since", since, "--until", until, "--filter",
                             "type=container", "--filter", "event=die", "--format", "{{.TimeNano}}").stdout
        return [int(x) for x in out.split()]
    assert stops("verda") and stops("mello")
    assert max(stops("verda")) < min(stops("mello"))
    assert all(state == "exited" for _, _, state in containers(lab, "mello"))


def test_wait_lock_waits_for_the_holder_then_runs(lab, deployed):
    lock = lab.hosts["mello"].home / "comfyume" / ".deploy-lock"
    lock.mkdir()
    (lock / "info").write_text("colleague@laptop task=start-all pid=7 since=2026-11-26T00:00:00Z rev=abc\n")
    subprocess.run(["chown", "-R", lab.hosts["mello"].user, str(lock)], check=True)
    proc = subprocess.Popen([INVOKE, "start-all", "--wait-lock", "--hosts", str(deployed)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(3)
        assert proc.poll() is None, "start-all --wait-lock gave up instead of waiting"
        subprocess.run(["rm", "-rf", str(lock)], check=True)  # the colleague's run finishes
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        subprocess.run(["rm", "-rf", str(lock)])
    assert proc.returncode == 0, err
    assert "waiting (at most " in err and "for the deploy lock held by colleague@laptop" in err, err


def test_stop_verda_when_idle_waits_for_the_queue_to_drain(lab, deployed):
    verda, mello = lab.hosts["verda"], lab.hosts["mello"]
    (wid,) = [c[0] for c in containers(lab, "verda")]
    hostsvc.docker(verda, "pause", wid)  # the worker stops polling for a moment
    job = {"user_id": "user001", "workflow": {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 7}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "idle"}}}}
    post = ["python3", "-c", "import json,sys,urllib.request as u;print(u.urlopen(u.Request("
            "'http://127.0.0.1:3000/api/jobs',data=sys.argv[1].encode(),headers={'Content-Type':'application/json'}"
            ")).read().decode())", json.dumps(job)]
    qm = [c[0] for c in containers(lab, "mello") if c[1] == "queue-manager"][0]
    job_id = json.loads(hostsvc.docker(mello, "exec", qm, *post).stdout)["id"]
    # the job waits in the queue (the paused worker cannot take it): what --when-idle must see
    show = ["python3", "-c", "import sys,urllib.request as u;print(u.urlopen("
            "'http://127.0.0.1:3000/api/jobs/'+sys.argv[1]).read().decode())", job_id]
    assert json.loads(hostsvc.docker(mello, "exec", qm, *show).stdout)["status"] == "pending"
    proc = subprocess.Popen([INVOKE, "stop-verda", "--when-idle", "--hosts", str(deployed)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(3)
        assert proc.poll() is None, "stop-verda --when-idle did not wait for the pending job"
        assert [c[2] for c in containers(lab, "verda")] == ["paused"]
        hostsvc.docker(verda, "unpause", wid)  # the worker takes the job and finishes it
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        hostsvc.docker(verda, "unpause", wid, check=False)
    assert proc.returncode == 0, err
    seen = hostsvc.docker(mello, "exec", qm, *show).stdout
    assert "waiting for 1 pending" in err and "queue idle" in err, (err, seen)
    assert json.loads(seen)["status"] == "completed", seen  # it ran before the worker stopped
    assert [c[2] for c in containers(lab, "verda")] == ["exited"]
    assert invoke("start-all", "--hosts", str(deployed)).returncode == 0
