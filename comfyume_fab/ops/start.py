"""`invoke start-all`: validate → preflight every host → lock → app host up and healthy → Redis
reachable from every worker host → workers up (in parallel) and healthy → inference probe →
audit → unlock. Ordered steps stop at the first failure, name the host and the step, and
leave the app host running."""
from __future__ import annotations

import dataclasses
import hashlib
from concurrent.futures import ThreadPoolExecutor
from typing import Callable
from urllib.parse import urlsplit

from ..checks.images import state_parts as image_state_parts
from ..checks.links import prefetch_redis, redis_ping
from ..checks.preflight import preflight_problems
from ..checks import jobprobe, qmhealth
from ..checks.probe import run_probe
from ..checks.result import CheckResult
from ..errors import ConfigError, UnhealthyError
from ..host import commands as cmd
from ..host.actions import compose as composeact
from ..host.actions import containers as ctract
from ..host.actions import stopped as stopact
from ..host.actions import workdir as wdact
from ..host import state as hoststate
from ..host.facts import salt, stopped
from ..host.facts.docker import by_service, service_ok
from ..host.session import Session, gather
from ..inventory import fingerprint
from ..inventory.model import Inventory
from ..plan.diff import (RECREATE, UNCHANGED, SecretChange, diff_host, env_section, planned_changes, secret_changes,
                         secret_refusal, secret_sentence, summary_lines, what_happened)
from ..plan.planner import HostPlan, Plan, make_plan
from . import imagestep as images
from . import provision
from .audit import audit_line, deployed_record, local_revision
from .health import up_failed, wait_healthy
from .lock import DeployLock

UPLOADED = "uploaded.sha256"


@dataclasses.dataclass
class HostOutcome:
    name: str
    changed: list[str] = dataclasses.field(default_factory=list)  # services touched; "-svc": removed
    unchanged: bool = True
    done: dict[str, str] = dataclasses.field(default_factory=dict)  # service -> created|recreated|started|unchanged|removed


@dataclasses.dataclass
class StartSummary:
    plan: Plan
    outcomes: dict[str, HostOutcome]
    checks: list[CheckResult]
    warnings: list[str]

    @property
    def changed(self) -> bool:
        return any(not o.unchanged for o in self.outcomes.values())


def start_all(inv: Inventory, say: Callable[[str], None], warn: Callable[[str], None],
              wait_lock: float = 0.0, image_tags=None,
              confirm: Callable[[SecretChange], None] | None = None,
              confirm_rent: Callable[[str], None] | None = None, keep_failed: bool = False) -> StartSummary:
    """Bring the deployment up in order, proving each link before the next step; return what
    changed and every check's result. Raises at the first failed step (the app host is left
    running); a rerun on a healthy deployment changes nothing. `image_tags` (rollback): host ->
    {IMAGE variable: reference} to deploy as they are, without fetching or building.

    A secret whose local value differs from the deployed one is said (which, from where) before
    anything is touched; a changed Redis password (it recreates Redis) goes on only when `confirm`
    returns (--yes, or the user said yes); `confirm` raises to refuse, and without one it is refused.

    A rented worker (`provider:`) without a live instance is rented first (ops/provision.py: the
    price said and passed to `confirm_rent`, which raises to refuse; a failure deletes what was
    rented unless `keep_failed`); once everything is healthy, its autostop is installed."""
    warn = _once(warn)
    if inv.provider_hosts:
        inv = provision.ensure_instances(inv, say, warn, confirm_rent or _refuse_rent, keep_failed)
    summary = _start_all(inv, say, warn, wait_lock, image_tags, confirm)
    for host in inv.provider_hosts:
        if host.autostop is not None:
            _install_autostop(inv, host, say)
    return summary


def _refuse_rent(line: str) -> None:
    raise ConfigError(f"{line}: not confirmed (rerun with --yes to rent it, or on a terminal to be asked)")


def _install_autostop(inv: Inventory, host, say) -> None:
    """After the instance is up and the worker healthy, install its autostop on the app host
    (ops/autostop.py)."""
    from ..cloud import record
    from . import autostop
    with Session(inv, [inv.app_host]) as s:
        s.connect()
        s.require_all()
        autostop.install(inv, s, record.load(inv, host.name), say, host=host.name)


