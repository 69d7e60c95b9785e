"""`invoke status`: every host, service, cross-host link, queue and GPU at one glance. All hosts
are read in parallel (one SSH connection and one state read each), then the cross-host
checks run from each worker's vantage point. Every failure is reported in one pass."""
from __future__ import annotations

import dataclasses
import json
from typing import Any
from urllib.parse import urlsplit

from ..checks import autostop as autostopcheck
from ..checks import images, jobprobe, qmhealth
from ..checks.links import prefetch_redis, redis_ping
from ..checks.probe import run_probe
from ..checks.queue import queue_checks
from ..checks.result import CheckResult
from ..checks.worker import device_check
from ..errors import ExitCode, FabError
from ..invocation import command
from ..host import state as hoststate
from ..host.agents.autostop import span
from ..host.facts import autostop as autostopfacts
from ..host.facts import images as imgfacts
from ..host.facts import stopped
from ..host.facts.stopped import StoppedRecord
from ..host.facts.docker import by_service, describe, published_port, service_ok
from ..host.session import Background, Session, each
from ..inventory import fingerprint
from ..inventory.model import GPU_MODES, Inventory
from ..plan.diff import env_section, secret_changes, secret_sentence
from ..plan.planner import HostPlan, Plan, make_plan, service_hash_var
from .audit import local_revision
from .bill import deleted_sentence, read_bill
from .health import last_logs


@dataclasses.dataclass
class StatusReport:
    data: dict[str, Any]
    checks: list[CheckResult]
    code: ExitCode

    def to_json(self) -> str:
        return json.dumps({**self.data, "checks": [c.as_json() for c in self.checks]}, indent=2)


# The shape of `status --json` (docs/status.schema.json); bump on any incompatible change.
SCHEMA_VERSION = 1

# What status shows of the preflight (not the runtimes, tailscale, ...: start-all's business).
STATUS_PREFLIGHT = ("engine", "compose", "nvidia")


