"""The pure planner: inventory (+ what the preflight saw) -> per-host services, files and env.

No I/O beyond reading the compose files shipped with the tool. The rules, each from the seed or
an incident (docs/comfyume-system.md):

- the app host runs redis, queue-manager, admin and user001..userNNN (frontend-testing: the
  frontends only); each worker host runs `worker`; single-server-* runs both in one project, so
  the worker reaches Redis as `redis`.
- REDIS_HOST / QUEUE_MANAGER_URL point at what the worker can reach: the compose service names on
  the same host, the app host's tailnet address across hosts -- and only then are Redis and the
  queue manager published on that address (REDIS_BIND_IP, QUEUE_MANAGER_BIND_IP), else 127.0.0.1.
- ComfyUI's --cpu is derived: frontends always get COMFYUI_ARGS='--cpu' (UI only); the worker gets
  WORKER_DEVICE=cpu in single-server-cpu, else auto (GPU when there is one, CPU otherwise).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Mapping

from ..errors import ConfigError
from ..host.commands import ComposeProject
from ..host.facts.envfile import ENV_HASH_KEY as HASH_KEY
from ..host.facts.envfile import SERVICE_HASH_PREFIX
from ..inventory.fingerprint import fingerprint
from ..inventory.model import GPU_MODES, Host, Inventory
from ..inventory.secrets import REDACTED, Secret, Unset
from . import compose as cg

APP_CORE = ("redis", "queue-manager", "admin")
WORKER_SERVICES = ("worker",)
INFERENCE_MODE = {"frontend-testing": "local", "dual-server": "redis", "single-server-gpu": "local",
                  "single-server-cpu": "local", "serverless": "serverless"}
_VAR_RE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)")


def service_hash_var(service: str) -> str:
    """'queue-manager' -> 'CFAB_HASH_QUEUE_MANAGER': the .env entry its label reads."""
    return SERVICE_HASH_PREFIX + re.sub(r"[^A-Za-z0-9]", "_", service).upper()


def short_hash(text: str) -> str:
    """The first 12 hex digits of sha256(text)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def is_hash_key(key: str) -> bool:
    """Whether a .env variable holds one of the hashes (CFAB_ENV_HASH, CFAB_HASH_<SERVICE>)."""
    return key == HASH_KEY or key.startswith(SERVICE_HASH_PREFIX)


def env_hash(env: Mapping[str, str | Secret], salt: str | None = None) -> str:
    """Hash of every variable but the hashes; a secret enters only as its scrypt fingerprint."""
    lines = [f"{k}={_value_fingerprint(k, v, salt)}" for k, v in sorted(env.items()) if not is_hash_key(k)]
    return short_hash("\n".join(lines))


UNSALTED = "secret"  # a secret's stand-in in the hashes of a plan made without the host's salt


def _value_fingerprint(key: str, value: str | Secret | None, salt: str | None) -> str:
    if value is None:
        return "<unset>"
    if isinstance(value, Unset):  # plan/--dry-run without the secret: never deployed (see Unset)
        return "unset"
    if not isinstance(value, Secret):
        return str(value)
    # Without the host's salt (plan, --dry-run, the tasks that compare no hash) no fingerprint is
    # made: such a plan's hashes are never uploaded (HostPlan.env_file_text) nor printed.
    return fingerprint(key, value, salt) if salt else UNSALTED


