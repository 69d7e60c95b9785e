"""The inventory's data model: frozen dataclasses and the names every layer agrees on.

A leaf: it imports nothing of comfyume-fab but the errors, the `Secret` wrapper and the key-path
type. Reading and validating hosts.yaml into these classes is `inventory.read`.
"""
from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from ..errors import ConfigError
from .secrets import Secret
from .yamlsrc import Path

MODES = ("frontend-testing", "dual-server", "single-server-gpu", "single-server-cpu", "serverless")
GPU_MODES = ("dual-server", "single-server-gpu")  # modes whose worker is expected to find a GPU
ROLES = ("app", "worker")
GPU_SETTINGS = ("auto", "required", "none")
PROVIDERS = ("verda", "runpod", "modal", "local")
ENGINES = ("compose", "swarm")  # `engine:` how the hosts run the services (docs/swarm.md)
SWARM_MODES = ("dual-server",)  # engine: swarm places an app host and worker hosts



def suggest(word: str, choices: Sequence[str]) -> str | None:
    """The closest of `choices` to `word`, if any is close."""
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return close[0] if close else None


@dataclass(frozen=True)
class Images:
    """Image references (name:tag) per service."""
    redis: str = "redis:7-alpine"
    queue_manager: str = "comfyume-queue-manager:v0.11.0"
    admin: str = "comfyume-admin:v0.11.0"
    frontend: str = "comfyume-frontend:v0.11.0"
    worker: str = "comfyume-worker:v0.11.0"


# --- image sources (images.source, ...): where each service's image comes from ------------------
IMAGE_SOURCES = ("present", "build", "pull")
# images.<key> -> (compose service it names, the .env variable, default build context in the repo)
IMAGE_SERVICES = {
    "redis": ("redis", "REDIS_IMAGE", None),
    "queue_manager": ("queue-manager", "QUEUE_MANAGER_IMAGE", "queue-manager"),
    "admin": ("admin", "ADMIN_IMAGE", "admin"),
    "frontend": ("user*", "FRONTEND_IMAGE", "comfyui-frontend"),
    "worker": ("worker", "WORKER_IMAGE", "comfyui-worker"),
}
DEFAULT_BRANCHES = {"app": "mello-track", "worker": "verda-track"}
KNOWN_HOSTS = "~/.ssh/known_hosts"  # ssh.known_hosts when hosts.yaml names none


@dataclass(frozen=True)
class BuildSpec:
    """Where one service's image is built from, inside the repository checkout."""
    context: str
    dockerfile: str = "Dockerfile"  # relative to the context


@dataclass(frozen=True)
class Registry:
    """`docker login` for pull mode; the password is a secret reference, given on stdin only."""
    server: str
    user: str
    password_name: str
    password: Secret | None = field(default=None, repr=False, compare=False, hash=False)

    def serves(self, ref: str) -> bool:
        """Whether pulling `ref` goes to this registry (so needs its login first)."""
        return ref.startswith(self.server + "/")


@dataclass(frozen=True)
class ImageSources:
    """Where each service's image comes from (`images.source` and the keys beside it)."""
    source: str = "present"
    per_service: Mapping[str, str] = field(default_factory=dict, hash=False)
    repository: str | None = None
    checkout: str = "comfyume-src"
    branches: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_BRANCHES), hash=False)
    build: Mapping[str, BuildSpec] = field(default_factory=dict, hash=False)
    registry: Registry | None = None
    keep: int = 3
    copy_from: str | None = None

    def source_of(self, key: str) -> str:
        """present | build | pull for images.<key>; redis is never built (not in the repository):
        it follows `pull` when something is pulled or built, else `present`."""
        if key in self.per_service:
            return self.per_service[key]
        if key == "redis":
            return "present" if self.source == "present" else "pull"
        return self.source

    def branch_for(self, host: "Host") -> str:
        """The branch `host` builds from: its own entry, else its role's (app wins on a combined host)."""
        if host.name in self.branches:
            return self.branches[host.name]
        role = "app" if host.is_app else "worker"
        return self.branches.get(role, DEFAULT_BRANCHES[role])

    def build_spec(self, key: str) -> BuildSpec:
        return self.build.get(key) or BuildSpec(IMAGE_SERVICES[key][2] or key)


