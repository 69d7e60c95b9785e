"""The pure planner, table-driven over every mode x topology, plus frontends, GPUs, env and hashes."""
from __future__ import annotations

import re

import pytest
import yaml

from comfyume_fab.errors import ConfigError
from comfyume_fab.inventory import load_inventory
from comfyume_fab.inventory.secrets import Secret
from comfyume_fab.plan.planner import make_plan
from tests.support import APP_IP, CORE, ENV, MODES, TOPOLOGIES, USERS, inventory_text, load, salted

def plan_for(tmp_path, mode, topology, gpu_present=None, **kw):
    return salted(make_plan(load(tmp_path, inventory_text(mode, topology, **kw)), gpu_present))


# --- the table ------------------------------------------------------------------------------------

KEYS = ("REDIS_HOST", "REDIS_BIND_IP", "QUEUE_MANAGER_BIND_IP", "QUEUE_MANAGER_URL", "INFERENCE_MODE",
        "WORKER_DEVICE", "NUM_WORKERS", "COMFYUI_ARGS", "WORKER_ID")


def app_only(inference: str, workers: int, bind: str = "127.0.0.1") -> dict:
    return {"services": CORE + USERS, "files": ("app.yml", "frontends.yml"),
            "env": {"REDIS_HOST": None, "REDIS_BIND_IP": bind, "QUEUE_MANAGER_BIND_IP": bind,
                    "QUEUE_MANAGER_URL": None, "INFERENCE_MODE": inference, "WORKER_DEVICE": None,
                    "NUM_WORKERS": str(workers), "COMFYUI_ARGS": "--cpu", "WORKER_ID": None}}


def single(device: str) -> dict:
    return {"services": CORE + USERS + ("worker",), "files": ("app.yml", "frontends.yml", "worker.yml"),
            "env": {"REDIS_HOST": "redis", "REDIS_BIND_IP": "127.0.0.1", "QUEUE_MANAGER_BIND_IP": "127.0.0.1",
                    "QUEUE_MANAGER_URL": "http://queue-manager:3000", "INFERENCE_MODE": "local",
                    "WORKER_DEVICE": device, "NUM_WORKERS": "1", "COMFYUI_ARGS": "--cpu", "WORKER_ID": "worker-1"}}


def remote_worker(worker_id: str) -> dict:
    return {"services": ("worker",), "files": ("worker.yml",),
            "env": {"REDIS_HOST": APP_IP, "REDIS_BIND_IP": None, "QUEUE_MANAGER_BIND_IP": None,
                    "QUEUE_MANAGER_URL": f"http://{APP_IP}:3000", "INFERENCE_MODE": None, "WORKER_DEVICE": "auto",
                    "NUM_WORKERS": None, "COMFYUI_ARGS": None, "WORKER_ID": worker_id}}


FRONTEND_TESTING = {"services": USERS, "files": ("frontends.yml",),
                    "env": {"REDIS_HOST": None, "REDIS_BIND_IP": None, "QUEUE_MANAGER_BIND_IP": None,
                            "QUEUE_MANAGER_URL": None, "INFERENCE_MODE": "local", "WORKER_DEVICE": None,
                            "NUM_WORKERS": "0", "COMFYUI_ARGS": "--cpu", "WORKER_ID": None}}

MANY_HOSTS = "hosts.yaml:3 hosts: mode {mode} runs everything on one host, found {n} hosts: {names} " \
             "(list one host with roles: [app, worker], or use mode dual-server)"
NO_WORKER = "hosts.yaml:{line} hosts.{host}.roles: mode {mode} runs no worker, but {host} has the worker role ({hint})"
HINT = {"serverless": "remove the worker role: the queue manager sends jobs to serverless.endpoint",
        "frontend-testing": "remove the worker role: frontend-testing runs the UI only; use single-server-cpu to infer"}

