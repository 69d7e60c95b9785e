"""The first day at the keyboard (issue 23, items 2, 4 and 9): the installed `comfyume-fab` offers
only its own options, with its examples and exit codes; Invoke's core options that do not apply
(`--dry` ran a REAL start-all, `-d` meant --debug before the task and --down after it) are refused
before anything runs, by `comfyume-fab` and by `invoke` in the checkout; a wrong option or task
near a real one gets "did you mean ...?"; per-task help names each value and ships what it points
to. Both real binaries run as subprocesses; the inventory's hosts are local TCP listeners of the
test's own that count connections, which proves that nothing was run."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from comfyume_fab.tasks import SHORT_FLAGS
from tests.support import SECRETS

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PROGRAMS = {"comfyume-fab": [str(BIN / "comfyume-fab")], "invoke": [str(BIN / "invoke"), "--search-root", str(REPO)]}
FOREIGN = ("--dry", "--debug", "--warn-only", "--config", "--prompt-for-sudo-password", "--write-pyc", "--echo",
           "--pty", "--hide", "--command-timeout")


def run(prog: str, cwd: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os
    full = {k: v for k, v in os.environ.items() if k not in ("COMFYUME_HOSTS", *SECRETS)}
    full.update(env or {})
    return subprocess.run([*PROGRAMS[prog], *args], cwd=cwd, capture_output=True, text=True, timeout=120, env=full)


def one_sentence(res: subprocess.CompletedProcess, prefix: str = "error: ") -> str:
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    lines = [ln for ln in res.stderr.splitlines() if not ln.startswith("invoke.")]  # `invoke -d`: Invoke's log
    assert len(lines) == 1 and lines[0].startswith(prefix) and "Traceback" not in res.stderr, res.stderr
    assert res.stdout == ""
    return lines[0]


# ---- item 2: the installed command's help and options ----------------------------------------------

def test_the_installed_help_shows_its_own_options_examples_and_exit_codes(tmp_path):
    res = run("comfyume-fab", tmp_path, "--help")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    for option in FOREIGN:
        assert not re.search(rf"{option}\b(?!-)", out), f"{option} is Invoke's, offered by comfyume-fab --help"
    assert not re.search(r"^\s+-[RdwfepT][ ,]", out, re.M), out  # nor their short flags
    for own in ("--help", "--list", "--version"):
        assert own in out
    assert "Examples:" in out and "comfyume-fab start-all --dry-run" in out and "comfyume-fab lock" in out
    from comfyume_fab.errors import EXIT_MEANINGS
    assert "Exit codes:" in out, out
    codes = out.split("Exit codes:", 1)[1]
    for code in EXIT_MEANINGS:
        assert re.search(rf"^\s+{int(code)}\s+\S", codes, re.M), (code, codes)
    assert "another deploy holds the lock" in codes


def test_the_readme_shows_the_exit_code_table_that_help_prints():
    """One source: errors.EXIT_MEANINGS; the README's table must say the same, code for code."""
    from comfyume_fab.errors import EXIT_MEANINGS
    readme = (REPO / "README.md").read_text()
    table = readme.split("### Exit codes", 1)[1].split("\n\n", 2)[1]
    rows = {int(m.group(1)): m.group(2) for m in re.finditer(r"^\| (\d+) \| (.*) \|$", table, re.M)}
    assert rows == {int(code): text for code, text in EXIT_MEANINGS.items()}


def test_short_flags_mean_one_thing_before_and_after_the_task_name(tmp_path):
    """The core options' short flags differ from every task's (SHORT_FLAGS), and -h is help."""
    out = run("comfyume-fab", tmp_path, "--help").stdout.split("Subcommands:", 1)[0]
    core = set(re.findall(r"^\s+-(\w)[ ,]", out, re.M))
    assert core == {"h", "l", "V"}, core
    assert not core & set(SHORT_FLAGS.values()), core & set(SHORT_FLAGS.values())
    assert len(set(SHORT_FLAGS.values())) == len(SHORT_FLAGS)


@pytest.mark.parametrize("prog", PROGRAMS)
@pytest.mark.parametrize("args, says", [
    (["--dry", "start-all"], "--dry-run"),
    (["-R", "start-all"], "--dry-run"),
    (["-d", "stop-verda"], "`{prog} stop-verda -d` is --down"),
    (["-w", "start-all"], "`{prog} start-all -w` is --wait-lock"),
    (["--debug", "status"], "-v/--verbose"),
    (["--warn-only", "stop-all"], "options go after the task name"),
])
def test_invokes_core_options_are_refused_and_never_run_a_task(place, prog, args, says):  # noqa: F811
    cwd, listener = place
    line = one_sentence(run(prog, cwd, *args, env=SECRETS))
    assert f"{args[0]} is Invoke's" in line and "(nothing was run)" in line, line
    assert says.format(prog=prog) in line, line
    assert listener.accepted == 0  # no host was even connected to


@pytest.mark.parametrize("prog", PROGRAMS)
def test_a_core_option_after_the_task_name_is_refused_too(place, prog):  # noqa: F811
    cwd, listener = place
    line = one_sentence(run(prog, cwd, "start-all", "--dry", env=SECRETS))
    assert "--dry-run" in line, line
    assert listener.accepted == 0


# ---- item 4: did you mean ----------------------------------------------------------------------------

