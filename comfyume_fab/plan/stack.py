"""The Swarm stack file (`engine: swarm`), rendered from the same plan as the compose files. Pure.

What differs from the compose files, and why (docs/swarm.md):

- placement by node label: `comfyume.role == app` for Redis, the queue manager, the admin page and
  the frontends; `comfyume.role == worker` for the worker, spread over `comfyume.host`. The worker
  service has one replica per worker host and no per-node limit, so a worker host that goes Down has
  its task rescheduled onto another.
- secrets are Swarm secrets (files under /run/secrets), never environment values. The team's
  services read them from the environment and know no `*_FILE` variable, so each service that needs
  one starts through a small shim, `/bin/sh -c SHIM`, that exports every /run/secrets file as the
  variable of its name (with `export`, a shell builtin: no value in any argv) and then `exec`s the
  image's own entrypoint and command, read from the image on the host. Redis reads its file itself.
- Redis and the queue manager are published in host mode on the app host (the worker's hot path
  crosses the tailnet directly, never a VXLAN overlay); the admin page and the frontends too (the
  routing mesh is not used at all). Host mode binds every address of the node: Swarm cannot bind a
  published port to one address, so the host's firewall must keep these ports to the tailnet.
- the stack's overlay network is told the tailnet's MTU (1280), so its VXLAN packets fit inside it
  (the containers get 1280 - 50 bytes).
- every service uses DNS round robin (no virtual IP, no IPVS), so nothing needs the engine's iptables.
- GPUs: the worker reserves `generic_resources` NVIDIA-GPU: 1 when its hosts advertise GPUs
  (Compose's `devices` reservation is rejected by `docker stack deploy`).
"""
from __future__ import annotations

import shlex
from typing import Mapping, Sequence

import yaml

from ..host.facts.swarm import HOST_LABEL, ROLE_LABEL
from .compose import static_file, user_name
from .planner import Plan
from .swarmgpu import generic_resources

TAILNET_MTU = 1280  # Tailscale's tailscale0, and the lab's tailnet links
VXLAN_OVERHEAD = 50
# The overlay driver's `com.docker.network.driver.mtu` is the path's MTU: libnetwork takes VXLAN's 50
# bytes off it for the containers' interfaces (measured in the lab by bench/overlay.py: option 1280,
# containers 1230; tests/lab/test_swarm.py checks the containers' MTU), so the tailnet's MTU is given.
OVERLAY_MTU = TAILNET_MTU
NETWORK = "comfyume"
SECRETS_DIR = "/run/secrets"
# Exports each secret file as the variable of its name, then runs the image's own argv ("$@").
SHIM = ('for f in /run/secrets/*; do [ -f "$f" ] || continue; export "${f##*/}=$(cat "$f")"; done; '
        'exec "$@"')
SHIM_NAME = "comfyume-secrets"  # $0 of the shim, what `ps` shows

# which secrets each service reads (as environment variables, through the shim)
SERVICE_SECRETS = {"redis": ("REDIS_PASSWORD",), "queue-manager": ("REDIS_PASSWORD",),
                   "admin": ("ADMIN_PASSWORD",), "worker": ("REDIS_PASSWORD",)}


def _escape(value):
    """`docker stack deploy` interpolates ${VAR} and $VAR in the file: every literal $ is doubled."""
    if isinstance(value, str):
        return value.replace("$", "$$")
    if isinstance(value, list):
        return [_escape(v) for v in value]
    if isinstance(value, dict):
        return {k: _escape(v) for k, v in value.items()}
    return value


def secret_name(project: str, key: str, fingerprint: str) -> str:
    """The Swarm secret's name: a secret is immutable, so a new value gets a new name (its salted
    fingerprint's first 12 digits), and the services that read it are updated."""
    return f"{project}_{key}_{fingerprint[:12]}"


def _health(test: list[str], inv) -> dict:
    return {"test": test, "interval": inv.health.interval, "timeout": "3s", "retries": 3,
            "start_period": inv.health.start_period}


def _deploy(role: str, replicas: int = 1, extra: dict | None = None) -> dict:
    out = {"mode": "replicated", "replicas": replicas, "endpoint_mode": "dnsrr",
           "placement": {"constraints": [f"node.labels.{ROLE_LABEL} == {role}"]},
           "restart_policy": {"condition": "any", "delay": "2s"},
           "update_config": {"order": "stop-first", "failure_action": "pause"}}
    out.update(extra or {})
    return out


