"""`engine: swarm`: start-all, stop-verda and status on Docker Swarm (docs/swarm.md).

start-all: every host reachable → each host has its images (Swarm never pulls here: a missing one is
named, with copy-image) → lock → the swarm made to match the inventory (`plan.cluster`: init, joins,
labels, stale nodes removed) → the stack file and the secrets uploaded (0600) → `docker stack config`
→ `docker stack deploy --resolve-image never` → every task running (Swarm marks a task running only
once its healthcheck passed) → Redis from each worker host, the job probe → audit → unlock.
stop-verda: the worker service scaled to 0 on the manager; the app host's services untouched.
status: nodes (availability, state, advertised GPUs), services, tasks per node with their state and
errors, a task that moved off a Down node, plus the cross-host checks and the job probe.
"""
from __future__ import annotations

import dataclasses
import hashlib
import time
from typing import Any, Callable

from ..checks import jobprobe
from ..checks.links import prefetch_redis, redis_ping
from ..checks.queue import queue_checks
from ..checks.result import CheckResult
from ..errors import ExitCode, MissingImageError, UnhealthyError
from ..host import commands as cmd
from ..host.actions import daemonjson as dj
from ..host.actions import swarm as act
from ..host.actions import workdir as wdact
from ..host.facts import salt as saltfact
from ..host.facts import ParseError
from ..host.facts import swarm as sf
from ..host.facts.nvidia import read_gpu_list
from ..host.session import Session, gather
from ..inventory.fingerprint import fingerprint
from ..inventory.model import Inventory
from ..plan.cluster import INIT, JOIN, LABEL, REMOVE, cluster_steps
from ..plan.compose import user_name
from ..plan.planner import Plan, make_plan
from ..plan import swarmgpu
from ..plan.stack import render_stack, replaced_services, secret_name, stack_yaml
from .audit import audit_line, local_revision
from .lock import DeployLock

SECRET_KEYS = ("REDIS_PASSWORD", "ADMIN_PASSWORD")
SHIMMED = {"queue-manager": "queue_manager", "admin": "admin", "worker": "worker"}  # service -> images.<key>
POLL_S = 1.0


@dataclasses.dataclass
class SwarmStart:
    plan: Plan
    steps: list[str]  # what was done to the swarm (init, joins, labels, removals)
    deployed: bool  # False: the stack was already running as planned (nothing to do)
    tasks: dict[str, list[str]]  # service -> the hosts its running tasks are on
    checks: list[CheckResult]
    warnings: list[str]


# --- reads ------------------------------------------------------------------------------------------

def _info(s: Session, name: str) -> sf.SwarmInfo:
    res = s[name].run(sf.INFO_COMMAND, step="swarm state")
    if not res.ok:
        raise UnhealthyError(f"the Docker engine does not answer `docker info`: {res.tail()}", host=name,
                             step="swarm state", hint="start the engine (systemctl start docker) and rerun")
    return sf.parse_info(res.stdout)


def _nodes(s: Session, app: str) -> tuple[sf.Node, ...]:
    res = s[app].run(sf.NODES_COMMAND, step="swarm nodes")
    if not res.ok:
        raise UnhealthyError(f"listing the swarm's nodes failed: {res.tail()}", host=app, step="swarm nodes")
    return sf.parse_nodes(res.stdout)


def _stack_state(s: Session, inv: Inventory) -> tuple[tuple[sf.Service, ...], tuple[sf.Task, ...]]:
    remote = s[inv.app_host.name]
    res = remote.run(cmd.sections([("services", sf.services_command(inv.project)),
                                   ("tasks", sf.tasks_command(inv.project))]), step="swarm tasks")
    sec = cmd.split_sections(res.stdout)
    services = sf.parse_services(sec.get("services", (1, ""))[1])
    tasks = sf.parse_tasks(sec.get("tasks", (1, ""))[1])
    # `docker stack services` prints short IDs, a task names its service's full one
    short = {t.service_id: next((sv.id for sv in services if sv.id and t.service_id.startswith(sv.id)), t.service_id)
             for t in tasks}
    return services, tuple(dataclasses.replace(t, service_id=short[t.service_id]) for t in tasks)


def _refs(inv: Inventory, host) -> list[str]:
    keys = (["redis", "queue_manager", "admin", "frontend"] if host.is_app else []) + (
        ["worker"] if host.is_worker else [])
    return [getattr(inv.images, k) for k in keys]


