"""The deploy lock's command lines run for real in a local bash (a folder in tmp stands for the
app host's remote folder), the holder's rendering, and control characters from files and hosts
escaped before they reach a terminal (issue 11, items 3 and 4). No host, no lab."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from comfyume_fab.checks.result import CheckResult
from comfyume_fab.errors import ConfigError, UnhealthyError, clean
from comfyume_fab.host.actions import lock as lockact
from comfyume_fab.host.facts import lock as lockfacts
from comfyume_fab.inventory import load_inventory
from comfyume_fab.ops.lock import describe

ESC = "\x1b[2J\x1b]0;pwned\x07"
SHOWN = "\\x1b[2J\\x1b]0;pwned\\x07"


def sh(command: str, cwd: Path) -> tuple[int, str]:
    res = subprocess.run(["bash", "-c", command], cwd=cwd, capture_output=True, text=True, timeout=10)
    return res.returncode, res.stdout


def test_only_the_holder_of_the_token_releases_the_lock(tmp_path):
    lock = tmp_path / "comfyume" / ".deploy-lock"
    assert sh(lockact.lock_acquire("comfyume", "me task=start-all", "token-a"), tmp_path) == (0, "acquired\n")
    assert (lock / "token").read_text() == "token-a\n" and (lock / "info").read_text() == "me task=start-all\n"
    assert oct(lock.stat().st_mode & 0o777) == "0o700"
    code, out = sh(lockact.lock_acquire("comfyume", "you task=stop-all", "token-b"), tmp_path)
    assert code == 3 and lockfacts.parse_lock(out) == lockfacts.LockSeen(0, "me task=start-all")
    code, out = sh(lockact.lock_release("comfyume", "token-b"), tmp_path)  # not its lock: left in place
    assert code == 5 and out.startswith("other\n") and lockfacts.parse_lock(out).holder == "me task=start-all"
    assert lock.is_dir()
    assert sh(lockact.lock_release("comfyume", "token-a"), tmp_path) == (0, "released\n")
    assert not lock.exists()
    assert sh(lockact.lock_release("comfyume", "token-a"), tmp_path) == (4, "gone\n")
    assert sh(lockfacts.lock_read("comfyume"), tmp_path) == (0, "absent\n")


def test_a_lock_without_info_has_an_age_and_can_be_broken(tmp_path):
    lock = tmp_path / "comfyume" / ".deploy-lock"
    lock.mkdir(parents=True)
    old = time.time() - 900
    os.utime(lock, (old, old))
    code, out = sh(lockfacts.lock_read("comfyume"), tmp_path)
    seen = lockfacts.parse_lock(out)
    assert code == 0 and out.startswith("present\n") and seen.holder == "" and 899 <= seen.age <= 905
    assert describe(seen, 600).startswith("an unknown holder (the lock has no info file")
    assert "STALE (older than timeouts.lock_wait 600 s" in describe(seen, 600)
    assert "STALE" not in describe(seen, 1000)
    code, out = sh(lockact.lock_acquire("comfyume", "me", "t"), tmp_path)
    assert code == 3 and lockfacts.parse_lock(out).holder == ""
    assert sh(lockact.lock_break("comfyume"), tmp_path) == (0, "removed\n")
    assert not lock.exists()


def test_hostile_values_are_quoted_in_the_lock_commands(tmp_path):
    info = "x'; touch pwned; echo '"
    assert sh(lockact.lock_acquire("comfyume", info, "$(touch pwned2)"), tmp_path)[0] == 0
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "pwned2").exists()
    assert (tmp_path / "comfyume" / ".deploy-lock" / "info").read_text() == info + "\n"
    assert sh(lockact.lock_release("comfyume", "$(touch pwned2)"), tmp_path) == (0, "released\n")


def test_clean_escapes_every_control_character_and_keeps_text():
    assert clean("plain text, ünïcode\tand\nlines") == "plain text, ünïcode\tand\nlines"
    assert clean(ESC) == SHOWN
    assert clean("a\rb\x00c\x7fd\x9be\u202ef") == "a\\x0db\\x00c\\x7fd\\x9be\\u202ef"
    assert clean(42) == "42"


def test_a_hosts_log_line_in_an_error_is_escaped():
    err = UnhealthyError(f"service worker is crash-looping; last log lines: boom{ESC}", host="verda",
                         step="wait healthy", hint=f"see {ESC}")
    assert "\x1b" not in err.sentence() and "\x07" not in err.sentence()
    assert err.sentence() == (f"host verda, step wait healthy: service worker is crash-looping; last log lines: "
                              f"boom{SHOWN} (see {SHOWN})")
    assert ConfigError([f"hosts.yaml:3 key{ESC}"]).sentence() == f"hosts.yaml:3 key{SHOWN}"
    check = CheckResult("redis-from-verda", False, f"refused: {ESC}")
    assert check.detail == f"refused: {SHOWN}" and check.as_json()["detail"] == f"refused: {SHOWN}"


def test_an_escape_sequence_in_a_key_name_is_shown_escaped(tmp_path):
    text = (Path(__file__).resolve().parents[2] / "hosts.yaml").read_text()
    (tmp_path / "hosts.yaml").write_text('"\\e[2J\\e]0;pwned\\a": 1\n' + text)  # YAML's own escapes
    with pytest.raises(ConfigError) as info:
        load_inventory(str(tmp_path / "hosts.yaml"), environ={"REDIS_PASSWORD": "x", "ADMIN_PASSWORD": "y"})
    shown = info.value.sentence()
    assert SHOWN in shown and "\x1b" not in shown and "\x07" not in shown
    # and through the real CLI: nothing raw on the terminal
    res = subprocess.run([str(Path(sys.executable).with_name("invoke")), "--search-root",
                          str(Path(__file__).resolve().parents[2]), "plan", "--hosts", str(tmp_path / "hosts.yaml")],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and SHOWN in res.stderr and "\x1b" not in res.stderr + res.stdout


def test_a_report_shows_host_text_escaped():
    from comfyume_fab.present.reports import status_text

    class Rep:
        data = {"ok": False, "mode": "dual-server", "config_hash": "abc", "revision": "r", "hosts": {
            "mello": {"reachable": True, "roles": ["app"], "ssh_ms": 1.0, "engine": f"27{ESC}", "compose": "2",
                      "deployed": {"in_sync": True, "revision": "r"}, "gpu": {},
                      "services": [{"service": "redis", "state": f"running{ESC}", "health": "healthy",
                                    "restarts": 0, "ok": True}]},
            "verda": {"reachable": False, "error": f"down{ESC}"}}}
        checks = [CheckResult("queue", True, "ok")]
        code = 4  # not healthy
    text = status_text(Rep())
    assert "\x1b" not in text and f"running{SHOWN}" in text and f"down{SHOWN}" in text and f"27{SHOWN}" in text


def test_progress_lines_are_escaped_on_their_way_to_the_terminal():
    import io

    from comfyume_fab.present.progress import CleanStream, Progress
    out = io.StringIO()
    ui = Progress(stream=CleanStream(out))
    ui(f"verda: log {ESC}")
    ui.warn(f"gpu {ESC}")
    text = out.getvalue()
    assert "\x1b" not in text and f"verda: log {SHOWN}\n" in text and f"WARNING: gpu {SHOWN}\n" in text
