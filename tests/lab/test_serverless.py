"""Serverless GPU tiers on real hosts (issue 20): the app stack on mello in mode serverless, two
tiers served by the STAND-IN of Verda's container gateway on verda (two deployments on two ports,
one lab worker ComfyUI behind them), a third tier at an address where nothing answers.

One module set-up (gateway, start-all); the tests run in file order and each leaves the
deployment as it found it (tier h200-spot active, both deployments scaled 0..1)."""
from __future__ import annotations

import datetime as dt
import json
import time
import urllib.request

import pytest
import yaml

from comfyume_fab.lab import hostsvc
from tests.support import invoke, wait_for

pytestmark = pytest.mark.lab
PROJECT = "cfabsrv"
PORTS = {"redis": 26379, "queue_manager": 23000, "admin": 28080, "frontend_base": 28188, "worker_comfyui": 28300}
KEY, CLIENT, SECRET = "lab-inference-key-20", "lab-client-20", "lab-client-secret-20"
GW = "100.64.0.2"
COLD = 2.0
APP_SERVICES = ("redis", "admin", "user001", "user002")
GW_ENV = {"GATEWAY_DEPLOYMENTS": "lab-h200-spot:28401,lab-b300-spot:28402",
          "GATEWAY_UPSTREAM": "http://127.0.0.1:28410", "GATEWAY_API_KEY": KEY, "GATEWAY_CLIENT_ID": CLIENT,
          "GATEWAY_CLIENT_SECRET": SECRET, "GATEWAY_COLD_START": str(COLD), "GATEWAY_SCALE_DOWN_DELAY": "600",
          "GATEWAY_QUEUE_TIMEOUT": "1"}
ENV = {"SERVERLESS_API_KEY": KEY, "VERDA_CLIENT_ID": CLIENT, "VERDA_CLIENT_SECRET": SECRET}
API = f"http://{GW}:28401/v1"


def tiers(active: str = "h200-spot") -> dict:
    return {"endpoints": {
        "h200-spot": {"url": f"http://{GW}:28401", "deployment": "lab-h200-spot"},
        "b300-spot": {"url": f"http://{GW}:28402", "deployment": "lab-b300-spot"},
        "b300-on-demand": {"url": f"http://{GW}:28409", "deployment": "lab-dead"}},
        "active": active, "api": API}


def containers(lab) -> dict[str, str]:
    out = hostsvc.docker(lab.hosts["mello"], "ps", "-a", "--filter", f"label=com.docker.compose.project={PROJECT}",
                         "--format", "{{.ID}} {{.Label \"com.docker.compose.service\"}}").stdout
    return {svc: cid for cid, svc in (line.split() for line in out.splitlines())}


def api(method: str, path: str, body=None):
    def call(m, p, b, token=None):
        req = urllib.request.Request(API + p, data=json.dumps(b).encode() if b is not None else None, method=m)
        req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read() or b"{}")
    token = call("POST", "/oauth2/token", {"grant_type": "client_credentials", "client_id": CLIENT,
                                           "client_secret": SECRET})["access_token"]
    return call(method, path, body, token)


def status(inv, env=None) -> tuple[int, dict]:
    res = invoke("status", "--json", "--hosts", str(inv), env={**ENV, **(env or {})})
    return res.returncode, json.loads(res.stdout)


def checks(data) -> dict:
    return {c["name"]: c for c in data["checks"]}


@pytest.fixture(scope="module")
def srv(lab, tmp_path_factory):
    verda = lab.hosts["verda"]
    tmp = tmp_path_factory.mktemp("serverless")
    env_file = tmp / "gateway.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in GW_ENV.items()))
    for name in ("cfab-gateway", "cfab-gateway-comfyui"):
        hostsvc.docker(verda, "rm", "-f", name, check=False)
    hostsvc.docker(verda, "run", "-d", "--name", "cfab-gateway-comfyui", "--network", "host",
                   "-e", "COMFYUI_LISTEN_PORT=28410", "comfyume-worker:v0.11.0")
    hostsvc.docker(verda, "run", "-d", "--name", "cfab-gateway", "--network", "host", "--env-file", str(env_file),
                   "comfyume-lab/serverless-gateway:v1")
    inv = lab.inventory(tmp, names=("mello",), mode="serverless", num_users=2, project=PROJECT, ports=dict(PORTS),
                        roles={"mello": ["app"]}, serverless=tiers())
    inv.write_text(inv.read_text().replace("workdir: comfyume", f"workdir: {PROJECT}"))
    res = invoke("start-all", "--hosts", str(inv), env=ENV)
    assert res.returncode == 0, res.stderr + res.stdout
    # start-all's job probe went through the active tier and warmed it: a restarted gateway is cold again
    hostsvc.docker(verda, "restart", "-t", "1", "cfab-gateway")
    def answers():
        try:
            return api("GET", "/container-deployments/lab-h200-spot/scaling")
        except OSError:
            return None
    wait_for(answers, timeout=30, what="the restarted gateway's deployment API")
    yield inv
    invoke("stop-all", "--down", "--hosts", str(inv), env=ENV)
    hostsvc.docker(lab.hosts["mello"], "rm", "-f", f"{PROJECT}-warm-h200-spot", check=False)
    for name in ("cfab-gateway", "cfab-gateway-comfyui"):
        hostsvc.docker(verda, "rm", "-f", name, check=False)


