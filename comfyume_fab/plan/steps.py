"""What a task WOULD do, host by host, in order: for `invoke plan` and `--dry-run`.
Pure: builds text from the plan and the command builders; connects to nothing."""
from __future__ import annotations

import json

from ..errors import ConfigError, clean
from ..host import commands as cmd
from ..host.actions import compose as composeact
from ..host.actions import git as gitact
from ..host.actions import images as imgact
from ..host.actions import lock as lockact
from ..host.actions import stopped as stopact
from ..host.actions import workdir as wdact
from ..inventory.secrets import Unset
from ..host.facts import images as imgfacts
from ..host.facts import stopped
from .planner import Plan

TOKEN = "<random token>"  # the run's own, made when it takes the lock
COMMIT = "<C>"  # the branch's commit, known once fetched
UPLOAD = ("(sftp) write {files} and .env (mode 0600, atomic rename) into {wd}, after the host's fingerprint salt "
          "(fingerprint.salt, made on the first deploy)")


def steps(plan: Plan, task: str, only: str | None = None, down: bool = False) -> list[tuple[str, str]]:
    """(host, command or description) in execution order."""
    inv = plan.inventory
    if inv.engine == "swarm":
        return swarm_steps(plan, task, only, down)
    app = plan.app
    wd = app.host.workdir
    out: list[tuple[str, str]] = []
    if task == "start-all":  # a rented worker without a live instance is rented first (ops/provision.py)
        for h in inv.provider_hosts:
            if not h.address:
                p = h.provider
                out.append((h.name, f"({p.name} API) rent {p.instance_type} ({'spot' if p.spot else 'on demand'}) in "
                                    f"{p.location}: availability, price confirmed (--yes), host key generated here, "
                                    "startup script, create with the kept volumes, wait until running, SSH verified, "
                                    "tailscale ip -4, recorded"))
    out += [(h.name, "(ssh) connect; read engine, Compose, GPU, containers") for h in plan.hosts]
    out.append((app.name, lockact.lock_acquire(wd, "<who> task=" + task, TOKEN)))
    workers = [hp for hp in plan.hosts if hp.worker_services and (not only or hp.name == only)]
    if only and not workers:  # the same refusal as the real stop-verda's, before anything is shown
        names = ", ".join(hp.name for hp in plan.hosts if hp.worker_services) or "none"
        raise ConfigError(f"--host {only}: not a worker host in {inv.path} (worker hosts: {names})")
    if task == "start-all":
        out += image_steps(plan)
        if app.app_services:
            out.append((app.name, wdact.mkdir(wd)))
            out.append((app.name, UPLOAD.format(files=", ".join(app.files), wd=wd)))
            out.append((app.name, "(diff) print per service: create / recreate (which setting) / start / remove"))
            out.append((app.name, composeact.up(app.compose, app.app_services)
                        + f"   # only what changed; changed frontends {inv.rollout.batch} at a time, each "
                          "batch healthy before the next"))
            out.append((app.name, f"(wait) until {', '.join(app.app_services)} are healthy "
                                  f"(at most {inv.timeouts.health:g} s)"))
        for hp in workers:
            host, port = plan.redis_address(hp)
            out.append((hp.name, f"(check) Redis at {host}:{port} reachable FROM {hp.name}, AUTH + PING"))
        for hp in workers:
            if hp.name != app.name:
                out.append((hp.name, wdact.mkdir(hp.host.workdir)))
                out.append((hp.name, UPLOAD.format(files=", ".join(hp.files), wd=hp.host.workdir)))
            out.append((hp.name, composeact.up(hp.compose, hp.worker_services)
                        + "   # + worker-gpu.yml when nvidia-smi finds a GPU"))
            out.append((hp.name, f"(wait) until {', '.join(hp.worker_services)} is healthy"))
            out.append((hp.name, stopact.clear_command(hp.host.workdir) + "   # the stopped-on-purpose record, if there is one"))
            out.append((hp.name, f"(probe) POST /prompt to 127.0.0.1:{inv.ports.worker_comfyui} from {hp.name}, "
                                 "poll /history until executed"))
        for hp in plan.hosts:
            out.append((hp.name, "(sftp) write deployed.json; " + wdact.audit(hp.host.workdir, "<audit line>")))
    elif task in ("stop-verda", "stop-all"):
        for hp in workers:
            out.append((hp.name, composeact.stop(hp.compose, hp.worker_services, remove=down)))
            out.append((hp.name, f"(sftp) write {stopped.STOPPED_FILE} (who stopped it, when) into {hp.host.workdir}"))
        if task == "stop-all":
            out.append((app.name, composeact.stop(app.compose, (), remove=down)))
        out.append((app.name, "(check) app-host container ids unchanged" if task == "stop-verda" else
                    "(check) nothing left running"))
    out.append((app.name, lockact.lock_release(wd, TOKEN)))
    return out


