"""The warm helper (issue 14's one-shot start-up; comfyume_fab/handoff.py and helper.py), with real
processes: the installed `comfyume-fab` and `invoke` commands, the helper they start, its socket.
No host is touched: `plan` reads only files, and the signal tests point an inventory at a local
TCP server that accepts SSH connections and never answers, so the task waits there.

Each test has its own runtime folder ($XDG_RUNTIME_DIR), so its own helper, stopped at the end."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from comfyume_fab import handoff

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CF = str(BIN / "comfyume-fab")
INVOKE = str(BIN / "invoke")
INVENTORY = str(REPO / "hosts.yaml")  # the example inventory: `plan` works without its secrets


@contextmanager
def environ(env: dict):
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def ask(env: dict, op: str) -> dict | None:
    """What this test's helper answers to `op` (info, stop), or None when none runs."""
    with environ(env):
        return handoff.request({"op": op})


def wait_for(what, timeout: float = 30.0, every: float = 0.1):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = what()
        if got:
            return got
        time.sleep(every)
    return None


@pytest.fixture
def henv(tmp_path):
    """An environment with the helper on, in a runtime folder of this test only."""
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if k not in ("COMFYUME_HOSTS", "REDIS_PASSWORD", "ADMIN_PASSWORD")}
    env.update(XDG_RUNTIME_DIR=str(run), COMFYUME_FAB_HELPER="1")
    yield env
    info = ask(env, "info")
    ask(env, "stop")
    if info:
        wait_for(lambda: not _alive(info["pid"]), 10)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def cli(env: dict, *args: str, command: str = CF, cwd=REPO, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([command, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120, **kw)


def started(env: dict) -> dict:
    """The helper the first run started (after it exited), once it listens."""
    info = wait_for(lambda: ask(env, "info"))
    assert info, "no helper listened within 30 s of the first run"
    return info


def same(a: subprocess.CompletedProcess, b: subprocess.CompletedProcess) -> None:
    assert (a.returncode, a.stdout, a.stderr) == (b.returncode, b.stdout, b.stderr)


def test_the_first_run_starts_a_helper_and_the_next_runs_are_served_by_it(henv):
    alone = cli(dict(henv, COMFYUME_FAB_HELPER="0"), "plan", "--hosts", INVENTORY)
    assert alone.returncode == 0 and "mello (app)" in alone.stdout, alone.stderr
    assert ask(henv, "info") is None
    first = cli(henv, "plan", "--hosts", INVENTORY)
    same(first, alone)
    info = started(henv)
    assert info["served"] == 0 and info["modules"] > 100
    folder = Path(henv["XDG_RUNTIME_DIR"]) / "comfyume-fab"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    (sock,) = folder.glob("*.sock")
    assert stat.S_ISSOCK(sock.stat().st_mode) and stat.S_IMODE(sock.stat().st_mode) == 0o600
    same(cli(henv, "plan", "--hosts", INVENTORY), alone)
    assert ask(henv, "info")["served"] == 1
    # `invoke plan` in the checkout is handed to the same helper, with the same result
    same(cli(henv, "plan", "--hosts", INVENTORY, command=INVOKE), cli(dict(henv, COMFYUME_FAB_HELPER="0"), "plan",
                                                                       "--hosts", INVENTORY, command=INVOKE))
    after = ask(henv, "info")
    assert after["served"] == 2 and after["pid"] == info["pid"]


def test_errors_and_exit_codes_come_back_unchanged(henv, tmp_path):
    bad = tmp_path / "hosts.yaml"
    bad.write_text("mode: dual-server\nhosts: [\n")
    off = dict(henv, COMFYUME_FAB_HELPER="0")
    cli(henv, "plan", "--hosts", INVENTORY)
    started(henv)
    for args in (("plan", "--hosts", str(bad)), ("plan", "--nosuch"), ("status", "--hosts", str(tmp_path / "none.yaml"))):
        want = cli(off, *args)
        assert want.returncode == 2 and want.stderr, args
        same(cli(henv, *args), want)
    assert ask(henv, "info")["served"] == 3


def test_the_callers_folder_environment_and_words_are_the_tasks(henv, tmp_path):
    odd = tmp_path / "a b;c 'd'"
    odd.mkdir()
    shutil.copy(INVENTORY, odd / "hosts.yaml")
    off = dict(henv, COMFYUME_FAB_HELPER="0")
    cli(henv, "plan", "--hosts", INVENTORY)
    started(henv)
    # a relative inventory from $COMFYUME_HOSTS, read in the caller's folder
    rel = dict(henv, COMFYUME_HOSTS="hosts.yaml")
    got = cli(rel, "plan", cwd=odd)
    assert got.returncode == 0 and "inventory hosts.yaml" in got.stdout, got.stderr
    same(got, cli(dict(rel, COMFYUME_FAB_HELPER="0"), "plan", cwd=odd))
    # a path with a space, a semicolon and quotes arrives as one word
    got = cli(henv, "plan", "--hosts", str(odd / "hosts.yaml"))
    assert got.returncode == 0 and f"inventory {odd / 'hosts.yaml'}" in got.stdout
    same(got, cli(off, "plan", "--hosts", str(odd / "hosts.yaml")))
    assert ask(henv, "info")["served"] == 2


def test_it_exits_when_idle(henv):
    env = dict(henv, COMFYUME_FAB_HELPER_IDLE="2")
    cli(env, "plan", "--hosts", INVENTORY)
    info = started(env)
    folder = Path(env["XDG_RUNTIME_DIR"]) / "comfyume-fab"
    assert wait_for(lambda: not _alive(info["pid"]), 20), "the helper did not exit after 2 s idle"
    assert not list(folder.glob("*.sock"))


def test_a_changed_module_ends_the_helper_and_the_run_is_done_here(henv, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("VERSION = 1\n")
    env = dict(henv, PYTHONPATH=str(site))  # the helper loads this module at start, like any other
    want = cli(dict(env, COMFYUME_FAB_HELPER="0"), "plan", "--hosts", INVENTORY)
    cli(env, "plan", "--hosts", INVENTORY)
    old = started(env)
    (site / "sitecustomize.py").write_text("VERSION = 22\n")  # an upgrade on disk
    same(cli(env, "plan", "--hosts", INVENTORY), want)
    assert wait_for(lambda: not _alive(old["pid"]), 10), "the stale helper kept running"
    new = started(env)  # started again by that run, with the new code
    assert new["pid"] != old["pid"] and new["served"] == 0


def test_a_folder_open_to_others_is_never_used(henv):
    folder = Path(henv["XDG_RUNTIME_DIR"]) / "comfyume-fab"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    for _ in range(2):
        assert cli(henv, "plan", "--hosts", INVENTORY).returncode == 0
    time.sleep(2)
    assert list(folder.iterdir()) == []
    res = subprocess.run([sys.executable, "-m", "comfyume_fab.helper", str(folder / "x.sock")], env=henv,
                         capture_output=True, timeout=30)
    assert res.returncode == 2 and list(folder.iterdir()) == []


class SilentServer:
    """Accepts TCP connections and never sends an SSH banner: a task's connect waits there."""

    def __init__(self, address: str):
        self.sock = socket.socket()
        self.sock.bind((address, 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.closed = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._drain, args=(conn,), daemon=True).start()

    def _drain(self, conn):
        try:
            while conn.recv(4096):
                pass
        except OSError:
            pass
        self.closed += 1


@pytest.fixture
def silent(tmp_path):
    """An inventory whose two hosts are SilentServers (on two loopback addresses)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    servers = [SilentServer("127.0.0.1"), SilentServer("127.0.0.2")]
    key = tmp_path / "id_ed25519"
    key.write_bytes(Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()))
    key.chmod(0o600)
    (tmp_path / "known_hosts").write_text("")
    data = yaml.safe_load(Path(INVENTORY).read_text())
    data["timeouts"]["connect"] = 60
    data["ssh"] = {"known_hosts": str(tmp_path / "known_hosts")}
    data["secrets"] = {}
    for server, host in zip(servers, data["hosts"].values()):
        host.update(address=server.sock.getsockname()[0], port=server.port, identity_file=str(key))
    inv = tmp_path / "silent.yaml"
    inv.write_text(yaml.safe_dump(data))
    yield inv, servers
    for server in servers:
        server.sock.close()


@pytest.mark.parametrize("how,helper", [("SIGINT", "1"), ("SIGTERM", "1"), ("SIGKILL", "1"), ("SIGINT", "0")])
def test_signals_and_the_callers_death_reach_the_task(henv, silent, how, helper):
    """Ctrl-C: the task stops as Ctrl-C stops it (exit 130, its message), at once, also while it
    waits for a host's SSH banner (helper "0": the same without the helper); kill: it ends the
    same way as a process of its own would; the caller killed outright: the task is stopped as by
    Ctrl-C. Either way its SSH connections are closed at once (the server sees them end)."""
    inv, servers = silent
    env = dict(henv, REDIS_PASSWORD="r-secret-1", ADMIN_PASSWORD="a-secret-1", COMFYUME_FAB_HELPER=helper)
    if helper == "1":
        cli(henv, "plan", "--hosts", INVENTORY)
        started(henv)
    proc = subprocess.Popen([CF, "status", "--hosts", str(inv)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: all(s.conns for s in servers), 30), "the task never connected to both hosts"
        if helper == "1":
            assert ask(henv, "info")["served"] == 1
        proc.send_signal(getattr(signal, how))
        out, err = proc.communicate(timeout=10)  # far less than the 60 s the banner wait would take
    finally:
        proc.kill()
    assert wait_for(lambda: all(s.closed for s in servers), 10), "the task's connections stayed open"
    if how == "SIGINT":
        assert proc.returncode == 130 and "status: interrupted" in err, err
    else:
        assert proc.returncode == -getattr(signal, how), (proc.returncode, err)


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat_line = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat_line.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


@pytest.mark.parametrize("group", ["job", "job-killed", "orphaned"])
def test_ctrl_z_stops_the_task_with_the_command_and_fg_resumes_both(henv, silent, group):
    """As a shell's job (a process group of its own in the session), Ctrl-Z stops the command and
    its task, and `fg` (SIGCONT) resumes both; a stopped command killed outright (job-killed)
    still ends its task. In an orphaned process group the kernel discards a stop signal (POSIX):
    the command goes on, and so must its task, never left stopped."""
    inv, servers = silent
    env = dict(henv, REDIS_PASSWORD="r-secret-1", ADMIN_PASSWORD="a-secret-1")
    cli(henv, "plan", "--hosts", INVENTORY)
    helper = started(henv)["pid"]
    where = {"process_group": 0} if group.startswith("job") else {"start_new_session": True}
    proc = subprocess.Popen([CF, "status", "--hosts", str(inv)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **where)
    try:
        assert wait_for(lambda: all(s.conns for s in servers), 30), "the task never connected to both hosts"
        (task,) = [pid for relay in _children(helper) for pid in _children(relay)]  # helper -> relay -> task
        proc.send_signal(signal.SIGTSTP)
        if group.startswith("job"):
            assert wait_for(lambda: _state(task) == "T" and _state(proc.pid) == "T", 5), \
                (_state(task), _state(proc.pid))
            if group == "job-killed":
                proc.kill()
                proc.wait(10)
                assert wait_for(lambda: _state(task) == "gone", 10), "a stopped task outlived its command"
                assert wait_for(lambda: all(s.closed for s in servers), 10)
                return
            proc.send_signal(signal.SIGCONT)  # what `fg` sends
        else:
            time.sleep(1)
        assert wait_for(lambda: _state(task) in "RSD" and _state(proc.pid) in "RSD", 5), (_state(task), _state(proc.pid))
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "status: interrupted" in err, err
    assert wait_for(lambda: _state(task) == "gone", 5)