def status(inv: Inventory, probe: bool = True, say=None, fetch: bool = False) -> StatusReport:
    """Read every host and run every check; the report's code is 0 only when all is healthy,
    3 when a host is unreachable, else 4. `say(step)` is told what it is waiting for."""
    say = say or (lambda _msg: None)
    say(f"connecting to {len(inv.hosts)} host(s) and reading their state")
    checks: list[CheckResult] = []
    hosts_out: dict[str, Any] = {}
    # What is rented (records and the provider's API: price, hours, cost, balance), beside the SSH reads.
    billing = Background(read_bill, inv, name="cfab-bill") if inv.provider_hosts else None
    with Session(inv, inv.hosts) as s:
        # Connect to every host and read its state while this thread plans (the plan's scrypt
        # fingerprints and `git`); redis-py is imported for the checks meanwhile.
        connecting = Background(s.connect, name="cfab-connect")
        reading = Background(_read_when_connected, connecting, inv, s, fetch, name="cfab-read")
        Background(prefetch_redis, name="cfab-import-redis")
        plan = make_plan(inv)
        revision = local_revision()
        # The checks that need no state (the queue manager, ComfyUI, the probe from each worker; the
        # queue) start as soon as the hosts are connected, beside the state reads; their results are
        # dropped for a host whose read failed or whose worker is stopped on purpose.
        connecting.result()
        early_jobs: list[tuple[str, Any]] = [(hp.name, hp) for hp in plan.hosts
                                             if hp.worker_services and hp.name in s.remotes]
        if plan.app.name in s.remotes and "redis" in plan.app.services:
            early_jobs.append((QUEUE_JOB, None))
        if plan.app.name in s.remotes and inv.mode == "serverless":
            early_jobs.append((SERVERLESS_JOB, None))

        def early(item: tuple[str, Any]):
            key, hp = item
            if key == SERVERLESS_JOB:  # the endpoint, proved from the app host (ops/serverless.py)
                from .serverless import status_checks
                return status_checks(inv, s[plan.app.name], probe)
            return _queue(inv, plan, s) if hp is None else _worker_early(inv, s, hp, probe)
        checking = Background(lambda: each(early, early_jobs, key=lambda item: item[0]).raise_first(),
                              name="cfab-checks")
        read = reading.result()
        bill, bill_checks, gone = billing.result() if billing is not None else (None, [], {})
        for host in inv.provider_hosts:  # rented, but no instance now: deleted on purpose, or never rented
            if host.name in s.errors and (host.name in gone or not host.address):
                _not_rented(host.name, gone.get(host.name), hosts_out, checks, host.roles)
        for name, err in s.errors.items():
            if name not in hosts_out:
                _unreachable(name, err.sentence(), hosts_out, checks, inv.host(name).roles)
        for name, exc in read.failed.items():
            if not isinstance(exc, FabError):
                raise exc
            _unreachable(name, str(exc), hosts_out, checks, inv.host(name).roles)
        states = {hp.name: read[hp.name] for hp in plan.hosts if hp.name in read}
        held = {hp.name: rec for hp in plan.hosts if hp.name in states
                for rec in [_on_purpose(hp, states[hp.name])] if rec is not None}
        away = {**held, **{name: None for name, block in hosts_out.items() if block.get("deleted_on_purpose")}}
        # Each host's hashes made with its salt: what its deploy record is compared with (a host
        # without one was never deployed by this version: its record cannot match).
        salted = plan.with_salts({n: st.salt for n, st in states.items()})
        # The job probe (a user's path through the queue manager) from the app host, beside the rest.
        job_path = (Background(_job_path, inv, plan, s, away, probe, name="cfab-job-probe")
                    if jobprobe.planned(inv.mode, plan) and plan.app.name in states else None)
        secret_diffs = secret_changes(salted, states)  # a local secret that differs from the deployed one
        for hp in salted.hosts:
            if hp.name in states:
                hosts_out[hp.name] = _host_block(inv, hp, states[hp.name], s.connect_s[hp.name], revision,
                                                 plan.config_hash, checks, held.get(hp.name),
                                                 [c for c in secret_diffs if c.host == hp.name])
                _failing_logs(s[hp.name], hp, hosts_out[hp.name], checks)
        # Redis from each worker needs the password its .env holds (read with its state).
        say("checking Redis, the queue manager and the queue" + (" and probing inference" if probe else ""))
        workers = [hp for hp in plan.hosts if hp.worker_services and hp.name in states and hp.name not in held]
        redis = each(lambda hp: _redis_from(inv, plan, s, hp, states[hp.name]), workers).raise_first()
        found = checking.result()
        for hp in workers:  # reported in this order, per worker
            qm, *device_and_probe = found[hp.name]
            checks.extend([redis[hp.name], qm, *_gpu_lines(inv, hp, states[hp.name]), *device_and_probe])
        queue, queue_found = found.pop(QUEUE_JOB) if plan.app.name in states and QUEUE_JOB in found else ({}, [])
        stopped_ids = {hp.host.worker_id for hp in plan.hosts if hp.name in away}
        for c in queue_found:  # a worker stopped on purpose sends no heartbeat: expected, not a fault
            if not c.ok and c.name.removeprefix("heartbeat-") in stopped_ids:
                c.data["stopped_on_purpose"] = True
        name_refused_password(queue_found, secret_diffs)
        path_checks = job_path.result() if job_path is not None else []
        checks.extend(path_checks)
        checks.extend(queue_found)
        serverless, serverless_found = (found.pop(SERVERLESS_JOB) if plan.app.name in states
                                        and SERVERLESS_JOB in found else (None, []))
        checks.extend(serverless_found)
        checks.extend(bill_checks)
        _autostop(inv, read.get(plan.app.name), hosts_out, checks)
        _settle(checks, plan)
    unreachable = any(not h.get("reachable") and not h.get("deleted_on_purpose") for h in hosts_out.values())
    failing = [c for c in checks if not c.ok]
    ok = not unreachable and not failing
    stopped_only = bool(failing) and all(c.data.get("stopped_on_purpose") for c in failing)
    code = ExitCode.OK if ok else (ExitCode.UNREACHABLE if unreachable else
                                   ExitCode.STOPPED if stopped_only else ExitCode.UNHEALTHY)
    data = {"schema_version": SCHEMA_VERSION, "ok": ok,
            "verdict": qmhealth.verdict(ok, unreachable, stopped_only, checks),
            "mode": inv.mode, "inventory": inv.path, "revision": revision,
            "config_hash": plan.config_hash,
            "hosts": {h.name: hosts_out[h.name] for h in inv.hosts if h.name in hosts_out}, "queue": queue}
    if inv.mode == "serverless":
        data["serverless"] = serverless
    if bill is not None:
        data["bill"] = bill
    return StatusReport(data, checks, code)