@dataclass(frozen=True)
class Ports:
    """Host ports; frontends take frontend_base .. frontend_base + num_users - 1."""
    redis: int = 6379
    queue_manager: int = 3000
    admin: int = 8080
    frontend_base: int = 8188
    worker_comfyui: int = 8300

    def frontend(self, index: int) -> int:
        """The host port of user `index` (1-based): user001 -> frontend_base."""
        return self.frontend_base + index - 1


@dataclass(frozen=True)
class WorkerSettings:
    """How the worker polls the queue manager and which inference provider it reports."""
    poll_interval: int = 2  # whole seconds: the real worker does int(WORKER_POLL_INTERVAL)
    heartbeat_timeout: int = 60
    provider: str = "verda"
    # Whether the worker IMAGE runs on CPU where no GPU works. The team's real image does not (its
    # start-worker.sh never passes --cpu and ignores WORKER_DEVICE: ComfyUI exits "Torch not compiled
    # with CUDA enabled" and the container crash-loops); the lab's stand-in does.
    cpu_fallback: bool = False


@dataclass(frozen=True)
class Timeouts:
    """Seconds: SSH connect, one remote command, services healthy, Redis, probe, deploy lock wait;
    busy: how long a busy worker may go without finishing a prompt before it counts as stuck."""
    connect: float = 10
    command: float = 120
    health: float = 180
    redis: float = 5
    probe: float = 60
    lock_wait: float = 600
    busy: float = 900
    build: float = 1800  # one host's image builds (images.source: build), separate from `command`
    pull: float = 600  # one host's image pulls (images.source: pull)


@dataclass(frozen=True)
class Rollout:
    """How changed frontends are replaced: `batch` at a time, each batch healthy before the next."""
    batch: int = 5


@dataclass(frozen=True)
class Health:
    """Compose healthcheck timing (compose durations such as '5s')."""
    interval: str = "5s"
    start_period: str = "10s"


@dataclass(frozen=True)
class Probe:
    """The inference probe: `workflow` path (None = built-in graph) and its parsed graph."""
    workflow: str | None = None
    workflow_graph: dict[str, Any] | None = field(default=None, hash=False)


# The tiers the team's queue manager knows (queue-manager/config.py on their newer main): its
# SERVERLESS_ACTIVE value -> the `active_gpu` its /health reports, and the label and price per
# hour (+VAT) the team noted. Any other tier name is valid here; that queue manager then uses the
# fallback SERVERLESS_ENDPOINT and reports active_gpu "serverless".
KNOWN_TIERS = {"h200-spot": ("H200-141GB-SPOT", "H200 141 GB, spot", 0.97),
               "h200-on-demand": ("H200-141GB", "H200 141 GB", 2.80),
               "b300-spot": ("B300-288GB-SPOT", "B300 288 GB, spot", 1.61),
               "b300-on-demand": ("B300-288GB", "B300 288 GB", 4.63)}
FALLBACK_GPU = "serverless"  # /health's active_gpu when only the fallback endpoint is in use
DEFAULT_ACTIVE = "default"  # the team's SERVERLESS_ACTIVE meaning "the fallback endpoint"


def tier_env_name(name: str) -> str:
    """'h200-on-demand' -> 'SERVERLESS_ENDPOINT_H200_ON_DEMAND' (the variable the queue manager reads)."""
    return "SERVERLESS_ENDPOINT_" + name.upper().replace("-", "_")


@dataclass(frozen=True)
class Tier:
    """One serverless GPU tier: a deployment's endpoint URL, its GPU label and price per hour."""
    name: str
    url: str
    gpu: str | None = None
    price_per_hour: float | None = None
    deployment: str | None = None  # its name in the provider's deployment API (default: from the URL)

    @property
    def env_name(self) -> str:
        return tier_env_name(self.name)

    @property
    def active_gpu(self) -> str:
        """What the queue manager's /health reports while this tier is active."""
        known = KNOWN_TIERS.get(self.name)
        return known[0] if known else FALLBACK_GPU

    @property
    def gpu_label(self) -> str | None:
        known = KNOWN_TIERS.get(self.name)
        return self.gpu or (known[1] if known else None)

    @property
    def price(self) -> float | None:
        known = KNOWN_TIERS.get(self.name)
        return self.price_per_hour if self.price_per_hour is not None else (known[2] if known else None)

    @property
    def deployment_name(self) -> str:
        """The deployment behind the URL: https://containers.datacrunch.io/<name>/ or
        https://<name>.containers.verda.com (or the `deployment` key when given)."""
        if self.deployment:
            return self.deployment
        rest = self.url.split("//", 1)[-1]
        host, _, path = rest.partition("/")
        host = host.split("@")[-1].split(":")[0]
        parts = [p for p in path.split("/") if p]
        if parts:
            return parts[0]
        return host.split(".")[0]


