"""First contact (issue 11, item 7), run as a user would: the real `invoke` as a subprocess, in a
folder with a copy of the example inventory, and no host touched. `plan` and `--dry-run` work
without the secrets (shown as unset) while the real run still refuses without them; short flags
mean the same option in every task and `-h` is help; hints name options that exist; every task
checks its options before it acts. The inventory points at a TCP listener of the test's own,
which proves that plan and --dry-run open no connection."""
from __future__ import annotations

import ast
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.support import INVOKE, REPO, SECRETS

TASKS = ["start-all", "stop-verda", "stop-all", "status", "logs", "exec", "plan", "diff", "lock-break", "rollback",
         "copy-image", "switch-gpu", "warm", "lab.up", "lab.down"]
def run(cwd: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k not in ("COMFYUME_HOSTS", *SECRETS)}
    full.update(env or {})
    return subprocess.run([INVOKE, "--search-root", str(REPO), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env=full)


def test_plan_and_dry_run_work_without_the_secrets_and_connect_to_nothing(place):
    cwd, listener = place
    res = run(cwd, "plan")
    assert res.returncode == 0, res.stderr
    assert "    REDIS_PASSWORD=unset" in res.stdout and "    ADMIN_PASSWORD=unset" in res.stdout
    assert "NOTE: ADMIN_PASSWORD, REDIS_PASSWORD not set" in res.stdout and "start-all needs them" in res.stdout
    plan = json.loads(run(cwd, "plan", "--json").stdout)
    assert plan["unset_secrets"] == ["ADMIN_PASSWORD", "REDIS_PASSWORD"]
    assert plan["hosts"][0]["env"]["REDIS_PASSWORD"] == "unset"
    for task in ("start-all", "stop-verda", "stop-all"):
        res = run(cwd, task, "--dry-run")
        assert res.returncode == 0, res.stderr
        assert f"{task} would run, in order:" in res.stdout and "REDIS_PASSWORD=unset" in res.stdout
    # with the secrets given they are masked, never shown
    res = run(cwd, "start-all", "-n", env=SECRETS)
    assert res.returncode == 0 and "REDIS_PASSWORD=***" in res.stdout and "unset" not in res.stdout
    assert SECRETS["REDIS_PASSWORD"] not in res.stdout + res.stderr
    assert listener.accepted == 0


def test_the_real_runs_still_refuse_without_the_secrets_before_touching_anything(place):
    cwd, listener = place
    for task in ("start-all", "stop-verda", "stop-all", "status"):
        res = run(cwd, task)
        assert res.returncode == 2, (task, res.stderr)
        # the example's secrets.env_file is absent here: the file is named as missing (not each secret)
        assert ("'.secrets.env' does not exist" in res.stderr or "REDIS_PASSWORD is not set" in res.stderr) \
            and "Traceback" not in res.stderr
    assert listener.accepted == 0


def options(task: str) -> dict[str, str]:
    """`invoke --help TASK`'s options: long name -> its short flag ('' when none)."""
    out = run(REPO, "--help", task).stdout
    found = {}
    for line in out.split("Options:", 1)[1].splitlines():
        m = re.match(r"\s+(?:-(\w)(?: \w+)?, )?--([\w-]+)", line)
        if m:
            found[m.group(2)] = m.group(1) or ""
    return found


def test_short_flags_mean_the_same_option_in_every_task_and_h_is_help(place):
    cwd, listener = place
    meaning: dict[str, set[str]] = {}
    every = {task: options(task) for task in TASKS}
    for task, opts in every.items():
        for long, short in opts.items():
            if short:
                meaning.setdefault(short, set()).add(long)
        assert "h" not in opts.values(), f"{task}: -h must stay help"
    assert all(len(longs) == 1 for longs in meaning.values()), meaning
    for task in ("start-all", "stop-verda", "stop-all"):
        assert every[task]["dry-run"] == "n" and every[task]["hosts"] == "H" and every[task]["wait-lock"] == "w"
    assert every["status"]["json"] == every["plan"]["json"] == "j"
    res = run(cwd, "status", "-h")  # help, not --hosts
    assert res.returncode == 0 and "Usage:" in res.stdout and "--no-probe" in res.stdout
    res = run(cwd, "plan", "-H", "hosts.yaml", "-j")
    assert res.returncode == 0 and json.loads(res.stdout)["mode"] == "dual-server"
    assert listener.accepted == 0


def test_a_worker_that_does_not_exist_is_refused_by_dry_run_like_by_the_real_run(place):
    cwd, listener = place
    dry = run(cwd, "stop-verda", "--dry-run", "--host", "nosuch")
    real = run(cwd, "stop-verda", "--host", "nosuch", env=SECRETS)
    for res in (dry, real):
        assert res.returncode == 2, res.stderr
        assert res.stderr.strip() == "--host nosuch: not a worker host in hosts.yaml (worker hosts: verda)"
        assert res.stdout == ""
    assert listener.accepted == 0


EXTERNAL = {"--cpu", "--runtime", "--porcelain", "--short", "--untracked-files", "--remove-orphans",
            "--no-color", "--noprofile", "--norc", "--filter", "--format", "--show-toplevel",
            "--resolve-image", "--no-trunc", "--prune", "--force", "--token"}  # other programs' flags


def test_every_option_a_message_names_exists():
    known = {f"--{o}" for task in TASKS for o in options(task)} | {"--help", "--list", "--version"}
    named = {}
    for path in (REPO / "comfyume_fab").rglob("*.py"):
        rel = path.relative_to(REPO).as_posix()
        if rel.startswith(("comfyume_fab/lab/", "comfyume_fab/host/commands.py", "comfyume_fab/host/facts/",
                           "comfyume_fab/host/actions/", "comfyume_fab/host/agents/",
                           "comfyume_fab/cloud/startup.py")):
            continue  # command lines for other programs
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                for opt in re.findall(r"(?<![\w-])--[a-z][a-z-]+", node.value):
                    named.setdefault(opt, rel)
    unknown = {opt: where for opt, where in named.items() if opt not in known | EXTERNAL}
    assert not unknown, f"messages name options that no task has: {unknown}"
    assert "--hosts" in named  # the check really reads the messages


def test_an_unset_secret_can_never_be_written_to_a_hosts_env_file(place):
    from comfyume_fab.errors import ConfigError
    from comfyume_fab.inventory import load_inventory
    from comfyume_fab.plan.planner import make_plan
    cwd, _ = place
    inv = load_inventory(str(cwd / "hosts.yaml"), environ={}, need_secrets=False)
    plan = make_plan(inv)
    assert plan.app.env_masked()["REDIS_PASSWORD"] == "unset"
    with pytest.raises(ConfigError) as info:
        plan.app.env_file_text()
    assert info.value.sentence() == ("ADMIN_PASSWORD is not set (export ADMIN_PASSWORD=... "
                                     "or add it to the secrets.env_file)")  # the first in sorted order
    with pytest.raises(ConfigError):  # and the real run's loading refuses it before anything else
        load_inventory(str(cwd / "hosts.yaml"), environ={})


def test_no_task_leaves_a_process_behind(place):
    """One execution model: a task runs in the process the user started and leaves nothing running
    (issue 18 retired the warm helper, which a one-shot task used to start as it exited)."""
    from tests.support import subreaper
    cwd, _ = place
    env = {**{k: v for k, v in os.environ.items() if k != "COMFYUME_HOSTS"}, **SECRETS}
    with subreaper() as run_to_end:
        for args in (["plan"], ["plan", "--json"], ["status"], ["--list"]):
            res, left = run_to_end([INVOKE, "--search-root", str(REPO), *args], cwd=cwd, env=env, timeout=120)
            assert res.returncode in (0, 3), res.stderr  # status: the listeners are no SSH servers
            assert left == {}, f"`invoke {' '.join(args)}` left processes running: {left}"


def test_the_example_inventory_builds_the_teams_images_from_their_branches(place):
    """The example is the real dual-server setup, so it shows where the real images come from (a
    copy of it on a fresh host builds them, rather than reporting them missing)."""
    from comfyume_fab.inventory import load_inventory
    cwd, _ = place
    inv = load_inventory(str(cwd / "hosts.yaml"), environ={}, need_secrets=False)
    assert inv.sources.source == "build" and inv.sources.repository.startswith("https://github.com/")
    assert dict(inv.sources.branches) == {"app": "mello-track", "worker": "verda-track"}
    assert [inv.sources.branch_for(h) for h in inv.hosts] == ["mello-track", "verda-track"]