def _read_host(inv: Inventory, s: Session, host) -> tuple[dict, str | None]:
    """(image ref -> its default argv or None when missing, the host's salt)."""
    res = s[host.name].run(cmd.sections([("images", sf.images_command(_refs(inv, host))),
                                         ("salt", cmd.read_file(host.workdir, saltfact.SALT_FILE))]),
                           step="read host state")
    sec = cmd.split_sections(res.stdout)
    return sf.parse_images(sec.get("images", (1, ""))[1]), saltfact.parse_salt(sec.get("salt", (1, ""))[1])


def missing_images(inv: Inventory, found: dict[str, dict]) -> list[str]:
    """One sentence per host and image it lacks (Swarm would try no pull here; the task would fail)."""
    out = []
    for host in inv.hosts:
        for ref, argv in found[host.name].items():
            if argv is None:
                have = [h for h, imgs in found.items() if imgs.get(ref) is not None]
                how = (f"copy it with `copy-image --source {have[0]} --target {host.name} --image {ref}`" if have
                       else "build or load it there (engine: swarm never pulls)")
                out.append(f"{host.name} has no image {ref}, and a swarm task there would fail with 'No such image': "
                           f"{how}, then rerun start-all")
    return out


# --- the swarm itself ------------------------------------------------------------------------------

def converge_cluster(inv: Inventory, s: Session, say) -> tuple[list[str], dict, tuple[sf.Node, ...]]:
    """Run `plan.cluster`'s steps until none is left: (what was done, each host's swarm state, nodes)."""
    app = inv.app_host
    done: list[str] = []
    for _ in range(4):
        infos = dict(gather(lambda h: _info(s, h.name), inv.hosts))
        nodes = _nodes(s, app.name) if infos[app.name].active and infos[app.name].manager else ()
        steps = cluster_steps(inv, infos, nodes)
        if not steps:
            return done, infos, nodes
        for step in steps:
            say(step.why)
            _run_step(inv, s, step)
            done.append(step.why)
    raise UnhealthyError("the swarm did not settle after four rounds of set-up", host=app.name, step="swarm set-up",
                         hint="see `docker node ls` on the app host")


def _run_step(inv: Inventory, s: Session, step) -> None:
    app = inv.app_host
    if step.kind == INIT:
        res = s[app.name].run(act.init(app.tailscale_ip), step="swarm init")
        if not res.ok:
            raise UnhealthyError(f"docker swarm init failed: {res.tail()}", host=app.name, step="swarm init")
    elif step.kind == JOIN:
        host = inv.host(step.host)
        token_res = s[app.name].run(act.JOIN_TOKEN, step="swarm join token")
        token = token_res.stdout.strip()
        if not token_res.ok or not token:
            raise UnhealthyError("the manager gave no worker join token", host=app.name, step="swarm join token")
        res = s[host.name].run(act.JOIN, input=act.join_body(token, app.tailscale_ip, host.tailscale_ip),
                               timeout=max(inv.timeouts.command, 70), step="swarm join")
        ok, said = act.join_result((res.stdout or "") + ("\n" + res.stderr if not res.ok and res.stderr else ""))
        if not ok or not res.ok:
            said = said.replace(token, "***")
            raise UnhealthyError(f"joining the swarm at {app.tailscale_ip}:{act.SWARM_PORT} failed: {said}",
                                 host=host.name, step="swarm join",
                                 hint="Swarm's ports 2377/tcp, 7946/tcp+udp and 4789/udp must be open between the "
                                      "hosts' tailnet addresses; curl must be installed on the host")
    elif step.kind == LABEL:
        res = s[app.name].run(act.label(step.node_id, step.role, step.host), step="swarm labels")
        if not res.ok:
            raise UnhealthyError(f"labelling {step.host}'s node failed: {res.tail()}", host=app.name,
                                 step="swarm labels")
    elif step.kind == REMOVE:
        res = s[app.name].run(act.remove_node(step.node_id, step.force), step="swarm node rm")
        if not res.ok:
            raise UnhealthyError(f"removing node {step.node_id[:12]} failed: {res.tail()}", host=app.name,
                                 step="swarm node rm")


# --- GPUs as generic resources ----------------------------------------------------------------------

@dataclasses.dataclass
class GpuSetup:
    """One worker host's GPU settings: its GPUs (None: no usable nvidia-smi), the new daemon.json and
    config.toml texts (None: already right) and the lines that say what changes."""
    host: str
    gpus: tuple | None
    daemon_json: str | None
    runtime_toml: str | None
    lines: list[str]
    error: str = ""