TABLE = {
    ("frontend-testing", "one"): {"box": FRONTEND_TESTING},
    ("frontend-testing", "two"): [NO_WORKER.format(line=5, host="verda", mode="frontend-testing",
                                                   hint=HINT["frontend-testing"])],
    ("frontend-testing", "three"): [NO_WORKER.format(line=l, host=h, mode="frontend-testing",
                                                     hint=HINT["frontend-testing"]) for l, h in ((5, "verda"),
                                                                                                (6, "verda2"))],
    ("serverless", "one"): {"box": {**app_only("serverless", 0),
                                    "files": ("app.yml", "frontends.yml", "serverless.yml")}},
    ("serverless", "two"): [NO_WORKER.format(line=6, host="verda", mode="serverless", hint=HINT["serverless"])],
    ("serverless", "three"): [NO_WORKER.format(line=l, host=h, mode="serverless", hint=HINT["serverless"])
                              for l, h in ((6, "verda"), (7, "verda2"))],
    ("single-server-gpu", "one"): {"box": single("auto")},
    ("single-server-gpu", "two"): [MANY_HOSTS.format(mode="single-server-gpu", n=2, names="mello, verda")],
    ("single-server-gpu", "three"): [MANY_HOSTS.format(mode="single-server-gpu", n=3,
                                                       names="mello, verda, verda2")],
    ("single-server-cpu", "one"): {"box": single("cpu")},
    ("single-server-cpu", "two"): [MANY_HOSTS.format(mode="single-server-cpu", n=2, names="mello, verda")],
    ("single-server-cpu", "three"): [MANY_HOSTS.format(mode="single-server-cpu", n=3,
                                                       names="mello, verda, verda2")],
    ("dual-server", "one"): [
        "hosts.yaml:3 hosts: mode dual-server needs at least one host with roles [worker], found none "
        "(add the GPU host with roles: [worker], or use mode single-server-gpu)",
        "hosts.yaml:4 hosts.box.roles: mode dual-server runs the worker on its own host, but box has roles "
        "[app, worker] (give it roles: [app] and the worker another host, or use mode single-server-gpu)"],
    ("dual-server", "two"): {"mello": app_only("redis", 1, bind=APP_IP), "verda": remote_worker("worker-1")},
    ("dual-server", "three"): {"mello": app_only("redis", 2, bind=APP_IP), "verda": remote_worker("worker-1"),
                               "verda2": remote_worker("worker-2")},
}


def test_table_covers_every_mode_and_topology():
    assert set(TABLE) == {(m, t) for m in MODES for t in TOPOLOGIES}


@pytest.mark.parametrize("mode, topology", sorted(TABLE))
def test_mode_by_topology(tmp_path, monkeypatch, mode, topology):
    monkeypatch.chdir(tmp_path)
    expected = TABLE[(mode, topology)]
    text = inventory_text(mode, topology)
    if isinstance(expected, list):
        with pytest.raises(ConfigError) as info:
            load_inventory_rel(tmp_path, text)
        assert info.value.problems == expected
        return
    plan = salted(make_plan(load(tmp_path, text)))
    assert [h.name for h in plan.hosts] == list(expected)
    assert plan.mode == mode and plan.warnings == () and plan.errors == ()
    for host in plan.hosts:
        want = expected[host.name]
        assert host.services == want["services"], host.name
        assert host.compose_files == want["files"], host.name
        assert tuple(host.files) == want["files"]
        got = {key: host.env.get(key) for key in KEYS}
        assert got == want["env"], host.name
        assert host.worker_device == want["env"]["WORKER_DEVICE"]
        assert host.app_services + host.worker_services == host.services
        assert host.env["CFAB_ENV_HASH"] == host.env_hash and re.fullmatch(r"[0-9a-f]{12}", host.env_hash)
    assert plan.app is plan.hosts[0]
    assert [w.name for w in plan.workers] == [h.name for h in plan.hosts if "worker" in h.services]
    assert re.fullmatch(r"[0-9a-f]{12}", plan.config_hash)


def load_inventory_rel(tmp_path, text):
    (tmp_path / "hosts.yaml").write_text(text)
    return load_inventory("hosts.yaml", environ=ENV)


