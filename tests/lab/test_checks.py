"""Cross-host checks from the right vantage point (issue 5), against real Redis, real
ComfyUI-speaking workers and a real network between namespaces."""
from __future__ import annotations

import json
import time

import pytest

from comfyume_fab.checks.links import redis_ping
from comfyume_fab.lab import faults, hostsvc
from comfyume_fab.checks.probe import run_probe
from comfyume_fab.host.ssh.connect import Target
from comfyume_fab.host.ssh.remote import Remote
from tests.support import invoke

pytestmark = pytest.mark.lab
PW = "probe-pw-1"


def remote(lab, name) -> Remote:
    h = lab.hosts[name]
    return Remote(Target(name, h.address, user=h.user, identity_file=str(lab.key),
                         known_hosts=str(lab.known_hosts), connect_timeout=5)).open()


@pytest.fixture(scope="module")
def redises(lab):
    """Two real Redis servers on mello: one published on loopback only, one on the tailnet address."""
    mello = lab.hosts["mello"]
    ids = []
    for bind, port in (("127.0.0.1", 16380), (mello.address, 16381)):
        ids.append(hostsvc.docker(mello, "run", "-d", "-p", f"{bind}:{port}:6379", "redis:7-alpine",
                                  "redis-server", "--requirepass", PW).stdout.strip())
    time.sleep(0.5)
    yield
    hostsvc.docker(mello, "rm", "-f", *ids, check=False)


def test_redis_on_the_tailnet_address_passes_from_the_worker(lab, redises):
    with remote(lab, "verda") as r:
        res = redis_ping(r, "100.64.0.1", 16381, PW, 3, "redis", "mello")
    assert res.ok, res.detail
    assert res.data["rtt_ms"] > 0 and "PONG" in res.detail


def test_redis_bound_to_loopback_fails_from_the_worker_with_the_loopback_diagnosis(lab, redises):
    with remote(lab, "verda") as r:
        res = redis_ping(r, "100.64.0.1", 16380, PW, 3, "redis", "mello")
    assert not res.ok
    assert res.data["diagnosis"] == "refused"
    assert "bound to 127.0.0.1" in res.detail and "REDIS_BIND_IP" in res.detail


def test_the_same_loopback_redis_passes_from_mello_itself(lab, redises):
    # proves the vantage point: the TCP connection really starts on the host we name
    with remote(lab, "mello") as r:
        res = redis_ping(r, "127.0.0.1", 16380, PW, 3, "redis", "mello")
    assert res.ok, res.detail


def test_wrong_password_on_the_worker_side_gives_the_auth_diagnosis(lab, redises):
    with remote(lab, "verda") as r:
        res = redis_ping(r, "100.64.0.1", 16381, "not-the-password", 3, "redis", "mello")
    assert not res.ok and res.data["diagnosis"] == "auth"
    assert "REDIS_PASSWORD differs between the hosts" in res.detail
    assert "not-the-password" not in res.detail


def test_verda_cut_off_the_tailnet_gives_a_timeout_within_the_bound(lab, redises, healed):
    with remote(lab, "verda") as r:
        faults.partition("verda", "mello")
        t0 = time.monotonic()
        res = redis_ping(r, "100.64.0.1", 16381, PW, 2, "redis", "mello")
        took = time.monotonic() - t0
    assert not res.ok and res.data["diagnosis"] == "timeout"
    assert "no answer from 100.64.0.1:16381 within 2 s" in res.detail
    assert took < 2 + 1.0


def test_something_else_on_the_port_is_a_wrong_host(lab):
    with remote(lab, "verda") as r:
        res = redis_ping(r, "100.64.0.1", 22, PW, 2, "redis", "mello")  # sshd, not Redis
    assert not res.ok and res.data["diagnosis"] == "wrong-host"


def test_inference_probe_executes_every_node_and_reports_latency(lab, deployed):
    with remote(lab, "verda") as r:
        first = run_probe(r, 8300, 20)
        second = run_probe(r, 8300, 20)
    assert first.ok and second.ok, (first.detail, second.detail)
    assert "executed 2 nodes" in first.detail and "executed 2 nodes" in second.detail
    assert first.data["prompt_id"] != second.data["prompt_id"]
    assert first.data["latency_ms"] > 0


def test_probe_rejected_workflow_is_a_clear_failure(lab, deployed):
    bad = {"1": {"class_type": "NoSuchNodeClass", "inputs": {}}}
    with remote(lab, "verda") as r:
        res = run_probe(r, 8300, 10, user_graph=bad)
    assert not res.ok and res.data["diagnosis"] == "rejected"
    assert "invalid_prompt" in res.detail and "NoSuchNodeClass does not exist" in res.detail


