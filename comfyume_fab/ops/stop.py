"""`stop-verda` (the GPU workers only: they cost money by the hour) and `stop-all`
(workers first, then the app host). Never asks a question; never deletes volumes."""
from __future__ import annotations

import time
from typing import Callable

from ..checks.links import read_queue
from ..errors import ConfigError, UnhealthyError, UnreachableError
from ..host import commands as cmd
from ..host.actions import compose as composeact
from ..host.actions import stopped as stopact
from ..host.actions import workdir as wdact
from ..host import state as hoststate
from ..host.facts import ParseError, ended, stopped
from ..host.session import Session, gather
from ..inventory.model import Inventory
from ..plan import compose as cg
from ..plan.planner import HostPlan, make_plan
from .audit import audit_line, local_revision, now_iso, who
from . import provision
from .lock import DeployLock


def _workers(plan, only: str | None) -> list[HostPlan]:
    workers = [hp for hp in plan.hosts if hp.worker_services]
    if only:
        chosen = [hp for hp in workers if hp.name == only]
        if not chosen:
            names = ", ".join(hp.name for hp in workers) or "none"
            raise ConfigError(f"--host {only}: not a worker host in {plan.inventory.path} (worker hosts: {names})")
        return chosen
    return workers


def stop_workers(inv: Inventory, say: Callable[[str], None], only: str | None = None, down: bool = False,
                 when_idle: bool = False, idle_timeout: float = 600, wait_lock: float = 0.0, force: bool = False,
                 warn: Callable[[str], None] | None = None, delete: bool = False) -> dict:
    """`invoke stop-verda`; with `delete`, each stopped worker's rented instance is then deleted
    (data volumes kept), its generated host key and recorded address removed, and who deleted it
    and when recorded (status: "deleted on purpose"). Only rented hosts (`provider:`) can be."""
    if delete:
        plan = make_plan(inv)
        chosen = _workers(plan, only)
        plain = [hp.name for hp in chosen if hp.host.provider is None]
        if plain:
            raise ConfigError(f"--delete: {', '.join(plain)} is not rented by this tool (no provider section in "
                              f"{inv.path}); --delete only deletes instances start-all rented (use --host NAME)")
        # a worker whose instance is gone already (no address) has nothing to stop: delete only
        reachable = [hp for hp in chosen if hp.host.address]
        out: dict = {"stopped": [], "unchecked": []}
        for names in ([only] if len(reachable) == len(chosen) else [hp.name for hp in reachable]):
            try:
                got = _stop_workers(inv, say, names, down, when_idle, idle_timeout, wait_lock, force, warn)
            except UnreachableError as exc:
                if not force or exc.host not in {hp.name for hp in chosen}:
                    if exc.host in {hp.name for hp in chosen}:
                        exc.hint = ((exc.hint + "; ") if exc.hint else "") + \
                            "--force deletes the instance without stopping the worker first"
                    raise
                (warn or say)(f"{exc.host} is unreachable ({exc.cause}): --force, deleting its instance without "
                              "stopping the worker first")
                got = {"stopped": [], "unchecked": [f"the clean stop of the worker on {exc.host}"]}
            out["stopped"] += got["stopped"]
            out["unchecked"] += [u for u in got["unchecked"] if u not in out["unchecked"]]
            out.setdefault("ended", {}).update(got.get("ended") or {})
        out["deleted"] = {}
        for hp in chosen:
            _remove_autostop(inv, hp.host, say)
            out["deleted"][hp.name] = provision.delete_rented(inv, hp.host, say)
        return out
    return _stop_workers(inv, say, only, down, when_idle, idle_timeout, wait_lock, force, warn)


def _remove_autostop(inv: Inventory, host, say) -> None:
    """Remove the host's autostop from the app host before its instance is deleted (also one an
    earlier inventory with `autostop:` installed; ops/autostop.py)."""
    from . import autostop
    app = inv.app_host
    with Session(inv, [app]) as s:
        s.connect()
        if app.name in s.errors:
            say(f"{app.name} is unreachable: the autostop of {host.name} could not be removed there (it finds the "
                "instance deleted and does nothing)")
            return
        autostop.remove(inv, s, host.name, say)