def test_status_proves_inference_on_the_active_tier_with_a_cold_start_figure(srv):
    code, data = status(srv)
    found = checks(data)
    assert code == 0, [c["detail"] for c in data["checks"] if not c["ok"]]
    sv = data["serverless"]
    assert (sv["active"], sv["active_gpu_expected"], sv["active_gpu_reported"]) == (
        "h200-spot", "H200-141GB-SPOT", "H200-141GB-SPOT")
    assert sv["price_per_hour"] == 0.97 and sv["currency"] == "EUR" and sv["gpu"] == "H200 141 GB, spot"
    assert sv["probe"]["mode"] == "async" and sv["probe"]["executed_nodes"] == 2
    assert sv["probe"]["waiting_ms"] >= COLD * 1000 * 0.8  # the first request after start waits for a replica
    assert found["serverless-h200-spot-key"]["ok"] and sv["open_without_key"] is False
    assert sv["scaling"]["deployment"] == "lab-h200-spot" and sv["scaling"]["replicas"] == 1
    human = invoke("status", "--hosts", str(srv), env=ENV).stdout
    assert "serverless tier h200-spot  GPU H200 141 GB, spot  0.97 EUR/h" in human
    assert "waiting for a replica (cold start)" in human


def test_switch_gpu_recreates_only_the_queue_manager(lab, srv):
    before = containers(lab)
    res = invoke("switch-gpu", "b300-spot", "--hosts", str(srv), env=ENV)
    assert res.returncode == 0, res.stderr + res.stdout
    assert "h200-spot (H200 141 GB, spot, 0.97 EUR/h) -> b300-spot (B300 288 GB, spot, 1.61 EUR/h)" in res.stdout
    after = containers(lab)
    assert after["queue-manager"] != before["queue-manager"]
    assert {s: after[s] for s in APP_SERVICES} == {s: before[s] for s in APP_SERVICES}
    assert yaml.safe_load(srv.read_text())["serverless"]["active"] == "b300-spot"
    code, data = status(srv)
    assert code == 0, [c["detail"] for c in data["checks"] if not c["ok"]]
    assert data["serverless"]["active_gpu_reported"] == "B300-288GB-SPOT"
    assert checks(data)["serverless-b300-spot"]["ok"]
    back = invoke("switch-gpu", "h200-spot", "--hosts", str(srv), env=ENV)
    assert back.returncode == 0, back.stderr


def test_a_switch_to_a_dead_tier_is_refused(lab, srv):
    before = containers(lab)
    res = invoke("switch-gpu", "b300-on-demand", "--hosts", str(srv), env=ENV)
    assert res.returncode != 0 and "refusing to switch to tier b300-on-demand" in res.stderr
    assert "--force" in res.stderr and "Traceback" not in res.stderr
    assert containers(lab) == before
    assert yaml.safe_load(srv.read_text())["serverless"]["active"] == "h200-spot"


def test_wrong_key_is_diagnosed_in_one_sentence(srv):
    code, data = status(srv, env={"SERVERLESS_API_KEY": "not-the-key"})
    bad = checks(data)["serverless-h200-spot"]
    assert code != 0 and not bad["ok"] and bad["diagnosis"] == "key"
    assert "means unauthorised, not a missing page: SERVERLESS_API_KEY is wrong" in bad["detail"]