QUEUE_JOB = " queue"  # a key no host name can be (names cannot start with a space)
SERVERLESS_JOB = " serverless"


def _unreachable(name: str, error: str, hosts_out: dict, checks: list, roles=()) -> None:
    checks.append(CheckResult(f"reachable-{name}", False, error, host=name))
    # The same keys as a reachable host's block (docs/status.schema.json), unknown ones null.
    hosts_out[name] = {"reachable": False, "error": error, "ssh_ms": None, "roles": list(roles), "engine": None,
                       "compose": None, "services": [], "deployed": None, "gpu": None, "stopped_on_purpose": None,
                       "autostop": None}


def _autostop(inv: Inventory, app_state, hosts_out: dict, checks: list) -> None:
    """Each rented worker host's autostop, as its program on the app host last wrote it (the host
    block's `autostop` and an `autostop-HOST` check); null where there is none or the app host could
    not be read."""
    code, out = (app_state.extra.get("autostop", (1, "")) if app_state is not None else (1, ""))
    states = autostopfacts.parse_states(out) if code == 0 else {}
    for name, block in hosts_out.items():
        block["autostop"] = None
        host = inv.host(name)
        if app_state is None or (getattr(host, "autostop", None) is None and name not in states):
            continue
        block["autostop"] = autostopcheck.view(states.get(name))
        checks.append(autostopcheck.check(name, block["autostop"]))
        _deleted_by_autostop(name, block, states.get(name), inv.app_host.name, checks)


def _deleted_by_autostop(name: str, block: dict, state: dict | None, app: str, checks: list) -> None:
    """A rented host found gone at the provider, which its autostop deleted: say so (by whom, when,
    why) instead of "the provider (autostop or the console)"."""
    gone = block.get("deleted_on_purpose")
    if not gone or not state or state.get("state") != "deleted" or state.get("instance_id") != gone.get("instance_id"):
        return
    if gone.get("by") and not str(gone["by"]).startswith("the provider"):
        return  # recorded by this tool (stop-verda --delete): that record says it
    why = (f"max lifetime {span(state.get('max_lifetime_s'))}" if state.get("fires_for") == "max_lifetime"
           else f"idle {span(state.get('idle_s'))}")
    gone.update(at=state.get("deleted_at"), by=f"autostop@{app}", how=f"autostop after {why}")
    rec = {"deleted_how": gone["how"], "deleted_by": gone["by"], "deleted_at": gone["at"],
           "hostname": gone.get("hostname"), "volumes": gone.get("volumes")}
    for c in checks:
        if c.name == f"deleted-{name}":
            c.detail = deleted_sentence(name, rec)


def _not_rented(name: str, rec: dict | None, hosts_out: dict, checks: list, roles=()) -> None:
    """A rented host with no instance now: deleted on purpose (when, by whom, how), or never
    rented yet. Not unreachable: exit 6 like a worker stopped on purpose, when nothing else is wrong."""
    if rec and rec.get("deleted_by"):
        detail = deleted_sentence(name, rec)
        gone = {"at": rec.get("deleted_at"), "by": rec.get("deleted_by"), "how": rec.get("deleted_how"),
                "instance_id": rec.get("id"), "hostname": rec.get("hostname"), "volumes": rec.get("volumes") or []}
    else:
        detail = "not rented: no instance is recorded for it (start-all rents one, at the price it shows first)"
        gone = {"at": None, "by": None, "how": "not rented yet", "instance_id": None, "hostname": None, "volumes": []}
    checks.append(CheckResult(f"deleted-{name}", False, detail, host=name,
                              data={"stopped_on_purpose": True, "deleted_on_purpose": True}))
    hosts_out[name] = {"reachable": False, "error": None, "ssh_ms": None, "roles": list(roles), "engine": None,
                       "compose": None, "services": [], "deployed": None, "gpu": None, "stopped_on_purpose": None,
                       "deleted_on_purpose": gone, "autostop": None}


