"""The operator's view against the lab (issue 14): `logs` across hosts, `exec`, `status --json`
against its schema, and `status --watch` under a pseudo-terminal. Every claim is read back from
the hosts: their containers' logs as Compose prints them, their process tables, sshd's own log."""
from __future__ import annotations

import base64
import fcntl
import json
import os
import pty
import queue
import re
import select
import signal
import struct
import subprocess
import termios
import threading
import time
from datetime import datetime, timezone

import jsonschema
import pytest

from comfyume_fab.host.ssh.connect import Target
from comfyume_fab.host.ssh.remote import Remote
from comfyume_fab.inventory.read import load_inventory
from comfyume_fab.lab import faults, hostsvc
from comfyume_fab.ops.logs import Masker
from comfyume_fab.plan.planner import make_plan
from tests.support import INVOKE, REPO, invoke

pytestmark = pytest.mark.lab
SCHEMA = json.loads((REPO / "docs" / "status.schema.json").read_text())
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def remote(lab, name) -> Remote:
    h = lab.hosts[name]
    return Remote(Target(name, h.address, user=h.user, identity_file=str(lab.key),
                         known_hosts=str(lab.known_hosts), connect_timeout=5)).open()


def container(lab, host, service) -> str:
    out = hostsvc.docker(lab.hosts[host], "ps", "-q", "--filter", "label=com.docker.compose.project=comfyume",
                         "--filter", f"label=com.docker.compose.service={service}").stdout.split()
    assert out, f"no running {service} on {host}"
    return out[0]


def write_log(lab, host, service, text) -> None:
    """Put a line into a container's log: what its main process writes to stdout."""
    hostsvc.docker(lab.hosts[host], "exec", container(lab, host, service), "sh", "-c",
                   'printf "%s\\n" "$1" > /proc/1/fd/1', "sh", text)


