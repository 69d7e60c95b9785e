"""The job probe and the queue manager's answers: pure parsing and sentences, and the probe loop
run against the lab's stand-ins (real processes, a real Redis) on this machine."""
from __future__ import annotations

import http.client
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from comfyume_fab.checks import jobprobe
from comfyume_fab.host.facts import ParseError
from comfyume_fab.host.facts import queue_manager as qm

REAL_HEALTHY = {"status": "healthy", "version": "0.1.0", "redis_connected": True, "workers_active": 0,
                "queue_depth": 0, "uptime_seconds": 12}


# ----------------------------------------------------------------------------- /health by its body
def test_health_200_with_an_unhealthy_body_is_unhealthy_and_names_redis():
    h = qm.parse_health(200, json.dumps({**REAL_HEALTHY, "status": "unhealthy", "redis_connected": False}))
    assert not h.ok and h.redis_connected is False
    assert h.cause.startswith("the queue manager lost Redis")


def test_health_healthy_body_is_healthy_and_keeps_the_mode():
    h = qm.parse_health(200, json.dumps({**REAL_HEALTHY, "inference_mode": "serverless"}))
    assert h.ok and h.cause == "" and h.inference_mode == "serverless"


@pytest.mark.parametrize("status, body, cause", [
    (503, b"<html>bad gateway</html>", "with HTTP 503 with no health body"),
    (200, json.dumps({**REAL_HEALTHY, "status": "degraded"}), "says it is 'degraded'"),
    (500, json.dumps(REAL_HEALTHY), "with HTTP 500"),
])
def test_health_other_answers_are_unhealthy(status, body, cause):
    h = qm.parse_health(status, body)
    assert not h.ok and cause in h.cause


# ----------------------------------------------------------------------------- answers
def test_message_is_the_services_own_words():
    assert qm.message(b'{"detail": "Object of type datetime is not JSON serializable"}') == \
        "Object of type datetime is not JSON serializable"
    assert qm.message(json.dumps({"detail": [{"loc": ["body", "result"], "msg": "Field required"}]})) == \
        "result: Field required"
    assert qm.message(b"Internal Server Error") == "Internal Server Error"


def test_job_answers_parse_and_outputs_are_found():
    job = qm.parse_job(json.dumps({"id": "j1", "user_id": "u", "status": "completed", "worker_id": "worker-1",
                                   "result": {"prompt_id": "p", "outputs": {"2": {"images": [
                                       {"filename": "a.png", "subfolder": "", "type": "output"}]}}},
                                   "error": None, "position_in_queue": None}))
    assert (job.status, job.worker_id, qm.output_files(job.result)) == ("completed", "worker-1", ("a.png",))
    assert qm.output_files({"prompt_id": "p", "outputs": {}}) == ()
    with pytest.raises(ParseError):
        qm.parse_job(b'{"detail": "Job not found"}')
    assert qm.serverless_accepted({"prompt_id": "p", "number": 3, "node_errors": {}}) == "p"
    assert qm.serverless_accepted({"prompt_id": "p", "node_errors": {"1": {}}}) is None


# ----------------------------------------------------------------------------- sentences
def test_stage_sentences():
    assert jobprobe.rejected_sentence(500, "Object of type datetime is not JSON serializable", "x") == (
        "users' jobs fail at submission: the queue manager answered 500: Object of type datetime is not JSON "
        "serializable")
    assert "never taken" in jobprobe.not_taken_sentence("abcdef123", 60, 0, 0)
    assert "behind 3 job(s) and no job completed" in jobprobe.not_taken_sentence("abcdef123", 60, 3, 0)
    assert jobprobe.progress_sentence(4, 2, 30).startswith("queued behind 4 jobs, making progress")
    failed = qm.Job("abcdef123", "failed", "worker-1", None, "Workflow execution failed: boom", None)
    assert jobprobe.not_completed_sentence(failed, failed.id, 3) == (
        "users' jobs are taken but fail: worker-1 took the probe job abcdef12 and reported: "
        "Workflow execution failed: boom")
    check = jobprobe.result("rejected", "users' jobs fail at submission: x", "mello", http_status=500, message="x")
    assert not check.ok and check.as_json()["stage"] == "rejected" and check.as_json()["http_status"] == 500
    assert jobprobe.result("queued-progress", "q", "mello").ok
    assert jobprobe.skipped("mello", "why").ok and jobprobe.skipped("mello", "why").warning


