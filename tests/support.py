"""What several test modules share (no test module imports another; fixtures stay in conftest.py):
the repository and its CLI, polling and free ports, HTTP calls and the stand-ins run as processes,
the inventories the unit tests plan, and process helpers."""
from __future__ import annotations

import ctypes
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import yaml

from comfyume_fab.errors import ExitCode
from comfyume_fab.host.session import target
from comfyume_fab.host.ssh.remote import Remote
from comfyume_fab.inventory import load_inventory
from comfyume_fab.lab import hostsvc
from comfyume_fab.lab.system import wait_for as lab_wait_for

REPO = Path(__file__).resolve().parents[1]
INVOKE = str(Path(sys.executable).with_name("invoke"))


def invoke(*args: str, env: dict | None = None, timeout: float = 600, input: str | None = None):
    """Run the real CLI as a user would (`invoke TASK ...`) and capture what it prints."""
    full_env = dict(os.environ, **(env or {}))
    full_env.pop("COMFYUME_HOSTS", None) if env is None or "COMFYUME_HOSTS" not in env else None
    return subprocess.run([INVOKE, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env=full_env, input=input)


# --- polling, ports, HTTP -------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout: float = 10.0, what: str = "condition", interval: float = 0.05):
    """`predicate()`'s first true value, polled every `interval` s; the lab's LabError (a failed
    test) naming `what` after `timeout` s. The lab's own poll, with the defaults tests want."""
    return lab_wait_for(predicate, timeout, what, interval)


def call(method: str, url: str, body=None, headers: dict | None = None, timeout: float = 5.0):
    """(status, headers, raw body) for any HTTP status."""
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def get_json(url: str, **kwargs):
    status, headers, raw = call("GET", url, **kwargs)
    return status, json.loads(raw)


def post_json(url: str, body, **kwargs):
    status, headers, raw = call("POST", url, body, **kwargs)
    return status, json.loads(raw)

PR_SET_CHILD_SUBREAPER = 36


def _children_of(pid: int) -> dict[int, str]:
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            ppid = int(text.rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                cmd = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
                out[int(stat.parent.name)] = cmd
        except (OSError, ValueError, IndexError):
            continue
    return out


@contextmanager
def subreaper() -> Iterator[callable]:
    """Make this process the subreaper of what it starts, so that a process a command leaves behind
    (even a double-forked, setsid daemon) is re-parented here instead of to init. Yields a function
    that runs a command to its end and returns the processes it left running ({pid: cmdline})."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
    try:
        def run(argv: list[str], **kwargs) -> tuple[subprocess.CompletedProcess, dict[int, str]]:
            before = set(_children_of(os.getpid()))
            res = subprocess.run(argv, capture_output=True, text=True, **kwargs)
            left = {pid: cmd for pid, cmd in _children_of(os.getpid()).items() if pid not in before}
            return res, left
        yield run
    finally:
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


# --- the lab's fault tests (test_faults, test_lock): short bounds, one-error runs, the hosts' engines --

# Short bounds so that every give-up is quick; SLACK covers the CLI's start (Python, imports) and
# the SSH handshakes on a busy machine.
FAST = {"connect": 3, "command": 20, "health": 20, "redis": 2, "probe": 5, "lock_wait": 30}
SLACK = 4.0
APP = ("redis", "queue-manager", "admin", "user001", "user002", "user003")
WORKER = ("worker",)
HOSTS = {"mello": APP, "verda": WORKER}
CHECK_LINE = re.compile(r"^\s+\[\s*(FAIL|ok|warn)\] ([\w.-]+): (.*)$", re.M)
NEVER_HEALTHY = "cfab-test/never-healthy:1"


# ------------------------------------------------------------------------------------------ helpers
def fast_inventory(lab, tmp_path: Path, name: str = "fast", timeouts: dict | None = None, **overrides) -> Path:
    """The dual-server lab inventory (same plan as the session's) with short timeouts."""
    return lab.inventory(tmp_path / name, timeouts={**FAST, **(timeouts or {})}, **overrides)


def edit_inventory(path: Path, fn) -> Path:
    data = yaml.safe_load(path.read_text())
    fn(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def cli(*args: str, **kw):
    """Run the real CLI; (result, wall seconds)."""
    t0 = time.monotonic()
    res = invoke(*args, **kw)
    took = time.monotonic() - t0
    print(f"GIVE-UP {' '.join(a for a in args if not a.startswith('/'))}: exit {res.returncode} in {took:.1f} s")
    return res, took


def one_error(res, code: ExitCode, host: str, step: str | tuple[str, ...], *causes: str) -> str:
    """The run exited `code` with exactly one `error:` line naming host, step (one of them, when
    the moment a fault lands decides which step meets it) and each cause."""
    out = res.stdout + res.stderr
    assert "Traceback" not in out, out
    assert res.returncode == int(code), out
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, res.stderr
    line = errors[0]
    print(f"SEEN exit {res.returncode}: {line}")
    steps = (step,) if isinstance(step, str) else step
    assert any(f"host {host}, step {s}: " in line for s in steps), line
    for cause in causes:
        assert cause in line, f"{cause!r} not in {line!r}"
    return line


def status_checks(res) -> dict[str, tuple[str, str]]:
    """status's text output -> {check name: (ok|warn|FAIL, detail)}."""
    assert "Traceback" not in res.stdout + res.stderr
    print("SEEN exit", res.returncode, *[ln for ln in res.stdout.splitlines() if "FAIL" in ln or "UNREACH" in ln or "<--" in ln], sep="\n")
    return {name: (mark, detail) for mark, name, detail in CHECK_LINE.findall(res.stdout)}


def containers(lab, name: str) -> dict[str, dict]:
    """The comfyume project's containers on one host, read from that host's engine."""
    h = lab.hosts[name]
    ids = hostsvc.docker(h, "ps", "-aq", "--filter", "label=com.docker.compose.project=comfyume").stdout.split()
    if not ids:
        return {}
    out = {}
    for c in json.loads(hostsvc.docker(h, "inspect", *ids).stdout):
        state = c["State"]
        out[c["Config"]["Labels"]["com.docker.compose.service"]] = {
            "id": c["Id"], "state": state["Status"], "health": (state.get("Health") or {}).get("Status", ""),
            "restarts": c["RestartCount"], "pid": state["Pid"]}
    return out


def snapshot(lab) -> dict[str, dict[str, str]]:
    return {name: {svc: c["id"] for svc, c in containers(lab, name).items()} for name in HOSTS}


def assert_up(lab, name: str, services=None, same_as: dict | None = None) -> None:
    """Every service of the host runs and is healthy (and, given `same_as`, in the same container)."""
    services = services or HOSTS[name]
    now = containers(lab, name)
    bad = {svc: now.get(svc) for svc in services
           if not now.get(svc) or now[svc]["state"] != "running" or now[svc]["health"] not in ("", "healthy")}
    assert not bad, f"{name}: not running and healthy: {bad}"
    if same_as is not None:
        assert {svc: now[svc]["id"] for svc in services} == {svc: same_as[name][svc] for svc in services}, \
            f"{name}: containers were recreated"


def lock_dir(lab) -> Path:
    return lab.hosts["mello"].home / "comfyume" / ".deploy-lock"


def workdir_file(lab, host: str, name: str) -> Path:
    return lab.hosts[host].home / "comfyume" / name


def converge(inv_path: Path) -> None:
    """The next plain start-all brings everything back (the deployment is left healthy)."""
    res = invoke("start-all", "--hosts", str(inv_path), "--yes")  # the lab's own Redis password, whatever ran before
    assert res.returncode == 0, res.stderr + res.stdout


def stop_containers(lab, name: str, services) -> None:
    ids = [c["id"] for svc, c in containers(lab, name).items() if svc in services]
    hostsvc.docker(lab.hosts[name], "stop", "-t", "2", *ids)


def worker_exec(lab, *argv: str):
    cid = containers(lab, "verda")["worker"]["id"]
    return hostsvc.docker(lab.hosts["verda"], "exec", cid, *argv)


def lab_remote(inv_path: Path, host: str) -> Remote:
    inv = load_inventory(str(inv_path))
    return Remote(target(inv, inv.host(host)))


class Watched:
    """A CLI run whose progress lines (stderr) are read as they come; `action` runs once, on the
    first line containing `trigger`, given this object."""

    def __init__(self, *args: str, trigger: str, action, env: dict | None = None):
        # faulthandler: a run that hangs can be made to print every thread's stack (see `wait`)
        env = {**{k: v for k, v in (env or os.environ).items() if k != "COMFYUME_HOSTS"}, "PYTHONFAULTHANDLER": "1"}
        self.proc = subprocess.Popen([INVOKE, *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env)
        self.trigger, self.action = trigger, action
        self.lines: list[str] = []
        self.stdout = ""
        self.fired_at: float | None = None
        self.action_error: BaseException | None = None
        self._threads = [threading.Thread(target=self._err, daemon=True),
                         threading.Thread(target=self._out, daemon=True)]
        for t in self._threads:
            t.start()

    def _err(self):
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            if self.fired_at is None and self.trigger in line:
                try:
                    self.action(self)
                except BaseException as exc:  # reported by the test
                    self.action_error = exc
                self.fired_at = time.monotonic()

    def _out(self):
        self.stdout = self.proc.stdout.read()

    def wait(self, timeout: float) -> int:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGABRT)  # faulthandler prints where every thread waits
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            for t in self._threads:
                t.join(5)
            raise AssertionError(f"{' '.join(self.proc.args[1:3])} still ran {timeout:g} s later; its stderr:\n"
                                 + "\n".join(self.lines[-80:])) from None
        for t in self._threads:
            t.join(5)
        return rc

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)


# --- inventories the unit tests plan ----------------------------------------------------------------

ENV = {"REDIS_PASSWORD": "s3cret-redis-pw", "ADMIN_PASSWORD": "s3cret-admin-pw"}
MODES = ("frontend-testing", "dual-server", "single-server-gpu", "single-server-cpu", "serverless")
TOPOLOGIES = ("one", "two", "three")
APP_IP = "100.101.216.71"  # not the example hosts.yaml's value, which plan warns about
CORE = ("redis", "queue-manager", "admin")
USERS = tuple(f"user{i:03d}" for i in range(1, 21))


def inventory_text(mode: str, topology: str, num_users: int = 20, verda_gpu: str | None = None,
                   extra: str = "") -> str:
    """An inventory for `mode` on one host (box), two (mello + verda) or three (+ verda2)."""
    lines = [f"mode: {mode}", f"num_users: {num_users}"]
    if mode == "serverless":
        lines.append("serverless: {endpoint: 'https://api.runpod.ai/v2/abc/run', provider: runpod}")
    lines.append("hosts:")
    if topology == "one":
        roles = "[app, worker]" if mode.startswith(("single", "dual")) else "[app]"
        lines.append(f"  box: {{address: box, roles: {roles}}}")
    else:
        lines.append(f"  mello: {{address: mello, roles: [app], tailscale_ip: {APP_IP}}}")
        gpu = f", gpu: {verda_gpu}" if verda_gpu else ""
        lines.append(f"  verda: {{address: verda, roles: [worker]{gpu}}}")
        if topology == "three":
            lines.append("  verda2: {address: verda2, roles: [worker]}")
    return "\n".join(lines) + "\n" + extra


def load(tmp_path, text: str, environ: dict | None = None):
    """`text` written as tmp_path/hosts.yaml and loaded (secrets: ENV unless `environ`)."""
    path = tmp_path / "hosts.yaml"
    path.write_text(text)
    return load_inventory(str(path), environ=dict(ENV if environ is None else environ))



# The two-host inventory the inventory tests vary, loaded from the current folder (their own tmp
# folder, so that messages start with the path as given: hosts.yaml).
DUAL = """\
mode: dual-server
hosts:
  mello:
    address: mello
    tailscale_ip: 100.99.216.71
    roles: [app]
  verda:
    address: verda
    roles: [worker]
"""


def load_here(text: str, environ: dict | None = None, name: str = "hosts.yaml"):
    with open(name, "w", encoding="utf-8") as fh:
        fh.write(text)
    return load_inventory(name, environ=dict(ENV if environ is None else environ))


def problems(text: str, environ: dict | None = None) -> list[str]:
    """The one-sentence problems loading `text` gives (exit code 2)."""
    import pytest
    from comfyume_fab.errors import ConfigError, ExitCode
    with pytest.raises(ConfigError) as info:
        load_here(text, environ)
    assert info.value.code == ExitCode.CONFIG == 2
    return info.value.problems


# --- plans as start-all makes them ----------------------------------------------------------------

TEST_SALT = "5a1f" * 8  # a host's fingerprint salt (host/facts/salt.py), fixed for reproducible tests


def salted(plan):
    """`plan` with every host's hashes made with TEST_SALT, as start-all makes them with each host's
    own salt (a plan without salts stands for no secret and is never uploaded)."""
    return plan.with_salts({hp.name: TEST_SALT for hp in plan.hosts})


# --- the lab's stand-ins, run as processes on this machine ----------------------------------------

STANDINS = REPO / "comfyume_fab" / "lab" / "standins"
# The stand-ins run under this interpreter; STANDIN_TEST_PYTHON(PATH) run them as the lab's containers do.
PYTHON = os.environ.get("STANDIN_TEST_PYTHON") or sys.executable
PYTHONPATH = {"PYTHONPATH": os.environ["STANDIN_TEST_PYTHONPATH"]} if os.environ.get("STANDIN_TEST_PYTHONPATH") else {}


class Standin:
    """One stand-in script running as a real subprocess."""

    def __init__(self, script: str, port_var: str | None, env: dict, tmp: Path, ready_path: str | None = "/"):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.out, self.err = tmp / f"{script}.{self.port}.out", tmp / f"{script}.{self.port}.err"
        full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1",
                    **PYTHONPATH, **({port_var: str(self.port)} if port_var else {}), **env}
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen([PYTHON, str(STANDINS / f"{script}.py")], env=full_env,
                                         stdout=out, stderr=err, cwd=tmp)
        if ready_path is not None:
            wait_for(self._answers(ready_path), what=f"{script} to answer on {self.url}\n{self.logs()}")

    def _answers(self, path):
        def check():
            if self.proc.poll() is not None:
                raise AssertionError(f"stand-in exited with {self.proc.returncode}\n{self.logs()}")
            try:
                call("GET", self.url + path, timeout=1)
                return True
            except (urllib.error.URLError, OSError):
                return False
        return check

    def logs(self) -> str:
        return f"--- stdout\n{self.out.read_text()}--- stderr\n{self.err.read_text()}"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def slow(seconds: float, color: int = 1) -> dict:
    """EmptyImage -> ImageBlur -> SaveImage taking `seconds` on the stand-in (STANDIN_BLUR_RATE=1e6)."""
    side = 1000
    radius = max(1, round(seconds))
    return {"1": {"class_type": "EmptyImage", "inputs": {"width": side, "height": side, "batch_size": 1,
                                                         "color": color}},
            "2": {"class_type": "ImageBlur", "inputs": {"image": ["1", 0], "blur_radius": radius, "sigma": 1.0}},
            "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "slow"}}}


# --- first contact: the example inventory pointed at local listeners (tests/unit/conftest.py `place`)

SECRETS = {"REDIS_PASSWORD": "first-contact-redis-pw", "ADMIN_PASSWORD": "first-contact-admin-pw"}


class Listener:
    """A TCP port on 127.0.0.1 that counts the connections made to it (an SSH attempt would be one)."""

    def __init__(self, address: str = "127.0.0.1"):
        self.address = address
        self.sock = socket.socket()
        self.sock.bind((address, 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            self.accepted += 1
            conn.close()

    def close(self):
        self.stop.set()
        self.thread.join(2)
        self.sock.close()


class Listeners:
    """One Listener per host, each on its own loopback address (two inventory entries on one
    address and port would be one machine, which the inventory refuses)."""

    def __init__(self, count: int):
        self.each = [Listener(f"127.0.0.{i + 1}") for i in range(count)]

    @property
    def accepted(self) -> int:
        return sum(one.accepted for one in self.each)

    def close(self):
        for one in self.each:
            one.close()


# --- compose

def render(tmp_path, host_plan, project):
    """Write the host's files and .env into a folder like its workdir; return compose's JSON."""
    folder = tmp_path / host_plan.name
    folder.mkdir()
    for name, text in host_plan.files.items():
        (folder / name).write_text(text)
    (folder / ".env").write_text(host_plan.env_file_text())
    argv = ["docker", "compose", "-p", project, "--env-file", ".env"]
    for name in host_plan.compose_files:
        argv += ["-f", name]
    done = subprocess.run(argv + ["config", "--format", "json"], cwd=folder, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert "is not set" not in done.stderr, done.stderr  # every variable the files use is planned
    return json.loads(done.stdout)


# --- the deploy lock

def fake_lock(lab, info: str | None, age: float = 0.0):
    """A lock folder as a run that died left it (owned by mello's login user), `age` seconds old."""
    path = lock_dir(lab)
    path.mkdir(mode=0o700)
    if info is not None:
        (path / "info").write_text(info + "\n")
    home = lab.hosts["mello"].home
    for p in (path, *path.iterdir()):
        os.chown(p, home.stat().st_uid, home.stat().st_gid)
    if age:
        old = time.time() - age
        os.utime(path, (old, old))
    return path


def remove(path):
    for p in path.iterdir() if path.exists() else ():
        p.unlink()
    if path.exists():
        path.rmdir()


# --- stand-ins run as local processes (tests/unit/conftest.py `redis_server`, `worker`)

REDIS_SERVER = "/usr/bin/redis-server"


def probe(color: int = 14879940, width: int = 64, height: int = 64, prefix: str = "probe") -> dict:
    return {"1": {"class_type": "EmptyImage",
                  "inputs": {"width": width, "height": height, "batch_size": 1, "color": color}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}}}


class RedisServer:
    def __init__(self, tmp: Path):
        self.port, self.password, self.dir = free_port(), "lab-" + secrets.token_hex(8), tmp / "redis"
        self.dir.mkdir(exist_ok=True)
        self.proc = None
        import redis
        self.client = redis.Redis(host="127.0.0.1", port=self.port, password=self.password,
                                  socket_timeout=2, decode_responses=True)

    def start(self):
        log = open(self.dir / "redis.log", "ab")
        self.proc = subprocess.Popen([REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
                                      "--requirepass", self.password, "--save", "", "--appendonly", "no",
                                      "--dir", str(self.dir), "--daemonize", "no"], stdout=log, stderr=log)
        log.close()

        import redis

        def pong():
            try:
                return self.client.ping()
            except redis.RedisError:
                return False
        wait_for(pong, what=f"redis-server on port {self.port}")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def env(self) -> dict:
        return {"REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(self.port), "REDIS_PASSWORD": self.password}


def finished(url: str, prompt_id: str) -> dict:
    def done():
        status, body = get_json(f"{url}/history/{prompt_id}")
        assert status == 200
        return body.get(prompt_id)
    return wait_for(done, what=f"history of {prompt_id}")


# --- the lab's queue manager, as a frontend calls it, and HTTP checks run from this machine

QM = "http://100.64.0.1:3000"  # the lab's queue manager, published on mello's tailnet address


def submit_job(user: str, graph: dict, qm: str = QM) -> str:
    """POST /api/jobs as a frontend does; the job's id."""
    req = urllib.request.Request(f"{qm}/api/jobs", data=json.dumps({"user_id": user, "workflow": graph}).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())["id"]


def job_status(job_id: str, qm: str = QM) -> str:
    with urllib.request.urlopen(f"{qm}/api/jobs/{job_id}", timeout=5) as resp:
        return json.loads(resp.read()).get("status", "")


class Local:
    """A check's `via`, connecting from this machine (not an SSH tunnel; the lab tests use SSH)."""
    name = "local"

    @contextmanager
    def tunnel(self, host, port, timeout):
        sock = socket.create_connection((host, port), timeout=timeout)
        try:
            yield sock
        finally:
            sock.close()


# engine: swarm with an app host and two worker hosts (tests/unit/test_swarm_*.py)
SWARM_INV = """\
engine: swarm
mode: dual-server
num_users: 3
hosts:
  mello:
    address: mello
    tailscale_ip: 100.64.0.1
    roles: [app]
  verda:
    address: verda
    tailscale_ip: 100.64.0.2
    roles: [worker]
  verda-2:
    address: verda-2
    tailscale_ip: 100.64.0.3
    roles: [worker]
"""
