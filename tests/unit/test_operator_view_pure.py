"""The operator's view without a lab: log line handling (prefix, masking, grep, colour), service
selection, the exact remote command lines of logs and exec, the readable status and its schema."""
from __future__ import annotations

import io
import json
import re
import shlex
import threading
from datetime import datetime, timezone
from pathlib import Path

import jsonschema
import pytest

from comfyume_fab.checks.autostop import view as autostop_view
from comfyume_fab.checks.result import CheckResult
from comfyume_fab.errors import ConfigError, ExitCode
from comfyume_fab.ops.exec import exec_command
from comfyume_fab.ops.logs import LineSink, Masker, logs_command, select, service_of
from comfyume_fab.ops.status import SCHEMA_VERSION, StatusReport
from comfyume_fab.plan.planner import make_plan
from comfyume_fab.present.logs import LogLines
from comfyume_fab.present.reports import age, status_text
from comfyume_fab.present.style import host_colour, use_colour
from tests.support import ENV, inventory_text, load

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "docs" / "status.schema.json").read_text())


def sink(services=("redis", "user001"), grep=None, colour=False, secrets=()):
    out = io.StringIO()
    return LineSink("mello", list(services), out, threading.Lock(), Masker(list(secrets)),
                    re.compile(grep) if grep else None, LogLines(colour)), out


def test_lines_are_prefixed_host_slash_service_and_split_across_chunks():
    s, out = sink()
    s.feed(b"\x1b[2Kredis-1    | Ready to accept\r\nuser001-1  | GET /")
    assert out.getvalue() == "mello/redis Ready to accept\n"
    s.feed(b" 200\r\n")
    s.flush()
    assert out.getvalue().splitlines() == ["mello/redis Ready to accept", "mello/user001 GET / 200"]


def test_a_secret_anywhere_in_a_line_is_replaced_by_stars():
    s, out = sink(secrets=["s3cret-redis-pw", "s3cret"])
    s.feed(b"redis-1  | auth with s3cret-redis-pw and s3cret ok\n")
    assert out.getvalue() == "mello/redis auth with *** and *** ok\n"


def test_grep_filters_on_the_text_not_the_prefix():
    s, out = sink(grep="GET")
    s.feed(b"redis-1  | nothing\nuser001-1  | GET /x\nredis-1  | mello/GET is the prefix only\n")
    assert out.getvalue().splitlines() == ["mello/user001 GET /x", "mello/redis mello/GET is the prefix only"]


def test_colour_is_stable_per_host_and_absent_when_piped_or_no_color(monkeypatch):
    assert host_colour("verda") == host_colour("verda")
    s, out = sink(colour=True)
    s.feed(b"redis-1 | x\n")
    assert out.getvalue() == f"\x1b[{host_colour('mello')}mmello/redis\x1b[0m x\n"

    class Tty(io.StringIO):
        def isatty(self):
            return True
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert use_colour(Tty()) and not use_colour(io.StringIO())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not use_colour(Tty())


def test_service_of_reads_both_compose_prefix_styles():
    services = ["queue-manager", "user001", "redis"]
    assert service_of("queue-manager-1", services) == "queue-manager"
    assert service_of("comfyume-user001-1", services) == "user001"
    assert service_of("comfyume_redis_1", services) == "redis"


def test_select_expands_users_and_refuses_an_unknown_service_or_host(tmp_path):
    inv = load(tmp_path, inventory_text("dual-server", "two", num_users=3))
    plan = make_plan(inv)
    got = select(inv, plan.hosts, (), ["users", "worker"])
    assert [(hp.name, svcs) for hp, svcs in got] == [("mello", ["user001", "user002", "user003"]), ("verda", ["worker"])]
    assert [hp.name for hp, _ in select(inv, plan.hosts, ["verda"], ())] == ["verda"]
    with pytest.raises(ConfigError, match="unknown service 'wroker'"):
        select(inv, plan.hosts, (), ["wroker"])
    with pytest.raises(ConfigError, match="unknown host 'vreda'.*did you mean 'verda'"):
        select(inv, plan.hosts, ["vreda"], ())
    with pytest.raises(ConfigError, match="none of worker runs on mello"):
        select(inv, plan.hosts, ["mello"], ["worker"])


def test_logs_command_execs_compose_logs_with_the_options_quoted(tmp_path):
    hp = make_plan(load(tmp_path, inventory_text("dual-server", "two"))).hosts[0]
    line = logs_command(hp.compose, ["redis", "user001"], follow=True, since="10m", tail=5)
    head, _, rest = line.partition(" && exec ")
    argv = shlex.split(rest)
    assert head.startswith("cd ") and argv[:2] == ["docker", "compose"]
    assert argv[argv.index("logs"):] == ["logs", "--no-color", "--follow", "--since", "10m", "--tail", "5",
                                         "redis", "user001"]


def test_exec_argv_is_quoted_once_and_survives_the_remote_shell(tmp_path):
    hp = make_plan(load(tmp_path, inventory_text("dual-server", "two"))).hosts[0]
    argv = ["sh", "-c", 'echo "$0"', "a b;c"]
    line = exec_command(hp.compose, "redis", argv)
    words = shlex.split(line.partition(" && ")[2])
    assert words[words.index("exec"):] == ["exec", "-T", "redis", *argv]
    assert "-T" not in shlex.split(exec_command(hp.compose, "redis", ["sh"], interactive=True))