def _stop_workers(inv: Inventory, say: Callable[[str], None], only: str | None = None, down: bool = False,
                  when_idle: bool = False, idle_timeout: float = 600, wait_lock: float = 0.0, force: bool = False,
                  warn: Callable[[str], None] | None = None) -> dict:
    """`invoke stop-verda`: stop (or remove) the worker(s) -- the GPU bill -- whatever state the app
    host is in. With the app host reachable: under the deploy lock, optionally once the queue is
    idle (`when_idle`; `force` skips the wait), confirming the app host's containers kept their ids.
    With it unreachable: the workers are stopped anyway and `warn` says what could not be checked
    (`when_idle` without `force` refuses: it needs the queue). Each stopped worker host records who
    stopped it and when (status shows it; start-all clears it)."""
    warn = warn or say
    plan = make_plan(inv)
    workers = _workers(plan, only)
    if not workers:
        say(f"mode {inv.mode} runs no worker: nothing to stop")
        return {"stopped": [], "unchecked": []}
    app = plan.app
    hosts = [app.host] + [hp.host for hp in workers if hp.name != app.name]
    revision = local_revision()
    unchecked: list[str] = []
    with Session(inv, hosts) as s:
        s.connect()
        for hp in workers:  # a worker that cannot be reached cannot be stopped: that is the failure
            if hp.name in s.errors:
                raise s.errors[hp.name]
        app_err = s.errors.get(app.name)
        if app_err is not None:
            if when_idle and not force:
                raise UnreachableError(f"--when-idle needs the job queue on {app.name}, which is unreachable "
                                       f"({app_err.cause}); nothing was stopped", host=app.name, step="wait idle",
                                       hint="rerun with --force to stop the worker(s) now without waiting")
            unchecked = ["the queue drain (a job running on the worker is cut off and may need resubmitting)",
                         f"the deploy lock and the app host's state ({app.name})"]
            warn(f"{app.name} is unreachable ({app_err.cause}): stopping the worker(s) anyway; not checked: "
                 + "; ".join(unchecked))
            how = _stop_all_workers(inv, s, plan, workers, down, say, revision, warn=warn)
            return {"stopped": [hp.name for hp in workers], "unchecked": unchecked, "ended": how}
        before = _app_snapshot(s, inv, app)
        with DeployLock(s[app.name], app.host.workdir, "stop-verda", revision, wait=wait_lock, say=say,
                          stale_after=inv.timeouts.lock_wait):
            if when_idle and force:
                say("--force: not waiting for the queue to drain")
            elif when_idle:
                _wait_idle(inv, plan, s, say, idle_timeout)
            how = _stop_all_workers(inv, s, plan, workers, down, say, revision, warn=warn)
            after = _app_snapshot(s, inv, app)
            if before != after:
                raise UnhealthyError(f"app-host containers changed during stop-verda: before {before}, after {after}",
                                     host=app.name, step="confirm app host untouched")
    say(f"{app.name}: untouched ({len(before)} app container(s) still running with the same ids)")
    return {"stopped": [hp.name for hp in workers], "unchecked": unchecked, "ended": how}


def _stop_all_workers(inv: Inventory, s: Session, plan, workers, down: bool, say, revision: str,
                      task: str = "stop-verda", warn=None) -> dict[str, list[dict]]:
    """Stop every worker in parallel, record the deliberate stop on each, and append the audit line."""
    found = gather(lambda hp: _stop_worker(inv, s, hp, down, say, task, warn), workers)
    for hp in workers:
        s[hp.name].run(wdact.audit(hp.host.workdir, audit_line(
            task, revision, plan.config_hash, plan.mode, "down" if down else "stopped")), step="audit")
    return {name: found[name] for name in found}


def _app_snapshot(s: Session, inv: Inventory, app: HostPlan) -> dict[str, str]:
    containers = hoststate.read_containers(s[app.name], inv.project, step="read host state")
    return {c.service: c.id for c in containers if c.service in app.app_services and c.state == "running"}


def _stop_worker(inv: Inventory, s: Session, hp: HostPlan, down: bool, say, task: str = "stop-verda",
                 warn=None) -> list[dict]:
    """Stop the worker, then say how each of its containers ended (exit code, killed or not), read
    from `docker inspect` before a --down removes them; returns those findings."""
    warn = warn or say
    remote = s[hp.name]
    say(f"{hp.name}: {'removing' if down else 'stopping'} {', '.join(hp.worker_services)}")
    before = hoststate.read_containers(remote, inv.project, step="read host state")
    ids = [c.id for c in before if c.service in hp.worker_services and c.state in ("running", "restarting", "paused")]
    t0 = time.monotonic()
    res = remote.run(composeact.stop(hp.compose, hp.worker_services), timeout=inv.timeouts.command,
                     step="stop worker")
    took = time.monotonic() - t0
    if not res.ok and "no such file" not in res.tail().lower():
        raise UnhealthyError(f"stopping the worker failed: {res.tail()}", host=hp.name, step="stop worker")
    findings = _how_they_ended(remote, hp, ids, took, say, warn)
    if down:
        res = remote.run(composeact.stop(hp.compose, hp.worker_services, remove=True), timeout=inv.timeouts.command,
                         step="remove worker")
        if not res.ok and "no such file" not in res.tail().lower():
            raise UnhealthyError(f"removing the worker failed: {res.tail()}", host=hp.name, step="remove worker")
    containers = hoststate.read_containers(remote, inv.project, step="read host state")
    running = [c.name for c in containers if c.service in hp.worker_services and c.state == "running"]
    if running:
        raise UnhealthyError(f"worker container(s) still running after stop: {', '.join(running)}",
                             host=hp.name, step="read host state")
    # On the worker host itself: who stopped it, and when (status: "stopped on purpose").
    remote.run(wdact.mkdir(hp.host.workdir), step="record stop")
    remote.put(cmd.workdir_path(hp.host.workdir, stopped.STOPPED_FILE), stopact.record_text(task, who(), now_iso()),
               mode=0o600)
    say(f"{hp.name}: no worker container runs (recorded: {task} by {who()})")
    return findings