def test_an_endpoint_open_without_a_key_is_a_security_finding(lab, srv, tmp_path):
    data = yaml.safe_load(srv.read_text())
    data["serverless"]["endpoints"]["h200-spot"] = {"url": f"http://{GW}:28404", "deployment": "lab-open"}
    open_inv = tmp_path / "hosts.yaml"
    open_inv.write_text(yaml.safe_dump(data, sort_keys=False))
    # a deployment without an inference key, beside the others (its own gateway process)
    verda = lab.hosts["verda"]
    env_file = tmp_path / "open.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in {**GW_ENV, "GATEWAY_DEPLOYMENTS": "lab-open:28404",
                                                           "GATEWAY_API_KEY": ""}.items()))
    hostsvc.docker(verda, "run", "-d", "--rm", "--name", "cfab-gateway-open", "--network", "host",
                   "--env-file", str(env_file), "comfyume-lab/serverless-gateway:v1")
    try:
        time.sleep(1)
        code, out = status(open_inv)
        key = checks(out)["serverless-h200-spot-key"]
        assert code != 0 and not key["ok"] and key["detail"].startswith("SECURITY:")
        assert "answered HTTP 200 to a request WITHOUT the key" in key["detail"]
    finally:
        hostsvc.docker(verda, "rm", "-f", "cfab-gateway-open", check=False)


def test_a_tier_switched_by_hand_on_the_host_is_drift(lab, srv):
    mello = lab.hosts["mello"]
    qm = containers(lab)["queue-manager"]
    # what the team's shell script does: edit .env, recreate the queue manager
    env_path = mello.home / PROJECT / ".env"
    text = env_path.read_text().replace("SERVERLESS_ACTIVE='h200-spot'", "SERVERLESS_ACTIVE='b300-spot'")
    env_path.write_text(text)
    hostsvc.docker(mello, "compose", "-p", PROJECT, "--project-directory", str(mello.home / PROJECT),
                   "--env-file", str(env_path), "-f", str(mello.home / PROJECT / "app.yml"),
                   "-f", str(mello.home / PROJECT / "frontends.yml"), "-f", str(mello.home / PROJECT / "serverless.yml"),
                   "up", "-d", "--no-deps", "queue-manager", timeout=120)
    assert containers(lab)["queue-manager"] != qm
    try:
        code, data = status(srv)
        drift = checks(data)["serverless-queue-manager"]
        assert code != 0 and drift["diagnosis"] == "drift"
        assert "switched by hand on mello; run `invoke switch-gpu h200-spot` to go back" in drift["detail"]
    finally:
        res = invoke("switch-gpu", "h200-spot", "--hosts", str(srv), env=ENV)
        assert res.returncode == 0, res.stderr


def test_a_deployment_scaled_to_zero_is_diagnosed(srv):
    api("PATCH", "/container-deployments/lab-h200-spot/scaling", {"max_replica_count": 0})
    try:
        code, data = status(srv)
        found = checks(data)
        assert code != 0
        assert found["deployment-h200-spot"]["diagnosis"] == "scaled-to-zero"
        assert "the deployment is scaled to zero (max_replica_count 0)" in found["deployment-h200-spot"]["detail"]
        assert found["serverless-h200-spot"]["diagnosis"] == "no-replicas"
    finally:
        api("PATCH", "/container-deployments/lab-h200-spot/scaling", {"max_replica_count": 1})


def test_warm_raises_min_replicas_and_a_job_on_the_app_host_lowers_them(lab, srv):
    until = (dt.datetime.now() + dt.timedelta(seconds=12)).strftime("%H:%M:%S")
    res = invoke("warm", "h200-spot", "--replicas", "1", "--until", until, "--hosts", str(srv), env=ENV)
    assert res.returncode == 0, res.stderr + res.stdout
    assert api("GET", "/container-deployments/lab-h200-spot/scaling")["min_replica_count"] == 1
    assert CLIENT not in res.stdout + res.stderr and SECRET not in res.stdout + res.stderr
    # no command of ours runs from here on: the job on mello lowers the minimum
    deadline = time.monotonic() + 40
    while api("GET", "/container-deployments/lab-h200-spot/scaling")["min_replica_count"] != 0:
        assert time.monotonic() < deadline, hostsvc.docker(lab.hosts["mello"], "logs", f"{PROJECT}-warm-h200-spot",
                                                           check=False).stdout
        time.sleep(1)
    logs = hostsvc.docker(lab.hosts["mello"], "logs", f"{PROJECT}-warm-h200-spot").stdout
    assert "lowered at" in logs and SECRET not in logs
