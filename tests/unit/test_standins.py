"""The lab's stand-in services, run for real: each one as a subprocess on a free port, the queue
manager against a real redis-server, checked over HTTP against ComfyUI 0.8.0's recorded answers
(tests/fixtures/comfyui-0.8.0-cpu/probe-capture.json).

The stand-ins run under this interpreter; to check them the way the lab containers run them
(Debian's python3 with redis-py 4.3), set STANDIN_TEST_PYTHON=/usr/bin/python3 and
STANDIN_TEST_PYTHONPATH=<a folder holding redis 4.3.4>."""
from __future__ import annotations

import ast
import base64
import datetime
import json
import os
import socket
import stat
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support import STANDINS, call, finished, free_port, get_json, post_json, probe, slow, wait_for

ROOT = Path(__file__).resolve().parents[2]
CAPTURE = json.loads((ROOT / "tests/fixtures/comfyui-0.8.0-cpu/probe-capture.json").read_text())
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- helpers
def run(url: str, graph: dict) -> dict:
    """POST /prompt, then the finished history entry."""
    status, body = post_json(url + "/prompt", {"prompt": graph})
    assert status == 200, body
    return finished(url, body["prompt_id"])


# ----------------------------------------------------------------------------- queue manager
def test_queue_manager_health_says_unhealthy_with_200_without_redis(start, redis_server):
    qm = start("queue_manager", "QUEUE_MANAGER_LISTEN_PORT", {**redis_server.env(), "INFERENCE_MODE": "redis"},
               ready_path="/health")
    status, headers, raw = call("GET", qm.url + "/health")
    body = json.loads(raw)
    assert status == 200 and headers["X-Comfyume-Standin"] == "queue-manager"
    assert set(body) == {"status", "version", "inference_mode", "active_gpu", "serverless_endpoint",
                         "redis_connected", "workers_active", "queue_depth", "uptime_seconds"}
    assert body["status"] == "healthy" and body["redis_connected"] is True
    assert (body["inference_mode"], body["workers_active"], body["queue_depth"]) == ("redis", 0, 0)
    assert "STAND-IN queue-manager for the comfyume queue manager" in qm.out.read_text()

    redis_server.stop()
    status, body = get_json(qm.url + "/health", timeout=3)  # quickly: no client-side retry back-off
    # as the real queue manager: 200, the verdict in the body
    assert status == 200 and body["status"] == "unhealthy" and body["redis_connected"] is False
    for method, path in (("GET", "/api/queue/status"), ("GET", "/api/workers/next-job?worker_id=w"),
                         ("POST", "/api/jobs")):
        status, _, _ = call(method, qm.url + path, {"user_id": "u", "workflow": probe()} if method == "POST" else None)
        assert status == 500, path
    assert qm.proc.poll() is None  # Redis errors never crash the server
    redis_server.start()
    assert get_json(qm.url + "/health")[0] == 200


def test_next_job_sets_heartbeat_and_counts_workers(start, redis_server):
    qm = start("queue_manager", "QUEUE_MANAGER_LISTEN_PORT",
               {**redis_server.env(), "WORKER_HEARTBEAT_TIMEOUT": "45", "NUM_WORKERS": "3"}, ready_path="/health")
    assert get_json(qm.url + "/api/workers/next-job")[0] == 422
    before = time.time()
    assert get_json(qm.url + "/api/workers/next-job?worker_id=w7") == (200, {"job": None})
    assert 0 < redis_server.client.ttl("worker:w7:heartbeat") <= 45
    stamp = redis_server.client.get("worker:w7:heartbeat").replace("Z", "+00:00")  # ISO time, as upstream
    assert before - 1 <= datetime.datetime.fromisoformat(stamp).timestamp() <= time.time() + 1
    status, body = get_json(qm.url + "/api/queue/status")  # active_workers: always 0 upstream
    assert status == 200 and body == {"mode": "fifo", "pending_jobs": 0, "running_jobs": 0, "completed_jobs": 0,
                                      "failed_jobs": 0, "total_workers": 3, "active_workers": 0, "queue_depth": 0}