def test_every_compose_variable_without_default_is_planned(tmp_path):
    """Each ${VAR} a host's compose files need (no :- default) is in that host's env."""
    for mode, topology in TABLE:
        if isinstance(TABLE[(mode, topology)], list):
            continue
        for host in plan_for(tmp_path, mode, topology).hosts:
            text = "".join(host.files.values())
            needed = set(re.findall(r"(?<!\$)\$\{([A-Z_]+)\}", text))
            assert needed <= set(host.env), (mode, topology, host.name, needed - set(host.env))


def test_env_per_host_details(tmp_path):
    plan = plan_for(tmp_path, "dual-server", "two", extra="ports: {redis: 16379, queue_manager: 13000}\n")
    mello, verda = plan.hosts
    assert mello.env["REDIS_PORT"] == "16379" and mello.env["QUEUE_MANAGER_PORT"] == "13000"
    assert verda.env["WORKER_REDIS_PORT"] == "16379"
    assert verda.env["QUEUE_MANAGER_URL"] == f"http://{APP_IP}:13000"
    assert mello.env["REDIS_PASSWORD"] == verda.env["REDIS_PASSWORD"] == Secret("s3cret-redis-pw")
    assert mello.env["ADMIN_PASSWORD"] == Secret("s3cret-admin-pw")
    assert "ADMIN_PASSWORD" not in verda.env  # a host gets only the secrets its services read
    assert {k: mello.env[k] for k in ("PROJECT_NAME", "NUM_USERS", "REDIS_PERSISTENCE", "ADMIN_USERNAME",
                                      "WORKER_HEARTBEAT_TIMEOUT", "HEALTH_INTERVAL", "HEALTH_START_PERIOD",
                                      "REDIS_IMAGE", "QUEUE_MANAGER_IMAGE", "ADMIN_IMAGE", "FRONTEND_IMAGE",
                                      "ADMIN_PORT", "INFERENCE_PROVIDER")} == {
        "PROJECT_NAME": "comfyume", "NUM_USERS": "20", "REDIS_PERSISTENCE": "yes", "ADMIN_USERNAME": "admin",
        "WORKER_HEARTBEAT_TIMEOUT": "60", "HEALTH_INTERVAL": "5s", "HEALTH_START_PERIOD": "10s",
        "REDIS_IMAGE": "redis:7-alpine", "QUEUE_MANAGER_IMAGE": "comfyume-queue-manager:v0.11.0",
        "ADMIN_IMAGE": "comfyume-admin:v0.11.0", "FRONTEND_IMAGE": "comfyume-frontend:v0.11.0",
        "ADMIN_PORT": "8080", "INFERENCE_PROVIDER": "verda"}
    assert "WORKER_IMAGE" not in mello.env and "REDIS_IMAGE" not in verda.env
    assert {k: verda.env[k] for k in ("WORKER_IMAGE", "WORKER_POLL_INTERVAL", "WORKER_COMFYUI_PORT",
                                      "INFERENCE_PROVIDER")} == {
        "WORKER_IMAGE": "comfyume-worker:v0.11.0", "WORKER_POLL_INTERVAL": "2", "WORKER_COMFYUI_PORT": "8300",
        "INFERENCE_PROVIDER": "verda"}
    single_plan = plan_for(tmp_path, "single-server-gpu", "one", extra="ports: {redis: 16379}\n")
    box = single_plan.hosts[0]
    assert box.env["REDIS_PORT"] == "16379" and box.env["WORKER_REDIS_PORT"] == "6379"  # inside the project


def test_serverless_env(tmp_path):
    (tmp_path / "s.env").write_text("SERVERLESS_API_KEY=key-123\n")
    (tmp_path / "s.env").chmod(0o600)  # a secrets file others can read is refused
    plan = plan_for(tmp_path, "serverless", "one", extra="secrets: {env_file: s.env}\n")
    box = plan.hosts[0]
    assert box.env["SERVERLESS_ENDPOINT"] == "https://api.runpod.ai/v2/abc/run"
    assert box.env["INFERENCE_PROVIDER"] == "runpod" and box.env["INFERENCE_MODE"] == "serverless"
    assert box.env["SERVERLESS_API_KEY"] == Secret("key-123")
    assert "WORKER_IMAGE" not in box.env and plan.workers == ()


