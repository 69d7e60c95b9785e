"""The other modes on real hosts: everything on one host, UI only, and serverless.
Each uses its own compose project, folder and ports beside the dual-server deployment."""
from __future__ import annotations

import json

import pytest

from comfyume_fab.lab import hostsvc
from tests.support import invoke

pytestmark = pytest.mark.lab
PORTS = {"redis": 16379, "queue_manager": 13000, "admin": 18080, "frontend_base": 18188, "worker_comfyui": 18300}


def project_containers(lab, project):
    out = hostsvc.docker(lab.hosts["mello"], "ps", "-a", "--filter", f"label=com.docker.compose.project={project}",
                         "--format", "{{.ID}} {{.Label \"com.docker.compose.service\"}} {{.State}}").stdout
    return sorted(tuple(line.split()) for line in out.splitlines())


def one_host(lab, tmp_path, mode, project, **extra):
    inv = lab.inventory(tmp_path, names=("mello",), mode=mode, num_users=2, project=project, ports=dict(PORTS),
                        roles={"mello": ["app", "worker"] if mode.startswith("single") else ["app"]}, **extra)
    text = inv.read_text().replace("workdir: comfyume", f"workdir: {project}")
    inv.write_text(text)
    return inv


def test_single_server_cpu_runs_everything_on_one_host_and_stop_verda_stops_only_the_worker(lab, tmp_path):
    inv = one_host(lab, tmp_path, "single-server-cpu", "cfabsingle")
    try:
        res = invoke("start-all", "--hosts", str(inv))
        assert res.returncode == 0, res.stderr
        assert "mello -> 127.0.0.1:16379 PONG" in res.stdout
        data = json.loads(invoke("status", "--json", "--hosts", str(inv)).stdout)
        assert data["ok"] is True
        names = {c["name"]: c for c in data["checks"]}
        assert names["device-mello"]["device"] == "cpu" and names["device-mello"]["cpu_flag"] is True
        assert "from inside the worker container" in names["queue-manager-from-mello"]["detail"]
        app = [c for c in project_containers(lab, "cfabsingle") if c[1] != "worker"]
        assert invoke("stop-verda", "--hosts", str(inv)).returncode == 0
        after = project_containers(lab, "cfabsingle")
        assert [c for c in after if c[1] != "worker"] == app
        assert [c[2] for c in after if c[1] == "worker"] == ["exited"]
    finally:
        assert invoke("stop-all", "--down", "--hosts", str(inv)).returncode == 0
    assert project_containers(lab, "cfabsingle") == []


def test_frontend_testing_runs_the_ui_alone(lab, tmp_path):
    inv = one_host(lab, tmp_path, "frontend-testing", "cfabui")
    try:
        res = invoke("start-all", "--hosts", str(inv))
        assert res.returncode == 0, res.stderr
        assert sorted(c[1] for c in project_containers(lab, "cfabui")) == ["user001", "user002"]
        status = invoke("status", "--json", "--hosts", str(inv))
        assert status.returncode == 0, status.stdout
        stop = invoke("stop-verda", "--hosts", str(inv))
        assert stop.returncode == 0 and "runs no worker" in stop.stderr + stop.stdout
    finally:
        assert invoke("stop-all", "--down", "--hosts", str(inv)).returncode == 0


def test_serverless_runs_the_app_stack_without_a_worker(lab, tmp_path):
    """Mode serverless runs the app stack alone; the job probe proves the queue manager -> serverless
    endpoint path: a dead endpoint fails it at submission with the queue manager's own 502 message."""
    mello = lab.hosts["mello"]
    endpoint = "cfab-sls-endpoint"
    hostsvc.docker(mello, "rm", "-f", endpoint, check=False)
    hostsvc.docker(mello, "run", "-d", "--name", endpoint, "-p", "100.64.0.1:18999:8188", "comfyume-worker:v0.11.0")
    inv = one_host(lab, tmp_path, "serverless", "cfabsls",
                   serverless={"endpoint": "http://100.64.0.1:18999", "provider": "modal"})
    try:
        res = invoke("start-all", "--hosts", str(inv))
        assert res.returncode == 0, res.stderr
        services = sorted(c[1] for c in project_containers(lab, "cfabsls"))
        assert services == ["admin", "queue-manager", "redis", "user001", "user002"]
        # --no-probe: this endpoint does not exist (tests/lab/test_serverless.py proves a real one)
        data = json.loads(invoke("status", "--json", "--no-probe", "--hosts", str(inv)).stdout)
        assert data["ok"] is True and not [c for c in data["checks"] if c["name"].startswith("inference")]
        assert data["serverless"]["active_gpu_reported"] == "serverless"
        # the job probe through the queue manager (tests/lab/test_serverless.py: completed on a tier)
        hostsvc.docker(mello, "rm", "-f", endpoint)
        res = invoke("status", "--json", "--hosts", str(inv))
        probe = {c["name"]: c for c in json.loads(res.stdout)["checks"]}["job-probe"]
        assert res.returncode == 4 and (probe["stage"], probe["http_status"]) == ("rejected", 502)
        assert probe["detail"].startswith("users' jobs fail at submission: the queue manager answered 502: "
                                          "Serverless error:")
    finally:
        hostsvc.docker(mello, "rm", "-f", endpoint, check=False)
        assert invoke("stop-all", "--down", "--hosts", str(inv)).returncode == 0