def test_age_reads_dockers_nanosecond_times():
    now = datetime(2026, 11, 30, 12, 0, 0, tzinfo=timezone.utc)
    assert age("2026-11-30T11:59:20.123456789Z", now) == "39s"  # 39.88 s, truncated
    assert age("2026-11-30T09:00:00Z", now) == "3h"
    assert age("2026-11-27T11:59:59.5Z", now) == "3d"
    assert age(None, now) == "-" and age("garbage", now) == "-"


def _service(name, ok=True, state="running"):
    return {"service": name, "state": state, "health": "healthy" if ok else "unhealthy", "restarts": 0, "ok": ok,
            "container": "0123456789ab", "crash_loop": False, "image": "img:1", "started_at": "2026-11-30T11:00:00Z"}


def _report(users_ok=20, unreachable=False):
    services = [_service("redis")] + [_service(f"user{i:03d}", ok=i <= users_ok) for i in range(1, 21)]
    hosts = {"mello": {"reachable": True, "error": None, "ssh_ms": 12.0, "roles": ["app"], "engine": "26.1",
                       "compose": "2.26.1", "services": services,
                       "deployed": {"revision": "abc", "config_hash": "h", "at": None, "by": None, "in_sync": True},
                       "gpu": {"present": False, "gpus": [], "error": ""}, "stopped_on_purpose": None,
                       "autostop": None},
             "verda": ({"reachable": False, "error": "cannot reach", "ssh_ms": None, "roles": ["worker"],
                        "engine": None, "compose": None, "services": [], "deployed": None, "gpu": None,
                        "stopped_on_purpose": None, "autostop": autostop_view(
                            {"host": "verda", "instance_id": "i-1", "state": "deleted", "idle_s": 60,
                             "deleted_at": "2026-12-03T13:00:00Z", "fires_for": "idle"})}
                       if unreachable else
                       {"reachable": True, "error": None, "ssh_ms": 9.0, "roles": ["worker"], "engine": "26.1",
                        "compose": "2.26.1", "services": [_service("worker")],
                        "deployed": {"revision": "abc", "config_hash": "h", "at": "t", "by": "me", "in_sync": True},
                        "gpu": {"present": True, "error": "", "gpus": [
                            {"index": 0, "name": "H200", "memory_used_mib": 1, "memory_total_mib": 2,
                             "utilization_pct": 3}]},
                        "stopped_on_purpose": {"by": "me", "at": "t", "task": "stop-verda", "stopped_for_s": 60,
                                               "instance_running": True},
                        "autostop": autostop_view(None)})}
    data = {"schema_version": SCHEMA_VERSION, "ok": users_ok == 20 and not unreachable, "mode": "dual-server",
            "inventory": "hosts.yaml", "revision": "abc", "config_hash": "h", "hosts": hosts,
            "queue": {} if unreachable else {"depth": 0, "running": 0, "workers": {"verda": {"heartbeat_age_s": 1,
                                                                                              "ok": True}}}}
    checks = [CheckResult("services-mello", users_ok == 20, "detail", host="mello"),
              CheckResult("queue", True, "0 pending", data={"depth": 0})]
    return StatusReport(data, checks, ExitCode.OK)


def test_status_text_collapses_the_frontends_and_expands_only_the_failing_ones():
    text = status_text(_report(users_ok=20))
    assert re.search(r"^  users +20/20 healthy", text, re.M)
    assert "user007" not in text.split("checks:")[0].replace("user001..user020", "")
    text = status_text(_report(users_ok=18))
    table = text.split("checks:")[0]
    assert "18/20 healthy" in table
    assert re.search(r"^  user019 +running +unhealthy", table, re.M) and re.search(r"^  user020 ", table, re.M)
    assert not re.search(r"^  user018 ", table, re.M)
    assert "\x1b[" not in text and "\x1b[" in status_text(_report(), colour=True)


def test_status_text_says_each_rented_hosts_autostop_also_when_the_host_is_gone():
    text = status_text(_report(unreachable=True)).split("checks:")[0]
    assert re.search(r"^verda: UNREACHABLE  cannot reach\n  autostop: deleted the instance at \S+ \(idle 1m\)$",
                     text, re.M)
    assert "  autostop: not installed (start-all installs it)" in status_text(_report())
    rep = _report(unreachable=True)
    rep.data["hosts"]["verda"]["deleted_on_purpose"] = {"at": "2026-12-03T13:00:00Z", "by": "autostop@mello",
                                                        "how": "autostop after idle 1m", "instance_id": "i-1",
                                                        "hostname": "w", "volumes": []}
    assert re.search(r"^verda \(worker\)  DELETED ON PURPOSE \(autostop after idle 1m by autostop@mello at "
                     r"2026-12-03T13:00:00Z\).*\n  autostop: deleted the instance at ", status_text(rep), re.M)


def test_checks_list_failures_first():
    text = status_text(_report(users_ok=18))
    checks = text.split("checks:")[1].strip().splitlines()
    assert "FAIL" in checks[0] and "services-mello" in checks[0]


@pytest.mark.parametrize("unreachable", [False, True])
def test_the_schema_accepts_both_host_shapes_and_rejects_a_missing_key(unreachable):
    data = json.loads(_report(unreachable=unreachable).to_json())
    jsonschema.validate(data, SCHEMA)
    del data["hosts"]["mello"]["engine"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, SCHEMA)


def test_secrets_never_reach_the_masker_output(tmp_path):
    inv = load(tmp_path, inventory_text("dual-server", "two"))
    mask = Masker([s.reveal() for s in inv.secrets.values()])
    line = f"x {ENV['REDIS_PASSWORD']} y {ENV['ADMIN_PASSWORD']}"
    assert mask(line) == "x *** y ***"