def _on_purpose(hp: HostPlan, st) -> StoppedRecord | None:
    """The host's stop record, when its worker is indeed not running (else a stale record: ignored)."""
    if not hp.worker_services or "stopped" not in st.extra:
        return None
    code, text = st.extra["stopped"]
    record = stopped.parse_record(text) if code == 0 else None
    running = any(c.service in hp.worker_services and c.state == "running" for c in st.containers)
    return None if running else record


def name_refused_password(queue_found: list[CheckResult], secret_diffs) -> None:
    """When Redis refuses the local password and the running Redis was started with another one,
    the queue check says that, in one sentence (which secret, from where), instead of Redis's words."""
    redis_pw = next((c for c in secret_diffs if c.name == "REDIS_PASSWORD" and "redis" in c.services), None)
    for c in queue_found:
        if c.name == "queue" and not c.ok and redis_pw is not None and _auth_refused(c.detail):
            c.detail = (f"Redis on {redis_pw.host} refuses the local REDIS_PASSWORD (from {redis_pw.source}): "
                        "it differs from the one Redis runs with; if the local value is a typo, fix it there "
                        "(start-all would deploy it and recreate Redis)")


def _auth_refused(detail: str) -> bool:
    """Whether a Redis error says the password was refused (redis-py's AuthenticationError, WRONGPASS)."""
    low = detail.lower()
    return "invalid username-password pair" in low or "wrongpass" in low or "invalid password" in low