def _start_all(inv: Inventory, say, warn, wait_lock: float, image_tags, confirm) -> StartSummary:
    with Session(inv, inv.hosts) as s:
        say(f"connecting to {len(inv.hosts)} host(s): {', '.join(h.name for h in inv.hosts)}")
        # While connecting and reading: `git` for the revision, the planner's imports and the
        # import of redis-py for the Redis checks; each host's slow secret fingerprints (salted
        # with its own salt, read with its state) as soon as that state is in.
        with ThreadPoolExecutor(1) as bg:
            revision_f = bg.submit(local_revision)
            bg.submit(_warm_plan, inv)
            bg.submit(prefetch_redis)
            s.connect()
            s.require_all()
            states = gather(lambda h: _read_state(inv, s, h), inv.hosts)
        revision = revision_f.result()
        problems, notes = preflight_problems(inv, states)
        for note in notes:
            warn(note)
        if problems:
            raise problems[0]
        # Each host's salt, or a new one for a host this tool never deployed to (uploaded with its .env).
        plan = make_plan(inv, {n: st.has_gpu for n, st in states.items()},
                         {n: st.salt or salt.new_salt() for n, st in states.items()})
        if getattr(plan, "errors", ()):
            raise UnhealthyError(plan.errors[0], step="preflight")
        # images: what is missing, before the lock and any upload; fatal only on a host where
        # something is to be (re)created or started (image_tags: rollback recreates what it deploys)
        settled = {} if image_tags is not None else {
            hp.name: all(c.action == UNCHANGED for c in diff_host(hp, states[hp.name].containers, None))
            for hp in plan.hosts}
        image_warnings = images.preflight(inv, states, settled)
        warnings = list(plan.warnings) + notes + image_warnings
        for w in list(plan.warnings) + image_warnings:
            warn(w)
        # secrets: which differ from the deployed ones, and from where; a new Redis password only
        # when confirmed (a typo in the secrets file must not be deployed on the tool's own advice)
        secret_diffs = secret_changes(plan, states)
        for change in secret_diffs:
            warn(secret_sentence(change))
        redis_pw = next((c for c in secret_diffs if c.name == "REDIS_PASSWORD" and "redis" in c.services), None)
        if redis_pw is not None:
            if confirm is None:
                raise ConfigError(secret_refusal(redis_pw))
            confirm(redis_pw)
        say("preflight: every host reachable, engine running, Compose v2 present")
        app = plan.app
        outcomes = {hp.name: HostOutcome(hp.name) for hp in plan.hosts}
        checks: list[CheckResult] = []
        with DeployLock(s[app.name], app.host.workdir, "start-all", revision, wait=wait_lock, say=say,
                          stale_after=inv.timeouts.lock_wait):
            # images: fetch/build/pull at each host's commit (or deploy `image_tags` as given); the plan
            # then names those tags, and what will change is said from that plan
            plan, got = images.prepare(inv, s, plan, say, given=image_tags, states=states)
            app = plan.app
            _say_changes(plan, states, say, warn)
            # 1. app host: upload, up -d, wait healthy
            if app.app_services:
                _deploy_stage(inv, s, app, app.app_services, states[app.name], outcomes[app.name], say)
            # 2. Redis reachable from every worker host, from the worker's vantage point
            worker_plans = [hp for hp in plan.hosts if hp.worker_services]
            pings = gather(lambda hp: _redis_from_worker(inv, s, plan, hp), worker_plans)
            _require_link(inv, s, pings, worker_plans, checks, say, warn)
            # 3. workers up, in parallel
            gather(lambda hp: _deploy_worker(inv, s, hp, states[hp.name], outcomes[hp.name], say),
                   worker_plans, hint="the app host was left running")
            # 4. inference answers on every worker
            probes = gather(lambda hp: run_probe(s[hp.name], inv.ports.worker_comfyui, inv.timeouts.probe,
                                                 inv.probe.workflow_graph, busy_after=inv.timeouts.busy),
                            worker_plans)
            _require(probes, checks, say, "inference probe", "inference ",
                     "the app host and the worker were left running; see the worker's logs")
            if inv.mode == "serverless" and app.app_services:  # the queue manager runs the planned tier
                from .serverless import health_check
                tier_check, _ = health_check(inv, s[app.name])
                _require({app.name: tier_check}, checks, say, "serverless tier", "",
                         "the app host was left running; see `invoke logs --service queue-manager`")
            # 4b. the final proof: a user's job through the queue manager completes
            if jobprobe.planned(inv.mode, plan):
                job = _app_job_probe(inv, plan, s)
                jobprobe.settle_with_workers(job, [f"{n}'s ComfyUI is busy and making progress" for n, c in
                                                   probes.items() if c.ok and isinstance(c.data.get("busy"), dict)
                                                   and c.data["busy"].get("progressing")])
                _require({app.name: job}, checks, say, "job probe", "",
                         "everything was left running; see the queue manager's and the worker's logs "
                         "(invoke logs), and the checks of invoke status")
                qmhealth.degrade_unused_links(checks, jobs_complete=True)
                for c in checks:
                    if c.data.get("verdict") == "degraded":
                        warn(f"{c.host}: {c.detail}")
                        warnings.append(f"{c.host}: {c.detail}")
            # 5. record who deployed what on every host
            changed = any(not o.unchanged for o in outcomes.values())
            gather(lambda hp: _record(s, hp, plan, revision, "start-all" if image_tags is None else "rollback",
                                      "changed" if changed else "unchanged", got.get(hp.name)),
                   plan.hosts, hint="the deployment is up, but this host's deploy record or audit line is missing")
        return StartSummary(plan, outcomes, checks, warnings)


