"""The STAND-IN of Verda's serverless container gateway, and the stand-in queue manager's tiers,
run for real on loopback: the gateway in front of the stand-in worker's ComfyUI API."""
from __future__ import annotations

import json
import time

import pytest

from comfyume_fab.checks.serverless import probe_endpoint

from tests.support import Local, call, free_port, get_json, post_json, wait_for
from tests.support import finished, probe

KEY = "lab-inference-key"
CLIENT = {"GATEWAY_CLIENT_ID": "lab-client", "GATEWAY_CLIENT_SECRET": "lab-secret"}
BEARER = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
def gateway(start, worker):
    def _gateway(cold=0.5, key=KEY, **env):
        a, b = free_port(), free_port()
        gw = start("gateway", None, {"GATEWAY_DEPLOYMENTS": f"lab-a:{a},lab-b:{b}", "GATEWAY_UPSTREAM": worker.url,
                                     "GATEWAY_API_KEY": key, "GATEWAY_COLD_START": str(cold), **CLIENT,
                                     **{k: str(v) for k, v in env.items()}}, ready_path=None)
        gw.a, gw.b = f"http://127.0.0.1:{a}", f"http://127.0.0.1:{b}"
        wait_for(lambda: _answers(gw.b), what="the gateway's ports")
        return gw
    return _gateway


def _answers(url):
    try:
        return call("GET", url + "/system_stats", timeout=1)[0] in (200, 404)
    except OSError:
        return False


def token(url: str) -> dict:
    status, body = post_json(url + "/v1/oauth2/token", {"grant_type": "client_credentials",
                                                        "client_id": "lab-client", "client_secret": "lab-secret"})
    assert status == 200 and body["token_type"] == "Bearer"
    return {"Authorization": f"Bearer {body['access_token']}"}


def test_without_the_key_the_gateway_answers_404_not_401(gateway):
    gw = gateway()
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        status, _, raw = call("POST", gw.a + "/prompt", {"prompt": probe()}, headers=headers)
        assert status == 404 and b"not found" in raw
    status, _, raw = call("POST", gw.a + "/prompt", {"prompt": probe()}, headers=BEARER)
    assert status == 200 and json.loads(raw)["prompt_id"]


def test_an_open_endpoint_answers_anyone(gateway):
    gw = gateway(key="")
    assert call("GET", gw.a + "/queue")[0] == 200


def test_a_cold_start_then_warm_answers_and_the_history_through_the_gateway(gateway, worker):
    gw = gateway(cold=1.0)
    t0 = time.monotonic()
    status, headers, raw = call("POST", gw.a + "/prompt", {"prompt": probe(color=123)}, headers=BEARER)
    cold = time.monotonic() - t0
    assert status == 200 and int(headers["X-Standin-Waited-Ms"]) >= 900 and cold >= 0.9
    prompt_id = json.loads(raw)["prompt_id"]
    status, headers, _ = call("GET", gw.a + f"/history/{prompt_id}", headers=BEARER)
    assert status == 200 and int(headers["X-Standin-Waited-Ms"]) < 500  # the replica is warm now
    assert finished(worker.url, prompt_id)["status"]["completed"]


def test_async_request_execution_id_and_status_polling(gateway):
    gw = gateway(cold=0.3)
    status, _, raw = call("POST", gw.b + "/prompt", {"prompt": probe(color=7)},
                          headers={**BEARER, "Prefer": "respond-async"})
    assert status == 202
    exec_id = json.loads(raw)["Id"]
    states = []

    def done():
        body = get_json(gw.b + f"/status/{exec_id}", headers=BEARER)[1]
        states.append(body["Status"])
        return body if body["Status"] in ("Completed", "Failed") else None
    body = wait_for(done, what="the async execution")
    assert body["Status"] == "Completed" and body["waiting_ms"] >= 250 and "running_ms" in body
    assert states[0] in ("Queue", "Inference")
    status, result = get_json(gw.b + f"/result/{exec_id}", headers=BEARER)
    assert status == 200 and result["prompt_id"]
    assert call("GET", gw.b + f"/status/{exec_id}")[0] == 404  # the key is needed here too