def test_hosts_ordered_app_first(tmp_path):
    text = ("mode: dual-server\nhosts:\n  verda: {address: verda, roles: [worker]}\n"
            f"  mello: {{address: mello, roles: [app], tailscale_ip: {APP_IP}}}\n"
            "  verda2: {address: v2, roles: [worker], worker_id: gpu-b}\n")
    plan = salted(make_plan(load(tmp_path, text)))
    assert [h.name for h in plan.hosts] == ["mello", "verda", "verda2"]
    assert [h.env["WORKER_ID"] for h in plan.workers] == ["worker-1", "gpu-b"]
    assert plan.host("verda2").name == "verda2"
    with pytest.raises(ConfigError, match="did you mean 'verda'"):
        plan.host("verdaa")


# --- frontends ------------------------------------------------------------------------------------

@pytest.mark.parametrize("num_users", [20, 7])
@pytest.mark.parametrize("mode", ["dual-server", "frontend-testing"])
def test_frontends_ports_and_batches(tmp_path, mode, num_users):
    plan = plan_for(tmp_path, mode, "two" if mode == "dual-server" else "one", num_users=num_users)
    doc = yaml.safe_load(plan.app.files["frontends.yml"])
    names = [f"user{i:03d}" for i in range(1, num_users + 1)]
    assert list(doc["services"]) == names
    assert plan.app.services[-num_users:] == tuple(names)
    for i, name in enumerate(names, start=1):
        svc = doc["services"][name]
        assert svc["ports"] == [f"127.0.0.1:{8187 + i}:8188"]
        assert svc["environment"] == {"USER_ID": name, "QUEUE_MANAGER_URL": "http://queue-manager:3000",
                                      "COMFYUI_ARGS": "${COMFYUI_ARGS}"}
        assert svc["image"] == "${FRONTEND_IMAGE}" and svc["restart"] == "unless-stopped"
        assert svc["volumes"] == [f"./data/user_data/{name}:/comfyui/user"]
        assert svc["labels"] == {"org.comfyume.env-hash": "${CFAB_HASH_%s}" % name.upper()}
        assert svc["healthcheck"]["test"] == ["CMD", "curl", "-fsS", "http://127.0.0.1:8188/"]
        first_of_batch = (i - 1) % 5 == 0
        if first_of_batch and mode == "dual-server":
            assert svc["depends_on"] == {"queue-manager": {"condition": "service_healthy"}}
        elif first_of_batch:
            assert "depends_on" not in svc  # no queue manager in frontend-testing
        else:
            assert svc["depends_on"] == {f"user{i - 1:03d}": {"condition": "service_healthy"}}
    starts = [n for n, s in doc["services"].items() if "user" not in str(s.get("depends_on", {}))]
    assert starts == [n for i, n in enumerate(names) if i % 5 == 0]
    if num_users == 20:
        assert doc["services"]["user020"]["ports"] == ["127.0.0.1:8207:8188"]
        assert starts == ["user001", "user006", "user011", "user016"]
    else:
        assert starts == ["user001", "user006"] and doc["services"]["user007"]["depends_on"] == \
            {"user006": {"condition": "service_healthy"}}


def test_frontend_base_moves_ports(tmp_path):
    plan = plan_for(tmp_path, "dual-server", "two", num_users=3, extra="ports: {frontend_base: 9100}\n")
    doc = yaml.safe_load(plan.app.files["frontends.yml"])
    assert [s["ports"] for s in doc["services"].values()] == [["127.0.0.1:9100:8188"], ["127.0.0.1:9101:8188"],
                                                              ["127.0.0.1:9102:8188"]]


# --- GPU presence ----------------------------------------------------------------------------------

WARN = ("mode {mode} expects a GPU on {host} but none was found; the worker will run on CPU (slow): "
        "worker.cpu_fallback says its image falls back to CPU")