def _host_block(inv, hp: HostPlan, st, connect_s: float, revision: str, config_hash: str, checks,
                held: StoppedRecord | None = None, secrets=()) -> dict:
    current = by_service(st.containers)
    services = []
    bad = []
    held_down = []
    for svc in hp.services:
        c = current.get(svc)
        ok = service_ok(c)
        if not ok and held and svc in hp.worker_services:  # stopped on purpose: its own check below
            held_down.append(f"{svc} {describe(c)}" + (f" (exit {c.exit_code})" if c and c.state == "exited" else ""))
        elif not ok:
            bad.append(f"{svc} {describe(c)}")
        services.append({"service": svc, "state": c.state if c else "missing", "health": (c.health or "none") if c else "none",
                         "restarts": c.restart_count if c else 0, "ok": ok, "container": c.id[:12] if c else None,
                         "crash_loop": bool(c and c.crash_looping), "image": c.image if c else None,
                         "started_at": _started(c),
                         "commit": images.image_commit(c.image) if c else None})
    checks.append(CheckResult(f"reachable-{hp.name}", True, f"SSH connect {connect_s * 1000:.0f} ms, "
                              f"state read {st.rtt_s * 1000:.0f} ms", connect_s, hp.name,
                              data={"rtt_ms": round(st.rtt_s * 1000, 1)}))
    if not st.engine:
        checks.append(CheckResult(f"engine-{hp.name}", False, f"the Docker engine is not answering "
                                  f"({st.engine_error})", host=hp.name))
    loops = [f"{svc} ({c.restart_count} restarts)" for svc, c in current.items()
             if svc in hp.services and c.crash_looping]
    detail = "all running and healthy" if not bad and not held_down else "; ".join(bad)
    if held_down:
        detail += ("; " if bad else "") + f"stopped on purpose: {', '.join(held_down)}"
    if loops:
        detail += f"; CRASH LOOP: {', '.join(loops)}"
    running_ok = len(hp.services) - len(bad) - len(held_down)
    checks.append(CheckResult(f"services-{hp.name}", not bad, f"{running_ok}/{len(hp.services)} "
                              f"services {'ok' if not held_down else 'running'}: {detail}", host=hp.name))
    gone = images.gone_images(st, hp.services)  # running, but its image is no longer on the host
    if gone:
        what = ", ".join(f"{svc} runs {img}" for svc, img in gone.items())
        checks.append(CheckResult(f"images-{hp.name}", True, f"{what}, which is no longer on {hp.name}: it keeps "
                                  "running, but start-all stops (exit 7) before (re)creating it there (copy it "
                                  f"back with `{command('copy-image')} --source HOST --target {hp.name}` from a "
                                  "host that has it, or give it a source)", host=hp.name, warning=True,
                                  data={"gone": gone}))
    dep = st.deployed or {}
    in_sync = dep.get("config_hash") == config_hash and dep.get("host_hash") == hp.host_hash
    if secrets:  # which secret, and from where: never "run start-all to apply" a possible typo
        differs = "; ".join(secret_sentence(c) for c in secrets)
        config_detail = (f"deployed config {dep.get('config_hash', 'none')} differs from the local {config_hash}: "
                         f"{differs}")
    else:
        config_detail = (f"deployed config {dep.get('config_hash', 'none')} (rev {dep.get('revision', '?')}) "
                         f"differs from the local {config_hash} (rev {revision}): run start-all to apply")
    checks.append(CheckResult(f"config-{hp.name}", True,
                              "deployed config matches the local one" if in_sync else config_detail,
                              host=hp.name, warning=not in_sync))
    # each container's label against its own fingerprint in the uploaded .env
    drifted = [c.service for c in st.containers if c.service in hp.services and c.state == "running"
               and st.service_hashes.get(service_hash_var(c.service)) and c.env_hash
               and c.env_hash != st.service_hashes[service_hash_var(c.service)]]
    if drifted:
        checks.append(CheckResult(f"env-drift-{hp.name}", False, f"{', '.join(drifted)} run with settings that differ "
                                  "from the uploaded .env (a `docker restart` does not re-read it): run start-all, "
                                  "which recreates them with `docker compose up -d`", host=hp.name))
    if held is not None:
        since = held.seconds_since()
        checks.append(CheckResult(f"stopped-{hp.name}", False, f"stopped on purpose ({held.task} by {held.by} at "
                                  f"{held.at}); the instance is still running (on a cloud GPU, still billing), the "
                                  f"worker stopped for {stopped.for_how_long(since)}: start-all starts it again",
                                  host=hp.name, data={"stopped_on_purpose": True}))
    gpu = {"present": st.has_gpu, "gpus": [dataclasses.asdict(g) for g in st.gpus or ()], "error": st.gpu_error}
    block = {"reachable": True, "error": None, "ssh_ms": round(connect_s * 1000, 1), "roles": list(hp.roles),
             "engine": st.engine, "compose": st.compose.version if st.compose else None, "services": services,
             "deployed": {"revision": dep.get("revision"), "config_hash": dep.get("config_hash"),
                          "at": dep.get("at"), "by": dep.get("by"), "in_sync": in_sync},
             "gpu": gpu}
    block["stopped_on_purpose"] = None if held is None else {
        "task": held.task, "by": held.by, "at": held.at, "stopped_for_s": held.seconds_since(),
        "instance_running": True}
    imgs = images.status_block(inv, hp.host, st)  # images: branch, head, deployed commit
    if imgs:
        block["images"] = imgs
        if imgs["undeployed"]:
            checks.append(CheckResult(f"commits-{hp.name}", True, f"branch {imgs['branch']} is at "
                                      f"{imgs['head'][:12]} but {imgs['deployed_commit'][:12]} is deployed: run "
                                      "start-all to deploy it", host=hp.name, warning=True))
    if "redis_port" in st.extra and "redis" in hp.services:
        code, out = st.extra["redis_port"]
        bound = out.strip().splitlines()[0] if code == 0 and out.strip() else None
        block["redis_published"] = bound
        remote_workers = any(h.name != hp.name for h in inv.worker_hosts)
        if bound and bound.startswith("127.") and remote_workers:
            checks.append(CheckResult(f"redis-bind-{hp.name}", False, f"Redis is published on {bound} (loopback) "
                                      "but a worker runs on another host: set REDIS_BIND_IP to the tailnet address "
                                      "(start-all does this for dual-server)", host=hp.name))
    return block


def _started(c) -> str | None:
    """When the container last started (RFC 3339), None when it never did."""
    return c.started_at if c and c.started_at and not c.started_at.startswith("0001-") else None


def _failing_logs(remote, hp: HostPlan, block: dict, checks) -> None:
    """The last log lines of every service whose container exited, restarts or is unhealthy, in
    its services check and as `last_logs` in --json (the only way to see WHY from here)."""
    failing = [sv for sv in block["services"] if sv["container"] and not sv["ok"] and
               (sv["restarts"] or sv["state"] in ("exited", "restarting", "dead") or sv["health"] == "unhealthy")]
    notes = []
    for sv in failing:
        try:
            sv["last_logs"] = last_logs(remote, hp.compose, sv["service"], lines=5)
        except FabError:
            continue
        notes.append(f"{sv['service']} last log lines: {sv['last_logs']}")
    check = next((c for c in checks if c.name == f"services-{hp.name}"), None)
    if notes and check is not None:
        check.detail += "; " + "; ".join(notes)