def test_deployment_api_scaling_and_replicas(gateway):
    gw = gateway(cold=0.3, GATEWAY_SCALE_DOWN_DELAY=1)
    assert call("GET", gw.a + "/v1/container-deployments/lab-a/scaling")[0] == 401
    assert post_json(gw.a + "/v1/oauth2/token", {"grant_type": "client_credentials", "client_id": "lab-client",
                                                 "client_secret": "nope"})[0] == 401
    auth = token(gw.a)
    status, scaling = get_json(gw.a + "/v1/container-deployments/lab-b/scaling", headers=auth)
    assert status == 200 and (scaling["min_replica_count"], scaling["max_replica_count"]) == (0, 1)
    assert get_json(gw.a + "/v1/container-deployments/lab-b/replicas", headers=auth)[1] == {"list": []}
    status, _, raw = call("PATCH", gw.a + "/v1/container-deployments/lab-b/scaling",
                          {"min_replica_count": 1, "max_replica_count": 2}, headers=auth)
    assert status == 200 and json.loads(raw)["min_replica_count"] == 1
    replicas = get_json(gw.b + "/v1/container-deployments/lab-b/replicas", headers=auth)[1]["list"]
    assert len(replicas) == 1 and replicas[0]["status"] in ("provisioning", "running")
    time.sleep(0.4)  # warm: a request waits for no cold start
    status, headers, _ = call("GET", gw.b + "/queue", headers=BEARER)
    assert status == 200 and int(headers["X-Standin-Waited-Ms"]) < 200
    assert call("PATCH", gw.a + "/v1/container-deployments/lab-b/scaling", {"min_replica_count": 3},
                headers=auth)[0] == 400  # above max
    call("PATCH", gw.a + "/v1/container-deployments/lab-b/scaling", {"min_replica_count": 0}, headers=auth)
    time.sleep(1.1)  # idle past scale_down_policy.delay_seconds: back to zero
    assert get_json(gw.a + "/v1/container-deployments/lab-b/replicas", headers=auth)[1] == {"list": []}
    assert get_json(gw.a + "/v1/container-deployments/nope", headers=auth)[0] == 404


def test_scaled_to_zero_answers_503(gateway):
    gw = gateway(GATEWAY_QUEUE_TIMEOUT=0.2)
    auth = token(gw.a)
    call("PATCH", gw.a + "/v1/container-deployments/lab-a/scaling", {"max_replica_count": 0}, headers=auth)
    status, body = post_json(gw.a + "/prompt", {"prompt": probe()}, headers=BEARER)
    assert status == 503 and "max_replica_count 0" in body["message"]


# ----------------------------------------------------------------------------- the queue manager's tiers
def qm_env(redis_server, **env):
    return {**redis_server.env(), "INFERENCE_MODE": "serverless", **env}


def test_queue_manager_uses_the_active_tier_with_the_key(start, redis_server, gateway):
    gw = gateway(cold=0.2)
    qm = start("queue_manager", "QUEUE_MANAGER_LISTEN_PORT", qm_env(
        redis_server, SERVERLESS_ACTIVE="b300-spot", SERVERLESS_ENDPOINT_H200_SPOT=gw.a,
        SERVERLESS_ENDPOINT_B300_SPOT=gw.b, SERVERLESS_API_KEY=KEY), ready_path="/health")
    health = get_json(qm.url + "/health")[1]
    assert (health["status"], health["inference_mode"], health["active_gpu"]) == ("healthy", "serverless",
                                                                                 "B300-288GB-SPOT")
    status, body = post_json(qm.url + "/api/jobs", {"user_id": "user001", "workflow": probe(color=99)})
    assert status == 201 and (body["status"], body["worker_id"]) == ("completed", "serverless")
    assert body["result"]["prompt_id"]


