"""Autostop's files for the app host (plan/autostop.py), what real Compose v2 makes of its service,
install/remove rerun without changes (ops/autostop.py over a recording host), and the sentence
status prints (checks/autostop.py)."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time

import pytest

from comfyume_fab.checks import autostop as view
from comfyume_fab.host.agents import autostop as agent
from comfyume_fab.host.facts import autostop as facts
from comfyume_fab.ops import autostop as ops
from comfyume_fab.plan import autostop as plan
from tests.support import ENV, load_here as load

CLOUD_ENV = {**ENV, "VERDA_CLIENT_ID": "client-id-1", "VERDA_CLIENT_SECRET": "client-secret-xyz",
             "TAILSCALE_AUTHKEY": "tskey-auth-x"}
RENTED = """\
mode: dual-server
hosts:
  mello:
    address: mello
    tailscale_ip: 100.99.216.71
    roles: [app]
  verda:
    roles: [worker]
    gpu: required
    provider:
      instance_type: 1H100.80S.30V
      api: http://100.64.0.254:8088/v1
    autostop: {autostop}
"""
RECORD = {"id": "inst-42", "hostname": "comfyume-worker-7f3a", "created_at": "2026-12-03T12:00:00Z"}


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def inventory(autostop="{idle: 30m, max_lifetime: 12h}", env=CLOUD_ENV):
    return load(RENTED.format(autostop=autostop), env)


def test_the_files_for_the_app_host():
    inv = inventory()
    files = plan.render(inv, inv.host("verda"), RECORD, by="autostop@mello", revision="abc", config_hash="c1")
    assert files.project == "comfyume-autostop-verda"
    assert sorted(files.files) == ["compose.yml", "conf/autostop.py", "conf/config.json", "conf/verda.env"]
    cfg = json.loads(files.files["conf/config.json"])
    assert cfg["queue_url"] == "http://100.99.216.71:3000"  # where start-all published it, as the job probe
    assert (cfg["instance_id"], cfg["idle_s"], cfg["max_lifetime_s"], cfg["check_every_s"]) == ("inst-42", 1800,
                                                                                                43200, 60)
    assert (cfg["api_url"], cfg["created_at"], cfg["by"]) == ("http://100.64.0.254:8088/v1", RECORD["created_at"],
                                                              "autostop@mello")
    assert files.files["conf/verda.env"] == b"VERDA_CLIENT_ID=client-id-1\nVERDA_CLIENT_SECRET=client-secret-xyz\n"
    assert files.files["conf/autostop.py"] == open(agent.__file__, "rb").read()
    for path in ("compose.yml", "conf/config.json", "conf/autostop.py"):
        assert b"client-secret-xyz" not in files.files[path]
    assert files.secret == "conf/verda.env"


@pytest.mark.parametrize("idle, every", [("1m", 15), ("2m", 30), ("30m", 60), ("12h", 60)])
def test_the_queue_is_read_a_quarter_of_idle_apart_at_most_a_minute(idle, every):
    inv = inventory(f"{{idle: {idle}}}")
    assert plan.check_every(inv.host("verda").autostop) == every


def test_real_compose_reads_the_service_as_meant(tmp_path):
    docker = shutil.which("docker")
    if not docker or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.fail("`docker compose` (Compose v2) is missing: run scripts/install-system.sh as root")
    inv = inventory()
    files = plan.render(inv, inv.host("verda"), RECORD, by="autostop@mello")
    folder = tmp_path / "comfyume" / "autostop" / "verda"
    (folder / "conf").mkdir(parents=True)
    (folder / "compose.yml").write_bytes(files.files["compose.yml"])
    (folder / ".env").write_text("AUTOSTOP_USER=1000:1000\n")
    out = subprocess.run([docker, "compose", "-p", files.project, "-f", "compose.yml", "config", "--format", "json"],
                         cwd=folder, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    svc = json.loads(out.stdout)["services"]["autostop"]
    assert (svc["image"], svc["pull_policy"], svc["restart"], svc["network_mode"], svc["user"]) == \
        (inv.images.queue_manager, "never", "unless-stopped", "host", "1000:1000")
    assert svc["entrypoint"][:3] == ["python3", "-u", "/opt/autostop/conf/autostop.py"]
    mounts = {v["target"]: (v["source"], v.get("read_only", False)) for v in svc["volumes"]}
    assert mounts["/opt/autostop/conf"] == (str(folder / "conf"), True)
    assert mounts["/opt/autostop/state"] == (str(folder / "state"), False)
    assert mounts["/opt/autostop/audit.log"] == (str(tmp_path / "comfyume" / "audit.log"), False)
    assert "environment" not in svc or not any("SECRET" in k for k in svc["environment"])
    # without the uid the tool writes, Compose refuses instead of running as the image's user
    (folder / ".env").unlink()
    refused = subprocess.run([docker, "compose", "-p", files.project, "-f", "compose.yml", "config"], cwd=folder,
                             capture_output=True, text=True)
    assert refused.returncode != 0 and "AUTOSTOP_USER" in refused.stderr


class Res:
    def __init__(self, code=0, stdout=""):
        self.exit_code, self.stdout, self.stderr = code, stdout, ""

    @property
    def ok(self):
        return self.exit_code == 0

    def tail(self):
        return self.stdout[-200:]


class RecordingHost:
    """The app host as install/remove see it: uploads kept in memory, the container's state
    following `up` and `rm -f`; every command recorded."""

    def __init__(self):
        self.files, self.modes, self.commands, self.running = {}, {}, [], False

    def run(self, command, **_):
        self.commands.append(command)
        if "sha256sum" in command:
            lines = [f"{hashlib.sha256(data).hexdigest()}  {path.split('autostop/verda/', 1)[1]}"
                     for path, data in self.files.items()]
            return Res(0, "\n".join(lines + [f"@container {'running' if self.running else ''}"]))
        if "compose" in command and " up " in command:
            self.running = True
        if "docker rm -f" in command or "rm -rf" in command:
            self.running, self.files = False, {}
        return Res()

    def put(self, path, data, mode=0o600):
        self.files[path], self.modes[path] = data, mode


class FakeSession(dict):
    pass


def test_install_then_rerun_changes_nothing_then_a_change_uploads_only_it():
    inv = inventory()
    host = RecordingHost()
    session = FakeSession(mello=host)
    said = []
    first = ops.install(inv, session, RECORD, said.append, host="verda")
    assert first["started"] and sorted(first["changed"]) == ["compose.yml", "conf/autostop.py", "conf/config.json",
                                                           "conf/verda.env"]
    assert all(mode == 0o600 for mode in host.modes.values())
    assert list(host.files)[-1].endswith("compose.yml")  # the service last, once what it reads is there
    assert any("compose -p comfyume-autostop-verda -f compose.yml up -d" in c for c in host.commands)
    assert "client-secret-xyz" not in " ".join(host.commands) + " ".join(said)
    assert "installed" in said[-1] and "idle 30m" in said[-1] and "the credentials" in said[-1]
    host.commands.clear()
    again = ops.install(inv, session, RECORD, said.append, host="verda")
    assert again == {"host": "verda", "changed": [], "started": False, "removed": False}
    assert len(host.commands) == 1 and "unchanged" in said[-1]  # one read, nothing written, nothing started
    later = inventory("{idle: 45m}")
    changed = ops.install(later, session, RECORD, said.append, host="verda")
    assert changed["changed"] == ["conf/config.json"] and "updated" in said[-1]


def test_a_new_instance_or_new_credentials_are_uploaded():
    inv = inventory()
    host = RecordingHost()
    session = FakeSession(mello=host)
    ops.install(inv, session, RECORD, lambda _m: None, host="verda")
    assert ops.install(inv, session, {**RECORD, "id": "inst-43"}, lambda _m: None)["changed"] == ["conf/config.json"]
    rotated = inventory(env={**CLOUD_ENV, "VERDA_CLIENT_SECRET": "rotated"})
    said = []
    assert ops.install(rotated, session, {**RECORD, "id": "inst-43"}, said.append)["changed"] == ["conf/verda.env"]
    assert "rotated" not in said[-1] and "the credentials" in said[-1]


def test_remove_takes_it_away_and_is_idempotent():
    inv = inventory()
    host = RecordingHost()
    session = FakeSession(mello=host)
    ops.install(inv, session, RECORD, lambda _m: None, host="verda")
    said = []
    assert ops.remove(inv, session, "verda", said.append) is True
    assert any("rm -rf -- comfyume/autostop/verda" in c for c in host.commands)
    assert said == ["verda: autostop removed from mello"]
    assert ops.remove(inv, session, "verda", said.append) is False and len(said) == 1


def test_the_state_files_read_back_by_host():
    one = json.dumps({"host": "verda", "state": "watching"})
    states = facts.parse_states(f"{one}\nnot json\n{json.dumps({'host': 'verda-2', 'state': 'deleted'})}\n")
    assert {k: v["state"] for k, v in states.items()} == {"verda": "watching", "verda-2": "deleted"}
    assert "autostop/*/state/state.json" in facts.state_command("comfyume")


NOW = time.mktime((2026, 12, 3, 13, 20, 0, 0, 0, -1))  # local time, as status shows it


def state(**over):
    base = {"host": "verda", "instance_id": "inst-42", "state": "watching", "reason": "idle", "idle_s": 1800,
            "max_lifetime_s": 43200, "check_every_s": 60, "created_at": agent.iso(NOW - 3600),
            "last_busy": agent.iso(NOW - 600), "last_check": agent.iso(NOW - 20),
            "fires_at": agent.iso(NOW + 1200), "fires_for": "idle", "pending": 0, "running": 0}
    base.update(over)
    return base


def test_status_says_when_it_would_fire():
    block = view.view(state(), now=NOW)
    assert block["text"] == "watching, idle since 13:10, deletes at 13:40 (idle 30m)"
    assert view.check("verda", block).ok and not view.check("verda", block).warning


def test_status_sentences_for_busy_deleted_error_and_not_running():
    busy = view.view(state(reason="busy", running=1, pending=2, last_busy=agent.iso(NOW - 20)), now=NOW)
    assert busy["text"] == ("watching, busy (1 running, 2 pending) at 13:19; deletes 30m after the queue empties "
                            "(max lifetime at 00:20)")
    gone = view.view(state(state="deleted", deleted_at=agent.iso(NOW - 60)), now=NOW)
    assert gone["text"] == "deleted the instance at 13:19 (idle 30m)" and gone["state"] == "deleted"
    err = view.view(state(state="error", error_since=agent.iso(NOW - 300), reason="the queue manager did not "
                          "answer GET /health: timed out"), now=NOW)
    assert err["text"].startswith("error since 13:15: the queue manager did not answer GET /health: timed out; "
                                  "deletes at 13:40")
    assert view.check("verda", err).warning
    dead = view.view(state(last_check=agent.iso(NOW - 900)), now=NOW)
    assert dead["state"] == "stale" and dead["text"].startswith("not running? its last check was at 13:05")
    assert view.check("verda", dead).warning
    none = view.view(None, now=NOW)
    assert none["state"] == "not-installed" and view.check("verda", none).warning


def test_a_host_found_gone_which_its_autostop_deleted_is_said_to_be_deleted_by_autostop():
    from comfyume_fab.checks.result import CheckResult
    from comfyume_fab.ops.status import _deleted_by_autostop
    st = state(state="deleted", deleted_at="2026-12-03T13:19:00Z", fires_for="idle")
    block = {"autostop": view.view(st, now=NOW),
             "deleted_on_purpose": {"at": None, "by": "the provider (autostop or the console)",
                                    "how": "found discontinued at the provider", "instance_id": "inst-42",
                                    "hostname": "comfyume-worker-7f3a", "volumes": ["models-1"]}}
    checks = [CheckResult("deleted-verda", False, "deleted on purpose (found ...)", host="verda")]
    _deleted_by_autostop("verda", block, st, "mello", checks)
    assert block["deleted_on_purpose"] | {} == {"at": "2026-12-03T13:19:00Z", "by": "autostop@mello",
                                                "how": "autostop after idle 30m", "instance_id": "inst-42",
                                                "hostname": "comfyume-worker-7f3a", "volumes": ["models-1"]}
    assert checks[0].detail.startswith("deleted on purpose (autostop after idle 30m by autostop@mello at "
                                       "2026-12-03T13:19:00Z); instance comfyume-worker-7f3a is gone")
    # another instance, or one this tool deleted and recorded: left as recorded
    other = {"autostop": block["autostop"], "deleted_on_purpose": {"by": "me@laptop", "instance_id": "inst-42"}}
    _deleted_by_autostop("verda", other, st, "mello", checks)
    assert other["deleted_on_purpose"]["by"] == "me@laptop"