def _say_changes(plan: Plan, states: dict, say, warn) -> None:
    """Before acting: what will change, per host and service (the lines `invoke diff` prints), and a
    warning first when Redis itself will be recreated."""
    diffs = planned_changes(plan, states)
    for line in summary_lines(diffs):
        say(f"plan: {line}")
    redis = next((c for c in diffs.get(plan.app.name, ()) if c.service == "redis"), None)
    if redis is not None and redis.action == RECREATE:
        warn(f"{plan.app.name}: Redis will be recreated ({'; '.join(redis.reasons)}): queue manager and workers "
             "reconnect; its data volume is kept")


def _require(results: dict[str, CheckResult], checks: list, say, step: str, label: str, hint: str) -> None:
    """Keep every check result; stop at the first failed one, naming its host and step."""
    for name, check in results.items():
        checks.append(check)
        if not check.ok:
            raise UnhealthyError(check.detail, host=name, step=step, hint=hint)
        say(f"{name}: {label}{check.detail}")


def _deploy_stage(inv: Inventory, s: Session, hp: HostPlan, services, state, outcome: HostOutcome, say) -> None:
    """Bring `services` of one host to the plan, touching only what changed: services whose own
    fingerprint (label) differs, that are missing or not running. Changed frontends are replaced
    in batches of `rollout.batch`, each healthy before the next; removed services' containers go."""
    remote = s[hp.name]
    wd = hp.host.workdir
    want = hp.host_hash
    # The marker AND the files' checksums: a hand-edited .env on the host (a wrong REDIS_PASSWORD, a
    # loopback REDIS_BIND_IP) must be replaced by the next start-all, not trusted because of the marker.
    marker, now = _split_uploaded(remote.run(_uploaded_command(wd, hp), step="read upload marker").stdout)
    expected_sums = _sums(hp)
    up_to_date = marker[:1] == [want] and now == expected_sums
    # Files that are not what the last upload wrote (a hand-edited .env): their containers may run
    # settings that no fingerprint label shows, so Compose is asked to compare them all (below).
    recorded = dict(_by_name(marker[1:]))
    hand_edited = any(recorded.get(name, digest) != digest for name, digest in _by_name(now))
    changes = {c.service: c for c in diff_host(hp, state.containers, None, services)}
    orphans = [c for c in state.containers if c.service and c.service not in hp.services]
    todo = [svc for svc in services if changes[svc].action != UNCHANGED]
    if up_to_date and not todo and not orphans:
        say(f"{hp.name}: {', '.join(services)} already running with this configuration (nothing to do)")
        outcome.done.update({svc: "unchanged" for svc in services})
        return
    if not up_to_date:
        say(f"{hp.name}: uploading {len(hp.files)} compose file(s) and the env file (0600) to {wd}")
        made = remote.run(wdact.mkdir(wd), step="upload")
        if not made.ok:  # never upload into a folder that is not there or not private
            raise UnhealthyError(f"could not create the folder {wd} (mode 700) under the login home: "
                                 f"{made.tail() or f'exit {made.exited}'}", host=hp.name, step="upload",
                                 hint="check what already has that name on the host and who owns it, or choose "
                                      "another workdir in hosts.yaml")
        for name, text in hp.files.items():
            remote.put(cmd.workdir_path(wd, name), text.encode(), mode=0o600)
        _put_salt(remote, hp)
        remote.put(cmd.workdir_path(wd, cmd.ENV_FILE), hp.env_file_text().encode(), mode=0o600)
        remote.put(cmd.workdir_path(wd, UPLOADED), "\n".join([want, *expected_sums, ""]).encode(), mode=0o600)
    elif state.salt != hp.salt:  # a host whose hashes stand for no secret still keeps its salt
        _put_salt(remote, hp)
    before = {c.service: c.id for c in state.containers}
    current = by_service(state.containers)
    if orphans:
        names = sorted({c.service for c in orphans})
        say(f"{hp.name}: removing {', '.join(names)} (no longer planned; data/user_data/ folders are kept)")
        res = remote.run(ctract.remove_containers([c.id for c in orphans]), timeout=inv.timeouts.command,
                         step="remove services")
        if not res.ok:
            raise UnhealthyError(f"removing {', '.join(names)} failed: {res.tail()}", host=hp.name,
                                 step="remove services")
    frontends = set(hp.frontends)
    # A running frontend whose settings changed is rolled; everything else that needs work is brought
    # up at once: the core services (with what they depend on), then new or stopped frontends.
    rolling = [svc for svc in todo if svc in frontends and changes[svc].action == RECREATE
               and service_ok(current.get(svc))]
    core = [svc for svc in todo if svc not in frontends]
    fresh = [svc for svc in todo if svc in frontends and svc not in rolling]
    if hand_edited:
        # The host's files were changed after the last upload (a hand-edited .env): a container may
        # run settings that no fingerprint label shows. Compose compares each service's resolved
        # configuration itself and recreates only those that differ, so every other service of the
        # stage goes through `up -d` too (frontends without their dependencies).
        core += [svc for svc in services if svc not in todo and svc not in frontends]
        fresh += [svc for svc in services if svc not in todo and svc in frontends]
        todo = list(services)
    said: set[str] = set()  # services whose "healthy" line was said: each is said once per stage
    for group, no_deps in ((core, False), (fresh, True)):
        if group:
            _up(inv, remote, hp, group, no_deps, say, said)
    if rolling:
        _roll(inv, remote, hp, rolling, say, said)
    if todo:
        # every service of the stage, healthy together at the end (one poll when all already are)
        wait_healthy(remote, hp.compose, services, inv.timeouts.health, say, announced=said)
    # The containers as they are now: one `docker inspect` (what wait_healthy's last poll ran),
    # not a sectioned state read.
    after = hoststate.read_containers(remote, inv.project, step="read containers")
    for c in after:
        # recreated, or started again (a stopped worker that `up -d` started in the same container)
        if c.service in services and c.service not in outcome.changed and (
                before.get(c.service) != c.id or not service_ok(current.get(c.service))):
            outcome.changed.append(c.service)
    outcome.changed.sort(key=lambda svc: list(services).index(svc) if svc in services else len(services))
    outcome.changed += [f"-{svc}" for svc in sorted({c.service for c in orphans})]
    outcome.done.update(what_happened(services, state.containers, after))
    outcome.done.update({svc: "removed" for svc in sorted({c.service for c in orphans})})
    outcome.unchanged = outcome.unchanged and not outcome.changed
    state.containers = tuple(after)