NO_FALLBACK = ("{path}:{line} hosts.{host}: mode {mode} expects a GPU on {host} but none was found, and the worker "
               "image comfyume-worker:v0.11.0 does not fall back to CPU (the real worker never passes --cpu: ComfyUI "
               "would exit with 'Torch not compiled with CUDA enabled' and the container would crash-loop), so "
               "nothing was started (install the NVIDIA driver and container toolkit there, or set "
               "worker.cpu_fallback: true if your worker image runs on CPU)")
GPU_ERROR = ("{path}:5 hosts.verda.gpu: gpu: required, but no GPU was found on verda (install the NVIDIA driver "
             "and container toolkit there, or set gpu: auto to run on CPU)")

GPU_CASES = [
    # mode, topology, host gpu setting, gpu_present, expect worker-gpu.yml, warnings, errors
    ("dual-server", "two", None, {"verda": True}, True, [], []),
    ("dual-server", "two", None, {"verda": False}, False, [],
     [NO_FALLBACK.format(path="{path}", line=5, mode="dual-server", host="verda")]),
    ("dual-server", "two", None, None, False, [], []),
    ("dual-server", "two", None, {"mello": True}, False, [], []),  # verda unknown
    ("dual-server", "two", "required", {"verda": False}, False, [], [GPU_ERROR]),
    ("dual-server", "two", "required", {"verda": True}, True, [], []),
    ("dual-server", "two", "none", {"verda": False}, False, [], []),
    ("dual-server", "two", "none", {"verda": True}, False, [], []),
    ("single-server-gpu", "one", None, {"box": True}, True, [], []),
    ("single-server-gpu", "one", None, {"box": False}, False, [],
     [NO_FALLBACK.format(path="{path}", line=4, mode="single-server-gpu", host="box")]),
    ("single-server-cpu", "one", None, {"box": True}, False, [], []),  # CPU mode: no reservation
    ("single-server-cpu", "one", None, {"box": False}, False, [], []),  # CPU mode expects no GPU
    ("serverless", "one", None, {"box": False}, False, [], []),
    ("frontend-testing", "one", None, {"box": False}, False, [], []),
]


@pytest.mark.parametrize("mode, topology, gpu, present, gpu_file, warnings, errors", GPU_CASES)
def test_gpu_presence(tmp_path, mode, topology, gpu, present, gpu_file, warnings, errors):
    plan = plan_for(tmp_path, mode, topology, gpu_present=present, verda_gpu=gpu)
    workers = plan.workers
    files = [f for w in workers for f in w.compose_files]
    assert ("worker-gpu.yml" in files) is gpu_file
    if gpu_file:
        assert workers[0].compose_files[-2:] == ("worker.yml", "worker-gpu.yml")
        assert "nvidia" in workers[0].files["worker-gpu.yml"]
    assert list(plan.warnings) == warnings
    assert list(plan.errors) == [e.format(path=str(tmp_path / "hosts.yaml")) for e in errors]


@pytest.mark.parametrize("mode, topology, host", [("dual-server", "two", "verda"), ("single-server-gpu", "one", "box")])
def test_an_image_that_falls_back_to_cpu_is_started_with_a_warning(tmp_path, mode, topology, host):
    plan = plan_for(tmp_path, mode, topology, gpu_present={host: False}, extra="worker: {cpu_fallback: true}\n")
    assert list(plan.warnings) == [WARN.format(mode=mode, host=host)] and not plan.errors


# --- env rendering, masking, hashing ----------------------------------------------------------------

NASTY = "$(touch /tmp/x); rm -rf ~ `id` $HOME & | > <"  # shell metacharacters (quotes are refused earlier)


def test_env_file_text_is_literal_and_sorted(tmp_path):
    environ = {"REDIS_PASSWORD": "$(touch /tmp/x); rm -rf ~", "ADMIN_PASSWORD": NASTY}
    plan = salted(make_plan(load(tmp_path, inventory_text("dual-server", "two"), environ)))
    mello = plan.hosts[0]
    text = mello.env_file_text()
    assert "REDIS_PASSWORD='$(touch /tmp/x); rm -rf ~'\n" in text
    assert f"ADMIN_PASSWORD='{NASTY}'\n" in text
    lines = text.splitlines()
    assert text.endswith("\n") and lines == sorted(lines)
    assert all(re.fullmatch(r"[A-Z][A-Z0-9_]*='[^'\n]*'", line) for line in lines)
    assert len(lines) == len(mello.env)