def gpu_setup(host: str, read_output: str) -> GpuSetup:
    """Pure: `daemonjson.READ`'s output -> what must change. Without GPUs (a CPU worker, the lab) only
    stale NVIDIA-GPU entries would go; a host without daemon.json and GPUs needs nothing."""
    sec = cmd.split_sections(read_output)
    gpus, error = read_gpu_list(*sec.get("nvidia_list", (127, "")))
    if error:  # a driver hiccup must not strip the GPUs this engine advertises, nor restart it
        return GpuSetup(host, None, None, None, [], error)
    if gpus and not sec.get("nvidia_runtime", (0, ""))[1].strip():
        # "default-runtime": "nvidia" without the runtime installed: no container would start there
        raise UnhealthyError("this host has GPUs but no nvidia-container-runtime, which Swarm's GPU settings "
                             "make the engine's default runtime", host=host, step="gpu settings",
                             hint="install the NVIDIA Container Toolkit there, then rerun start-all")
    current = swarmgpu.parse_daemon_json(sec.get("daemon_json", (0, ""))[1], dj.DAEMON_JSON)
    wanted = swarmgpu.render_daemon_json(current, gpus or ())
    lines = [f"{host} {dj.DAEMON_JSON} {line}" for line in swarmgpu.daemon_json_changes(current, wanted)]
    daemon = swarmgpu.daemon_json_text(wanted) if lines else None
    toml = None
    if gpus:
        now = sec.get("runtime_toml", (0, ""))[1]
        new = swarmgpu.edit_nvidia_runtime_config(now)
        changes = swarmgpu.nvidia_runtime_config_changes(now, new)
        lines += [f"{host} {line}" for line in changes]
        toml = new if changes else None
    return GpuSetup(host, gpus, daemon, toml, lines, error)


def _apply_gpu(inv: Inventory, s: Session, setup: GpuSetup, say) -> None:
    """Write what changed (backups kept) and restart that host's engine, once."""
    remote = s[setup.host]
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for path, text in ((dj.DAEMON_JSON, setup.daemon_json), (dj.RUNTIME_TOML, setup.runtime_toml)):
        if text is None:
            continue
        res = remote.run(dj.write_file(path, stamp), input=text.encode(), step="gpu settings")
        if not res.ok:
            raise UnhealthyError(f"writing {path} failed: {res.tail()}", host=setup.host, step="gpu settings",
                                 hint="the login needs root or passwordless sudo for this one-time change")
    say(f"{setup.host}: restarting the Docker engine for its GPU settings (backups: *.comfyume-{stamp})")
    res = remote.run(dj.RESTART, timeout=max(inv.timeouts.command, 90), step="engine restart")
    if not res.ok:
        raise UnhealthyError(f"the Docker engine did not come back after its restart: {res.tail()}",
                             host=setup.host, step="engine restart",
                             hint=f"see `journalctl -u docker` there; the previous files are the *.comfyume-{stamp} copies")


def gpu_step(inv: Inventory, s: Session, say, warn) -> dict[str, GpuSetup]:
    """Each worker host's GPUs advertised as NVIDIA-GPU generic resources (engine restarted only on change)."""
    def one(host):
        res = s[host.name].run(dj.READ, step="gpu settings")
        try:
            return gpu_setup(host.name, res.stdout)
        except ParseError as exc:  # a daemon.json dockerd could not read either: never rewritten
            raise UnhealthyError(str(exc), host=host.name, step="gpu settings") from None
    setups = dict(gather(one, inv.worker_hosts))
    for setup in setups.values():
        if setup.error:
            warn(f"{setup.host}: nvidia-smi -L failed ({setup.error}): its GPU settings are left as they are")
        for line in setup.lines:
            say(f"plan: {line}")
        if setup.daemon_json is not None or setup.runtime_toml is not None:
            _apply_gpu(inv, s, setup, say)
    return setups


# --- start-all --------------------------------------------------------------------------------------