def swarm_steps(plan: Plan, task: str, only: str | None = None, down: bool = False) -> list[tuple[str, str]]:
    """What start-all and stop-verda do with engine: swarm (docs/swarm.md), in order."""
    from ..host.actions import swarm as swarmact
    inv = plan.inventory
    app = plan.app
    wd = app.host.workdir
    if task == "stop-all" or only or down:
        raise ConfigError(f"{task}{' --host' if only else ''}{' --down' if down else ''} is not built for engine: "
                          "swarm: stop-verda scales the worker service to 0 (docs/swarm.md)")
    hosts = plan.hosts if task == "start-all" else (app,)
    out: list[tuple[str, str]] = [(h.name, "(ssh) connect; read the images' entrypoints (never pulled) and the "
                                           "fingerprint salt") for h in hosts]
    out.append((app.name, lockact.lock_acquire(wd, "<who> task=" + task, TOKEN)))
    if task == "start-all":
        for h in inv.worker_hosts:
            out.append((h.name, "(gpu) nvidia-smi -L, /etc/docker/daemon.json, the NVIDIA runtime's config.toml: "
                                "with GPUs, NVIDIA-GPU=<uuid> generic resources and the nvidia default runtime "
                                "written (backup *.comfyume-<time>) and the engine restarted, only on change"))
        out.append((app.name, swarmact.init(app.host.tailscale_ip) + "   # unless it already manages this swarm"))
        for h in inv.worker_hosts:
            out.append((h.name, "(engine API) POST /swarm/join, the token in the JSON body on stdin: "
                                + swarmact.JOIN + "   # unless it is in this swarm already"))
        for h in inv.hosts:
            out.append((app.name, swarmact.label("<node of " + h.name + ">", "app" if h.is_app else "worker", h.name)
                        + "   # when its labels differ"))
        out.append((app.name, swarmact.remove_node("<node>") + "   # each Down node no host is now, or a departed "
                                                                "host's"))
        out.append((app.name, f"(sftp) write {swarmact.STACK_FILE} and {swarmact.SECRETS_DIR}/REDIS_PASSWORD, "
                              f"ADMIN_PASSWORD (0600) into {wd}"))
        out.append((app.name, swarmact.config(wd)))
        out.append((app.name, swarmact.deploy(wd, inv.project) + "   # unless the same file runs as planned"))
        out.append((app.name, f"(wait) until every service runs its replicas (at most {inv.timeouts.health:g} s)"))
        for h in inv.worker_hosts:
            out.append((h.name, f"(check) Redis at {app.host.tailscale_ip}:{inv.ports.redis} reachable FROM "
                                f"{h.name}, AUTH + PING"))
        out.append((app.name, "(probe) a user's job through the queue manager, until it completes"))
        for h in inv.hosts:
            out.append((h.name, wdact.audit(h.workdir, "<audit line>")))
    else:
        out.append((app.name, swarmact.scale(f"{inv.project}_worker", 0)))
        out.append((app.name, "(wait) until no worker task runs; (check) the app host's tasks unchanged"))
        out.append((app.name, wdact.audit(wd, "<audit line>")))
    out.append((app.name, lockact.lock_release(wd, TOKEN)))
    return out