def test_job_round_trip_through_queue_manager_and_polling_worker(start, redis_server, tmp_path):
    qm = start("queue_manager", "QUEUE_MANAGER_LISTEN_PORT", redis_server.env(), ready_path="/health")
    r = redis_server.client
    status, body = post_json(qm.url + "/api/jobs", {"user_id": "user007", "workflow": probe(color=0x00FF00)})
    assert status == 201 and (body["status"], body["position_in_queue"], body["worker_id"]) == ("pending", 0, None)
    good = body["id"]
    assert r.zcard("queue:pending") == 1 and r.sismember("user:user007:jobs", good)
    assert json.loads(r.get(f"job:{good}"))["user_id"] == "user007"  # the Job as JSON, as upstream
    assert get_json(qm.url + "/health")[1]["queue_depth"] == 1
    unknown = {"1": {"class_type": "Nope", "inputs": {}}}
    bad = post_json(qm.url + "/api/jobs", {"user_id": "user007", "workflow": unknown})[1]["id"]
    assert post_json(qm.url + "/api/jobs", {"user_id": "../x", "workflow": unknown})[0] == 422
    assert post_json(qm.url + "/api/jobs", {"user_id": "u", "workflow": {}})[0] == 422

    start("worker", "COMFYUI_LISTEN_PORT", {"OUTPUT_DIR": str(tmp_path / "out"), "QUEUE_MANAGER_URL": qm.url,
                                            "WORKER_ID": "worker-9", "WORKER_POLL_INTERVAL": "1",
                                            "STANDIN_FAULT_FILE": str(tmp_path / "f")}, ready_path="/system_stats")
    wait_for(lambda: r.zscore("queue:completed", good) is not None and r.zscore("queue:failed", bad) is not None,
             what="both jobs to finish")
    assert r.zcard("queue:pending") == 0 and r.zcard("queue:running") == 0
    assert r.ttl("worker:worker-9:heartbeat") > 0
    status, job = get_json(f"{qm.url}/api/jobs/{good}")
    assert status == 200 and (job["status"], job["worker_id"], job["user_id"]) == ("completed", "worker-9", "user007")
    result = job["result"]
    filename = result["outputs"]["2"]["images"][0]["filename"]
    assert result["prompt_id"] and (tmp_path / "out" / filename).read_bytes().startswith(PNG_SIGNATURE)
    assert r.get("user:user007:completed") == "1"
    failed = get_json(f"{qm.url}/api/jobs/{bad}")[1]
    assert failed["status"] == "failed" and "invalid_prompt" in failed["error"]
    assert get_json(f"{qm.url}/api/jobs/nope")[0] == 404
    status, body = get_json(qm.url + "/api/queue/status")
    assert (body["completed_jobs"], body["failed_jobs"]) == (1, 1)
    # a finished job cannot be cancelled (400, as upstream); a pending one is deleted everywhere
    assert call("DELETE", f"{qm.url}/api/jobs/{good}")[0] == 400


def test_worker_reports_with_the_queue_managers_declared_shapes(start, redis_server):
    """complete-job/fail-job: job_id in the query, the body {"result": {...}} / {"error": "..."};
    any other shape is refused with 422, as FastAPI refuses it upstream."""
    qm = start("queue_manager", "QUEUE_MANAGER_LISTEN_PORT", redis_server.env(), ready_path="/health")
    job_id = post_json(qm.url + "/api/jobs", {"user_id": "user003", "workflow": probe()})[1]["id"]
    assert get_json(qm.url + "/api/workers/next-job?worker_id=w1")[1]["job"]["id"] == job_id
    assert post_json(f"{qm.url}/api/workers/complete-job?job_id={job_id}", {"prompt_id": "x"})[0] == 422
    assert post_json(qm.url + "/api/workers/complete-job", {"result": {}})[0] == 422
    assert post_json(f"{qm.url}/api/workers/complete-job?job_id=nope", {"result": {}})[0] == 404
    assert post_json(f"{qm.url}/api/workers/fail-job?job_id={job_id}", {"error": "boom"}) == \
        (200, {"status": "success", "job_id": job_id})
    assert get_json(f"{qm.url}/api/jobs/{job_id}")[1]["error"] == "boom"
    r = redis_server.client
    pending = post_json(qm.url + "/api/jobs", {"user_id": "user008", "workflow": probe()})[1]["id"]
    assert call("DELETE", f"{qm.url}/api/jobs/{pending}")[0] == 204
    assert r.get(f"job:{pending}") is None and not r.sismember("user:user008:jobs", pending)
    assert r.zscore("queue:pending", pending) is None and get_json(f"{qm.url}/api/jobs/{pending}")[0] == 404