def _how_they_ended(remote, hp: HostPlan, ids: list[str], took: float, say, warn) -> list[dict]:
    """`docker inspect` of the containers just stopped: one line each, a warning for a killed one."""
    if not ids:
        return []
    res = remote.run(ended.command(ids), step="how the worker ended")
    try:
        found = ended.parse(res.stdout) if res.ok else []
    except ParseError:
        found = []
    if not found:
        warn(f"{hp.name}: could not read how the worker container(s) ended ({res.tail(160) or 'no output'})")
        return []
    grace = ended.grace_seconds(hp.files.get(cg.WORKER_FILE, ""))
    out = []
    for e in found:
        line = e.sentence(took, grace)
        (warn if e.killed or e.state in ("running", "restarting") else say)(f"{hp.name}: {line}")
        out.append({"container": e.name, "exit_code": e.exit_code, "oom_killed": e.oom_killed, "killed": e.killed,
                    "seconds": round(took, 1), "detail": line})
    return out


def _wait_idle(inv, plan, s, say, timeout: float) -> None:
    remote = s[plan.app.name]
    host = str(plan.app.env.get("REDIS_BIND_IP", "127.0.0.1"))
    deadline = time.monotonic() + timeout
    announced = False
    while True:
        queue = read_queue(remote, host, inv.ports.redis, inv.secrets["REDIS_PASSWORD"].reveal(), inv.timeouts.redis)
        pending, running = queue.pending, queue.running
        if pending == 0 and running == 0:
            say("queue idle: no job pending or running")
            return
        if time.monotonic() > deadline:
            raise UnhealthyError(f"the queue did not become idle within {timeout:g} s ({pending} pending, "
                                 f"{running} running); nothing was stopped", step="wait idle",
                                 hint="rerun later, or without --when-idle to stop now")
        if not announced:
            say(f"--when-idle: waiting for {pending} pending and {running} running job(s) to finish")
            announced = True
        time.sleep(2)


def stop_all(inv: Inventory, say: Callable[[str], None], down: bool = False, wait_lock: float = 0.0) -> dict:
    """`invoke stop-all`: the workers first, then the app host; volumes are always kept."""
    plan = make_plan(inv)
    app = plan.app
    revision = local_revision()
    # a rented worker with no instance now (deleted, or never rented) has nothing to stop
    absent = {h.name for h in inv.provider_hosts if not h.address}
    for name in sorted(absent):
        say(f"{name}: no rented instance now: nothing to stop there")
    hosts = [h for h in inv.hosts if h.name not in absent]
    with Session(inv, hosts) as s:
        s.connect()
        s.require_all()
        with DeployLock(s[app.name], app.host.workdir, "stop-all", revision, wait=wait_lock, say=say,
                          stale_after=inv.timeouts.lock_wait):
            workers = [hp for hp in plan.hosts if hp.worker_services and hp.name != app.name and hp.name not in absent]
            gather(lambda hp: _stop_worker(inv, s, hp, down, say, "stop-all"), workers)
            for hp in workers:
                if hp.host.provider is not None:
                    say(f"{hp.name}: its rented instance is still billing (`stop-verda --delete` deletes it)")
            say(f"{app.name}: {'removing' if down else 'stopping'} {', '.join(app.services)}")
            res = s[app.name].run(composeact.stop(app.compose, (), remove=down), timeout=inv.timeouts.command,
                                  step="stop app host")
            if not res.ok:
                raise UnhealthyError(f"stopping the app host failed: {res.tail()}", host=app.name, step="stop app host")
            for hp in plan.hosts:
                if hp.name not in absent:
                    s[hp.name].run(wdact.audit(hp.host.workdir, audit_line(
                        "stop-all", revision, plan.config_hash, plan.mode, "down" if down else "stopped")),
                        step="audit")
    return {"stopped": [hp.name for hp in plan.hosts if hp.name not in absent]}