def service_definitions(files: Mapping[str, str], order: tuple[str, ...]) -> dict[str, list]:
    """Service -> its definitions in the compose files, in -f order (worker.yml + worker-gpu.yml)."""
    import yaml
    out: dict[str, list] = {}
    for name in order:
        doc = yaml.load(files[name], Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
        for svc, definition in (doc.get("services") or {}).items():
            out.setdefault(svc, []).append(definition)
    return out


def service_fingerprints(files: Mapping[str, str], order: tuple[str, ...], env: Mapping[str, str | Secret],
                         salt: str | None = None) -> tuple[dict[str, str], dict[str, tuple[str, ...]]]:
    """(service -> fingerprint, service -> the .env variables it reads). A fingerprint hashes exactly
    what the service is given: its compose definition(s) and the values of the variables they
    reference (its image among them); a secret enters only as its slow salted fingerprint. So a
    change recreates only the services that really see it (Compose recreates on a label change)."""
    hashes, used = {}, {}
    for svc, parts in service_definitions(files, order).items():
        blob = json.dumps(parts, sort_keys=True)
        names = tuple(sorted(set(_VAR_RE.findall(blob)) - {service_hash_var(svc)}))
        lines = [f"{k}={_value_fingerprint(k, env.get(k), salt)}" for k in names]
        hashes[svc] = short_hash(blob + "\n" + "\n".join(lines))
        used[svc] = names
    return hashes, used

def _url_host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


def common_env(inv: Inventory) -> dict[str, str | Secret]:
    """What every host gets: project name and healthcheck timing."""
    return {"PROJECT_NAME": inv.project, "HEALTH_INTERVAL": inv.health.interval,
            "HEALTH_START_PERIOD": inv.health.start_period}


def remote_worker(inv: Inventory) -> bool:
    """Whether some worker runs on another host than the app stack (then it needs the tailnet)."""
    app = inv.app_host
    return any(h is not app for h in inv.worker_hosts)


def app_env(inv: Inventory, with_core: bool) -> dict[str, str | Secret]:
    """The app host's variables (frontends; plus redis, queue-manager and admin unless frontend-testing)."""
    env: dict[str, str | Secret] = {
        "NUM_USERS": str(inv.num_users), "FRONTEND_IMAGE": inv.images.frontend,
        "COMFYUI_ARGS": "--cpu",  # frontends are UI only: inference happens in the worker
        "INFERENCE_MODE": INFERENCE_MODE[inv.mode], "NUM_WORKERS": str(len(inv.worker_hosts))}
    if not with_core:
        return env
    bind = _url_host(inv.app_host.tailscale_ip) if remote_worker(inv) else "127.0.0.1"
    env.update({
        "REDIS_IMAGE": inv.images.redis, "QUEUE_MANAGER_IMAGE": inv.images.queue_manager,
        "ADMIN_IMAGE": inv.images.admin,
        "REDIS_PORT": str(inv.ports.redis), "QUEUE_MANAGER_PORT": str(inv.ports.queue_manager),
        "ADMIN_PORT": str(inv.ports.admin), "REDIS_BIND_IP": bind, "QUEUE_MANAGER_BIND_IP": bind,
        "REDIS_PASSWORD": inv.secrets["REDIS_PASSWORD"], "REDIS_PERSISTENCE": "yes",
        "WORKER_HEARTBEAT_TIMEOUT": str(inv.worker.heartbeat_timeout),
        "ADMIN_USERNAME": "admin", "ADMIN_PASSWORD": inv.secrets["ADMIN_PASSWORD"],
        "INFERENCE_PROVIDER": inv.worker.provider})
    if inv.mode == "serverless":
        env.update(serverless_env(inv))
        env["INFERENCE_PROVIDER"] = inv.serverless.provider or inv.worker.provider
        if "SERVERLESS_API_KEY" in inv.secrets:
            env["SERVERLESS_API_KEY"] = inv.secrets["SERVERLESS_API_KEY"]
    return env


def serverless_env(inv: Inventory) -> dict[str, str]:
    """Exactly what the team's queue manager reads to pick its endpoint: SERVERLESS_ACTIVE, every
    tier's SERVERLESS_ENDPOINT_<TIER> and the fallback SERVERLESS_ENDPOINT."""
    sv = inv.serverless
    env = {"SERVERLESS_ACTIVE": sv.active or "default", "SERVERLESS_ENDPOINT": sv.fallback_url or ""}
    env.update({t.env_name: t.url for t in sv.tiers})
    return env


def worker_env(inv: Inventory, host: Host, app: Host, device: str) -> dict[str, str | Secret]:
    """A worker's variables: where Redis and the queue manager are *as seen from this host*."""
    if host is app:
        redis_host, redis_port, qm_url = "redis", "6379", "http://queue-manager:3000"
    else:
        ip = app.tailscale_ip
        redis_host, redis_port = ip, str(inv.ports.redis)
        qm_url = f"http://{_url_host(ip)}:{inv.ports.queue_manager}"
    return {"WORKER_IMAGE": inv.images.worker, "WORKER_ID": host.worker_id or "worker-1",
            "QUEUE_MANAGER_URL": qm_url, "REDIS_HOST": redis_host, "WORKER_REDIS_PORT": redis_port,
            "REDIS_PASSWORD": inv.secrets["REDIS_PASSWORD"], "INFERENCE_PROVIDER": inv.worker.provider,
            "WORKER_POLL_INTERVAL": str(int(inv.worker.poll_interval)), "WORKER_DEVICE": device,
            "WORKER_COMFYUI_PORT": str(inv.ports.worker_comfyui)}


@dataclass(frozen=True)
class HostPlan:
    """What one host runs: compose files (in -f order), their texts, its .env and its services."""
    name: str
    host: Host
    roles: tuple[str, ...]
    compose_files: tuple[str, ...]
    files: dict[str, str] = field(repr=False)
    env: dict[str, str | Secret]
    services: tuple[str, ...]
    app_services: tuple[str, ...]
    worker_services: tuple[str, ...]
    worker_device: str | None
    env_hash: str
    project: str = "comfyume"
    service_hashes: dict[str, str] = field(default_factory=dict)  # service -> its own fingerprint
    service_vars: dict[str, tuple[str, ...]] = field(default_factory=dict, repr=False)  # .env names it reads
    salt: str | None = field(default=None, repr=False, compare=False)  # the host's (host/facts/salt.py)

    @property
    def frontends(self) -> tuple[str, ...]:
        """The UI services (user001..): the ones a change rolls out to in batches."""
        return tuple(s for s in self.app_services if s not in APP_CORE)

    def env_file_text(self) -> str:
        """The host's .env with REAL values: KEY='value' lines, sorted, so Compose takes each literally."""
        lines = []
        for key in sorted(self.env):
            value = self.env[key]
            text = value.reveal() if isinstance(value, Secret) else str(value)
            if "'" in text or any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
                raise ConfigError(f"{self.name}: the value of {key} cannot be written to .env safely "
                                  f"(remove quotes and control characters from it)")
            lines.append(f"{key}='{text}'")
        if not self.salt:  # its hashes stand for no secret: they would recreate services for nothing
            raise ValueError(f"{self.name}: a plan made without the host's salt is never uploaded")
        return "\n".join(lines) + "\n"

    def env_masked(self) -> dict[str, str]:
        """The env for display: every secret as '***', and so every hash (one may stand for a secret)."""
        return {k: "unset" if isinstance(v, Unset) else REDACTED if isinstance(v, Secret) or is_hash_key(k)
                else str(v) for k, v in self.env.items()}

    def with_salt(self, salt: str) -> "HostPlan":
        """This plan with its hashes made with the host's salt (what is compared with the host)."""
        return dataclasses.replace(self, salt=salt).with_env({})

    @property
    def compose(self) -> ComposeProject:
        """Where and how this host's compose project runs."""
        return ComposeProject(self.host.workdir, self.project, self.compose_files)

    def with_env(self, updates: Mapping[str, str | Secret]) -> "HostPlan":
        """This plan with `updates` in its .env (an image built at a commit): the env hash and every
        service's own fingerprint recomputed, so exactly the services that read a changed value
        are recreated."""
        env = {k: v for k, v in self.env.items() if not is_hash_key(k)}
        env.update(updates)
        env[HASH_KEY] = env_hash(env, self.salt)
        hashes, used = service_fingerprints(self.files, self.compose_files, env, self.salt)
        env.update({service_hash_var(svc): value for svc, value in hashes.items()})
        return dataclasses.replace(self, env=env, env_hash=env[HASH_KEY], service_hashes=hashes,
                                   service_vars=used)

    @functools.cached_property
    def host_hash(self) -> str:
        """What this host was given: files + environment. Secrets enter only through the salted,
        slow env_hash fingerprint, so the value stored on hosts reveals nothing. Meaningful only in
        a plan made with the host's salt (`with_salt`)."""
        masked = "\n".join(f"{k}={v}" for k, v in sorted(self.env_masked().items()))
        h = hashlib.sha256((self.env_hash + "\n" + masked).encode())
        for name in sorted(self.files):
            h.update(name.encode() + b"\0" + self.files[name].encode())
        return h.hexdigest()[:16]


@dataclass(frozen=True)
class Plan:
    """The whole deployment: hosts in start order (app host first, then workers in file order)."""
    mode: str
    inventory: Inventory = field(repr=False)
    hosts: tuple[HostPlan, ...]
    app: HostPlan | None
    workers: tuple[HostPlan, ...]
    config_hash: str
    warnings: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()

    def redis_address(self, hp: HostPlan) -> tuple[str, int]:
        """Where host `hp` reaches Redis from its own vantage point: loopback on the app host, the
        app host's tailnet address from another host."""
        port = self.inventory.ports.redis
        if hp.name == self.app.name:
            return "127.0.0.1", port
        return self.app.host.tailscale_ip, port

    def host(self, name: str) -> HostPlan:
        """The plan of host `name` (ConfigError naming the closest host otherwise)."""
        for plan in self.hosts:
            if plan.name == name:
                return plan
        self.inventory.host(name)  # raises with a suggestion when the name is unknown
        raise ConfigError(f"host {name} runs nothing in mode {self.mode}")

    def with_salts(self, salts: Mapping[str, str]) -> "Plan":
        """This plan with each host's hashes made with its salt (`salts`: host name -> salt)."""
        hosts = tuple(hp.with_salt(salts[hp.name]) if salts.get(hp.name) else hp for hp in self.hosts)
        by_name = {hp.name: hp for hp in hosts}
        return dataclasses.replace(self, hosts=hosts, app=by_name[self.app.name],
                                   workers=tuple(by_name[hp.name] for hp in self.workers))


def _gpu_check(inv: Inventory, host: Host, present: bool | None, device: str
               ) -> tuple[bool, str | None, str | None]:
    """(reserve the GPU?, warning, error) for a worker host, given what the preflight saw."""
    if present:
        return device == "auto" and host.gpu != "none", None, None
    if present is None or inv.mode not in GPU_MODES or host.gpu == "none":
        return False, None, None
    if host.gpu == "required":
        return False, None, (f"{inv.path}:{inv.line_of(('hosts', host.name, 'gpu'))} hosts.{host.name}.gpu: "
                             f"gpu: required, but no GPU was found on {host.name} (install the NVIDIA driver "
                             f"and container toolkit there, or set gpu: auto to run on CPU)")
    if inv.worker.cpu_fallback:
        return False, (f"mode {inv.mode} expects a GPU on {host.name} but none was found; the worker will run "
                       f"on CPU (slow): worker.cpu_fallback says its image falls back to CPU"), None
    return False, None, (f"{inv.path}:{inv.line_of(('hosts', host.name))} hosts.{host.name}: mode {inv.mode} "
                         f"expects a GPU on {host.name} but none was found, and the worker image "
                         f"{inv.images.worker} does not fall back to CPU (the real worker never passes --cpu: "
                         f"ComfyUI would exit with 'Torch not compiled with CUDA enabled' and the container would "
                         f"crash-loop), so nothing was started (install the NVIDIA driver and container toolkit "
                         f"there, or set worker.cpu_fallback: true if your worker image runs on CPU)")


def make_plan(inv: Inventory, gpu_present: Mapping[str, bool] | None = None,
              salts: Mapping[str, str] | None = None) -> Plan:
    """Plan `inv`. `gpu_present` maps host name -> whether the preflight found a GPU (absent: unknown);
    `salts` host name -> its salt (host/facts/salt.py): without one, a host's hashes stand for no
    secret, which is all `plan` and the tasks that compare no hash need."""
    gpu_present = gpu_present or {}
    salts = salts or {}
    app = inv.app_host
    if app is None:
        raise ConfigError(f"{inv.path}: mode {inv.mode} has no host with the app role (check hosts:)")
    if inv.mode != "frontend-testing" and not inv.secrets.get("REDIS_PASSWORD") \
            and not isinstance(inv.secrets.get("REDIS_PASSWORD"), Unset):
        raise ConfigError(f"{inv.path}: refusing to plan Redis without a password "
                          f"(set REDIS_PASSWORD: Redis across the tailnet must always require one)")
    ordered = (app,) + tuple(h for h in inv.worker_hosts if h is not app)
    users = cg.frontend_services(inv.num_users)
    core = () if inv.mode == "frontend-testing" else APP_CORE
    warnings: list[str] = placeholder_warnings(inv)
    errors: list[str] = []
    plans = []
    for host in ordered:
        app_services = core + users if host.is_app else ()
        worker_services = WORKER_SERVICES if host.is_worker else ()
        files = ([cg.APP_FILE] if core and host.is_app else []) + ([cg.FRONTENDS_FILE] if host.is_app else [])
        env = common_env(inv)
        device = None
        if host.is_app:
            env.update(app_env(inv, with_core=bool(core)))
        if host.is_worker:
            device = "cpu" if inv.mode == "single-server-cpu" else "auto"
            env.update(worker_env(inv, host, app, device))
            files.append(cg.WORKER_FILE)
            use_gpu, warning, error = _gpu_check(inv, host, gpu_present.get(host.name), device)
            files += [cg.WORKER_GPU_FILE] if use_gpu else []
            warnings += [warning] if warning else []
            errors += [error] if error else []
        salt = salts.get(host.name)
        env[HASH_KEY] = env_hash(env, salt)
        if host.is_app and core and inv.mode == "serverless":
            files.append(cg.SERVERLESS_FILE)
        texts = {name: (cg.frontends_yaml(inv.num_users, inv.ports.frontend_base, bool(core))
                        if name == cg.FRONTENDS_FILE else
                        cg.serverless_yaml([t.env_name for t in inv.serverless.tiers])
                        if name == cg.SERVERLESS_FILE else cg.static_file(name)) for name in files}
        hashes, used = service_fingerprints(texts, tuple(files), env, salt)
        for svc, value in hashes.items():
            env[service_hash_var(svc)] = value
        plans.append(HostPlan(
            name=host.name, host=host, roles=host.roles, compose_files=tuple(files),
            files=texts, env=env,
            services=app_services + worker_services, app_services=app_services,
            worker_services=worker_services, worker_device=device, env_hash=env[HASH_KEY],
            project=inv.project, service_hashes=hashes, service_vars=used, salt=salt))
    digest = "\n".join(f"{p.name}\n{sorted(p.env_masked().items())}\n" +
                       "".join(f"{n}\n{p.files[n]}" for n in p.compose_files) for p in plans)
    return Plan(mode=inv.mode, inventory=inv, hosts=tuple(plans), app=plans[0],
                workers=tuple(p for p in plans if p.worker_services), config_hash=short_hash(digest),
                warnings=tuple(warnings), errors=tuple(errors))


# The tailscale_ip values of the documented example hosts.yaml (tests/unit/test_cli_help.py keeps
# this in step with the file): copied unchanged, they point at someone else's tailnet address.
EXAMPLE_TAILSCALE_IPS = ("100.99.216.71", "100.88.0.2")
_DOC_RANGES = ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")


def placeholder_warnings(inv: Inventory) -> list[str]:
    """A warning per host whose tailscale_ip is the example's value or a documentation-range
    address: a placeholder to replace with what `tailscale ip -4` says on that host."""
    import ipaddress
    out = []
    for host in inv.hosts:
        ip = host.tailscale_ip
        if not ip:
            continue
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            continue
        if ip in EXAMPLE_TAILSCALE_IPS:
            what = "the example hosts.yaml's placeholder value"
        elif any(addr in ipaddress.ip_network(net) for net in _DOC_RANGES if ipaddress.ip_network(net).version
                 == addr.version):
            what = "a documentation-range address (a placeholder)"
        else:
            continue
        out.append(f"hosts.{host.name}.tailscale_ip {ip} is {what}: replace it with what `tailscale ip -4` "
                   f"prints on {host.name}")
    return out