@pytest.mark.parametrize("prog", PROGRAMS)
def test_a_host_name_given_to_hosts_points_to_host(place, prog):  # noqa: F811
    cwd, listener = place
    line = one_sentence(run(prog, cwd, "logs", "--hosts", "verda"), prefix="")
    assert line == ("--hosts verda: verda is a host name, not an inventory file: did you mean "
                    "`--host verda`? (-H/--hosts names the inventory file)"), line
    line = one_sentence(run(prog, cwd, "status", "-H", "mello"), prefix="")  # status has no --host: no such advice
    assert "mello is a host name, not an inventory file" in line and "--host mello" not in line, line
    res = run(prog, cwd, "logs", "--hosts", "nosuch")  # not a host either: the plain missing-file sentence
    assert res.returncode == 2 and "did you mean" not in res.stderr and "does not exist" in res.stderr
    assert listener.accepted == 0


@pytest.mark.parametrize("prog", PROGRAMS)
@pytest.mark.parametrize("args, mean", [
    (["logs", "--follw"], "--follow is not|did you mean --follow?"),
    (["logs", "--hots", "x"], "did you mean --hosts?"),
    (["status", "--no-prob"], "did you mean --no-probe?"),
    (["stauts"], "did you mean `{prog} status`?"),
    (["stop-verda", "--when-idel"], "did you mean --when-idle?"),
])
def test_a_mistyped_option_or_task_gets_did_you_mean(tmp_path, prog, args, mean):
    line = one_sentence(run(prog, tmp_path, *args))
    assert re.search(mean.format(prog=prog).replace("?", r"\?").replace("`", "`"), line), line
    assert f"`{prog} --help TASK`" in line


# ---- item 9: per-task help, the lab's tasks, plan's placeholder warning, the revision -------------------

@pytest.mark.parametrize("prog", PROGRAMS)
def test_task_help_names_each_value_and_has_no_docstring_heading(tmp_path, prog):
    res = run(prog, tmp_path, "--help", "status")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "Docstring:" not in out and "STRING" not in out, out
    assert "--interval=SECONDS" in out and "--probe-every=SECONDS" in out and "--hosts=PATH" in out
    assert "status --schema" in out and "docs/status.schema.json" not in out
    logs = run(prog, tmp_path, "--help", "logs").stdout
    assert "--tail=N" in logs and "--since=TIME" in logs and "--host=HOST" in logs


@pytest.mark.parametrize("prog", PROGRAMS)
def test_the_lab_tasks_are_marked_as_the_rehearsal_labs(tmp_path, prog):
    listed = run(prog, tmp_path, "--list").stdout
    for task in ("lab.up", "lab.down"):
        line = next(ln for ln in listed.splitlines() if ln.strip().startswith(task + " "))
        assert "Rehearsal lab" in line and "root" in listed.split(task, 1)[1][:200], listed
    assert "Rehearsal lab" in run(prog, tmp_path, "--help", "lab.up").stdout


def test_plan_warns_about_the_examples_placeholder_tailscale_ip(place):  # noqa: F811
    from comfyume_fab.plan.planner import EXAMPLE_TAILSCALE_IPS
    cwd, listener = place
    example = yaml.safe_load((REPO / "hosts.yaml").read_text())
    assert sorted(EXAMPLE_TAILSCALE_IPS) == sorted(h["tailscale_ip"] for h in example["hosts"].values())
    out = run("comfyume-fab", cwd, "plan").stdout
    for name, host in example["hosts"].items():
        assert (f"WARNING: hosts.{name}.tailscale_ip {host['tailscale_ip']} is the example hosts.yaml's "
                f"placeholder value: replace it with what `tailscale ip -4` prints on {name}") in out, out
    data = yaml.safe_load((cwd / "hosts.yaml").read_text())
    data["hosts"]["mello"]["tailscale_ip"] = "192.0.2.7"  # a documentation-range address
    data["hosts"]["verda"]["tailscale_ip"] = "100.101.7.9"  # a real-looking one: no warning
    (cwd / "hosts.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    out = run("comfyume-fab", cwd, "plan").stdout
    assert "hosts.mello.tailscale_ip 192.0.2.7 is a documentation-range address (a placeholder)" in out, out
    assert "hosts.verda.tailscale_ip" not in out
    assert listener.accepted == 0


def test_status_shows_this_tools_revision_not_the_current_folders(tmp_path):
    """Run from another git repository, status names the tool's own checkout's revision."""
    other = tmp_path / "other-repo"
    other.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(other)]
    subprocess.run(git[:-2] + ["init", "-q", str(other)], check=True)
    subprocess.run(git + ["commit", "-q", "--allow-empty", "-m", "x"], check=True)
    theirs = subprocess.run(git + ["rev-parse", "--short=12", "HEAD"], capture_output=True, text=True).stdout.strip()
    ours = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    data = yaml.safe_load((REPO / "hosts.yaml").read_text())
    for i, host in enumerate(data["hosts"].values()):  # closed local ports: status only reports them down
        host["address"], host["port"] = "127.0.0.1", 9 + i
    data.setdefault("timeouts", {})["connect"] = 2
    (other / "hosts.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    res = run("comfyume-fab", other, "status", env=SECRETS)
    assert res.returncode == 3, res.stderr
    head = res.stdout.splitlines()[0]
    assert re.search(rf"rev {ours}(-dirty)?$", head) and theirs not in head, head


@pytest.mark.parametrize("prog", PROGRAMS)
def test_a_whole_number_option_given_a_word_is_one_sentence(tmp_path, prog):
    line = one_sentence(run(prog, tmp_path, "lab.up", "--workers", "x"))  # Invoke itself: a traceback
    assert "must be a whole number (got 'x')" in line, line