def test_env_masked_hides_secrets(tmp_path):
    for host in plan_for(tmp_path, "single-server-gpu", "one").hosts:
        masked = host.env_masked()
        assert masked["REDIS_PASSWORD"] == masked["ADMIN_PASSWORD"] == "***"
        blob = repr(masked) + repr(host) + str(host.env)
        assert "s3cret" not in blob
        assert set(masked) == set(host.env)


def test_plan_repr_has_no_secret(tmp_path):
    plan = plan_for(tmp_path, "dual-server", "three")
    assert "s3cret" not in repr(plan) and "s3cret" not in str(plan.hosts)


def test_env_hash_follows_values_not_secrets(tmp_path):
    base = plan_for(tmp_path, "dual-server", "two")
    more_users = plan_for(tmp_path, "dual-server", "two", num_users=21)
    assert more_users.hosts[0].env_hash != base.hosts[0].env_hash
    assert more_users.hosts[1].env_hash == base.hosts[1].env_hash  # the worker's env did not change
    assert more_users.config_hash != base.config_hash
    slower = plan_for(tmp_path, "dual-server", "two", extra="worker: {poll_interval: 5}\n")
    assert slower.hosts[1].env_hash != base.hosts[1].env_hash
    again = plan_for(tmp_path, "dual-server", "two")
    assert [h.env_hash for h in again.hosts] == [h.env_hash for h in base.hosts]
    assert again.config_hash == base.config_hash
    # a changed secret changes the hash (so `start-all` redeploys it) ...
    other_pw = salted(make_plan(load(tmp_path, inventory_text("dual-server", "two"),
                              {"REDIS_PASSWORD": "different", "ADMIN_PASSWORD": "s3cret-admin-pw"})))
    assert [h.env_hash for h in other_pw.hosts] != [h.env_hash for h in base.hosts]
    assert all(a.env_hash != b.env_hash for a, b in zip(other_pw.hosts, base.hosts))
    assert all(a.host_hash != b.host_hash for a, b in zip(other_pw.hosts, base.hosts))
    # ... while the config hash, which plan and status print, never follows a secret
    assert other_pw.config_hash == base.config_hash
    other_admin = salted(make_plan(load(tmp_path, inventory_text("dual-server", "two"),
                                 {"REDIS_PASSWORD": "s3cret-redis-pw", "ADMIN_PASSWORD": "changed"})))
    assert other_admin.hosts[0].env_hash != base.hosts[0].env_hash
    assert other_admin.hosts[1].env_hash == base.hosts[1].env_hash  # the worker never gets ADMIN_PASSWORD


def test_env_hash_is_not_a_plain_hash_of_the_secret(tmp_path):
    """... but only through a slow salted fingerprint: the printed hash is no cheap password oracle."""
    import hashlib
    plan = plan_for(tmp_path, "dual-server", "two")
    verda = plan.hosts[1]
    plain = [f"{k}={v.reveal() if isinstance(v, Secret) else v}" for k, v in sorted(verda.env.items())
             if not k.startswith("CFAB_")]
    assert hashlib.sha256("\n".join(plain).encode()).hexdigest()[:12] != verda.env_hash
    assert "s3cret" not in str(plan.config_hash) + str([h.env_masked() for h in plan.hosts])


def test_env_file_text_refuses_unsafe_value(tmp_path):
    plan = plan_for(tmp_path, "dual-server", "two")
    host = plan.hosts[0]
    bad = type(host)(**{**host.__dict__, "env": {**host.env, "X": "it's"}})
    with pytest.raises(ConfigError, match="the value of X cannot be written to .env safely"):
        bad.env_file_text()


def test_refuses_redis_without_password(tmp_path):
    """Even an Inventory built by hand (not loaded) cannot publish Redis without a password."""
    import dataclasses
    inv = load(tmp_path, inventory_text("dual-server", "two"))
    bare = dataclasses.replace(inv, secrets={})
    with pytest.raises(ConfigError, match="refusing to plan Redis without a password"):
        make_plan(bare)