@dataclass(frozen=True)
class Serverless:
    """Where the queue manager sends jobs in mode serverless: the tiers, the active one, the
    fallback `endpoint`, and the provider's deployment API (for replicas and scaling)."""
    endpoint: str | None = None
    provider: str | None = None
    tiers: tuple[Tier, ...] = ()
    active: str | None = None
    currency: str = "EUR"
    api: str | None = None  # the deployment API base URL, e.g. https://api.verda.com/v1

    def tier(self, name: str) -> Tier | None:
        return next((t for t in self.tiers if t.name == name), None)

    @property
    def active_tier(self) -> Tier | None:
        return self.tier(self.active) if self.active else None

    @property
    def active_url(self) -> str | None:
        """The endpoint the queue manager really calls: the active tier's (when that queue manager
        knows the tier), else the fallback."""
        tier = self.active_tier
        if tier is not None and tier.name in KNOWN_TIERS:
            return tier.url
        return self.fallback_url

    @property
    def fallback_url(self) -> str | None:
        """SERVERLESS_ENDPOINT: `endpoint`, else the active tier's URL when the queue manager does
        not know that tier's name (it would use the fallback for it)."""
        if self.endpoint:
            return self.endpoint
        tier = self.active_tier
        return tier.url if tier is not None and tier.name not in KNOWN_TIERS else None

    @property
    def expected_gpu(self) -> str:
        """The active_gpu the queue manager's /health should report."""
        tier = self.active_tier
        return tier.active_gpu if tier is not None else FALLBACK_GPU


@dataclass(frozen=True)
class SshSettings:
    """Host-key policy and ssh_config: a changed host key is always refused."""
    known_hosts: str = os.path.expanduser(KNOWN_HOSTS)
    accept_new_host_keys: bool = False
    config_file: str | None = None


# --- a rented worker (hosts.<name>.provider, .autostop) ------------------------------------------
CLOUD_PROVIDERS = ("verda",)  # only Verda can be rented for now
DEFAULT_CLOUD_API = "https://api.verda.com/v1"  # the `verda` SDK's default base URL
DEFAULT_CLOUD_IMAGE = "ubuntu-24.04-cuda-12.8-open-docker"
STATE_DIR = ".comfyume-fab"  # beside hosts.yaml: the records of rented instances, generated host keys


@dataclass(frozen=True)
class ProviderSpec:
    """What to rent for a worker host (`provider:`): the instance type and place, the OS image (or a
    kept OS volume), the data volumes attached and never deleted, and secret NAMES only (the Verda
    client credentials are VERDA_CLIENT_ID / VERDA_CLIENT_SECRET; `tailscale_authkey` names the
    secret holding the tailnet auth key). Its address and tailnet address come from the record."""
    instance_type: str
    name: str = "verda"
    api: str = DEFAULT_CLOUD_API
    location: str = "FIN-01"
    spot: bool = False
    image: str | None = DEFAULT_CLOUD_IMAGE
    os_volume: str | None = None
    volumes: tuple[str, ...] = ()
    hostname_prefix: str = "comfyume-worker"
    ssh_keys: tuple[str, ...] = ()
    tailscale_authkey: str = "TAILSCALE_AUTHKEY"
    provision_timeout: float = 600.0


@dataclass(frozen=True)
class Autostop:
    """Delete the rented instance when the queue was idle `idle_s` seconds, or `max_lifetime_s`
    after it was created (None: no limit). Runs on the app host (ops/autostop.py)."""
    idle_s: int
    max_lifetime_s: int | None = None