def start_swarm(inv: Inventory, say: Callable[[str], None], warn: Callable[[str], None],
                wait_lock: float = 0.0) -> SwarmStart:
    app = inv.app_host
    warnings: list[str] = []
    with Session(inv, inv.hosts) as s:
        say(f"connecting to {len(inv.hosts)} host(s): {', '.join(h.name for h in inv.hosts)}")
        prefetch_redis()
        s.connect()
        s.require_all()
        found = dict(gather(lambda h: _read_host(inv, s, h), inv.hosts))
        images = {name: imgs for name, (imgs, _) in found.items()}
        missing = missing_images(inv, images)
        if missing:
            raise MissingImageError("; ".join(missing), step="preflight")
        revision = local_revision()
        app_salt = found[app.name][1] or saltfact.new_salt()
        plan = make_plan(inv, salts={app.name: app_salt})
        argv = {svc: next(imgs[getattr(inv.images, key)] for imgs in images.values()
                          if imgs.get(getattr(inv.images, key)) is not None) for svc, key in SHIMMED.items()}
        say("preflight: every host reachable, every image present on the hosts that run it")
        with DeployLock(s[app.name], app.workdir, "start-all", revision, wait=wait_lock, say=say,
                        stale_after=inv.timeouts.lock_wait):
            gpu_step(inv, s, say, warn)
            steps, infos, nodes = converge_cluster(inv, s, say)
            host_of = {n.id: n.host for n in nodes}
            workers = [n for n in nodes if n.labels.get(sf.ROLE_LABEL) == "worker"]
            gpu = bool(workers) and all(n.gpus for n in workers)
            if any(n.gpus for n in workers) and not gpu:
                w = (f"only some worker hosts advertise an NVIDIA-GPU ({', '.join(str(n.host) for n in workers if n.gpus)}): "
                     "the worker reserves none, so it may run on a host without one")
                warn(w)
                warnings.append(w)
            names = {k: secret_name(inv.project, k, fingerprint(k, inv.secrets[k], app_salt)) for k in SECRET_KEYS}
            text = stack_yaml(plan, render_stack(plan, argv, names, gpu_workers=gpu))
            deployed, replacing = _deploy(inv, s, plan, text, app_salt, say)
            tasks = wait_running(inv, s, say, host_of, replacing)
            ready = [str(n.host) for n in _nodes(s, app.name) if n.labels.get(sf.ROLE_LABEL) == "worker"
                     and n.state == "ready" and n.availability == "active"]
            note = spread_note(f"{inv.project}_worker", tasks.get(f"{inv.project}_worker", []), ready)
            if note:
                warn(note)
                warnings.append(note)
            checks = _links(inv, s, plan, say)
            result = "changed" if deployed or steps else "unchanged"
            gather(lambda h: _audit(s, h, plan, revision, result), inv.hosts)
        return SwarmStart(plan, steps, deployed, tasks, checks, warnings)


def _deploy(inv: Inventory, s: Session, plan: Plan, text: str, app_salt: str, say
            ) -> tuple[bool, dict[str, frozenset[str]]]:
    """Upload and deploy the stack unless the same file already runs converged; (whether deployed,
    the services the deploy replaces -> the ids of their tasks from before it). Right after `docker
    stack deploy` those old tasks still run (Replicas says 1/1): a check made then meets them, or
    the gap when they stop, so the wait for tasks waits for them to go."""
    app = inv.app_host
    remote, wd = s[app.name], app.workdir
    digest = hashlib.sha256(text.encode()).hexdigest()
    now = remote.run(f"cat {cmd.q(cmd.workdir_path(wd, act.STACK_FILE))} 2>/dev/null", step="read stack file")
    before_text = now.stdout if now.ok and now.stdout.strip() else None
    services, tasks = _stack_state(s, inv)
    want = _wanted(inv)
    ids = {sv.name: sv.id for sv in services}
    replacing = {name: frozenset(t.id for t in tasks if t.service_id == ids.get(name))
                 for name in replaced_services(before_text, text, inv.project)}
    settled = (before_text is not None and hashlib.sha256(before_text.encode()).hexdigest() == digest and
               {sv.name: (sv.running, sv.wanted) for sv in services} == {n: (r, r) for n, r in want.items()})
    if settled:
        say(f"{app.name}: stack {inv.project} already running as planned (nothing to do)")
        return False, {}
    say(f"{app.name}: uploading the stack file and {len(SECRET_KEYS)} secret file(s) (0600) to {wd}")
    made = remote.run(wdact.mkdir(wd) + " && " + act.secrets_dir(wd) + " && " + " && ".join(
        f"mkdir -p {cmd.q(cmd.workdir_path(wd, f'data/user_data/{user_name(i)}'))}" for i in
        range(1, inv.num_users + 1)), step="upload")
    if not made.ok:
        raise UnhealthyError(f"could not create the folders under {wd}: {made.tail()}", host=app.name, step="upload")
    remote.put(cmd.workdir_path(wd, saltfact.SALT_FILE), saltfact.salt_text(app_salt), mode=0o600)
    for key in SECRET_KEYS:
        remote.put(cmd.workdir_path(wd, f"{act.SECRETS_DIR}/{key}"), inv.secrets[key].reveal().encode(), mode=0o600)
    remote.put(cmd.workdir_path(wd, act.STACK_FILE), text.encode(), mode=0o600)
    checked = remote.run(act.config(wd), step="docker stack config")
    if not checked.ok:
        raise UnhealthyError(f"docker stack config refused the stack file: {checked.tail()}", host=app.name,
                             step="docker stack config", hint="a bug in the rendered stack file: rerun with --verbose")
    say(f"{app.name}: docker stack deploy --resolve-image never {inv.project}")
    res = remote.run(act.deploy(wd, inv.project), timeout=inv.timeouts.command, step="docker stack deploy")
    if not res.ok:
        raise UnhealthyError(f"docker stack deploy failed: {res.tail()}", host=app.name, step="docker stack deploy")
    return True, replacing