def _read_state(inv: Inventory, s: Session, host) -> hoststate.HostState:
    """One host's state, as start-all needs it; its secrets' fingerprints made meanwhile."""
    st = hoststate.read(s[host.name], inv.project, host.workdir,
                        extra=[env_section(host.workdir),
                               *_stop_record_part(host), *image_state_parts(inv, host)])  # images: hook
    fingerprint.warm(inv.secrets, st.salt)
    return st


def _stop_record_part(host) -> list[tuple[str, str]]:
    """A worker host's "stopped on purpose" record, read with its state (status reads it the same way)."""
    return [("stopped", stopped.read_command(host.workdir))] if host.is_worker else []


def _deploy_worker(inv: Inventory, s: Session, hp: HostPlan, state, outcome: HostOutcome, say) -> None:
    """The worker stage, then the host's "stopped on purpose" record, if the host had one, goes:
    the worker runs again (no record, no extra round trip)."""
    _deploy_stage(inv, s, hp, hp.worker_services, state, outcome, say)
    code, text = state.extra.get("stopped", (0, "?"))
    if code != 0 or text.strip():
        s[hp.name].run(stopact.clear_command(hp.host.workdir), step="clear stop record")


def _once(warn: Callable[[str], None]) -> Callable[[str], None]:
    """`warn` that says each distinct warning once per run (a host's GPU warning is found by the
    plan, then again by the plan with the images; it is one warning)."""
    seen: set[str] = set()

    def once(message: str) -> None:
        if message not in seen:
            seen.add(message)
            warn(message)
    return once