@dataclass(frozen=True)
class Host:
    """One machine. user/port/identity_file None: ssh_config (or the defaults) decides. A host with a
    `provider` is rented by start-all: its address and tailscale_ip come from its record
    (cloud/record.py), empty until then."""
    name: str
    address: str
    roles: tuple[str, ...]
    user: str | None = None
    port: int | None = None
    identity_file: str | None = None
    tailscale_ip: str | None = None
    gpu: str = "none"
    workdir: str = "comfyume"
    worker_id: str | None = None
    line: int = 0
    provider: ProviderSpec | None = None
    autostop: Autostop | None = None

    @property
    def is_app(self) -> bool:
        return "app" in self.roles

    @property
    def is_worker(self) -> bool:
        return "worker" in self.roles


@dataclass(frozen=True)
class Inventory:
    """The validated inventory. Secrets print as ***; `.reveal()` on one gives its value."""
    path: str
    mode: str
    hosts: tuple[Host, ...]
    secrets: Mapping[str, Secret]
    project: str = "comfyume"
    engine: str = "compose"  # compose (one compose project per host) or swarm (one stack, docs/swarm.md)
    num_users: int = 20
    images: Images = Images()
    ports: Ports = Ports()
    worker: WorkerSettings = WorkerSettings()
    timeouts: Timeouts = Timeouts()
    rollout: Rollout = Rollout()
    health: Health = Health()
    probe: Probe = Probe()
    serverless: Serverless = Serverless()
    ssh: SshSettings = SshSettings()
    sources: ImageSources = ImageSources()
    env_file: str | None = None
    env_file_missing: bool = False  # secrets.env_file names a file that does not exist (plan notes it)
    lines: Mapping[Path, int] = field(default_factory=dict, repr=False, compare=False, hash=False)

    @property
    def app_host(self) -> Host | None:
        """The host with the app role (there is at most one)."""
        return next((h for h in self.hosts if h.is_app), None)

    @property
    def state_dir(self) -> str:
        """`.comfyume-fab/` beside the inventory: what the tool records between runs (rented
        instances, the host keys it generated), never the user's hosts.yaml."""
        return os.path.join(os.path.dirname(os.path.abspath(self.path)), STATE_DIR)

    @property
    def generated_known_hosts(self) -> str:
        """The host keys this tool generated for rented instances, read by the SSH layer besides
        ssh.known_hosts (strictly: never trust on first use)."""
        return os.path.join(self.state_dir, "known_hosts")

    @property
    def provider_hosts(self) -> tuple[Host, ...]:
        """Hosts the tool rents (a `provider:` section), in file order."""
        return tuple(h for h in self.hosts if h.provider is not None)

    @property
    def worker_hosts(self) -> tuple[Host, ...]:
        """Hosts with the worker role, in file order."""
        return tuple(h for h in self.hosts if h.is_worker)

    def image_keys(self, host: Host) -> list[str]:
        """The images.<key> names `host` runs, in start order."""
        keys: list[str] = []
        if host.is_app:
            keys += [] if self.mode == "frontend-testing" else ["redis", "queue_manager", "admin"]
            keys += ["frontend"]
        if host.is_worker and self.mode not in ("serverless", "frontend-testing"):
            keys += ["worker"]
        return keys

    def image_keys_from(self, host: Host, source: str) -> list[str]:
        """Those of `image_keys(host)` whose image comes from `source` (present, build or pull)."""
        return [k for k in self.image_keys(host) if self.sources.source_of(k) == source]

    def host(self, name: str) -> Host:
        """The host called `name`; ConfigError naming the closest match otherwise."""
        for host in self.hosts:
            if host.name == name:
                return host
        names = [h.name for h in self.hosts]
        close = suggest(name, names)
        hint = f"did you mean '{close}'? " if close else ""
        raise ConfigError(f"{self.path}: unknown host '{name}' ({hint}hosts in {os.path.basename(self.path)}: "
                          f"{', '.join(names)})")

    def line_of(self, path: Path | str) -> int:
        """The line of a key path (tuple, or 'hosts.verda.roles[0]'); its nearest ancestor's if absent."""
        if isinstance(path, str):
            path = _parse_path(path)
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return 1


def _parse_path(text: str) -> Path:
    parts: list = []
    for chunk in text.split("."):
        name, _, rest = chunk.partition("[")
        if name:
            parts.append(name)
        for index in filter(None, rest.replace("]", "").split("[")) if rest else ():
            parts.append(int(index))
    return tuple(parts)