def _host_port(published: int, target: int) -> dict:
    return {"target": target, "published": published, "protocol": "tcp", "mode": "host"}


def _shimmed(argv: Sequence[str]) -> dict:
    """entrypoint + command that start `argv` (the image's own) through the secrets shim."""
    return {"entrypoint": ["/bin/sh", "-c", SHIM, SHIM_NAME], "command": list(argv)}


def _secrets(service: str) -> list[dict]:
    # Swarm's default mode (0444, root-owned): a service whose image runs as another user can read it
    return [{"source": key, "target": key} for key in SERVICE_SECRETS.get(service, ())]


def _redis_service(plan: Plan) -> dict:
    inv = plan.inventory
    script = ('set -eu\numask 077\nconf=/tmp/comfyume-redis.conf\n'
              f'pw="$(cat {SECRETS_DIR}/REDIS_PASSWORD)"\n'
              "printf 'requirepass \"%s\"\\nappendonly %s\\ndir /data\\nbind 0.0.0.0\\nprotected-mode no\\n' "
              '"$pw" "$REDIS_PERSISTENCE" > "$conf"\nunset pw\n'
              'if [ "$(id -u)" = 0 ] && id redis >/dev/null 2>&1 && command -v docker-entrypoint.sh >/dev/null 2>&1; '
              'then\n  chown redis "$conf"\n  exec docker-entrypoint.sh redis-server "$conf"\nfi\n'
              'exec redis-server "$conf"\n')
    return {
        "image": inv.images.redis, "command": ["sh", "-c", script],
        "environment": {"REDIS_PERSISTENCE": "yes"},
        "secrets": _secrets("redis"),
        "ports": [_host_port(inv.ports.redis, 6379)],
        "volumes": ["redis-data:/data"],
        "healthcheck": _health(["CMD-SHELL", f'REDISCLI_AUTH="$(cat {SECRETS_DIR}/REDIS_PASSWORD)" '
                                             "redis-cli -h 127.0.0.1 ping | grep -q PONG"], inv),
        "deploy": _deploy("app"),
    }


def _compose_service(name: str) -> dict:
    """A service's definition in the shipped compose files (healthchecks, environment keys)."""
    for file in ("app.yml", "worker.yml"):
        doc = yaml.safe_load(static_file(file)) or {}
        if name in (doc.get("services") or {}):
            return doc["services"][name]
    raise KeyError(name)