# ----------------------------------------------------------------------------- the loop, for real
def local_call(url: str):
    parts = urlsplit(url)

    def call(method, path, body=None):
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
        payload = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=payload, headers={"Content-Type": "application/json"} if payload else {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    return call


def test_rejected_at_submission_quotes_the_status_and_message():
    """A queue manager that answers POST /api/jobs 500 the way the pinned real one does."""
    class Pinned(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = b'{"detail":"Object of type datetime is not JSON serializable"}'
            self.send_response(500)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass
    server = ThreadingHTTPServer(("127.0.0.1", 0), Pinned)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        check = jobprobe.run_job_probe(local_call(f"http://127.0.0.1:{server.server_port}"), "here", "mello", 5)
    finally:
        server.shutdown()
    assert not check.ok and check.data["stage"] == "rejected" and check.data["http_status"] == 500
    assert check.detail == ("users' jobs fail at submission: the queue manager answered 500: Object of type "
                            "datetime is not JSON serializable")
    assert check.data["message"] == "Object of type datetime is not JSON serializable"


def leftovers(r) -> list[str]:
    return sorted(k for k in r.keys("*") if k.startswith(("job:", f"user:{jobprobe.PROBE_USER}"))
                  ) + [q for q in ("queue:pending", "queue:running", "queue:completed", "queue:failed") if r.zcard(q)]


def test_job_probe_completes_through_standins_and_leaves_nothing(start, redis_server, tmp_path):
    qm_proc = start("queue_manager", "QUEUE_MANAGER_LISTEN_PORT", redis_server.env(), ready_path="/health")
    start("worker", "COMFYUI_LISTEN_PORT", {"OUTPUT_DIR": str(tmp_path / "out"), "QUEUE_MANAGER_URL": qm_proc.url,
                                            "WORKER_ID": "worker-7", "WORKER_POLL_INTERVAL": "1",
                                            "STANDIN_FAULT_FILE": str(tmp_path / "f")}, ready_path="/system_stats")
    r = redis_server.client
    check = jobprobe.run_job_probe(local_call(qm_proc.url), "here", "mello", 20,
                                   cleanup=lambda job_id: jobprobe.forget(r, job_id) or "")
    assert check.ok and check.data["stage"] == "completed", check.detail
    assert check.detail.startswith("a user's job completes: worker-7 took the probe job")
    assert check.data["outputs"] and check.data["job_id"]
    assert leftovers(r) == []


def test_job_probe_never_taken_is_withdrawn(start, redis_server):
    qm_proc = start("queue_manager", "QUEUE_MANAGER_LISTEN_PORT", redis_server.env(), ready_path="/health")
    r = redis_server.client
    check = jobprobe.run_job_probe(local_call(qm_proc.url), "here", "mello", 1.5,
                                   cleanup=lambda job_id: jobprobe.forget(r, job_id) or "")
    assert not check.ok and check.data["stage"] == "not-taken"
    assert "never taken" in check.detail and "was withdrawn" in check.detail
    assert leftovers(r) == []


# ----------------------------------------------------------------------------- judging the checks together
from comfyume_fab.checks import qmhealth  # noqa: E402
from comfyume_fab.checks.result import CheckResult  # noqa: E402


def test_health_result_fails_on_a_200_unhealthy_body_naming_the_cause():
    c = qmhealth.health_result("queue-manager-mello", "mello", "the queue manager", 200,
                               json.dumps({**REAL_HEALTHY, "status": "unhealthy", "redis_connected": False}).encode(), 0.01)
    assert not c.ok and "the queue manager lost Redis" in c.detail and c.data["redis_connected"] is False
    assert qmhealth.health_result("q", "m", "w", 200, json.dumps(REAL_HEALTHY).encode(), 0.01).ok


def test_heartbeat_is_not_blamed_on_the_worker_when_the_queue_manager_lost_redis_or_it_is_busy():
    lost = [CheckResult("queue-manager-mello", False, "x", data={"redis_connected": False}),
            CheckResult("heartbeat-worker-1", False, "no key")]
    qmhealth.settle_heartbeats(lost, {}, qmhealth.lost_redis(lost))
    assert lost[1].ok and lost[1].warning and "cannot record heartbeats" in lost[1].detail
    busy = [CheckResult("heartbeat-worker-1", False, "no key"), CheckResult("heartbeat-worker-2", False, "no key")]
    qmhealth.settle_heartbeats(busy, {"worker-1": "its ComfyUI runs prompt abc"}, False)
    assert busy[0].ok and "busy with a job" in busy[0].detail
    assert not busy[1].ok and busy[1].data["diagnosis"] == "stopped-polling"


def test_redis_from_a_worker_degrades_only_while_jobs_complete():
    def link():
        return [CheckResult("redis-from-verda", False, "no answer from 100.64.0.1:6379", host="verda"),
                CheckResult("services-verda", True, "ok")]
    failed = link()
    qmhealth.degrade_unused_links(failed, jobs_complete=False)
    assert not failed[0].ok
    assert qmhealth.verdict(False, False, False, failed) == "not healthy"
    degraded = link()
    qmhealth.degrade_unused_links(degraded, jobs_complete=True)
    assert degraded[0].ok and degraded[0].warning and degraded[0].data["verdict"] == "degraded"
    assert "the link verda -> Redis fails" in degraded[0].detail
    assert qmhealth.verdict(True, False, False, degraded) == "degraded"
    assert qmhealth.verdict(True, False, False, link()[1:]) == "healthy"


def test_curl_output_is_split_into_code_and_body():
    assert qmhealth.split_curl('{"status": "healthy"}\n200') == (200, b'{"status": "healthy"}')
    assert qmhealth.split_curl("curl: (7) Failed to connect\n000") == (0, b"curl: (7) Failed to connect")


def test_a_job_stored_before_a_failed_submission_is_swept(redis_server):
    """The pinned real queue manager stores the job, then answers 500: the probe user's jobs are removed."""
    r = redis_server.client
    r.set("job:j1", "{}")
    r.zadd("queue:pending", {"j1": 1.0})
    r.sadd(f"user:{jobprobe.PROBE_USER}:jobs", "j1")
    r.zadd("queue:pending", {"user-job": 2.0})  # a user's job is never touched
    jobprobe.forget(r, None)
    assert leftovers(r) == ["queue:pending"] and r.zrange("queue:pending", 0, -1) == ["user-job"]


def test_a_probe_behind_a_long_user_job_is_served_when_the_worker_progresses():
    def waiting():
        return jobprobe.result("not-taken", jobprobe.not_taken_sentence("abcdef123", 5, 1, 0), "mello",
                               job_id="abcdef123", queued_behind=1)
    alone = waiting()
    jobprobe.settle_with_workers(alone, [])
    assert not alone.ok and alone.data["stage"] == "not-taken"
    busy = waiting()
    jobprobe.settle_with_workers(busy, ["verda's ComfyUI is busy and making progress"])
    assert busy.ok and busy.data["stage"] == "queued-progress"
    assert busy.detail.startswith("queued behind 1 jobs, making progress (no job completed yet, but verda's")
    nothing_ahead = jobprobe.result("not-taken", "x", "mello", queued_behind=0)
    jobprobe.settle_with_workers(nothing_ahead, ["verda's ComfyUI is busy"])
    assert not nothing_ahead.ok


def test_probe_jobs_an_earlier_run_left_behind_are_swept_once_ended(redis_server):
    """A run cut off by Ctrl-C leaves its probe job; the next probe removes it once it has ended (or
    its record is gone), but keeps one still pending or running (another operator's probe)."""
    r = redis_server.client
    user = f"user:{jobprobe.PROBE_USER}:jobs"
    r.set("job:old-done", json.dumps({"id": "old-done", "status": "completed"}))
    r.zadd("queue:completed", {"old-done": 1.0})
    r.set("job:other-running", json.dumps({"id": "other-running", "status": "running"}))
    r.zadd("queue:running", {"other-running": 1.0})
    r.set("job:mine", json.dumps({"id": "mine", "status": "completed"}))
    r.sadd(user, "old-done", "gone", "other-running", "mine")
    jobprobe.forget(r, "mine")
    assert r.smembers(user) == {"other-running"} and r.exists("job:other-running")
    assert not r.exists("job:old-done", "job:mine") and r.zcard("queue:completed") == 0