def _wanted(inv: Inventory) -> dict[str, int]:
    """Stack service name -> replicas planned."""
    names = ["redis", "queue-manager", "admin"] + [user_name(i) for i in range(1, inv.num_users + 1)]
    out = {f"{inv.project}_{n}": 1 for n in names}
    out[f"{inv.project}_worker"] = len(inv.worker_hosts)
    return out


def task_lines(inv: Inventory, services, tasks, host_of: dict[str, str | None]) -> list[str]:
    """What keeps the stack from running: per service not converged, its current tasks' state and error."""
    by_id = {sv.id: sv for sv in services}
    out = []
    for sv in services:
        if sv.running == sv.wanted:
            continue
        current = [t for t in tasks if t.service_id == sv.id and t.desired == "running"]
        said = "; ".join(f"task {t.slot} on {host_of.get(t.node_id) or t.node_id[:12] or 'no node'}: {t.state}"
                         + (f" ({t.error})" if t.error else "") for t in current) or "no task scheduled"
        out.append(f"{sv.name} {sv.running}/{sv.wanted} running: {said}")
    del by_id
    return out


def wait_running(inv: Inventory, s: Session, say, host_of: dict[str, str | None],
                 replacing: dict[str, frozenset[str]] | None = None) -> dict[str, list[str]]:
    """Wait (timeouts.health) until every planned service runs all its replicas, and a service the
    deploy is replacing runs none of its old tasks (`replacing`: name -> old task ids); service -> hosts."""
    want = _wanted(inv)
    t0 = time.monotonic()
    deadline = t0 + inv.timeouts.health
    while True:
        services, tasks = _stack_state(s, inv)
        got = {sv.name: sv for sv in services}
        old = _old_still_running(services, tasks, replacing or {}, settled=time.monotonic() - t0 >= REPLACE_GRACE_S)
        if all(n in got and got[n].running == got[n].wanted == r for n, r in want.items()) and not old:
            break
        if time.monotonic() > deadline:
            lines = (task_lines(inv, services, tasks, host_of) or [f"{n} not deployed" for n in want if n not in got]
                     or [f"{n} still runs its task from before the deploy" for n in old])
            hint = ("the image is not on that node, and Swarm never pulls here: copy it with copy-image"
                    if any("No such image" in ln for ln in lines) else
                    "see `docker service ps --no-trunc` on the app host and the service's logs")
            raise UnhealthyError(f"not every task runs after {inv.timeouts.health:g} s: {' | '.join(lines)}",
                                 host=inv.app_host.name, step="wait for tasks", hint=hint)
        time.sleep(POLL_S)
    out: dict[str, list[str]] = {}
    by_id = {sv.id: sv.name for sv in services}
    for t in tasks:
        if t.desired == "running" and t.state == "running":
            out.setdefault(by_id.get(t.service_id, t.service_id), []).append(host_of.get(t.node_id) or t.node_id[:12])
    say(f"every task running: {', '.join(f'{n} {len(h)}/{want[n]}' for n, h in sorted(out.items()) if n in want)}")
    return out


# A service whose stack definition changed but whose tasks Swarm keeps (a change it applies in place)
# is let go once this long after the deploy its old tasks are still wanted and no new one came.
REPLACE_GRACE_S = 20.0
_ENDED = ("complete", "failed", "shutdown", "rejected", "orphaned", "remove")