def test_probe_against_a_stopped_worker_says_so(lab, deployed):
    verda = lab.hosts["verda"]
    faults_ids = faults.kill_container("verda", "worker")
    try:
        with remote(lab, "verda") as r:
            t0 = time.monotonic()
            res = run_probe(r, 8300, 5)
        assert not res.ok and time.monotonic() - t0 < 6
        assert "is not reachable" in res.detail and "is the worker container running?" in res.detail
    finally:
        hostsvc.docker(verda, "start", *faults_ids, check=False)


def test_heartbeat_turns_stale_after_the_worker_stops_polling(lab, healed, tmp_path):
    inv = lab.inventory(tmp_path, worker={"poll_interval": 1, "heartbeat_timeout": 4})
    try:
        assert invoke("start-all", "--hosts", str(inv)).returncode == 0
        data = json.loads(invoke("status", "--json", "--no-probe", "--hosts", str(inv)).stdout)
        beat = {c["name"]: c for c in data["checks"]}["heartbeat-worker-1"]
        assert beat["ok"] and beat["age_s"] <= 2
        assert invoke("stop-verda", "--hosts", str(inv)).returncode == 0
        time.sleep(5)
        res = invoke("status", "--json", "--no-probe", "--hosts", str(inv))
        beat = {c["name"]: c for c in json.loads(res.stdout)["checks"]}["heartbeat-worker-1"]
        assert not beat["ok"] and "has not polled the queue manager for 4 s" in beat["detail"]
        # stopped by stop-verda: the stale heartbeat is expected, and status says so (exit 6, not 4)
        assert beat["stopped_on_purpose"] and res.returncode == 6
    finally:
        invoke("start-all", "--hosts", str(lab.inventory(tmp_path / "restore")))


def test_queue_manager_url_is_checked_from_the_worker_host(lab, deployed, healed):
    res = json.loads(invoke("status", "--json", "--no-probe", "--hosts", str(deployed)).stdout)
    qm = {c["name"]: c for c in res["checks"]}["queue-manager-from-verda"]
    assert qm["ok"] and "http://100.64.0.1:3000" in qm["detail"]
    faults.block_port("mello", 3000, "verda")
    res = invoke("status", "--json", "--no-probe", "--hosts", str(deployed))
    qm = {c["name"]: c for c in json.loads(res.stdout)["checks"]}["queue-manager-from-verda"]
    assert not qm["ok"] and res.returncode == 4


def test_env_drift_is_diagnosed_when_a_container_runs_old_settings(lab, deployed):
    env = lab.hosts["verda"].home / "comfyume" / ".env"
    original = env.read_text()
    env.write_text(original.replace("CFAB_HASH_WORKER='", "CFAB_HASH_WORKER='x"))
    try:
        res = invoke("status", "--json", "--no-probe", "--hosts", str(deployed))
        drift = {c["name"]: c for c in json.loads(res.stdout)["checks"]}.get("env-drift-verda")
        assert drift and not drift["ok"] and "docker compose up -d" in drift["detail"]
    finally:
        env.write_text(original)


def test_concurrent_failing_channels_each_keep_their_own_cause(lab, redises):
    """Issue 11 item 5: paramiko keeps one "last error" per transport, so two channels that failed
    together used to swap or lose their causes ("Unable to open channel" instead of "Connect failed",
    the Redis check's REDIS_BIND_IP hint replaced by generic text). Many rounds of Redis + HTTP checks
    at once over ONE connection, every port refused: each result keeps its own diagnosis."""
    from concurrent.futures import ThreadPoolExecutor
    from comfyume_fab.checks.qmhealth import health_check
    with remote(lab, "verda") as r:
        def redis_one(_):
            return redis_ping(r, "100.64.0.1", 16380, PW, 3, "redis", "mello")  # bound to loopback: refused

        def http_one(port):
            return health_check(r, "100.64.0.1", port, f"http-{port}", 3, "queue manager")
        with ThreadPoolExecutor(max_workers=6) as pool:
            for _ in range(15):
                futures = [pool.submit(redis_one, None) for _ in range(3)] + \
                          [pool.submit(http_one, port) for port in (1, 2, 9)]
                results = [f.result(timeout=30) for f in futures]
                for res in results[:3]:
                    assert not res.ok and res.data["diagnosis"] == "refused", res.detail
                    assert "bound to 127.0.0.1" in res.detail and "REDIS_BIND_IP" in res.detail, res.detail
                for res, port in zip(results[3:], (1, 2, 9)):
                    assert not res.ok and res.data["diagnosis"] == "refused", res.detail
                    assert f"could not connect to 100.64.0.1:{port} (Connect failed)" in res.detail, res.detail
