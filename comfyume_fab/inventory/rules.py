"""Cross-key rules of the inventory: mode versus roles, port clashes, and the secrets it needs."""
from __future__ import annotations

from typing import Mapping

from . import model
from .checker import Checker, expand
from .secrets import (OPTIONAL, REQUIRED_ALWAYS, REQUIRED_WITH_ADMIN, EnvFile, EnvFileProblem, Secret,
                      load_env_file, resolve_secrets)

TAILNET_WHY = "a remote worker reaches Redis and the queue manager at the app host's tailnet address"


def _names(hosts: list[model.Host]) -> str:
    return ", ".join(h.name for h in hosts)


def _roles(host: model.Host) -> str:
    return "[" + ", ".join(host.roles) + "]"


def check_modes(c: Checker, mode: str, hosts: list[model.Host], serverless: model.Serverless) -> None:
    """The roles the mode needs: which host runs the app stack, which the worker."""
    app_only = [h for h in hosts if h.roles == ("app",)]
    worker_only = [h for h in hosts if h.roles == ("worker",)]
    both = [h for h in hosts if h.roles == ("app", "worker")]
    if mode == "dual-server":
        for host in both:
            c.err(("hosts", host.name, "roles"),
                  f"mode dual-server runs the worker on its own host, but {host.name} has roles [app, worker]",
                  "give it roles: [app] and the worker another host, or use mode single-server-gpu")
        if not app_only and not both:
            c.err(("hosts",), "mode dual-server needs exactly one host with roles [app], found none",
                  "add the app host, e.g. mello with roles: [app]")
        elif len(app_only) > 1:
            c.err(("hosts",), f"mode dual-server needs exactly one host with roles [app], found "
                  f"{len(app_only)}: {_names(app_only)}", "keep one app host")
        if not worker_only:
            c.err(("hosts",), "mode dual-server needs at least one host with roles [worker], found none",
                  "add the GPU host with roles: [worker], or use mode single-server-gpu")
        if len(app_only) == 1 and app_only[0].tailscale_ip is None:
            c.err(("hosts", app_only[0].name, "tailscale_ip"),
                  "mode dual-server needs a tailscale_ip on the app host", TAILNET_WHY)
    elif mode in ("single-server-gpu", "single-server-cpu"):
        if len(hosts) != 1:
            c.err(("hosts",), f"mode {mode} runs everything on one host, found {len(hosts)} hosts: "
                  f"{_names(hosts)}", "list one host with roles: [app, worker], or use mode dual-server")
        elif not both:
            host = hosts[0]
            c.err(("hosts", host.name, "roles"),
                  f"mode {mode} needs roles [app, worker] on its one host, found {_roles(host)}",
                  "write roles: [app, worker]")
    else:  # serverless, frontend-testing: the app stack alone
        hint = ("remove the worker role: the queue manager sends jobs to serverless.endpoint"
                if mode == "serverless" else
                "remove the worker role: frontend-testing runs the UI only; use single-server-cpu to infer")
        for host in hosts:
            if host.is_worker:
                c.err(("hosts", host.name, "roles"),
                      f"mode {mode} runs no worker, but {host.name} has the worker role", hint)
        apps = [h for h in hosts if h.is_app]
        if len(apps) != 1:
            found = f"{len(apps)}: {_names(apps)}" if apps else "none"
            c.err(("hosts",), f"mode {mode} needs exactly one host with roles [app], found {found}",
                  "keep one host with roles: [app]")
        if mode == "serverless" and not serverless.endpoint and not serverless.tiers:
            c.err(("serverless", "endpoint"), "mode serverless needs serverless.endpoints (or serverless.endpoint)",
                  "the URLs the queue manager sends jobs to, e.g. endpoints: "
                  "{h200-spot: https://containers.datacrunch.io/DEPLOYMENT}")
        elif mode == "serverless" and serverless.active == "default" and not serverless.endpoint:
            c.err(("serverless", "active"), "serverless.active is 'default' (the fallback endpoint) but "
                  "serverless.endpoint is not set", "set serverless.endpoint or make a tier active")


def check_ports(c: Checker, ports: model.Ports, num_users: int) -> None:
    """The frontend range fits below 65536 and no two services share a host port."""
    last = ports.frontend(num_users)
    if last > 65535:
        c.err(("ports", "frontend_base"), f"user{num_users:03d} would get port {last}, past 65535",
              "lower frontend_base or num_users")
        return
    span = f"{ports.frontend_base}-{last}"
    users = f"user001-user{num_users:03d}"
    singles = [("redis", ports.redis), ("queue_manager", ports.queue_manager), ("admin", ports.admin),
               ("worker_comfyui", ports.worker_comfyui)]
    seen: dict[int, str] = {}
    for key, port in singles:
        if ports.frontend_base <= port <= last:
            c.err(("ports", key), f"port {port} clashes with the frontend ports {span} of {users}",
                  f"pick a port outside {span}, or move frontend_base")
        elif port in seen:
            c.err(("ports", key), f"port {port} is also ports.{seen[port]}", "give each service its own port")
        seen.setdefault(port, key)


