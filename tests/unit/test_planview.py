"""`invoke plan` / `--dry-run` output: ordered per host, quoted, and never a secret."""
from __future__ import annotations

import json
import shlex

import pytest

from comfyume_fab.host import commands as cmd
from comfyume_fab.host.actions import compose as composeact
from comfyume_fab.host.actions import lock as lockact
from comfyume_fab.host.actions import stopped as stopact
from comfyume_fab.host.actions import workdir as wdact
from comfyume_fab.plan.steps import render_json, render_text, steps
from comfyume_fab.plan.planner import make_plan
from tests.support import ENV, MODES, inventory_text, load, salted

SECRETS = tuple(ENV.values())


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("task", ["start-all", "stop-verda", "stop-all"])
def test_plan_and_dry_run_never_show_a_secret(tmp_path, mode, task):
    topology = "one" if mode in ("frontend-testing", "serverless") or mode.startswith("single") else "three"
    plan = salted(make_plan(load(tmp_path, inventory_text(mode, topology))))
    for text in (render_text(plan, task), render_json(plan, task)):
        for secret in SECRETS:
            assert secret not in text
    assert "REDIS_PASSWORD=***" in render_text(plan, task) or mode == "frontend-testing"


def test_dual_server_start_all_steps_are_in_order(tmp_path):
    plan = salted(make_plan(load(tmp_path, inventory_text("dual-server", "three"))))
    order = [h for h, _ in steps(plan, "start-all")]
    app_up = next(i for i, (h, s) in enumerate(steps(plan, "start-all")) if h == "mello" and "up -d" in s)
    first_worker_up = next(i for i, (h, s) in enumerate(steps(plan, "start-all")) if h != "mello" and "up -d" in s)
    redis_checks = [i for i, (h, s) in enumerate(steps(plan, "start-all")) if s.startswith("(check) Redis")]
    assert app_up < min(redis_checks) < max(redis_checks) < first_worker_up
    assert order[-1] == "mello" and steps(plan, "start-all")[-1][1] == lockact.lock_release("comfyume", "<random token>")
    data = json.loads(render_json(plan, "start-all"))
    assert [h["name"] for h in data["hosts"]] == ["mello", "verda", "verda2"]


def test_every_user_value_is_quoted_once(tmp_path):
    assert cmd.workdir_path("~/deploy dir") == "deploy dir"
    line = composeact.up(cmd.ComposeProject("deploy dir", "comfyume", ("app.yml",)), ["redis"])
    assert shlex.split(line)[:2] == ["cd", "deploy dir"]
    audit = wdact.audit("comfyume", "by=a;rm -rf ~ task=$(touch x)")
    assert "'by=a;rm -rf ~ task=$(touch x)'" in audit


def test_sections_round_trip():
    script = cmd.sections([("a", "echo one; echo two"), ("b", "false")])
    import subprocess
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True).stdout
    assert cmd.split_sections(out) == {"a": (0, "one\ntwo"), "b": (1, "")}


# --- diff: what start-all would change (issue 13) --------------------------------------------------

def _container(service, label, state="running", health="healthy"):
    from comfyume_fab.host.facts.docker import ContainerInfo
    return ContainerInfo(id=f"id-{service}", name=f"comfyume-{service}-1", service=service, project="comfyume",
                         state=state, health=health, restart_count=0, created="", started_at="", finished_at="",
                         exit_code=0, env_hash=label, image="x")


def _deployed(hp):
    """The containers and .env of a host that runs exactly plan `hp`."""
    from comfyume_fab.plan.diff import parse_env_text
    return ([_container(svc, hp.service_hashes[svc]) for svc in hp.services], parse_env_text(hp.env_file_text()))


def test_diff_of_a_deployed_plan_is_all_unchanged(tmp_path):
    from comfyume_fab.plan.diff import changed, diff_host, summary_lines
    plan = salted(make_plan(load(tmp_path, inventory_text("dual-server", "two"))))
    for hp in plan.hosts:
        containers, env = _deployed(hp)
        changes = diff_host(hp, containers, env)
        assert [c.service for c in changes] == list(hp.services) and not changed(changes)
    assert summary_lines({"mello": changes}) == ["mello: nothing would change (1 service(s) unchanged)"]


