"""start-all says each thing once, in plan order (issue 23, item 5): each service's "healthy" line
once per stage, each warning once per run, the summary's services in the plan's order, and what
happened to each service: created, recreated, started, removed or unchanged.

`InspectRemote` is a STAND-IN for host.ssh.Remote (no SSH or Docker engine here): it answers every
`run` with the `docker inspect --format INSPECT_FORMAT` lines it was given, the contract
host/state.read_containers parses."""
from __future__ import annotations

import dataclasses

from comfyume_fab.checks.result import CheckResult
from comfyume_fab.host.facts.docker import INSPECT_FIELDS, ContainerInfo
from comfyume_fab.host.ssh.remote import Result
from comfyume_fab.ops.health import wait_healthy

NEVER = "0001-01-01T00:00:00Z"


def ctr(service: str, cid: str, state: str = "running", health: str = "healthy") -> ContainerInfo:
    return ContainerInfo(id=cid, name=f"comfyume-{service}-1", service=service, project="comfyume", state=state,
                         health=health, restart_count=0, created=NEVER, started_at=NEVER, finished_at=NEVER,
                         exit_code=0, env_hash="", image=f"{service}:1")


def inspect_line(c: ContainerInfo) -> str:
    row = dataclasses.asdict(c)
    return "\t".join(str(row[f]) for f in INSPECT_FIELDS)


class InspectRemote:
    """STAND-IN for host.ssh.Remote: every run answers with `lines` (docker inspect output)."""

    def __init__(self, containers, name: str = "mello"):
        self.name = name
        self.text = "\n".join(inspect_line(c) for c in containers) + "\n"

    def run(self, command: str, step: str = "", timeout: float | None = None) -> Result:
        return Result(command, self.text, "", 0, 0.0)


class Compose:
    project = "comfyume"


def test_each_services_healthy_line_is_said_once_per_stage():
    """_up waits for its group, then the stage waits for all its services: one line per service."""
    remote = InspectRemote([ctr("redis", "r1"), ctr("queue-manager", "q1"), ctr("admin", "a1")])
    said: list[str] = []
    announced: set[str] = set()
    wait_healthy(remote, Compose, ["redis", "queue-manager"], 5, said.append, announced=announced)
    wait_healthy(remote, Compose, ["redis", "queue-manager", "admin"], 5, said.append, announced=announced)
    names = [line.split(": ", 1)[1].split(" healthy")[0] for line in said]
    assert names == ["redis", "queue-manager", "admin"], said


def test_what_happened_names_created_recreated_started_unchanged_in_plan_order():
    from comfyume_fab.plan.diff import what_happened
    before = [ctr("queue-manager", "q1"), ctr("redis", "r1"), ctr("admin", "a1", state="exited", health="")]
    after = [ctr("user002", "u2"), ctr("admin", "a1"), ctr("queue-manager", "q2"), ctr("redis", "r1")]
    done = what_happened(["redis", "queue-manager", "admin", "user002"], before, after)
    assert list(done.items()) == [("redis", "unchanged"), ("queue-manager", "recreated"), ("admin", "started"),
                                  ("user002", "created")]


def _summary(tmp_path, outcomes_done, warnings=()):
    from tests.support import inventory_text, load
    from comfyume_fab.ops.start import HostOutcome, StartSummary
    from comfyume_fab.plan.planner import make_plan
    inv = load(tmp_path, inventory_text("dual-server", "split", num_users=2))
    plan = make_plan(inv)
    outcomes = {}
    for hp in plan.hosts:
        done = outcomes_done.get(hp.name, {})
        o = HostOutcome(hp.name, changed=[s for s, w in done.items() if w != "unchanged"],
                        unchanged=all(w == "unchanged" for w in done.values()), done=dict(done))
        outcomes[hp.name] = o
    return plan, StartSummary(plan, outcomes, [CheckResult("probe-verda", True, "ok")], list(warnings))


def test_the_summary_says_what_happened_to_each_service_in_plan_order_and_each_warning_once(tmp_path):
    from comfyume_fab.present.reports import start_text
    gpu = "mode dual-server expects a GPU on verda but none was found; the worker will run on CPU (slow)"
    plan, _ = _summary(tmp_path, {})
    app = plan.app
    services = list(app.services)
    # reversed, as docker inspect may list them: the summary still follows the plan
    done = {svc: "recreated" for svc in reversed(services[:2])}
    done.update({svc: "unchanged" for svc in services[2:]})
    done[services[-1]] = "created"
    plan, summary = _summary(tmp_path, {app.name: done}, [gpu, gpu])
    text = start_text(summary)
    line = next(ln for ln in text.splitlines() if ln.startswith(f"  {app.name}: "))
    assert line == (f"  {app.name}: {len(services)} service(s) healthy; created {services[-1]}; "
                    f"recreated {services[0]}, {services[1]}; unchanged {', '.join(services[2:-1])}"), line
    assert "(re)created or started" not in text
    assert text.count(gpu) == 0 and "1 warning(s), each printed above" in text
    worker = next(hp for hp in plan.hosts if hp.name != app.name)
    assert f"  {worker.name}: {len(worker.services)} service(s) healthy; unchanged" in text.splitlines()


def test_start_all_says_each_warning_once_per_run():
    from comfyume_fab.ops.start import _once
    got: list[str] = []
    warn = _once(got.append)
    for w in ["gpu", "redis", "gpu", "gpu"]:
        warn(w)
    assert got == ["gpu", "redis"]