def _up(inv: Inventory, remote, hp: HostPlan, services, no_deps: bool, say, said: set[str] | None = None) -> None:
    say(f"{hp.name}: docker compose up -d {' '.join(services)}")
    res = remote.run(composeact.up(hp.compose, services, no_deps=no_deps), timeout=inv.timeouts.command, step="compose up")
    if not res.ok:
        up_failed(remote, hp.compose, services, res.stderr or res.stdout)
    wait_healthy(remote, hp.compose, services, inv.timeouts.health, say, announced=said)


def _roll(inv: Inventory, remote, hp: HostPlan, rolling: list[str], say, said: set[str] | None = None) -> None:
    """Recreate `rolling` (running frontends) `rollout.batch` at a time; a batch that does not
    become healthy stops the rollout there, and the later batches keep the old version, serving."""
    size = inv.rollout.batch
    batches = [rolling[i:i + size] for i in range(0, len(rolling), size)]
    for number, batch in enumerate(batches, 1):
        span = batch[0] if len(batch) == 1 else f"{batch[0]}..{batch[-1]}"
        say(f"{hp.name}: rolling batch {number}/{len(batches)}: recreating {span}")
        try:
            res = remote.run(composeact.up(hp.compose, batch, no_deps=True), timeout=inv.timeouts.command,
                             step="rolling update")
            if not res.ok:
                up_failed(remote, hp.compose, batch, res.stderr or res.stdout)
            wait_healthy(remote, hp.compose, batch, inv.timeouts.health, say, announced=said)
        except UnhealthyError as exc:
            rest = [svc for later in batches[number:] for svc in later]
            kept = (f"{', '.join(rest)} still run the previous version and serve" if rest
                    else "every other frontend already runs the new version")
            raise UnhealthyError(f"rollout stopped at batch {number} of {len(batches)} ({span}): {exc.cause}; "
                                 f"{kept}", host=hp.name, step="rolling update",
                                 hint="fix the new version (image, settings) and rerun start-all, which "
                                      "continues from this batch") from None


def _uploaded_command(wd: str, hp: HostPlan) -> str:
    names = [cmd.ENV_FILE, *sorted(hp.files)]
    # Also removes what an upload cut off mid-transfer left beside the real files.
    return (f"{wdact.clean_partials(wd)} 2>/dev/null; {cmd.read_file(wd, UPLOADED)}; echo {NOW_MARK}; "
            f"{cmd.in_workdir(wd, ['sha256sum', '--', *names])} 2>/dev/null")


NOW_MARK = "@@cfab-now"  # between the upload marker (what was uploaded) and the files' sums now


def _split_uploaded(text: str) -> tuple[list[str], list[str]]:
    """(the marker's lines: host hash, then the sums it recorded; the sha256sum lines now)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if NOW_MARK not in lines:
        return lines, []
    i = lines.index(NOW_MARK)
    return lines[:i], lines[i + 1:]


def _sums(hp: HostPlan) -> list[str]:
    """The sha256sum lines of this plan's files, as `_uploaded_command` prints them."""
    texts = {cmd.ENV_FILE: hp.env_file_text(), **hp.files}
    return [f"{hashlib.sha256(texts[n].encode()).hexdigest()}  {n}" for n in [cmd.ENV_FILE, *sorted(hp.files)]]