def render_stack(plan: Plan, argv: Mapping[str, Sequence[str]], secret_names: Mapping[str, str],
                 gpu_workers: bool = False) -> dict:
    """The stack document. `argv`: service -> the argv its image runs by default (entrypoint +
    command, read from the image on the host; the shim runs it); `secret_names`: REDIS_PASSWORD,
    ADMIN_PASSWORD -> the Swarm secret names (`secret_name`); `gpu_workers`: the worker hosts
    advertise NVIDIA-GPU generic resources (the worker then reserves one)."""
    inv = plan.inventory
    app, app_env = plan.app, plan.app.env
    ip = app.host.tailscale_ip
    qm_url = f"http://[{ip}]:{inv.ports.queue_manager}" if ":" in ip else f"http://{ip}:{inv.ports.queue_manager}"
    services: dict = {"redis": _redis_service(plan)}

    qm = _compose_service("queue-manager")
    qm_env = {"REDIS_HOST": "redis", "REDIS_PORT": "6379", "INFERENCE_MODE": str(app_env["INFERENCE_MODE"]),
              "INFERENCE_PROVIDER": str(app_env["INFERENCE_PROVIDER"]), "SERVERLESS_ENDPOINT": "",
              "WORKER_HEARTBEAT_TIMEOUT": str(app_env["WORKER_HEARTBEAT_TIMEOUT"]),
              "NUM_WORKERS": str(app_env["NUM_WORKERS"])}
    services["queue-manager"] = {
        "image": inv.images.queue_manager, **_shimmed(argv["queue-manager"]), "environment": qm_env,
        "secrets": _secrets("queue-manager"), "ports": [_host_port(inv.ports.queue_manager, 3000)],
        "healthcheck": _health(qm["healthcheck"]["test"], inv), "deploy": _deploy("app")}
    admin = _compose_service("admin")
    services["admin"] = {
        "image": inv.images.admin, **_shimmed(argv["admin"]),
        "environment": {"ADMIN_USERNAME": "admin", "QUEUE_MANAGER_URL": "http://queue-manager:3000"},
        "secrets": _secrets("admin"), "ports": [_host_port(inv.ports.admin, 8080)],
        "healthcheck": _health(admin["healthcheck"]["test"], inv), "deploy": _deploy("app")}
    for index in range(1, inv.num_users + 1):
        name = user_name(index)
        services[name] = {
            "image": inv.images.frontend,
            "environment": {"USER_ID": name, "QUEUE_MANAGER_URL": "http://queue-manager:3000",
                            "COMFYUI_ARGS": "--cpu"},
            "ports": [_host_port(inv.ports.frontend(index), 8188)],
            "volumes": [f"./data/user_data/{name}:/comfyui/user"],
            "healthcheck": _health(["CMD", "curl", "-fsS", "http://127.0.0.1:8188/"], inv),
            "deploy": _deploy("app")}

    worker = _compose_service("worker")
    resources = ({"resources": {"reservations": {"generic_resources": generic_resources(True)}}}
                 if gpu_workers else {})
    services["worker"] = {
        "image": inv.images.worker, **_shimmed(argv["worker"]), "init": True,
        "stop_signal": "SIGINT", "stop_grace_period": "20s",
        "environment": {"TINI_KILL_PROCESS_GROUP": "1", "WORKER_ID": "worker-{{.Task.Slot}}",
                        "QUEUE_MANAGER_URL": qm_url, "REDIS_HOST": ip, "REDIS_PORT": str(inv.ports.redis),
                        "COMFYUI_PORT": "8188", "INFERENCE_PROVIDER": inv.worker.provider,
                        "WORKER_POLL_INTERVAL": str(int(inv.worker.poll_interval)), "WORKER_DEVICE": "auto"},
        "secrets": _secrets("worker"),
        "healthcheck": _health(worker["healthcheck"]["test"], inv),
        "deploy": _deploy("worker", len(inv.worker_hosts), {
            "placement": {"constraints": [f"node.labels.{ROLE_LABEL} == worker"],
                          "preferences": [{"spread": f"node.labels.{HOST_LABEL}"}]},
            **resources})}

    for svc in services.values():
        svc["networks"] = [NETWORK]
    doc = {
        "version": "3.8",
        "services": _escape(services),
        "networks": {NETWORK: {"driver": "overlay",
                               "driver_opts": {"com.docker.network.driver.mtu": str(OVERLAY_MTU)}}},
        "volumes": {"redis-data": {}},
        "secrets": {key: {"file": f"./swarm-secrets/{key}", "name": name} for key, name in sorted(secret_names.items())},
    }
    # {{.Task.Slot}} is a Swarm template, not an interpolation: keep it as it is
    return doc


HEADER = """\
# GENERATED by comfyume_fab.plan.stack (engine: swarm); every start-all rewrites it, do not edit.
# Deployed with: docker stack deploy --resolve-image never --prune -c stack.yml {project}
# Secrets come from swarm-secrets/ (0600, beside this file) as Swarm secrets, never environment values.
"""


def stack_yaml(plan: Plan, doc: dict) -> str:
    return HEADER.format(project=plan.inventory.project) + yaml.safe_dump(
        doc, sort_keys=False, default_flow_style=False, width=120)


def shim_argv(argv: Sequence[str]) -> str:
    """How a shimmed service's process line reads (for docs and tests)."""
    return shlex.join(["/bin/sh", "-c", SHIM, SHIM_NAME, *argv])


# Parts of a service that Swarm applies without replacing its tasks.
_NOT_REPLACING = ("replicas", "update_config", "rollback_config", "labels")


def replaced_services(before: str | None, after: str, project: str) -> frozenset[str]:
    """The stack's services (STACK_name) whose tasks deploying `after` over `before` replaces:
    those whose definition changed beyond the replica count and the update settings. None of them
    when nothing was deployed before (every task is new then)."""
    try:
        old = (yaml.safe_load(before) or {}).get("services") or {} if before else {}
    except yaml.YAMLError:
        old = {}
    new = (yaml.safe_load(after) or {}).get("services") or {}

    def core(svc: dict) -> dict:
        svc = dict(svc)
        svc["deploy"] = {k: v for k, v in (svc.get("deploy") or {}).items() if k not in _NOT_REPLACING}
        return svc
    return frozenset(f"{project}_{name}" for name, svc in new.items()
                     if name in old and core(old[name]) != core(svc))