def test_diff_names_one_new_user_and_the_removed_ones(tmp_path):
    from comfyume_fab.plan.diff import changed, diff_host
    old = salted(make_plan(load(tmp_path, inventory_text("dual-server", "two", num_users=20)))).app
    new = salted(make_plan(load(tmp_path, inventory_text("dual-server", "two", num_users=21)))).app
    containers, env = _deployed(old)
    assert [(c.service, c.action) for c in changed(diff_host(new, containers, env))] == [("user021", "create")]
    fewer = salted(make_plan(load(tmp_path, inventory_text("dual-server", "two", num_users=18)))).app
    gone = changed(diff_host(fewer, containers, env))
    assert [(c.service, c.action) for c in gone] == [("user019", "remove"), ("user020", "remove")]
    assert "data/user_data/ folder is kept" in gone[0].reasons[0]


def test_diff_says_which_setting_changed_and_a_secret_only_as_changed(tmp_path):
    from comfyume_fab.plan.diff import changed, diff_host, summary_lines
    old = salted(make_plan(load(tmp_path, inventory_text("dual-server", "two")))).app
    text = inventory_text("dual-server", "two", extra="images: {frontend: 'comfyume-frontend:v0.12.0'}\n")
    new = salted(make_plan(load(tmp_path, text, {**ENV, "REDIS_PASSWORD": "brand-new-pw"}))).app
    containers, env = _deployed(old)
    todo = {c.service: c for c in changed(diff_host(new, containers, env))}
    assert set(todo) == {"redis", "queue-manager"} | set(new.frontends)
    assert todo["user007"].reasons == ("FRONTEND_IMAGE comfyume-frontend:v0.11.0 -> comfyume-frontend:v0.12.0",)
    assert todo["redis"].reasons == ("REDIS_PASSWORD changed",)
    text = "\n".join(summary_lines({"mello": list(todo.values())}))
    assert "brand-new-pw" not in text and ENV["REDIS_PASSWORD"] not in text and "recreate redis" in text


def test_diff_starts_a_stopped_service_without_recreating_it(tmp_path):
    from comfyume_fab.plan.diff import changed, diff_host
    worker = salted(make_plan(load(tmp_path, inventory_text("dual-server", "two")))).workers[0]
    containers, env = _deployed(worker)
    stopped = [_container("worker", worker.service_hashes["worker"], state="exited", health="")]
    assert [(c.action, c.reasons) for c in changed(diff_host(worker, stopped, env))] == [("start", ("it is exited",))]
    assert [c.action for c in diff_host(worker, containers, None)] == ["unchanged"]


def test_stopped_record_round_trip_and_rejects_what_is_not_one():
    from datetime import datetime, timezone
    from comfyume_fab.host.facts import stopped
    text = stopact.record_text("stop-verda", "ops@laptop", "2026-11-30T22:00:00Z").decode()
    rec = stopped.parse_record(text)
    assert (rec.task, rec.by, rec.at) == ("stop-verda", "ops@laptop", "2026-11-30T22:00:00Z")
    assert rec.seconds_since(datetime(2026, 11, 30, 23, 30, tzinfo=timezone.utc)) == 5400
    assert stopped.for_how_long(5400) == "1 h 30 min" and stopped.for_how_long(42) == "42 s"
    assert stopped.parse_record("") is None and stopped.parse_record("not json") is None
    assert stopped.parse_record('{"task": "stop-verda"}') is None
    assert stopact.clear_command("~/comfy dir") == "rm -f -- 'comfy dir/stopped.json'"


def test_stop_verda_dry_run_records_the_stop_and_start_all_clears_it(tmp_path):
    plan = salted(make_plan(load(tmp_path, inventory_text("dual-server", "two"))))
    stop = [s for h, s in steps(plan, "stop-verda") if h == "verda"]
    assert any("stopped.json" in s for s in stop)
    start = [s for h, s in steps(plan, "start-all") if h == "verda"]
    assert any(s.startswith("rm -f -- comfyume/stopped.json") for s in start)