# --- per-service fingerprints (issue 13) -----------------------------------------------------------

def test_one_more_user_changes_only_the_new_users_fingerprint(tmp_path):
    base = plan_for(tmp_path, "dual-server", "two", num_users=20)
    more = plan_for(tmp_path, "dual-server", "two", num_users=21)
    old, new = base.hosts[0].service_hashes, more.hosts[0].service_hashes
    assert set(new) - set(old) == {"user021"}
    assert {svc for svc in old if old[svc] != new[svc]} == set()  # redis, queue-manager, admin, user001..020
    assert base.hosts[1].service_hashes == more.hosts[1].service_hashes
    # the .env carries each one under its label's name
    assert more.hosts[0].env["CFAB_HASH_USER021"] == new["user021"]
    assert more.hosts[0].env["CFAB_HASH_QUEUE_MANAGER"] == new["queue-manager"]


def test_a_frontend_image_changes_every_frontend_and_nothing_else(tmp_path):
    base = plan_for(tmp_path, "dual-server", "two")
    other = plan_for(tmp_path, "dual-server", "two", extra="images: {frontend: 'comfyume-frontend:v0.12.0'}\n")
    old, new = base.hosts[0].service_hashes, other.hosts[0].service_hashes
    changed = {svc for svc in old if old[svc] != new[svc]}
    assert changed == set(base.hosts[0].frontends) and len(changed) == 20
    assert "FRONTEND_IMAGE" in base.hosts[0].service_vars["user001"]
    assert "FRONTEND_IMAGE" not in base.hosts[0].service_vars["redis"]


def test_redis_fingerprint_follows_only_its_own_settings(tmp_path):
    base = plan_for(tmp_path, "dual-server", "two")
    admin_pw = salted(make_plan(load(tmp_path, inventory_text("dual-server", "two"),
                              {"REDIS_PASSWORD": "s3cret-redis-pw", "ADMIN_PASSWORD": "changed"})))
    old, new = base.hosts[0].service_hashes, admin_pw.hosts[0].service_hashes
    assert {svc for svc in old if old[svc] != new[svc]} == {"admin"}
    redis_pw = salted(make_plan(load(tmp_path, inventory_text("dual-server", "two"),
                              {"REDIS_PASSWORD": "other", "ADMIN_PASSWORD": "s3cret-admin-pw"})))
    new = redis_pw.hosts[0].service_hashes
    assert {svc for svc in old if old[svc] != new[svc]} == {"redis", "queue-manager"}
    assert redis_pw.hosts[1].service_hashes["worker"] != base.hosts[1].service_hashes["worker"]


def test_service_fingerprint_never_holds_a_plain_hash_of_a_secret(tmp_path):
    import hashlib
    plan = plan_for(tmp_path, "dual-server", "two")
    for host in plan.hosts:
        for svc, names in host.service_vars.items():
            assert "CFAB_HASH_" + svc.upper().replace("-", "_") not in names
            for key in names:
                value = host.env.get(key)
                if isinstance(value, Secret):
                    assert hashlib.sha256(value.reveal().encode()).hexdigest()[:12] != host.service_hashes[svc]
    assert "s3cret" not in str([h.service_hashes for h in plan.hosts])


def test_rollout_batch_is_read_and_validated(tmp_path):
    assert plan_for(tmp_path, "dual-server", "two").inventory.rollout.batch == 5
    assert plan_for(tmp_path, "dual-server", "two", extra="rollout: {batch: 3}\n").inventory.rollout.batch == 3
    with pytest.raises(ConfigError) as err:
        plan_for(tmp_path, "dual-server", "two", extra="rollout: {batch: 0}\n")
    assert "rollout.batch" in str(err.value) and "from 1 to 200" in str(err.value)
    with pytest.raises(ConfigError) as err:
        plan_for(tmp_path, "dual-server", "two", extra="rollout: {bacth: 2}\n")
    assert "did you mean 'batch'" in str(err.value)
