"""The warm helper against the lab (issue 14's one-shot start-up; comfyume_fab/handoff.py): a
task it runs reads the same deployment and says the same as a process of its own, opens exactly
one new SSH connection per host (nothing is held between tasks; sshd's own log counts them), and
Ctrl-C reaches it at a real step (exit 130, no lock left). Another user can neither reach the
socket nor, if the folder were opened up, be served by it."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.lab.test_faults import APP, Watched, converge, fast_inventory, lock_dir, stop_containers
from tests.lab.test_lock import interrupted
from tests.lab.test_operator_view import accepted
from tests.unit.test_handoff import ask, henv, started  # noqa: F401 - henv: the fixture

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CF = str(BIN / "comfyume-fab")
INVOKE = str(BIN / "invoke")


def run(env, *args, command=CF):
    return subprocess.run([command, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def _shape(report: dict) -> dict:
    """What a status report says, without the figures that change from run to run."""
    return {"ok": report["ok"], "mode": report["mode"], "config_hash": report["config_hash"],
            "checks": sorted((c["name"], c["ok"]) for c in report["checks"]),
            "hosts": {n: sorted((s["service"], s["state"], s["health"], s["container"]) for s in h["services"])
                      for n, h in report["hosts"].items()}}


@pytest.mark.lab
def test_status_and_start_all_in_the_helper_say_what_their_own_process_says(lab, deployed, henv):
    off = dict(henv, COMFYUME_FAB_HELPER="0")
    first = run(henv, "status", "--json", "--hosts", str(deployed))
    assert first.returncode == 0, first.stderr
    helper = started(henv)
    before = {h: accepted(lab, h) for h in ("mello", "verda")}
    warm = run(henv, "status", "--json", "--hosts", str(deployed))
    assert warm.returncode == 0 and ask(henv, "info")["served"] == 1, warm.stderr
    # one new connection per host, made by the task itself (host keys checked as always)
    assert {h: accepted(lab, h) - before[h] for h in before} == {"mello": 1, "verda": 1}
    alone = run(off, "status", "--json", "--hosts", str(deployed))
    assert alone.returncode == 0, alone.stderr
    assert _shape(json.loads(warm.stdout)) == _shape(json.loads(alone.stdout))
    assert warm.stderr == alone.stderr == ""
    noop = run(henv, "start-all", "--hosts", str(deployed), command=INVOKE)
    assert noop.returncode == 0 and "nothing changed" in noop.stdout, noop.stderr
    info = ask(henv, "info")
    assert info["served"] == 2 and info["pid"] == helper["pid"]


@pytest.mark.lab
def test_ctrl_c_reaches_a_start_all_in_the_helper_and_leaves_no_lock(lab, deployed, tmp_path, henv):
    fast = fast_inventory(lab, tmp_path)
    run(henv, "plan", "--hosts", str(fast))
    started(henv)
    stop_containers(lab, "mello", APP)
    watched = Watched("start-all", "--hosts", str(fast), trigger="mello: docker compose up -d", env=henv,
                      action=lambda me: me.proc.send_signal(signal.SIGINT))
    interrupted(watched, "start-all")
    assert ask(henv, "info")["served"] == 1
    assert not lock_dir(lab).exists()
    converge(fast)


NOBODY_ASKS = r"""
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except OSError as exc:
    print("connect:", type(exc).__name__); sys.exit(0)
s.settimeout(10)
try:
    s.sendall(json.dumps({"op": "info"}).encode() + b"\n")
    print("answer:", s.recv(65536).decode() or "none")
except (ConnectionResetError, BrokenPipeError):  # closed unread: refused
    print("answer: none")
"""


def test_another_user_is_neither_let_in_nor_served(henv):
    """As root; `nobody` is the other user (setpriv). The runtime folder is open to all, as
    /run/user/UID is not, so that only the helper's own folder and socket are in the way."""
    base = Path(tempfile.mkdtemp(prefix="cfab-helper-"))
    try:
        base.chmod(0o755)
        env = dict(henv, XDG_RUNTIME_DIR=str(base))
        run(env, "plan", "--hosts", str(REPO / "hosts.yaml"))
        started(env)
        folder = base / "comfyume-fab"
        (sock,) = folder.glob("*.sock")

        def as_nobody() -> str:
            res = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3",
                                  "-c", NOBODY_ASKS, str(sock)], capture_output=True, text=True, timeout=30)
            assert res.returncode == 0, res.stderr
            return res.stdout.strip()
        assert as_nobody() == "connect: PermissionError"  # the folder is the user's alone
        folder.chmod(0o711)  # a folder and socket opened up by mistake: the helper still checks who asks
        sock.chmod(0o666)
        assert as_nobody() == "answer: none"
        folder.chmod(0o700)
        assert ask(env, "info")["served"] == 0  # and it still serves its own user
    finally:
        if (base / "comfyume-fab").exists():
            (base / "comfyume-fab").chmod(0o700)  # else the user's own stop request is refused too
        ask(dict(henv, XDG_RUNTIME_DIR=str(base)), "stop")
        shutil.rmtree(base, ignore_errors=True)