def _by_name(sum_lines: list[str]) -> list[tuple[str, str]]:
    return [(parts[1], parts[0]) for parts in (ln.split(None, 1) for ln in sum_lines) if len(parts) == 2]


def _put_salt(remote, hp: HostPlan) -> None:
    """The host's salt, before the .env whose hashes were made with it (host/facts/salt.py)."""
    remote.put(cmd.workdir_path(hp.host.workdir, salt.SALT_FILE), salt.salt_text(hp.salt), mode=0o600)


def _warm_plan(inv: Inventory) -> None:
    try:
        make_plan(inv)
    except Exception:  # noqa: BLE001 - the real make_plan reports it, in its place
        pass


def _require_link(inv: Inventory, s: Session, pings: dict[str, CheckResult], worker_plans, checks, say, warn
                  ) -> None:
    """Redis from each worker host: required by the design, but the real worker talks HTTP only to
    the queue manager. A failed ping stops start-all only when the queue manager is not reachable
    from that host either; else it goes on and the job probe decides (degraded while jobs complete)."""
    by_name = {hp.name: hp for hp in worker_plans}
    for name, check in pings.items():
        if check.ok:
            continue
        url = urlsplit(str(by_name[name].env.get("QUEUE_MANAGER_URL", "")))
        if not (url.hostname and url.hostname[0].isdigit()):
            continue
        qm = qmhealth.health_check(s[name], url.hostname, url.port or 80, f"queue-manager-from-{name}",
                                   inv.timeouts.redis, f"QUEUE_MANAGER_URL from {name}")
        if qm.ok:
            warn(f"{name}: Redis is not reachable from {name} ({check.detail}); the worker talks HTTP only to the "
                 "queue manager, which answers: going on, the job probe decides")
            check.data["checked_with_queue_manager"] = True
    failed = {n for n, c in pings.items() if not c.ok and not c.data.get("checked_with_queue_manager")}
    for name, check in pings.items():
        checks.append(check)
        if not check.ok and name in failed:
            raise UnhealthyError(check.detail, host=name, step="redis from worker",
                                 hint="the app host was left running; fix this and rerun start-all")
        if check.ok:
            say(f"{name}: {check.detail}")


def _app_job_probe(inv: Inventory, plan: Plan, s: Session) -> CheckResult:
    app = plan.app
    host = str(app.env.get("QUEUE_MANAGER_BIND_IP", "127.0.0.1")).strip("[]")
    redis_host = str(app.env.get("REDIS_BIND_IP", "127.0.0.1")).strip("[]")
    cleanup = jobprobe.redis_cleanup(s[app.name], redis_host, inv.ports.redis,
                                     inv.secrets["REDIS_PASSWORD"].reveal(), inv.timeouts.redis)
    return jobprobe.job_probe(s[app.name], host, inv.ports.queue_manager, inv.timeouts.probe,
                              inv.probe.workflow_graph, cleanup)


def _redis_from_worker(inv: Inventory, s: Session, plan: Plan, hp: HostPlan) -> CheckResult:
    host, port = plan.redis_address(hp)
    return redis_ping(s[hp.name], host, port, inv.secrets["REDIS_PASSWORD"].reveal(), inv.timeouts.redis,
                      name=f"redis-from-{hp.name}", app_host=plan.app.name)


def _record(s: Session, hp: HostPlan, plan: Plan, revision: str, task: str, result: str, got=None) -> None:
    remote = s[hp.name]
    wd = hp.host.workdir
    imgs = images.deployed_images(hp, got)  # images: commit, branch and image per service
    remote.put(cmd.workdir_path(wd, cmd.DEPLOYED),
               deployed_record(revision, plan.config_hash, hp.host_hash, plan.mode, imgs), mode=0o600)
    res = remote.run(wdact.audit(wd, audit_line(task, revision, plan.config_hash, plan.mode, result,
                                              images.audit_detail(imgs))), step="audit")
    if not res.ok:
        raise UnhealthyError(f"writing the audit line failed: {res.tail()}", host=hp.name, step="audit")