def _old_still_running(services, tasks, replacing: dict[str, frozenset[str]], settled: bool = False) -> list[str]:
    """Services whose template the deploy changed and that still run a task from before it. Once
    `settled` (REPLACE_GRACE_S after the deploy), a service whose old tasks are all still wanted
    and which has no new task is one Swarm is not replacing."""
    ids = {sv.id: sv.name for sv in services}
    out = set()
    for sid, name in ids.items():
        old = replacing.get(name)
        if not old:
            continue
        mine = [t for t in tasks if t.service_id == sid]
        running_old = [t for t in mine if t.id in old and t.state == "running"]
        if not running_old:
            continue
        replaced = any(t.desired != "running" for t in running_old) or any(
            t.id not in old and t.desired == "running" and t.state not in _ENDED for t in mine)
        if replaced or not settled:
            out.add(name)
    return sorted(out)


def _links(inv: Inventory, s: Session, plan: Plan, say) -> list[CheckResult]:
    """Redis from each worker host (its tailnet path to the host-mode port), then a user's job."""
    app = inv.app_host
    pw = inv.secrets["REDIS_PASSWORD"].reveal()
    checks = []
    pings = gather(lambda h: redis_ping(s[h.name], app.tailscale_ip, inv.ports.redis, pw, inv.timeouts.redis,
                                        name=f"redis-from-{h.name}", app_host=app.name), inv.worker_hosts)
    for name, check in pings.items():
        checks.append(check)
        if not check.ok:
            raise UnhealthyError(check.detail, host=name, step="redis from worker",
                                 hint="the stack was left running; fix this and rerun start-all")
        say(f"{name}: {check.detail}")
    job = _job_probe(inv, s)
    checks.append(job)
    if not job.ok:
        raise UnhealthyError(job.detail, host=app.name, step="job probe",
                             hint="everything was left running; see `docker service logs` of the queue manager and "
                                  "the worker")
    say(f"{app.name}: {job.detail}")
    return checks


def _job_probe(inv: Inventory, s: Session) -> CheckResult:
    app = inv.app_host
    cleanup = jobprobe.redis_cleanup(s[app.name], app.tailscale_ip, inv.ports.redis,
                                     inv.secrets["REDIS_PASSWORD"].reveal(), inv.timeouts.redis)
    return jobprobe.job_probe(s[app.name], app.tailscale_ip, inv.ports.queue_manager, inv.timeouts.probe,
                              inv.probe.workflow_graph, cleanup)


def _audit(s: Session, host, plan: Plan, revision: str, result: str, task: str = "start-all") -> None:
    remote = s[host.name]
    res = remote.run(wdact.mkdir(host.workdir) + " && " + wdact.audit(
        host.workdir, audit_line(task, revision, plan.config_hash, plan.mode, result, "engine=swarm")), step="audit")
    if not res.ok:
        raise UnhealthyError(f"writing the audit line failed: {res.tail()}", host=host.name, step="audit")


# --- stop-verda --------------------------------------------------------------------------------------

def stop_swarm_workers(inv: Inventory, say, wait_lock: float = 0.0) -> dict[str, Any]:
    """Scale the worker service to 0 on the manager and wait until no worker task runs; the app host's
    services are compared before and after (their tasks keep their ids)."""
    app = inv.app_host
    with Session(inv, [app]) as s:
        s.connect()
        s.require_all()
        revision = local_revision()
        with DeployLock(s[app.name], app.workdir, "stop-verda", revision, wait=wait_lock, say=say,
                        stale_after=inv.timeouts.lock_wait):
            services, tasks = _stack_state(s, inv)
            worker = f"{inv.project}_worker"
            ids = {sv.name: sv.id for sv in services}
            if worker not in ids:
                raise UnhealthyError(f"the stack {inv.project} has no worker service", host=app.name,
                                     step="stop-verda", hint="run start-all first")
            before = {t.id for t in tasks if t.service_id != ids[worker] and t.desired == "running"}
            say(f"{app.name}: docker service scale {worker}=0")
            res = s[app.name].run(act.scale(worker, 0), step="scale worker")
            if not res.ok:
                raise UnhealthyError(f"scaling {worker} to 0 failed: {res.tail()}", host=app.name, step="scale worker")
            deadline = time.monotonic() + inv.timeouts.health
            t0 = time.monotonic()
            while True:
                services, tasks = _stack_state(s, inv)
                left = [t for t in tasks if t.service_id == ids[worker] and t.state in ("running", "starting",
                                                                                         "preparing", "assigned")]
                if not left:
                    break
                if time.monotonic() > deadline:
                    raise UnhealthyError(f"{len(left)} worker task(s) still {left[0].state} after "
                                         f"{inv.timeouts.health:g} s", host=app.name, step="scale worker")
                time.sleep(POLL_S)
            after = {t.id for t in tasks if t.service_id != ids[worker] and t.desired == "running"}
            plan = make_plan(inv)
            _audit(s, app, plan, revision, "stopped", task="stop-verda")
            return {"stopped": worker, "took_s": round(time.monotonic() - t0, 1),
                    "app_untouched": before == after, "app_tasks": len(after)}


