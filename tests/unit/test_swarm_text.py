"""What status prints with engine: swarm: nodes with their GPUs, tasks per node with their errors,
a rescheduled task, failures first."""
from __future__ import annotations

from comfyume_fab.checks.result import CheckResult
from comfyume_fab.errors import ExitCode
from comfyume_fab.present.swarm import status_text


def test_status_text_names_nodes_tasks_errors_and_moves():
    data = {"ok": False, "mode": "dual-server", "config_hash": "abc", "hosts": {
                "mello": {"reachable": True}, "verda-2": {"reachable": False, "error": "no route to host"}},
            "swarm": {"manager": "mello", "nodes": [
                {"id": "n1", "host": "verda", "role": "worker", "state": "ready", "availability": "active",
                 "addr": "100.64.0.2", "gpus": ["GPU-1234"]},
                {"id": "n2", "host": "verda-2", "role": "worker", "state": "down", "availability": "active",
                 "addr": "100.64.0.3", "gpus": []}],
                "services": [{"name": "comfyume_worker", "running": 1, "wanted": 2, "image": "w", "ports": ""}],
                "tasks": [{"service": "comfyume_worker", "slot": 2, "host": "verda", "node": "n1", "state": "rejected",
                           "desired": "running", "error": "No such image: comfyume-worker:v0.11.0"}],
                "moved": ["task 2 moved from verda-2 (node down) to verda"]}}
    checks = [CheckResult("swarm-node-verda", True, "ok"), CheckResult("swarm-node-verda-2", False, "node verda-2: down")]
    text = status_text(data, checks, ExitCode.UNREACHABLE)
    assert text.startswith("comfyume status: NOT HEALTHY")
    assert "GPUs GPU-1234" in text and "no GPU advertised" in text
    assert "comfyume_worker.2   on verda" in text and "No such image: comfyume-worker:v0.11.0" in text
    assert "rescheduled: task 2 moved from verda-2 (node down) to verda" in text
    assert "verda-2: UNREACHABLE  no route to host" in text
    assert text.index("FAIL swarm-node-verda-2") < text.index("ok   swarm-node-verda:")