def test_serverless_mode_forwards_jobs_to_the_endpoint(start, redis_server, worker):
    qm = start("queue_manager", "QUEUE_MANAGER_LISTEN_PORT", {**redis_server.env(), "INFERENCE_MODE": "serverless",
                                                              "SERVERLESS_ENDPOINT": worker.url}, ready_path="/health")
    health = get_json(qm.url + "/health")[1]
    assert (health["inference_mode"], health["active_gpu"]) == ("serverless", "serverless")
    assert health["serverless_endpoint"] and "://" not in health["serverless_endpoint"]
    status, body = post_json(qm.url + "/api/jobs", {"user_id": "user002", "workflow": probe()})
    assert status == 201 and body["status"] == "completed" and body["worker_id"] == "serverless"
    finished(worker.url, body["result"]["prompt_id"])
    # the newer main never stores a serverless job
    assert get_json(f"{qm.url}/api/jobs/{body['id']}")[0] == 404 and not redis_server.client.keys("job:*")


def test_worker_poll_errors_are_logged_once_and_do_not_stop_it(start, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"
    worker = start("worker", "COMFYUI_LISTEN_PORT", {"QUEUE_MANAGER_URL": dead, "WORKER_POLL_INTERVAL": "1",
                                                     "OUTPUT_DIR": str(tmp_path / "o")}, ready_path="/system_stats")
    wait_for(lambda: "failed" in worker.err.read_text(), what="a poll error on stderr")
    time.sleep(2.5)  # 2 more failed polls: still one line (at most one per 30 s)
    lines = [line for line in worker.err.read_text().splitlines() if "polling" in line]
    assert len(lines) == 1 and f"{dead}/api/workers/next-job?worker_id=worker-1" in lines[0]
    assert worker.proc.poll() is None and get_json(worker.url + "/prompt")[0] == 200


# ----------------------------------------------------------------------------- worker: ComfyUI API
@pytest.mark.parametrize("case, body", [
    ("post_invalid_unknown_class", {"prompt": {**probe(), "1": {"class_type": "NoSuchNodeClass", "inputs": {}}}}),
    ("post_invalid_missing_input", {"prompt": {**probe(), "1": {"class_type": "EmptyImage", "inputs": {
        "height": 64, "batch_size": 1, "color": 1}}}}),
    ("post_no_prompt", {"client_id": "abc"}),
])
def test_prompt_validation_errors_equal_the_recorded_ones(worker, case, body):
    recorded = CAPTURE[case]
    status, answer = post_json(worker.url + "/prompt", body)
    assert status == recorded["http_status"] == 400
    assert answer == recorded["body"]


def test_prompt_value_errors_and_no_outputs(worker):
    bad = probe()
    bad["1"]["inputs"].update(width="wide", height=99999, batch_size=0)
    status, answer = post_json(worker.url + "/prompt", {"prompt": bad})
    assert status == 400 and answer["error"]["type"] == "prompt_outputs_failed_validation"
    node = answer["node_errors"]["1"]
    assert node["class_type"] == "EmptyImage" and node["dependent_outputs"] == ["2"]
    assert [e["type"] for e in node["errors"]] == [
        "invalid_input_type", "value_bigger_than_max", "value_smaller_than_min"]
    for error in node["errors"]:
        assert set(error) == {"type", "message", "details", "extra_info"}
    assert node["errors"][1]["message"] == "Value 99999 bigger than max of 16384"
    assert node["errors"][1]["extra_info"]["input_name"] == "height"
    status, answer = post_json(worker.url + "/prompt", {"prompt": {"1": probe()["1"]}})
    assert status == 400 and answer["error"]["type"] == "prompt_no_outputs" and answer["node_errors"] == {}


def test_probe_executes_writes_png_and_honours_the_cache(worker):
    assert get_json(worker.url + "/history/nope") == (200, {})
    first = post_json(worker.url + "/prompt", {"prompt": probe(color=0x112233, width=48, height=24), "client_id": "c"})
    assert first[0] == 200 and set(first[1]) == {"prompt_id", "number", "node_errors"} and first[1]["node_errors"] == {}
    entry = finished(worker.url, first[1]["prompt_id"])
    recorded = next(iter(CAPTURE["history"].values()))
    assert set(entry) == set(recorded) and len(entry["prompt"]) == len(recorded["prompt"]) == 5
    assert entry["prompt"][3]["client_id"] == "c" and entry["prompt"][4] == ["2"]
    assert entry["status"]["status_str"] == "success" and entry["status"]["completed"] is True
    assert [m[0] for m in entry["status"]["messages"]] == [m[0] for m in recorded["status"]["messages"]]
    assert entry["status"]["messages"][1][1]["nodes"] == []
    assert entry["meta"] == {"2": {"node_id": "2", "display_node": "2", "parent_node": None, "real_node_id": "2"}}
    image = entry["outputs"]["2"]["images"][0]
    assert image == {"filename": "probe_00001_.png", "subfolder": "", "type": "output"}
    png = (worker.output / image["filename"]).read_bytes()
    assert png.startswith(PNG_SIGNATURE) and png[12:16] == b"IHDR"
    assert struct.unpack(">II", png[16:24]) == (48, 24)
    status, headers, served = call("GET", f"{worker.url}/view?filename={image['filename']}&type=output")
    assert status == 200 and served == png and headers["Content-Type"] == "image/png"
    assert call("GET", f"{worker.url}/view?filename=nothere.png&type=output")[0] == 404
    assert call("GET", f"{worker.url}/view?filename=../fault&type=output")[0] in (400, 403)
    assert call("GET", f"{worker.url}/view?filename=fault&subfolder=..&type=output")[0] in (400, 403)

    again = run(worker.url, probe(color=0x112233, width=48, height=24))
    assert again["status"]["messages"][1][1]["nodes"] == ["1", "2"]
    assert again["outputs"] == entry["outputs"]  # a cached output node repeats its earlier images
    assert sorted(p.name for p in worker.output.iterdir()) == ["probe_00001_.png"]

    changed = run(worker.url, probe(color=0x445566, width=48, height=24))
    assert changed["status"]["messages"][1][1]["nodes"] == []
    assert changed["outputs"]["2"]["images"][0]["filename"] == "probe_00002_.png"
    assert (worker.output / "probe_00002_.png").exists()
    assert get_json(worker.url + "/queue") == (200, {"queue_running": [], "queue_pending": []})
    assert get_json(worker.url + "/prompt") == (200, {"exec_info": {"queue_remaining": 0}})
    assert len(get_json(worker.url + "/history")[1]) == 3


def test_execution_error_is_recorded_like_comfyui(worker):
    status, body = post_json(worker.url + "/prompt", {"prompt": probe(prefix="/etc/escape")})
    entry = finished(worker.url, body["prompt_id"])
    assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False
    kind, error = entry["status"]["messages"][-1]
    assert kind == "execution_error" and (error["node_id"], error["node_type"]) == ("2", "SaveImage")
    assert "outside the output folder" in error["exception_message"]


def test_object_info_matches_the_recorded_definitions(worker):
    for name in ("EmptyImage", "SaveImage"):
        recorded = json.loads((ROOT / f"tests/fixtures/comfyui-0.8.0-cpu/object_info_{name}.json").read_text())
        assert get_json(f"{worker.url}/object_info/{name}") == (200, recorded)
    assert get_json(worker.url + "/object_info/NoSuchNode") == (200, {})
    assert set(get_json(worker.url + "/object_info")[1]) == {"EmptyImage", "ImageBlur", "SaveImage"}


def test_queue_front_delete_and_interrupt_like_comfyui(start, tmp_path):
    w = start("worker", "COMFYUI_LISTEN_PORT", {"OUTPUT_DIR": str(tmp_path / "o"), "STANDIN_BLUR_RATE": "1000000"},
              ready_path="/system_stats")
    busy = post_json(w.url + "/prompt", {"prompt": slow(30), "client_id": "user"})[1]["prompt_id"]
    wait_for(lambda: get_json(w.url + "/queue")[1]["queue_running"], what="the slow prompt to run")
    later = post_json(w.url + "/prompt", {"prompt": probe(color=1)})[1]
    first = post_json(w.url + "/prompt", {"prompt": probe(color=2), "front": True})[1]
    assert first["number"] < 0 < later["number"]
    queue = get_json(w.url + "/queue")[1]
    assert [item[1] for item in queue["queue_running"]] == [busy]
    assert [item[1] for item in queue["queue_pending"]] == [first["prompt_id"], later["prompt_id"]]
    assert call("POST", w.url + "/queue", {"delete": [first["prompt_id"], busy]})[0] == 200
    queue = get_json(w.url + "/queue")[1]  # a running prompt is never deleted
    assert [item[1] for item in queue["queue_pending"]] == [later["prompt_id"]]
    assert [item[1] for item in queue["queue_running"]] == [busy]
    assert call("POST", w.url + "/interrupt", b"")[0] == 200
    entry = finished(w.url, busy)
    assert entry["status"]["messages"][-1][0] == "execution_interrupted"
    assert finished(w.url, later["prompt_id"])["status"]["status_str"] == "success"
    assert get_json(f"{w.url}/history/{first['prompt_id']}")[1] == {}


def test_worker_ignores_sigterm_like_comfyui_and_stops_on_sigint(start, tmp_path):
    import signal
    w = start("worker", "COMFYUI_LISTEN_PORT", {"OUTPUT_DIR": str(tmp_path / "o"), "STANDIN_IGNORE_SIGTERM": "1"},
              ready_path="/system_stats")
    w.proc.send_signal(signal.SIGTERM)
    with pytest.raises(subprocess.TimeoutExpired):
        w.proc.wait(1.5)
    w.proc.send_signal(signal.SIGINT)
    assert w.proc.wait(5) is not None


def nvidia_smi_works() -> bool:
    try:
        return subprocess.run(["nvidia-smi", "-L"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def test_worker_reports_this_machine_device(worker):
    status, headers, raw = call("GET", worker.url + "/system_stats")
    stats = json.loads(raw)
    recorded = CAPTURE["system_stats"]["body"]
    assert status == 200 and headers["X-Comfyume-Standin"] == "worker"
    assert {"os", "ram_total", "ram_free", "comfyui_version", "python_version", "pytorch_version",
            "embedded_python", "argv"} <= set(stats["system"])
    assert set(stats["devices"][0]) == set(recorded["devices"][0])
    expected = "cuda" if nvidia_smi_works() else "cpu"  # no GPU on the development machine: cpu
    assert stats["devices"][0]["type"] == expected
    assert ("--cpu" in stats["system"]["argv"]) == (expected == "cpu")
    if expected == "cpu":
        device = stats["devices"][0]
        assert device["name"] == "cpu" and device["index"] is None and device["vram_total"] > 0
        assert stats["system"]["argv"] == ["main.py", "--cpu", "--listen", "0.0.0.0", "--port", str(worker.port)]


def fake_nvidia_smi(folder: Path, script: str) -> str:
    folder.mkdir()
    path = folder / "nvidia-smi"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return f"{folder}:{os.environ.get('PATH', '/usr/bin:/bin')}"


@pytest.mark.parametrize("script, env, expected", [
    ("echo 'NVIDIA H100 80GB HBM3, 81559, 1024'\n", {}, "cuda"),
    ("echo 'NVIDIA H100 80GB HBM3, 81559, 1024'\n", {"WORKER_DEVICE": "cpu"}, "cpu"),
    ("echo 'NVIDIA-SMI has failed' >&2; exit 9\n", {}, "cpu"),
    ("echo 'garbage'\n", {}, "cpu"),
])
def test_worker_reports_cuda_only_when_nvidia_smi_works(start, tmp_path, script, env, expected):
    path = fake_nvidia_smi(tmp_path / "bin", script)
    worker = start("worker", "COMFYUI_LISTEN_PORT", {"PATH": path, "OUTPUT_DIR": str(tmp_path / "o"), **env},
                   ready_path="/system_stats")
    stats = get_json(worker.url + "/system_stats")[1]
    device = stats["devices"][0]
    assert device["type"] == expected and ("--cpu" in stats["system"]["argv"]) == (expected == "cpu")
    assert f"worker: device {expected}" in worker.out.read_text()
    if expected == "cuda":
        assert device == {"name": "cuda:0 NVIDIA H100 80GB HBM3 : native", "type": "cuda", "index": 0,
                          "vram_total": 81559 * 1048576, "vram_free": (81559 - 1024) * 1048576,
                          "torch_vram_total": 0, "torch_vram_free": 0}


# ----------------------------------------------------------------------------- worker: faults
def test_fault_file_500_and_hang(worker):
    worker.fault.write_text("500\n")
    assert get_json(worker.url + "/queue") == (500, {"error": "stand-in fault injected"})
    assert post_json(worker.url + "/prompt", {"prompt": probe()})[0] == 500
    assert get_json(worker.url + "/system_stats")[0] == 200
    worker.fault.write_text("500-all")
    assert get_json(worker.url + "/system_stats") == (500, {"error": "stand-in fault injected"})
    worker.fault.write_text("hang")
    started = time.monotonic()
    with pytest.raises((TimeoutError, socket.timeout, urllib.error.URLError)):
        call("POST", worker.url + "/prompt", {"prompt": probe()}, timeout=1)
    assert time.monotonic() - started < 5
    assert get_json(worker.url + "/system_stats", timeout=2)[0] == 200  # only POST /prompt hangs
    worker.fault.unlink()
    assert post_json(worker.url + "/prompt", {"prompt": probe()})[0] == 200


def test_crash_file_makes_the_worker_exit_1(start, tmp_path):
    crash = tmp_path / "crash"
    crash.write_text("")
    worker = start("worker", "COMFYUI_LISTEN_PORT", {"STANDIN_CRASH_FILE": str(crash)}, ready_path=None)
    assert worker.proc.wait(10) == 1
    assert f"stand-in worker: crash requested by {crash}" in worker.err.read_text()


# ----------------------------------------------------------------------------- admin and frontend
def test_admin_requires_basic_auth_except_health(start):
    admin = start("admin", "ADMIN_LISTEN_PORT", {"ADMIN_USERNAME": "boss", "ADMIN_PASSWORD": "s3cret"},
                  ready_path="/health")
    status, headers, raw = call("GET", admin.url + "/health")
    assert (status, json.loads(raw), headers["X-Comfyume-Standin"]) == (200, {"status": "healthy"}, "admin")
    status, headers, _ = call("GET", admin.url + "/")
    assert status == 401 and headers["WWW-Authenticate"].startswith("Basic")

    def auth(user, password):
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
    assert call("GET", admin.url + "/", headers=auth("boss", "wrong"))[0] == 401
    assert call("GET", admin.url + "/", headers=auth("admin", "s3cret"))[0] == 401
    status, headers, raw = call("GET", admin.url + "/", headers=auth("boss", "s3cret"))
    assert status == 200 and headers["Content-Type"].startswith("text/html") and b"admin" in raw


def test_frontend_serves_the_ui_only(start):
    frontend = start("frontend", "COMFYUI_LISTEN_PORT", {"USER_ID": "user013", "COMFYUI_ARGS": "--cpu"})
    status, headers, raw = call("GET", frontend.url + "/")
    assert status == 200 and b"ComfyUI" in raw and b"user013" in raw
    assert headers["X-Comfyume-Standin"] == "frontend"
    stats = get_json(frontend.url + "/system_stats")[1]
    assert stats["system"]["argv"] == ["main.py", "--cpu", "--listen", "0.0.0.0", "--port", str(frontend.port)]
    assert stats["devices"][0]["type"] == "cpu" and set(stats["devices"][0]) == set(
        CAPTURE["system_stats"]["body"]["devices"][0])
    assert get_json(frontend.url + "/queue") == (200, CAPTURE["queue"]["body"])
    assert get_json(frontend.url + "/prompt") == (200, CAPTURE["prompt"]["body"])
    assert "STAND-IN frontend for the comfyume" in frontend.out.read_text()


def test_every_standin_imports_only_stdlib_and_redis():
    allowed = set(sys.stdlib_module_names) | {"redis", "common"}
    for script in STANDINS.glob("*.py"):
        for node in ast.walk(ast.parse(script.read_text(), str(script))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in allowed, f"{script.name} imports {name}"