MISSING_ENV_FILE = "does not exist"


def check_env_file(c: Checker, given: str | None, path: str | None) -> EnvFile | EnvFileProblem | None:
    """The secrets file named by secrets.env_file, read only when it is safe to (regular, yours, 0600,
    bounded, UTF-8); every problem recorded at secrets.env_file. None when not named or unusable; the
    EnvFileProblem when it does not exist (an error only if a secret it should hold is missing)."""
    if not path:
        return None
    where = ("secrets", "env_file")
    try:
        env_file = load_env_file(path)
    except EnvFileProblem as exc:
        if exc.what == MISSING_ENV_FILE:
            return exc
        c.err(where, f"'{given}' {exc.what}", exc.hint)
        return None
    for number, what in env_file.problems:
        c.err(where, f"{given}:{number}: {what}", "write lines like REDIS_PASSWORD=...; '#' starts a comment")
    return env_file


CLOUD_SECRETS = ("VERDA_CLIENT_ID", "VERDA_CLIENT_SECRET")  # needed as soon as a host is rented


def rented_secrets(hosts: list[model.Host]) -> tuple[str, ...]:
    """The secrets renting needs: the provider's client credentials and each rented host's
    Tailscale auth key (by the name its provider section gives)."""
    if not any(h.provider for h in hosts):
        return ()
    names = list(CLOUD_SECRETS)
    for h in hosts:
        if h.provider and h.provider.tailscale_authkey not in names:
            names.append(h.provider.tailscale_authkey)
    return tuple(names)


def check_secrets(c: Checker, mode: str | None, env_file_given: str | None, base: str,
                  environ: Mapping[str, str], need_secrets: bool = True, extra_required: tuple[str, ...] = ()
                  ) -> tuple[dict[str, Secret], str | None, bool]:
    """Resolve the secrets the mode needs (environment first, then the env file), and
    `extra_required` (a rented host's); without `need_secrets` (plan, --dry-run) a missing one is an
    `Unset` placeholder, not a problem. Returns (secrets, the env file's path, whether that file does
    not exist)."""
    where = ("secrets",)
    env_file_path = expand(env_file_given, base) if env_file_given else None
    env_file = check_env_file(c, env_file_given, env_file_path)
    missing = env_file if isinstance(env_file, EnvFileProblem) else None
    env_file = None if missing else env_file
    required = REQUIRED_ALWAYS + (REQUIRED_WITH_ADMIN if mode not in (None, "frontend-testing") else ())
    required += tuple(n for n in extra_required if n not in required)
    optional = tuple(n for n in OPTIONAL if n not in required)
    result = resolve_secrets(required, optional, environ, env_file, env_file_given, allow_unset=not need_secrets)
    problems = list(result.problems)
    unset = any(what.endswith(" is not set") for what, _ in problems)
    if missing and unset:  # the secrets were to come from that file: name the missing file, once
        c.err(where + ("env_file",), f"'{env_file_given}' {missing.what}", missing.hint)
    if env_file_path and env_file is None and (unset or not missing):  # reported: not each secret again
        problems = [(what, hint) for what, hint in problems if not what.endswith(" is not set")]
    for what, hint in problems:
        c.err(where, what, hint)
    return dict(result.secrets), env_file_path, missing is not None


def check_swarm(c: Checker, mode: str, hosts: list[model.Host], sources: model.ImageSources) -> None:
    """What `engine: swarm` needs: an app host and worker hosts (mode dual-server), a tailnet address on
    every host (Swarm advertises and carries its traffic on it), and images already on the hosts
    (a swarm task never pulls or builds here)."""
    if mode not in model.SWARM_MODES:
        c.err(("engine",), f"engine: swarm places an app host and worker hosts (mode dual-server), but mode is {mode}",
              f"use engine: compose for mode {mode}, or mode: dual-server")
        return
    for host in hosts:
        if host.tailscale_ip is None:
            c.err(("hosts", host.name, "tailscale_ip"),
                  f"engine: swarm needs a tailscale_ip on every host, {host.name} has none",
                  f"Swarm advertises {host.name} and carries its traffic on that address: write what "
                  f"`tailscale ip -4` prints on {host.name}")
    for key in sorted(model.IMAGE_SERVICES, key=lambda k: k == "redis"):  # redis follows the others' source
        source = sources.source_of(key)
        if source != "present":
            where = ("images", "sources", key) if key in sources.per_service else ("images", "source")
            c.err(where, f"engine: swarm deploys images already on the hosts, but images.{key} comes from {source}",
                  "build or pull them with engine: compose first, or copy them with copy-image; then set "
                  "images.source: present")
            return