def _read_when_connected(connecting: Background, inv: Inventory, s: Session, fetch: bool = False):
    """Once every host is connected (or not), read every reachable one's state, keyed by host
    (the failed reads apart). Needs no plan (it runs while the plan is made)."""
    connecting.result()
    hosts = [h for h in inv.hosts if h.name in s.remotes]

    def read(host) -> hoststate.HostState:
        # Every app host gets the Redis port section; _host_block looks at it where the plan runs Redis.
        extra = [("redis_port", published_port(inv.project, "redis", 6379))] if host.is_app else []
        if host.is_app:  # the state files of autostop (a rented worker's idle timer, on the app host)
            extra.append(("autostop", autostopfacts.state_command(host.workdir)))
        if host.is_worker:
            extra.append(("stopped", stopped.read_command(host.workdir)))
        extra += images.status_parts(inv, host, fetch)  # images: the branch's head (fetched with --fetch)
        extra.append(("images", imgfacts.LIST_COMMAND))  # a running service whose image is gone
        extra.append(env_section(host.workdir))  # in memory only: which secret differs from the deployed one
        st = hoststate.read(s[host.name], inv.project, host.workdir, with_env_password=host.is_worker,
                            extra=extra, preflight=STATUS_PREFLIGHT)
        fingerprint.warm(inv.secrets, st.salt)  # for the deployed-config comparison
        return st
    return each(read, hosts)


def _worker_early(inv: Inventory, s: Session, hp: HostPlan, probe: bool) -> list[CheckResult]:
    """The queue manager, the device and the inference probe, from the worker's vantage point, all
    at once (independent channels on the one connection); in this order."""
    remote = s[hp.name]
    url = hp.env.get("QUEUE_MANAGER_URL", "")
    parts = urlsplit(str(url))

    def queue_manager() -> CheckResult:
        name = f"queue-manager-from-{hp.name}"
        if parts.hostname and parts.hostname[0].isdigit():
            return qmhealth.health_check(remote, parts.hostname, parts.port or 80, name, inv.timeouts.redis,
                                         f"QUEUE_MANAGER_URL {url} from {hp.name}")
        what = f"QUEUE_MANAGER_URL {url} from inside the worker container"
        res = remote.run(hp.compose.run("exec", "-T", "worker", *qmhealth.curl_health_command(url)),
                         step="queue manager check")
        code, body = qmhealth.split_curl(res.stdout) if res.ok else (0, b"")
        if not code:
            return CheckResult(name, False, f"{what}: {res.tail(160)}", res.duration, hp.name)
        return qmhealth.health_result(name, hp.name, what, code, body, res.duration)
    def device() -> CheckResult:
        check = device_check(remote, inv.ports.worker_comfyui, inv.timeouts.redis, inv.mode)
        if not probe:  # the inference probe's busy evidence is missing: read what ComfyUI runs now
            check.data["running_prompt"] = qmhealth.running_prompt(remote, inv.ports.worker_comfyui,
                                                                   inv.timeouts.redis)
        return check
    jobs = [queue_manager, device]
    if probe:
        jobs.append(lambda: run_probe(remote, inv.ports.worker_comfyui, inv.timeouts.probe, inv.probe.workflow_graph,
                                      name=f"inference-{hp.name}", busy_after=inv.timeouts.busy))
    return list(each(lambda job: job[1](), list(enumerate(jobs)), key=lambda job: job[0]).raise_first().values())