def spread_note(service: str, on: list[str], ready: list[str]) -> str | None:
    """A sentence when a service's running tasks crowd onto fewer worker hosts than could take them
    (after a host came back, Swarm does not move tasks back on its own)."""
    idle = sorted(set(ready) - set(on))
    if not idle or len(set(on)) >= min(len(on), len(set(ready))):
        return None
    return (f"{service}: {len(on)} task(s) on {', '.join(sorted(set(on)))}, none on {', '.join(idle)}: Swarm does not "
            f"move tasks back by itself; `docker service update --force {service}` on the app host spreads them "
            f"(it restarts the workers)")


# --- status ------------------------------------------------------------------------------------------

def moved_tasks(tasks, host_of: dict[str, str | None], down: set[str]) -> list[str]:
    """A sentence per task slot whose task on a Down node was replaced by one running on another node."""
    out = []
    for t in tasks:
        if t.node_id not in down or t.desired == "running":
            continue
        now = [u for u in tasks if u.service_id == t.service_id and u.slot == t.slot and u.desired == "running"
               and u.state == "running" and u.node_id != t.node_id]
        if now:
            out.append(f"task {t.slot} moved from {host_of.get(t.node_id) or t.node_id[:12]} (node down) to "
                       f"{host_of.get(now[0].node_id) or now[0].node_id[:12]}")
    return sorted(set(out))


