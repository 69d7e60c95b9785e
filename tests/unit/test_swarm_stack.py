"""The Swarm stack file rendered from the plan (engine: swarm): placement by label, host-mode
publication, Swarm secrets through the shim (never environment values), the overlay's MTU inside
the tailnet's, the GPU reservation as a generic resource. `docker stack config` checks the same file
in the lab (tests/lab/test_swarm.py)."""
from __future__ import annotations

import os
import subprocess

import pytest
import yaml

from comfyume_fab.plan import stack
from comfyume_fab.plan.planner import make_plan
from tests.support import ENV, SWARM_INV, load_here as load

INV = SWARM_INV
ARGV = {"queue-manager": ("python3", "-u", "main.py"), "admin": ("python3", "app.py"),
        "worker": ("/bin/bash", "/app/start-worker.sh")}
NAMES = {"REDIS_PASSWORD": "comfyume_REDIS_PASSWORD_0123456789ab", "ADMIN_PASSWORD": "comfyume_ADMIN_PASSWORD_ba9876543210"}


@pytest.fixture
def plan(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return make_plan(load(INV, ENV))


def _doc(plan, gpu=False):
    text = stack.stack_yaml(plan, stack.render_stack(plan, ARGV, NAMES, gpu_workers=gpu))
    return text, yaml.safe_load(text)


def test_placement_by_node_label_and_one_worker_per_worker_host(plan):
    _, doc = _doc(plan)
    services = doc["services"]
    assert set(services) == {"redis", "queue-manager", "admin", "user001", "user002", "user003", "worker"}
    for name, svc in services.items():
        role = "worker" if name == "worker" else "app"
        assert svc["deploy"]["placement"]["constraints"] == [f"node.labels.comfyume.role == {role}"]
        assert svc["deploy"]["endpoint_mode"] == "dnsrr"
    worker = services["worker"]
    assert worker["deploy"]["replicas"] == 2
    assert worker["deploy"]["placement"]["preferences"] == [{"spread": "node.labels.comfyume.host"}]
    assert "max_replicas_per_node" not in worker["deploy"]["placement"]  # a Down host's task may move
    assert worker["environment"]["WORKER_ID"] == "worker-{{.Task.Slot}}"


def test_redis_and_queue_manager_in_host_mode_and_the_worker_reaches_them_on_the_tailnet(plan):
    _, doc = _doc(plan)
    services = doc["services"]
    assert services["redis"]["ports"] == [{"target": 6379, "published": 6379, "protocol": "tcp", "mode": "host"}]
    assert services["queue-manager"]["ports"] == [{"target": 3000, "published": 3000, "protocol": "tcp",
                                                   "mode": "host"}]
    assert all(p["mode"] == "host" for svc in services.values() for p in svc.get("ports", ()))
    env = services["worker"]["environment"]
    assert env["REDIS_HOST"] == "100.64.0.1" and env["QUEUE_MANAGER_URL"] == "http://100.64.0.1:3000"
    assert "ports" not in services["worker"]  # two tasks may share a node after a reschedule


def test_overlay_mtu_fits_inside_the_tailnet(plan):
    _, doc = _doc(plan)
    (net,) = doc["networks"].values()
    assert net["driver"] == "overlay"
    # the option is the path's MTU (libnetwork takes VXLAN's 50 bytes off for the containers)
    assert int(net["driver_opts"]["com.docker.network.driver.mtu"]) == 1280


def test_secrets_are_swarm_secrets_never_environment_values(plan):
    text, doc = _doc(plan)
    for value in ENV.values():
        assert value not in text
    assert doc["secrets"] == {"ADMIN_PASSWORD": {"file": "./swarm-secrets/ADMIN_PASSWORD", "name": NAMES["ADMIN_PASSWORD"]},
                              "REDIS_PASSWORD": {"file": "./swarm-secrets/REDIS_PASSWORD", "name": NAMES["REDIS_PASSWORD"]}}
    for name, svc in doc["services"].items():
        assert not {"REDIS_PASSWORD", "ADMIN_PASSWORD", "REDISCLI_AUTH"} & set(svc.get("environment", {})), name
    qm = doc["services"]["queue-manager"]
    assert qm["secrets"] == [{"source": "REDIS_PASSWORD", "target": "REDIS_PASSWORD"}]
    # the shim, then the image's own argv; every literal $ doubled against stack interpolation
    assert qm["entrypoint"] == ["/bin/sh", "-c", stack.SHIM.replace("$", "$$"), stack.SHIM_NAME]
    assert qm["command"] == list(ARGV["queue-manager"])
    assert "$(cat /run/secrets/REDIS_PASSWORD)" in doc["services"]["redis"]["command"][2].replace("$$", "$")


def test_the_shim_exports_each_secret_file_and_runs_the_argv(tmp_path):
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "REDIS_PASSWORD").write_text("pw with 'quotes' and $dollar")
    shim = stack.SHIM.replace("/run/secrets", str(secrets))
    out = subprocess.run(["/bin/sh", "-c", shim, stack.SHIM_NAME, "sh", "-c", 'printf %s "$REDIS_PASSWORD"'],
                         capture_output=True, text=True, env={"PATH": os.environ["PATH"]}, check=True)
    assert out.stdout == "pw with 'quotes' and $dollar"


def test_gpu_branch_reserves_one_generic_resource(plan):
    _, plain = _doc(plan)
    assert "resources" not in plain["services"]["worker"]["deploy"]
    _, gpu = _doc(plan, gpu=True)
    assert gpu["services"]["worker"]["deploy"]["resources"] == {"reservations": {"generic_resources": [
        {"discrete_resource_spec": {"kind": "NVIDIA-GPU", "value": 1}}]}}
    assert "devices" not in str(gpu)  # Compose's GPU reservation, which docker stack deploy rejects


def test_secret_name_changes_with_the_value():
    assert stack.secret_name("comfyume", "REDIS_PASSWORD", "a" * 64) != stack.secret_name("comfyume", "REDIS_PASSWORD",
                                                                                            "b" * 64)


def test_plan_and_dry_run_show_the_swarm_steps(plan):
    from comfyume_fab.plan.steps import render_text, steps
    text = render_text(plan, "start-all")
    assert "engine swarm: the services below run as one stack" in text
    commands = [c for _, c in steps(plan, "start-all")]
    assert any(c.startswith("docker swarm init --advertise-addr 100.64.0.1 --data-path-addr 100.64.0.1") for c in commands)
    assert any("docker stack deploy --resolve-image never" in c for c in commands)
    assert not any("--token" in c or "SWMTKN" in c for c in commands)
    assert [c for _, c in steps(plan, "stop-verda")][2] == "docker service scale --detach comfyume_worker=0"