class Streamed:
    """A running `invoke ...` whose stdout lines are collected as they arrive, with their times."""

    def __init__(self, *args):
        self.proc = subprocess.Popen([INVOKE, *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=dict(os.environ, NO_COLOR="1"))
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put((time.monotonic(), line.rstrip("\n")))

    def wait_for(self, pred, timeout: float):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                at, line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if pred(line):
                return at, line
        return None, None

    def stop(self, sig=signal.SIGINT) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


def compose_logs_processes(lab, host) -> list[str]:
    """`docker compose logs` processes the host's login user runs now (its process table)."""
    with remote(lab, host) as r:
        out = r.run("ps -u \"$(id -un)\" -o args=").stdout
    return [ln for ln in out.splitlines() if re.search(r"compose.* logs", ln)]


def test_logs_follow_shows_lines_from_both_hosts_within_a_second_and_ctrl_c_leaves_nothing(lab, deployed):
    run = Streamed("logs", "-f", "--tail", "0", "--hosts", str(deployed))
    try:
        # Streams are up once each host runs its `docker compose logs`.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not all(compose_logs_processes(lab, h) for h in ("mello", "verda")):
            time.sleep(0.3)
        assert all(compose_logs_processes(lab, h) for h in ("mello", "verda"))
        time.sleep(0.5)
        for host, service in (("mello", "redis"), ("verda", "worker")):
            marker = f"marker-{host}-{time.time_ns()}"
            t0 = time.monotonic()
            write_log(lab, host, service, marker)
            at, line = run.wait_for(lambda ln, m=marker: m in ln, 5)
            assert line == f"{host}/{service} {marker}", line
            assert at - t0 < 1.0, f"{host} marker took {at - t0:.2f} s"
        secret = lab.secrets["REDIS_PASSWORD"]
        write_log(lab, "mello", "redis", f"password is {secret} here")
        _, line = run.wait_for(lambda ln: "password is" in ln, 5)
        assert line == "mello/redis password is *** here"
        # a hostile line: erase + carriage return to forge mello's label, a title change, the
        # secret in base64: one line, labelled verda, nothing raw, the secret masked
        encoded = base64.b64encode(secret.encode()).decode()
        write_log(lab, "verda", "worker", f"hostile\x1b[2K\rmello/redis forged \x1b]0;owned\x07b64 {encoded}")
        _, line = run.wait_for(lambda ln: "hostile" in ln, 5)
        assert line.startswith("verda/worker hostile\\x0dmello/redis forged b64 ***"), repr(line)
    finally:
        code = run.stop(signal.SIGINT)
    assert code == 130, run.proc.stderr.read()
    deadline = time.monotonic() + 5
    left = {}
    while time.monotonic() < deadline:
        left = {h: compose_logs_processes(lab, h) for h in ("mello", "verda")}
        if not any(left.values()):
            break
        time.sleep(0.3)
    assert not any(left.values()), left


def _compose_says(lab, deployed, host, service, *args) -> list[str]:
    """What `docker compose logs` itself prints on the host, without its prefix, masked like ours."""
    inv = load_inventory(str(deployed))
    hp = next(h for h in make_plan(inv).hosts if h.name == host)
    mask = Masker([s.reveal() for s in inv.secrets.values()])
    with remote(lab, host) as r:
        out = r.run(hp.compose.run("logs", "--no-color", *args, service)).stdout
    return [mask(ln.split("| ", 1)[1] if "| " in ln else "") for ln in out.splitlines() if ln.strip()]


def _ours(deployed, host, service, *args) -> list[str]:
    res = invoke("logs", "--host", host, "--service", service, *args, "--hosts", str(deployed))
    assert res.returncode == 0, res.stderr
    prefix = f"{host}/{service} "
    assert all(ln.startswith(prefix) for ln in res.stdout.splitlines()), res.stdout
    return [ln[len(prefix):] for ln in res.stdout.splitlines()]


def test_tail_since_and_grep_give_exactly_what_compose_gives(lab, deployed):
    for i in range(6):
        write_log(lab, "mello", "redis", f"tail-line-{i} {'even' if i % 2 == 0 else 'odd'}")
    ours = _ours(deployed, "mello", "redis", "--tail", "4")
    assert ours == _compose_says(lab, deployed, "mello", "redis", "--tail", "4")
    assert ours[-1] == "tail-line-5 odd" and len(ours) == 4

    write_log(lab, "mello", "redis", "before-since")
    time.sleep(1.2)
    since = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    time.sleep(1.1)
    write_log(lab, "mello", "redis", "after-since")
    ours = _ours(deployed, "mello", "redis", "--since", since)
    assert ours == _compose_says(lab, deployed, "mello", "redis", "--since", since)
    assert "after-since" in ours and "before-since" not in ours

    ours = _ours(deployed, "mello", "redis", "--grep", r"tail-line-\d even")
    expected = [ln for ln in _compose_says(lab, deployed, "mello", "redis") if re.search(r"tail-line-\d even", ln)]
    assert ours == expected and len(ours) >= 3


def test_logs_users_selects_every_frontend_and_an_unknown_service_is_one_sentence(lab, deployed):
    res = invoke("logs", "--service", "users", "--tail", "1", "--hosts", str(deployed))
    assert res.returncode == 0, res.stderr
    shown = {ln.split(" ", 1)[0] for ln in res.stdout.splitlines()}
    assert shown <= {"mello/user001", "mello/user002", "mello/user003"} and len(shown) == 3, shown
    res = invoke("logs", "--service", "wroker", "--hosts", str(deployed))
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
    assert "unknown service 'wroker'" in res.stderr and "Traceback" not in res.stderr


def test_exec_passes_argv_unchanged_and_the_exit_code_through(lab, deployed):
    res = invoke("exec", "mello", "redis", "--hosts", str(deployed), "--", "sh", "-c", 'echo "$0"', "a b;c")
    assert res.returncode == 0, res.stderr
    assert res.stdout == "a b;c\n"
    res = invoke("exec", "verda", "worker", "--hosts", str(deployed), "--", "sh", "-c", "echo out; echo err >&2; exit 7")
    assert res.returncode == 7 and res.stdout == "out\n" and "err" in res.stderr


@pytest.mark.parametrize("host, service, expect", [("vreda", "worker", "unknown host 'vreda'"),
                                                   ("mello", "wroker", "unknown service 'wroker' on mello")])
def test_exec_refuses_an_unknown_host_or_service_in_one_sentence(lab, deployed, host, service, expect):
    res = invoke("exec", host, service, "--hosts", str(deployed), "--", "true")
    assert res.returncode == 2
    assert expect in res.stderr and len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr


def _status_json(inv) -> dict:
    res = invoke("status", "--json", "--no-probe", "--hosts", str(inv))
    data = json.loads(res.stdout)
    jsonschema.validate(data, SCHEMA)
    return data


def test_status_json_validates_healthy_stopped_worker_and_unreachable_host(lab, deployed):
    data = _status_json(deployed)
    assert data["ok"] and data["schema_version"] == 1
    assert {s["service"] for s in data["hosts"]["mello"]["services"]} >= {"redis", "user001"}
    assert all(s["image"] and s["started_at"] for s in data["hosts"]["mello"]["services"])

    assert invoke("stop-verda", "--hosts", str(deployed)).returncode == 0
    try:
        data = _status_json(deployed)
        assert not data["ok"] and data["hosts"]["verda"]["reachable"]
        assert [s["state"] for s in data["hosts"]["verda"]["services"]] == ["exited"]
        faults.cut("verda")
        data = _status_json(deployed)
        verda = data["hosts"]["verda"]
        assert not verda["reachable"] and verda["error"] and verda["roles"] == ["worker"]
        assert set(verda) >= set(data["hosts"]["mello"]) - {"redis_published"}
    finally:
        faults.heal_all()
        assert invoke("start-all", "--hosts", str(deployed)).returncode == 0


class Screen:
    """`invoke status --watch` on a pseudo-terminal 200 columns wide; `frame()` is the last
    complete screen it drew, as plain text."""

    def __init__(self, inv, interval="1"):
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
        self.proc = subprocess.Popen([INVOKE, "status", "--watch", "--interval", interval, "--probe-every", "3",
                                      "--hosts", str(inv)], cwd=REPO, stdin=slave, stdout=slave, stderr=slave,
                                     env=dict(os.environ, TERM="xterm-256color", COLUMNS="200", LINES="50"),
                                     start_new_session=True)
        os.close(slave)
        self.master = master
        self.buf = ""
        self.lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            if not data:
                return
            with self.lock:
                self.buf += data.decode(errors="replace")

    def frame(self) -> str:
        with self.lock:
            text = ANSI.sub("", self.buf).replace("\r", "")
        parts = text.split("comfyume status --watch")
        if len(parts) > 1 and "\nqueue " in parts[-1]:  # the newest frame is drawn down to its last line
            return parts[-1]
        return parts[-2] if len(parts) > 2 else ""

    def wait(self, pred, timeout: float) -> tuple[float | None, str]:
        deadline = time.monotonic() + timeout
        frame = ""
        while time.monotonic() < deadline:
            frame = self.frame()
            if frame and pred(frame):
                return time.monotonic(), frame
            time.sleep(0.1)
        return None, frame

    def quit(self) -> int:
        os.write(self.master, b"q")
        try:
            return self.proc.wait(10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            os.close(self.master)


def row(frame: str, host: str) -> str:
    return next((ln for ln in frame.splitlines() if ln.startswith(host + " ")), "")


def clock(frame: str) -> str:
    m = re.search(r"\d\d:\d\d:\d\d", frame)
    return m.group(0) if m else ""


def accepted(lab, host) -> int:
    log = lab.hosts[host].sshd_log
    return log.read_text().count("Accepted publickey") if log.exists() else 0


def test_watch_holds_one_connection_per_host_shows_a_cut_host_within_an_interval_and_reconnects(lab, deployed):
    before = {h: accepted(lab, h) for h in ("mello", "verda")}
    screen = Screen(deployed, interval="1")
    try:
        _, frame = screen.wait(lambda f: "ms" in row(f, "verda") and "users 3/3 healthy" in row(f, "mello")
                               and "pending" in f and "ok " in row(f, "verda"), 20)
        assert "users 3/3 healthy" in row(frame, "mello") and "no GPU" in row(frame, "verda"), frame
        assert re.search(r"heartbeats: worker-1 \d+ s ago", frame), frame
        time.sleep(4)  # several refreshes
        assert {h: accepted(lab, h) - before[h] for h in before} == {"mello": 1, "verda": 1}

        faults.cut("verda")
        cut_at = time.monotonic()
        seen_at, frame = screen.wait(lambda f: "UNREACHABLE" in row(f, "verda"), 5)
        assert seen_at is not None, frame
        # the first read after the cut starts within one interval (1 s) and is declared unanswered one
        # interval later; the screen redraws at once (polled every 0.25 s)
        assert seen_at - cut_at <= 2.6, f"shown after {seen_at - cut_at:.1f} s"
        first = clock(frame)
        _, later = screen.wait(lambda f: clock(f) != first and "UNREACHABLE" in row(f, "verda"), 4)
        assert "users 3/3 healthy" in row(later, "mello"), later  # mello keeps refreshing

        faults.heal_all()
        back_at, frame = screen.wait(lambda f: "ms" in row(f, "verda") and "UNREACHABLE" not in row(f, "verda"), 20)
        assert back_at is not None, frame
        assert accepted(lab, "verda") - before["verda"] >= 2  # reconnected: a new, host-key-checked login
        assert accepted(lab, "mello") - before["mello"] == 1
    finally:
        faults.heal_all()
        code = screen.quit()
    assert code == 0


def test_exec_interactive_gives_a_shell_on_a_pty_and_its_exit_code(lab, deployed):
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen([INVOKE, "exec", "-i", "mello", "redis", "--hosts", str(deployed)], cwd=REPO,
                            stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    got = b""
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not got:  # the container's shell prompt
            if select.select([master], [], [], 0.2)[0]:
                got += os.read(master, 4096)
        os.write(master, b"[ -t 0 ] && echo tty-$((40+2)); exit 3\n")
        while time.monotonic() < deadline and proc.poll() is None:
            ready = select.select([master], [], [], 0.2)[0]
            if ready:
                try:
                    got += os.read(master, 4096)
                except OSError:
                    break
        code = proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    assert b"tty-42" in got, got
    assert code == 3