def status_swarm(inv: Inventory, probe: bool = True, say=None) -> tuple[dict[str, Any], list[CheckResult], ExitCode]:
    """(the --json data, the checks, the exit code): 0 healthy, 3 a host unreachable, 6 the worker
    service scaled to 0 on purpose and nothing else wrong, else 4."""
    say = say or (lambda _m: None)
    app = inv.app_host
    plan = make_plan(inv)
    checks: list[CheckResult] = []
    hosts: dict[str, Any] = {}
    with Session(inv, inv.hosts) as s:
        say(f"connecting to {len(inv.hosts)} host(s)")
        s.connect()
        for h in inv.hosts:
            err = s.errors.get(h.name)
            reachable = h.name in s.remotes
            ms = s.connect_s.get(h.name)
            hosts[h.name] = {"reachable": reachable, "error": None if reachable else str(getattr(err, "cause", err)),
                             "ssh_ms": round(ms * 1000, 1) if reachable and ms is not None else None, "roles": list(h.roles), "engine": None, "compose": None,
                             "services": [], "deployed": None, "gpu": None, "stopped_on_purpose": None,
                             "autostop": None}  # rented workers (and their autostop) are not for swarm
            if not reachable:
                checks.append(CheckResult(f"ssh-{h.name}", False, f"{h.name} is unreachable: "
                                          f"{getattr(err, 'cause', err) or 'no answer'}",
                                          host=h.name))
        swarm: dict[str, Any] = {"manager": app.name, "nodes": [], "services": [], "tasks": [], "moved": []}
        worker_scaled_to_zero = False
        if app.name in s.remotes:
            info = _info(s, app.name)
            if not (info.active and info.manager):
                checks.append(CheckResult("swarm", False, f"{app.name} is not a swarm manager (state {info.state}): "
                                          "run start-all", host=app.name))
            else:
                nodes = _nodes(s, app.name)
                host_of = {n.id: n.host for n in nodes}
                services, tasks = _stack_state(s, inv)
                down = {n.id for n in nodes if n.state != "ready"}
                for n in nodes:
                    swarm["nodes"].append({"id": n.id[:12], "host": n.host, "role": n.labels.get(sf.ROLE_LABEL),
                                           "availability": n.availability, "state": n.state, "addr": n.addr,
                                           "gpus": list(n.gpus)})
                    name = n.host or n.id[:12]
                    ok = n.state == "ready" and n.availability == "active"
                    checks.append(CheckResult(f"swarm-node-{name}", ok, f"node {name} ({n.addr}): {n.state}, "
                                              f"{n.availability}" + (f", GPUs {', '.join(n.gpus)}" if n.gpus else
                                                                     ", no GPU advertised"), host=n.host))
                want = _wanted(inv)
                by_id = {sv.id: sv.name for sv in services}
                for sv in services:
                    swarm["services"].append({"name": sv.name, "running": sv.running, "wanted": sv.wanted,
                                              "image": sv.image, "ports": sv.ports})
                for t in tasks:
                    swarm["tasks"].append({"service": by_id.get(t.service_id, t.service_id), "slot": t.slot,
                                           "host": host_of.get(t.node_id), "node": t.node_id[:12], "state": t.state,
                                           "desired": t.desired, "error": t.error})
                got = {sv.name: sv for sv in services}
                for name, r in want.items():
                    sv = got.get(name)
                    if name.endswith("_worker") and sv is not None and sv.wanted == 0:
                        worker_scaled_to_zero = True
                        checks.append(CheckResult(f"swarm-service-{name}", True, f"{name} scaled to 0 on purpose "
                                                  "(stop-verda): start-all scales it back", host=app.name,
                                                  warning=True))
                        continue
                    ok = sv is not None and sv.running == sv.wanted == r
                    detail = (f"{name} {sv.running}/{sv.wanted} running" if sv else f"{name} is not deployed")
                    if sv is not None and not ok:
                        detail = "; ".join(task_lines(inv, [sv], tasks, host_of)) or detail
                    placed = sorted({str(host_of.get(t.node_id)) for t in tasks if sv is not None and
                                     t.service_id == sv.id and t.desired == "running" and t.state == "running"})
                    checks.append(CheckResult(f"swarm-service-{name}", ok, detail + (f" on {', '.join(placed)}" if
                                                                                       placed else ""), host=app.name))
                worker_sv = got.get(f"{inv.project}_worker")
                if worker_sv is not None:
                    on = [str(host_of.get(t.node_id)) for t in tasks if t.service_id == worker_sv.id
                          and t.desired == "running" and t.state == "running"]
                    ready = [str(n.host) for n in nodes if n.labels.get(sf.ROLE_LABEL) == "worker"
                             and n.state == "ready" and n.availability == "active"]
                    note = spread_note(worker_sv.name, on, ready)
                    if note:
                        checks.append(CheckResult("swarm-spread", True, note, host=app.name, warning=True))
                swarm["moved"] = moved_tasks(tasks, host_of, down)
                for line in swarm["moved"]:
                    checks.append(CheckResult("swarm-rescheduled", True, line, host=app.name, warning=True))
        for h in inv.worker_hosts:
            if h.name in s.remotes and app.name in s.remotes:
                checks.append(redis_ping(s[h.name], app.tailscale_ip, inv.ports.redis,
                                         inv.secrets["REDIS_PASSWORD"].reveal(), inv.timeouts.redis,
                                         name=f"redis-from-{h.name}", app_host=app.name))
        queue: dict[str, Any] = {}
        if app.name in s.remotes:
            queue, found = queue_checks(s[app.name], app.tailscale_ip, inv.ports.redis,
                                        inv.secrets["REDIS_PASSWORD"].reveal(), inv.timeouts.redis,
                                        [] if worker_scaled_to_zero else
                                        [f"worker-{i}" for i in range(1, len(inv.worker_hosts) + 1)],
                                        inv.worker.heartbeat_timeout)
            checks += found
            if probe and not worker_scaled_to_zero:
                checks.append(_job_probe(inv, s))
    ok = all(c.ok for c in checks)
    unreachable = any(not h["reachable"] for h in hosts.values())
    code = (ExitCode.OK if ok and not worker_scaled_to_zero else
            ExitCode.STOPPED if ok else ExitCode.UNREACHABLE if unreachable else ExitCode.UNHEALTHY)
    data = {"schema_version": 1, "ok": ok and not worker_scaled_to_zero, "mode": inv.mode, "engine": "swarm",
            "inventory": inv.path, "revision": local_revision(), "config_hash": plan.config_hash, "hosts": hosts,
            "queue": queue, "swarm": swarm}
    return data, checks, code