def image_steps(plan: Plan) -> list[tuple[str, str]]:
    """start-all's image work per host (images.source build / pull), before anything is deployed;
    hosts run theirs in parallel. Nothing for images that must be `present`."""
    inv = plan.inventory
    src = inv.sources
    out: list[tuple[str, str]] = []
    for hp in plan.hosts:
        builds = inv.image_keys_from(hp.host, "build")
        if builds:
            checkout = cmd.workdir_path(src.checkout)
            branch = src.branch_for(hp.host)
            out.append((hp.name, gitact.fetch_command(checkout, src.repository or "", branch)
                        + f"   # fetch {branch}: its commit <C> is what gets built and deployed"))
            for key in builds:
                spec = src.build_spec(key)
                ref = getattr(inv.images, key)
                tag = imgfacts.commit_ref(ref, COMMIT)
                out.append((hp.name, imgact.build_command(checkout, COMMIT, spec.context, spec.dockerfile,
                                                            [tag, ref], {})
                            + f"   # only if no image of {spec.context} at this tree exists (else: tag it); "
                              f"at most {inv.timeouts.build:g} s"))
        pulls = inv.image_keys_from(hp.host, "pull")
        reg = src.registry
        if reg is not None and any(reg.serves(getattr(inv.images, k)) for k in pulls):
            out.append((hp.name, imgact.login_command(reg.server, reg.user)
                        + f"   # password from {reg.password_name}, on stdin; the folder is made 0700 in "
                          f"{hp.host.workdir} for this run and removed after the pulls"))
        for key in pulls:
            ref = getattr(inv.images, key)
            login = imgact.AUTH_DIR_SHOWN if reg is not None and reg.serves(ref) else None
            out.append((hp.name, imgact.pull_command(ref, login)
                        + f"   # only if the host lacks it; at most {inv.timeouts.pull:g} s"))
    return out


def unset_secrets(plan: Plan) -> list[str]:
    """The secrets the plan needs that were not given (plan / --dry-run only)."""
    return sorted(name for name, value in plan.inventory.secrets.items() if isinstance(value, Unset))


def missing_env_file(plan: Plan) -> str | None:
    """The secrets file secrets.env_file names, when it does not exist (plan / --dry-run only)."""
    inv = plan.inventory
    return inv.env_file if inv.env_file_missing else None


def render_text(plan: Plan, task: str = "start-all", **kw) -> str:
    lines = [f"mode {plan.mode}, config {plan.config_hash}, inventory {plan.inventory.path}"]
    if plan.inventory.engine == "swarm":
        lines.append(f"engine swarm: the services below run as one stack ({plan.inventory.project}) placed by node "
                     "label; the secrets become Swarm secrets, the ports host-mode ports (docs/swarm.md)")
    for w in plan.warnings:
        lines.append(f"WARNING: {w}")
    missing = missing_env_file(plan)
    if missing:
        lines.append(f"NOTE: the secrets file {missing} does not exist (secrets.env_file): plan shows what it can "
                     f"without it; start-all needs it unless every secret is exported (create it, mode 0600, "
                     f"with lines like REDIS_PASSWORD=...)")
    unset = unset_secrets(plan)
    if unset:
        lines.append(f"NOTE: {', '.join(unset)} not set (shown as unset; the config hash differs from the real "
                     f"one): start-all needs them (export them, or name an env file in secrets.env_file)")
    for hp in plan.hosts:
        lines.append("")
        lines.append(f"{hp.name} ({', '.join(hp.roles)}) {hp.host.address} -> {hp.host.workdir}")
        lines.append(f"  compose files: {' '.join(hp.compose_files)}")
        lines.append(f"  services: {' '.join(hp.services)}")
        lines.append("  environment:")
        for k, v in sorted(hp.env_masked().items()):
            lines.append(f"    {k}={v}")
    lines.append("")
    lines.append(f"{task} would run, in order:")
    for i, (host, step) in enumerate(steps(plan, task, **kw), 1):
        lines.append(f"  {i:2}. [{host}] {step}")
    return clean("\n".join(lines))  # values from the inventory file


def render_json(plan: Plan, task: str = "start-all", **kw) -> str:
    return json.dumps({
        "mode": plan.mode, "config_hash": plan.config_hash, "warnings": list(plan.warnings),
        "unset_secrets": unset_secrets(plan), "missing_env_file": missing_env_file(plan),
        "hosts": [{"name": hp.name, "roles": list(hp.roles), "address": hp.host.address, "workdir": hp.host.workdir,
                   "compose_files": list(hp.compose_files), "services": list(hp.services), "env": hp.env_masked()}
                  for hp in plan.hosts],
        "steps": [{"host": h, "command": c} for h, c in steps(plan, task, **kw)],
    }, indent=2)
