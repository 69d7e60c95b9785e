"""Autostop's files for the app host, rendered (pure; `ops.autostop` uploads them).

One autostop per rented worker host, in its own folder of the app host's workdir and its own
compose project (`<project>-autostop-<host>`: start-all's `up --remove-orphans` on the app stack
would remove a service it does not plan, and the autostop must outlive a stop-all of the app stack):

  autostop/<host>/compose.yml         the service: the queue manager's image (`pull_policy: never`),
                                      restart unless-stopped, the host's network, the login user's
                                      uid:gid (from .env, written on the host), a healthcheck
  autostop/<host>/conf/autostop.py    the program (host/agents/autostop.py, unchanged)
  autostop/<host>/conf/config.json    what to watch: the instance, idle, max lifetime, check interval,
                                      the queue manager's and the Verda API's URLs (no secret)
  autostop/<host>/conf/verda.env      VERDA_CLIENT_ID / VERDA_CLIENT_SECRET (0600, app host only)
  autostop/<host>/state/state.json    written by the program; read by `status` (host/facts/autostop)

conf/ is mounted read-only as a folder (a file replaced by an atomic upload is seen at once), state/
read-write, and the workdir's audit.log for the program's audit line.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from ..host.agents import autostop as agent
from ..inventory.model import Host, Inventory
from .planner import app_env

FOLDER = "autostop"
PROGRAM = "autostop.py"
CONFIG = "config.json"
ENV_FILE = "verda.env"
COMPOSE = "compose.yml"
STATE = "state.json"
IN_CONTAINER = "/opt/autostop"
DEFAULT_CHECK_EVERY_S = 60
MIN_CHECK_EVERY_S = 5
SECRETS = ("VERDA_CLIENT_ID", "VERDA_CLIENT_SECRET")
LABEL = "org.comfyume.autostop"


def folder(host_name: str) -> str:
    """The host's autostop folder, relative to the app host's workdir."""
    return f"{FOLDER}/{host_name}"


def project_name(inv: Inventory, host_name: str) -> str:
    return f"{inv.project}-autostop-{host_name}"


def check_every(autostop) -> int:
    """How often the queue is read: `autostop.check_every` when given, else a quarter of `idle`
    within 5..60 s (idle 30m: every minute; idle 1m: every 15 s), so the instance goes at most a
    quarter of `idle` late."""
    given = getattr(autostop, "check_every_s", None)
    if given:
        return max(1, int(given))
    return max(MIN_CHECK_EVERY_S, min(DEFAULT_CHECK_EVERY_S, int(autostop.idle_s) // 4))


def queue_url(inv: Inventory) -> str:
    """The queue manager as the app host reaches it: where start-all published it (the job probe's
    address), from the host's own network namespace."""
    bind = str(app_env(inv, True)["QUEUE_MANAGER_BIND_IP"])
    return f"http://{bind}:{inv.ports.queue_manager}"


def program_source() -> bytes:
    return Path(agent.__file__).read_bytes()


@dataclass(frozen=True)
class Files:
    """What goes to the app host for one worker host: relative path -> bytes (`secret`: the env
    file, never shown), plus the compose project."""
    host: str
    project: str
    files: dict
    secret: str  # the relative path of the env file

    def digests(self) -> dict[str, str]:
        return {path: hashlib.sha256(data).hexdigest() for path, data in self.files.items()}


def config(inv: Inventory, host: Host, record: dict, by: str, revision: str = "-", config_hash: str = "-") -> dict:
    auto = host.autostop
    return {"host": host.name, "instance_id": str(record["id"]), "hostname": record.get("hostname"),
            "created_at": record.get("created_at"), "idle_s": int(auto.idle_s),
            "max_lifetime_s": int(auto.max_lifetime_s) if auto.max_lifetime_s else None,
            "check_every_s": check_every(auto), "queue_url": queue_url(inv), "api_url": host.provider.api,
            "env_file": ENV_FILE, "state_file": f"../state/{STATE}", "audit_file": "../audit.log",
            "by": by, "revision": revision, "config_hash": config_hash, "mode": inv.mode}


def env_text(inv: Inventory) -> bytes:
    return "".join(f"{name}={inv.secrets[name].reveal()}\n" for name in SECRETS).encode()


def compose_text(inv: Inventory, host_name: str, program_digest: str) -> bytes:
    """The service. The program's digest is a label, so a new program recreates the container;
    the config and the env file are re-read every round and need no restart."""
    conf, state = f"{IN_CONTAINER}/conf", f"{IN_CONTAINER}/state"
    run = ["python3", "-u", f"{conf}/{PROGRAM}", f"{conf}/{CONFIG}"]
    doc = {
        "name": project_name(inv, host_name),
        "services": {"autostop": {
            "image": inv.images.queue_manager,  # already on the app host: python3 is all it needs
            "pull_policy": "never",
            "restart": "unless-stopped",
            "init": True,  # the program sleeps as PID 1 otherwise deaf to SIGTERM
            "network_mode": "host",  # the queue manager where start-all published it; the Verda API
            "user": "${AUTOSTOP_USER:?written by comfyume-fab into .env}",
            "working_dir": IN_CONTAINER,
            "entrypoint": run,
            "command": [],
            "volumes": ["./conf:" + conf + ":ro", "./state:" + state, "../../audit.log:" + IN_CONTAINER + "/audit.log"],
            "labels": {LABEL: host_name, LABEL + ".program": program_digest},
            "healthcheck": {"test": ["CMD", *run, agent.HEALTHCHECK], "interval": "30s", "timeout": "10s",
                            "retries": 3, "start_period": "60s"},
        }},
    }
    head = (f"# comfyume-fab autostop for {host_name}: deletes its rented instance when the queue is idle\n"
            "# (docs/provider.md#autostop). Written by start-all, removed by stop-verda --delete: do not edit.\n")
    return (head + json.dumps(doc, indent=2) + "\n").encode()  # JSON is YAML


def render(inv: Inventory, host: Host, record: dict, by: str, revision: str = "-", config_hash: str = "-") -> Files:
    """Every file of `host`'s autostop for the instance `record` (the provider's record: id,
    hostname, created_at)."""
    if host.autostop is None or host.provider is None:
        raise ValueError(f"{host.name} has no autostop (or no provider) section")
    program = program_source()
    cfg = config(inv, host, record, by, revision, config_hash)
    files = {f"conf/{PROGRAM}": program,
             f"conf/{CONFIG}": (json.dumps(cfg, indent=1, sort_keys=True) + "\n").encode(),
             f"conf/{ENV_FILE}": env_text(inv),
             COMPOSE: compose_text(inv, host.name, hashlib.sha256(program).hexdigest()[:16])}
    return Files(host.name, project_name(inv, host.name), files, f"conf/{ENV_FILE}")