def _job_path(inv: Inventory, plan: Plan, s: Session, held: dict, probe: bool) -> list[CheckResult]:
    """The queue manager's health as the app host sees it, then the job probe (unless --no-probe)."""
    app = plan.app
    remote = s[app.name]
    host = str(app.env.get("QUEUE_MANAGER_BIND_IP", "127.0.0.1")).strip("[]")
    port = inv.ports.queue_manager
    out = [qmhealth.health_check(remote, host, port, f"queue-manager-{app.name}", inv.timeouts.redis,
                                 f"the queue manager at {host}:{port} on {app.name}")]
    if not probe:
        return out
    workers = [hp for hp in plan.workers]
    if workers and all(hp.name in held for hp in workers):
        out.append(jobprobe.skipped(app.name, "every worker is stopped on purpose, so users' jobs wait in the queue "
                                              "(start-all starts them again)"))
        return out
    redis_host = str(app.env.get("REDIS_BIND_IP", "127.0.0.1")).strip("[]")
    cleanup = jobprobe.redis_cleanup(remote, redis_host, inv.ports.redis, inv.secrets["REDIS_PASSWORD"].reveal(),
                                     inv.timeouts.redis)
    out.append(jobprobe.job_probe(remote, host, port, inv.timeouts.probe, inv.probe.workflow_graph, cleanup))
    return out


def _settle(checks: list[CheckResult], plan: Plan) -> None:
    """Judge the checks together: a heartbeat the queue manager could not record or a busy worker's
    aged heartbeat is not the worker's fault; Redis from an HTTP-only worker degrades while jobs complete."""
    ids = {hp.name: hp.host.worker_id for hp in plan.workers}
    busy: dict[str, str] = {}
    for c in checks:
        info = c.data.get("busy") if c.name.startswith("inference-") else None
        running = (info.get("running") if isinstance(info, dict) else None) or c.data.get("running_prompt")
        wid = ids.get(c.host or "")
        if running and wid:
            busy[wid] = f"its ComfyUI runs prompt {str(running)[:8]}"
    job = next((c for c in checks if c.name == jobprobe.NAME), None)
    jobprobe.settle_with_workers(job, _progressing(checks))
    if job is not None and job.data.get("stage") == "queued-progress":
        for wid in ids.values():
            busy.setdefault(wid, "the job probe saw the queue make progress")
    qmhealth.settle_heartbeats(checks, busy, qmhealth.lost_redis(checks))
    qmhealth.degrade_unused_links(checks, job is not None and job.ok and job.data.get("stage") != "skipped")


def _progressing(checks: list[CheckResult]) -> list[str]:
    """Each worker whose inference probe found its ComfyUI busy with users' prompts and progressing."""
    return [f"{c.host}'s ComfyUI is busy and making progress ({c.data['busy'].get('running_for_s') or 0:.0f} s "
            "into a user's prompt)" for c in checks if c.name.startswith("inference-") and c.ok
            and isinstance(c.data.get("busy"), dict) and c.data["busy"].get("progressing")]


def _redis_from(inv: Inventory, plan: Plan, s: Session, hp: HostPlan, st) -> CheckResult:
    """Redis from the worker's vantage point, with the password its deployed .env holds."""
    host, port = plan.redis_address(hp)
    password = st.env_redis_password or inv.secrets["REDIS_PASSWORD"]
    return redis_ping(s[hp.name], host, port, password.reveal(), inv.timeouts.redis,
                      name=f"redis-from-{hp.name}", app_host=plan.app.name)


def _gpu_lines(inv: Inventory, hp: HostPlan, st) -> list[CheckResult]:
    if st.has_gpu:
        g = st.gpus[0]
        return [CheckResult(f"gpu-{hp.name}", True, f"{g.name}, {g.memory_used_mib}/{g.memory_total_mib} MiB, "
                            f"{g.utilization_pct}% busy", host=hp.name)]
    if hp.host.gpu != "none" and inv.mode in GPU_MODES:
        return [CheckResult(f"gpu-{hp.name}", hp.host.gpu != "required",
                            f"no GPU found ({st.gpu_error or 'no nvidia-smi'}); the worker runs on CPU",
                            host=hp.name, warning=True)]
    return []


def _queue(inv: Inventory, plan: Plan, s: Session) -> tuple[dict, list[CheckResult]]:
    host = str(plan.app.env.get("REDIS_BIND_IP", "127.0.0.1"))
    return queue_checks(s[plan.app.name], host, inv.ports.redis, inv.secrets["REDIS_PASSWORD"].reveal(),
                        inv.timeouts.redis, [hp.host.worker_id for hp in plan.hosts if hp.worker_services],
                        inv.worker.heartbeat_timeout)