def test_queue_manager_errors_carry_the_real_detail_texts(start, redis_server, gateway):
    gw = gateway()
    wrong = start("queue_manager", "QUEUE_MANAGER_LISTEN_PORT", qm_env(
        redis_server, SERVERLESS_ACTIVE="h200-spot", SERVERLESS_ENDPOINT_H200_SPOT=gw.a,
        SERVERLESS_API_KEY="wrong"), ready_path="/health")
    status, body = post_json(wrong.url + "/api/jobs", {"user_id": "u", "workflow": probe()})
    assert status == 404 and body["detail"].startswith(f"Client error '404 Not Found' for url '{gw.a}/prompt'")
    dead = start("queue_manager", "QUEUE_MANAGER_LISTEN_PORT", qm_env(
        redis_server, SERVERLESS_ACTIVE="h200-spot", SERVERLESS_ENDPOINT_H200_SPOT=f"http://127.0.0.1:{free_port()}",
        SERVERLESS_API_KEY=KEY), ready_path="/health")
    assert post_json(dead.url + "/api/jobs", {"user_id": "u", "workflow": probe()}) == (
        502, {"detail": "Serverless error: All connection attempts failed"})
    none = start("queue_manager", "QUEUE_MANAGER_LISTEN_PORT", qm_env(redis_server, SERVERLESS_ACTIVE="b300-spot"),
                 ready_path="/health")
    assert get_json(none.url + "/health")[1]["active_gpu"] == "serverless"  # still starts, still "healthy"
    assert post_json(none.url + "/api/jobs", {"user_id": "u", "workflow": probe()}) == (
        503, {"detail": "Serverless client not initialized. Check SERVERLESS_ENDPOINT."})


# ----------------------------------------------------------------------------- the endpoint probe
def test_probe_proves_inference_with_a_cold_start_figure(gateway):
    gw = gateway(cold=0.6)
    key_check, inference = probe_endpoint(Local(), "h200-spot", gw.a, KEY, 20)
    assert key_check.ok and key_check.data == {"without_key_status": 404, "open": False}
    assert inference.ok, inference.detail
    assert inference.data["mode"] == "async" and inference.data["waiting_ms"] >= 500
    assert inference.data["executed_nodes"] == 2 and "cold start" in inference.detail
    again = probe_endpoint(Local(), "h200-spot", gw.a, KEY, 20)[1]
    assert again.ok and again.data["waiting_ms"] < 300 and again.data["prompt_id"] != inference.data["prompt_id"]


def test_probe_diagnoses_the_wrong_key_open_endpoint_dead_tier_and_zero_replicas(gateway):
    gw = gateway(GATEWAY_QUEUE_TIMEOUT=0.2)
    key_check, inference = probe_endpoint(Local(), "h200-spot", gw.a, "wrong-key", 10)
    assert key_check.ok and not inference.ok and inference.data["diagnosis"] == "key"
    assert "means unauthorised" in inference.detail and "SERVERLESS_API_KEY is wrong" in inference.detail
    no_key = probe_endpoint(Local(), "h200-spot", gw.a, None, 10)[1]
    assert no_key.data["diagnosis"] == "key" and "no SERVERLESS_API_KEY is set" in no_key.detail
    open_gw = gateway(key="")
    key_check, inference = probe_endpoint(Local(), "b300-spot", open_gw.a, KEY, 10)
    assert not key_check.ok and key_check.detail.startswith("SECURITY:") and inference.ok
    dead = probe_endpoint(Local(), "b300-spot", f"http://127.0.0.1:{free_port()}", KEY, 5)
    assert not dead[1].ok and dead[0].data["diagnosis"] == "unreachable"
    auth = token(gw.a)
    call("PATCH", gw.a + "/v1/container-deployments/lab-b/scaling", {"max_replica_count": 0}, headers=auth)
    zero = probe_endpoint(Local(), "b300-spot", gw.b, KEY, 10)[1]
    assert not zero.ok and zero.data["diagnosis"] == "no-replicas" and "scaled to zero" in zero.detail
