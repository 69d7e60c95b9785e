"""`invoke plan` / `--dry-run` output: ordered per host, quoted, and never a secret."""
from __future__ import annotations

import json
import shlex

import pytest

from comfyume_fab.host import commands as cmd
from comfyume_fab.plan.steps import render_json, render_text, steps
from comfyume_fab.plan.planner import make_plan
from tests.unit.test_topology import ENV, MODES, load, inventory_text

SECRETS = tuple(ENV.values())


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("task", ["start-all", "stop-verda", "stop-all"])
def test_plan_and_dry_run_never_show_a_secret(tmp_path, mode, task):
    topology = "one" if mode in ("frontend-testing", "serverless") or mode.startswith("single") else "three"
    plan = make_plan(load(tmp_path, inventory_text(mode, topology)))
    for text in (render_text(plan, task), render_json(plan, task)):
        for secret in SECRETS:
            assert secret not in text
    assert "REDIS_PASSWORD=***" in render_text(plan, task) or mode == "frontend-testing"


def test_dual_server_start_all_steps_are_in_order(tmp_path):
    plan = make_plan(load(tmp_path, inventory_text("dual-server", "three")))
    order = [h for h, _ in steps(plan, "start-all")]
    app_up = next(i for i, (h, s) in enumerate(steps(plan, "start-all")) if h == "mello" and "up -d" in s)
    first_worker_up = next(i for i, (h, s) in enumerate(steps(plan, "start-all")) if h != "mello" and "up -d" in s)
    redis_checks = [i for i, (h, s) in enumerate(steps(plan, "start-all")) if s.startswith("(check) Redis")]
    assert app_up < min(redis_checks) < max(redis_checks) < first_worker_up
    assert order[-1] == "mello" and steps(plan, "start-all")[-1][1] == cmd.lock_release("comfyume", "<random token>")
    data = json.loads(render_json(plan, "start-all"))
    assert [h["name"] for h in data["hosts"]] == ["mello", "verda", "verda2"]


def test_every_user_value_is_quoted_once(tmp_path):
    assert cmd.workdir_path("~/deploy dir") == "deploy dir"
    line = cmd.ComposeProject("deploy dir", "comfyume", ("app.yml",)).up(["redis"])
    assert shlex.split(line)[:2] == ["cd", "deploy dir"]
    audit = cmd.audit("comfyume", "by=a;rm -rf ~ task=$(touch x)")
    assert "'by=a;rm -rf ~ task=$(touch x)'" in audit


def test_sections_round_trip():
    script = cmd.sections([("a", "echo one; echo two"), ("b", "false")])
    import subprocess
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True).stdout
    assert cmd.split_sections(out) == {"a": (0, "one\ntwo"), "b": (1, "")}
