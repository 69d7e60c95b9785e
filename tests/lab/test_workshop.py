"""A live workshop (issue 13), against the lab: 20 users and a worker, changed one thing at a time.

One module-scoped deployment (20 users, a worker image built here from this checkout's stand-ins
with SIGTERM ignored as ComfyUI's main.py ignores it as PID 1), driven through the real CLI. The
tests run in file order: each leaves the deployment up for the next, and the module ends by
converging the lab back to its default 3-user inventory. New images are made on the lab engines
(`docker tag`, `docker build` FROM a lab image): nothing is ever pulled.
"""
from __future__ import annotations

import json
import random
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
import yaml

from comfyume_fab.lab import faults, hostsvc
from comfyume_fab.lab.files import write_known_hosts
from comfyume_fab.lab.images import STANDINS, _legacy_build
from comfyume_fab.lab.system import in_netns
from comfyume_fab.ops.audit import who
from tests.support import invoke, job_status, submit_job

pytestmark = pytest.mark.lab

USERS = 20
WORKER_IMAGE = "comfyume-worker:workshop"  # this checkout's stand-ins, SIGTERM ignored always
NEW_FRONTEND = "comfyume-frontend:workshop-new"  # the lab frontend under a new name: a "new version"
BROKEN_FRONTEND = "comfyume-frontend:workshop-broken"  # never answers its healthcheck
WORKER_PORT = 8300
TIMEOUTS = {"connect": 4, "health": 120, "probe": 15, "busy": 120, "redis": 3}


def _inventory(lab, tmp: Path, name: str, **over) -> Path:
    images = {"worker": WORKER_IMAGE, **over.pop("images", {})}
    timeouts = {**TIMEOUTS, **over.pop("timeouts", {})}
    return lab.inventory(tmp / name, num_users=over.pop("num_users", USERS), images=images, timeouts=timeouts,
                         rollout={"batch": 5}, **over)


def _edit(path: Path, fn) -> Path:
    data = yaml.safe_load(path.read_text())
    fn(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _ok(res):
    out = res.stdout + res.stderr
    assert res.returncode == 0 and "Traceback" not in out, out
    return out


def _containers(lab, host: str) -> dict[str, dict]:
    h = lab.hosts[host]
    ids = hostsvc.docker(h, "ps", "-aq", "--filter", "label=com.docker.compose.project=comfyume").stdout.split()
    out = {}
    for c in json.loads(hostsvc.docker(h, "inspect", *ids).stdout) if ids else ():
        out[c["Config"]["Labels"]["com.docker.compose.service"]] = {
            "id": c["Id"], "started": c["State"]["StartedAt"], "state": c["State"]["Status"],
            "health": (c["State"].get("Health") or {}).get("Status", ""), "image": c["Config"]["Image"],
            "exit": c["State"]["ExitCode"]}
    return out


def _worker_http(lab, method: str, path: str, body=None) -> tuple[int, str]:
    """An HTTP call to the worker's ComfyUI from verda itself (it is published on verda's loopback)."""
    argv = ["curl", "-sS", "-m", "5", "-o", "/dev/stdout", "-w", "\n%{http_code}", "-X", method,
            f"http://127.0.0.1:{WORKER_PORT}{path}"]
    if body is not None:
        argv += ["-H", "Content-Type: application/json", "-d", json.dumps(body)]
    res = faults.netns_run("verda", argv, timeout=10)
    text, _, code = res.stdout.rpartition("\n")
    return int(code or 0), text





def _tiny(color: int) -> dict:
    return {"1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 16, "batch_size": 1, "color": color}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "workshop"}}}


def _slow(seconds: int) -> dict:
    """~`seconds` of work on the stand-in (STANDIN_BLUR_RATE=1e6 px*radius/s in WORKER_IMAGE)."""
    return {"1": {"class_type": "EmptyImage", "inputs": {"width": 1000, "height": 1000, "batch_size": 1,
                                                         "color": random.randrange(1 << 24)}},
            "2": {"class_type": "ImageBlur", "inputs": {"image": ["1", 0], "blur_radius": seconds, "sigma": 1.0}},
            "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "workshop-slow"}}}


class JobLoop:
    """Users' jobs submitted through the queue manager, one every 0.3 s, for as long as it runs."""

    def __init__(self):
        self.ids: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        n = 0
        while not self.stop.wait(0.3):
            n += 1
            self.ids.append(submit_job(f"user{1 + n % USERS:03d}", _tiny(random.randrange(1 << 24))))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(10)

    def finish(self, timeout: float = 60) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while True:
            states = {j: job_status(j) for j in self.ids}
            if all(s in ("completed", "failed") for s in states.values()) or time.monotonic() > deadline:
                return states
            time.sleep(0.5)


POLLER = r"""
import json, os, socket, sys, time
ports, stop = [int(p) for p in sys.argv[1].split(",")], sys.argv[2]
worst, ticks = [], 0
def up(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.3) as s:
            s.settimeout(0.5)
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            return b" 200 " in s.recv(16)
    except OSError:
        return False
while not os.path.exists(stop):
    t = time.monotonic()
    down = [p for p in ports if not up(p)]
    ticks += 1
    if len(down) > len(worst):
        worst = down
    time.sleep(max(0.0, 0.1 - (time.monotonic() - t)))
print(json.dumps({"ticks": ticks, "max_down": len(worst), "worst": worst}))
"""


class Poller:
    """Every frontend port on mello, every 100 ms, from inside mello's network namespace."""

    def __init__(self, lab, ports):
        self.stop = Path(tempfile.mkdtemp()) / "stop"
        self.proc = subprocess.Popen(in_netns(lab.hosts["mello"].netns, [
            "python3", "-c", POLLER, ",".join(map(str, ports)), str(self.stop)]),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def result(self) -> dict:
        self.stop.touch()
        out, err = self.proc.communicate(timeout=30)
        assert self.proc.returncode == 0, err
        return json.loads(out)


@pytest.fixture(scope="module")
def ws(lab, tmp_path_factory):
    """The 20-user deployment with the workshop worker image; the lab's default one afterwards."""
    tmp = tmp_path_factory.mktemp("workshop")
    mello, verda = lab.hosts["mello"], lab.hosts["verda"]
    # the lab is shared: another checkout may have rebuilt it (new host keys) since this one's .lab/
    write_known_hosts(lab.dir, list(lab.hosts.values()))
    ctx = Path(tempfile.mkdtemp())
    shutil.copytree(STANDINS, ctx / "standins", ignore=shutil.ignore_patterns("__pycache__"))
    (ctx / "Dockerfile").write_text(
        "FROM comfyume-worker:v0.11.0\nCOPY standins /opt/standins\n"
        "ENV STANDIN_IGNORE_SIGTERM=1 STANDIN_BLUR_RATE=1000000\n"
        'LABEL org.comfyume.lab="STAND-IN worker of this checkout; ignores SIGTERM like ComfyUI as PID 1"\n')
    build = _legacy_build(verda, ["build", "-q", "-t", WORKER_IMAGE, str(ctx)])
    assert build.returncode == 0, build.stderr
    (ctx / "Dockerfile").write_text('FROM comfyume-frontend:v0.11.0\nCMD ["sleep", "infinity"]\n')
    build = _legacy_build(mello, ["build", "-q", "-t", BROKEN_FRONTEND, str(ctx)])
    assert build.returncode == 0, build.stderr
    shutil.rmtree(ctx, ignore_errors=True)
    hostsvc.docker(mello, "tag", "comfyume-frontend:v0.11.0", NEW_FRONTEND)
    inv = _inventory(lab, tmp, "base")
    _ok(invoke("start-all", "--hosts", str(inv)))
    yield {"tmp": tmp, "inv": inv}
    faults.heal_all()
    _ok(invoke("start-all", "--hosts", str(lab.inventory(tmp / "default"))))
    hostsvc.docker(mello, "rmi", NEW_FRONTEND, BROKEN_FRONTEND, check=False)
    hostsvc.docker(verda, "rmi", WORKER_IMAGE, check=False)


# ---------------------------------------------------------------------------------------------- diff
def test_1_diff_says_nothing_on_a_healthy_lab_and_exactly_the_new_user_after_an_edit(lab, ws):
    res = invoke("diff", "--hosts", str(ws["inv"]))
    out = _ok(res)
    assert res.stdout.startswith("diff: nothing would change"), out
    assert f"mello: nothing would change ({3 + USERS} service(s) unchanged)" in out
    more = _edit(_inventory(lab, ws["tmp"], "diff21"), lambda d: d.update(num_users=USERS + 1))
    res = invoke("diff", "--json", "--hosts", str(more))
    _ok(res)
    data = json.loads(res.stdout)
    todo = [(h, c["service"], c["action"]) for h, cs in data["hosts"].items() for c in cs if c["action"] != "unchanged"]
    assert data["changes"] == 1 and todo == [("mello", "user021", "create")], data


# ------------------------------------------------------------------------------- one more user
def test_2_one_more_user_creates_only_that_user_while_jobs_run(lab, ws):
    import redis
    r = redis.Redis(host="100.64.0.1", port=6379, password=lab.secrets["REDIS_PASSWORD"], socket_timeout=3)
    r.set("cfab:workshop:sentinel", "kept")
    keys_before = r.dbsize()
    before = {h: _containers(lab, h) for h in ("mello", "verda")}
    more = _inventory(lab, ws["tmp"], "users21", num_users=USERS + 1)
    with JobLoop() as jobs:
        time.sleep(1)
        out = _ok(invoke("start-all", "--hosts", str(more)))
        time.sleep(1)
    states = jobs.finish()
    assert "plan: mello: 1 change(s)" in out and "create user021" in out, out
    after = {h: _containers(lab, h) for h in ("mello", "verda")}
    assert set(after["mello"]) - set(before["mello"]) == {"user021"}
    for host in before:
        for svc, c in before[host].items():
            assert (after[host][svc]["id"], after[host][svc]["started"]) == (c["id"], c["started"]), (host, svc)
    assert after["mello"]["user021"]["health"] == "healthy"
    assert r.get("cfab:workshop:sentinel") == b"kept" and r.dbsize() >= keys_before
    assert len(states) >= 5 and set(states.values()) == {"completed"}, states
    # ... and back down to 20: only user021 goes, its data folder stays
    out = _ok(invoke("start-all", "--hosts", str(ws["inv"])))
    assert "remove user021" in out and "data/user_data/ folder is kept" in out, out
    now = _containers(lab, "mello")
    assert "user021" not in now
    assert {svc: c["id"] for svc, c in now.items()} == {svc: c["id"] for svc, c in before["mello"].items()}
    assert (lab.hosts["mello"].home / "comfyume" / "data" / "user_data" / "user021").is_dir()


# ------------------------------------------------------------------------------------- rolling
def test_3_a_new_frontend_image_rolls_out_one_batch_at_a_time(lab, ws):
    before = _containers(lab, "mello")
    new = _inventory(lab, ws["tmp"], "new-frontend", images={"frontend": NEW_FRONTEND})
    poller = Poller(lab, [8188 + i for i in range(USERS)])
    try:
        time.sleep(0.5)
        out = _ok(invoke("start-all", "--hosts", str(new)))
    finally:
        seen = poller.result()
    print(f"POLLER {seen}")
    assert seen["ticks"] > 20 and 1 <= seen["max_down"] <= 5, seen
    assert "rolling batch 4/4" in out and "rolling batch 5/" not in out, out
    after = _containers(lab, "mello")
    for i in range(1, USERS + 1):
        c = after[f"user{i:03d}"]
        assert c["image"] == NEW_FRONTEND and c["state"] == "running" and c["health"] == "healthy", (i, c)
    for svc in ("redis", "queue-manager", "admin"):
        assert after[svc]["id"] == before[svc]["id"], svc


def test_4_a_batch_that_never_becomes_healthy_stops_the_rollout(lab, ws):
    broken = _inventory(lab, ws["tmp"], "broken", images={"frontend": BROKEN_FRONTEND}, timeouts={"health": 12})
    res = invoke("start-all", "--hosts", str(broken))
    out = res.stdout + res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert res.returncode == 4 and "Traceback" not in out and len(errors) == 1, out
    assert "host mello, step rolling update: rollout stopped at batch 1 of 4 (user001..user005)" in errors[0]
    assert "user006, user007" in errors[0] and "still run the previous version and serve" in errors[0]
    now = _containers(lab, "mello")
    for i in range(6, USERS + 1):
        c = now[f"user{i:03d}"]
        assert c["image"] == NEW_FRONTEND and c["health"] == "healthy", (i, c)
        code = faults.netns_run("mello", ["curl", "-fsS", "-o", "/dev/null", f"http://127.0.0.1:{8187 + i}/"])
        assert code.returncode == 0, (i, code.stderr)  # still serving
    assert now["user001"]["image"] == BROKEN_FRONTEND
    # the rerun with the good version continues from that batch, touching only it (already down:
    # brought up together, not rolled)
    good = _inventory(lab, ws["tmp"], "new-frontend", images={"frontend": NEW_FRONTEND})
    out = _ok(invoke("start-all", "--hosts", str(good)))
    assert "plan: mello: 5 change(s), 18 service(s) unchanged" in out, out
    assert "recreate user001 (FRONTEND_IMAGE comfyume-frontend:workshop-broken -> comfyume-frontend:workshop-new)" in out
    assert "docker compose up -d user001 user002 user003 user004 user005\n" in out, out
    after = _containers(lab, "mello")
    assert all(after[f"user{i:03d}"]["id"] == now[f"user{i:03d}"]["id"] for i in range(6, USERS + 1))


# ------------------------------------------------------------------------------------ busy probe
def test_4b_a_new_redis_image_warns_first_recreates_only_redis_and_keeps_its_data(lab, ws):
    import redis
    mello = lab.hosts["mello"]
    hostsvc.docker(mello, "tag", "redis:7-alpine", "redis:workshop")
    r = redis.Redis(host="100.64.0.1", port=6379, password=lab.secrets["REDIS_PASSWORD"], socket_timeout=3)
    r.set("cfab:workshop:redis-kept", "yes")
    r.save()  # what is in memory reaches the data volume (Redis persists with save/AOF)
    before = _containers(lab, "mello")
    newer = _inventory(lab, ws["tmp"], "redis-new", images={"frontend": NEW_FRONTEND, "redis": "redis:workshop"})
    try:
        out = _ok(invoke("start-all", "--hosts", str(newer)))
        assert ("WARNING: mello: Redis will be recreated (REDIS_IMAGE redis:7-alpine -> redis:workshop): "
                "queue manager and workers reconnect; its data volume is kept") in out, out
        assert out.index("Redis will be recreated") < out.index("docker compose up -d redis")  # said before
        after = _containers(lab, "mello")
        assert after["redis"]["id"] != before["redis"]["id"] and after["redis"]["image"] == "redis:workshop"
        assert {s: c["id"] for s, c in after.items() if s != "redis"} == \
            {s: c["id"] for s, c in before.items() if s != "redis"}
        assert r.get("cfab:workshop:redis-kept") == b"yes"
    finally:
        _ok(invoke("start-all", "--hosts", str(_inventory(lab, ws["tmp"], "new-frontend",
                                                             images={"frontend": NEW_FRONTEND}))))
        hostsvc.docker(mello, "rmi", "redis:workshop", check=False)


def test_5_a_busy_worker_is_healthy_then_a_stuck_one_is_not(lab, ws):
    inv = _inventory(lab, ws["tmp"], "new-frontend", images={"frontend": NEW_FRONTEND})
    job = submit_job("user001", _slow(30))
    try:
        # the worker polls the queue manager every second; on 2 shared cores, after the Redis
        # recreation of test_4b, its first pick-up has taken over 20 s (2 of 3 runs on 2026-12-01)
        deadline = time.monotonic() + 60
        while not json.loads(_worker_http(lab, "GET", "/queue")[1])["queue_running"]:
            assert time.monotonic() < deadline, \
                f"the user's slow job never started on the worker (job: {job_status(job)})"
            time.sleep(0.3)
        res = invoke("status", "--json", "--hosts", str(inv))
        data = json.loads(res.stdout)
        probe = {c["name"]: c for c in data["checks"]}["inference-verda"]
        assert res.returncode == 0, res.stdout + res.stderr
        assert probe["ok"] and probe["diagnosis"] == "busy" and probe["busy"]["progressing"], probe
        assert "withdrawn from the queue" in probe["detail"] and "running prompt" in probe["detail"]
        queue = json.loads(_worker_http(lab, "GET", "/queue")[1])
        assert queue["queue_pending"] == [], queue  # nothing the probe posted is left
        assert queue["queue_running"] and not any(str(item[3].get("client_id", "")).startswith("comfyume-fab")
                                                  for item in queue["queue_running"])
        # the same job, judged with a 3 s bound: no progress for longer than that is a failure
        stuck = _inventory(lab, ws["tmp"], "stuck", images={"frontend": NEW_FRONTEND}, timeouts={"busy": 3})
        res = invoke("status", "--hosts", str(stuck))
        assert res.returncode == 4, res.stdout + res.stderr
        line = next(ln for ln in res.stdout.splitlines() if "inference-verda" in ln)
        assert "[FAIL]" in line and "busy but makes no progress" in line and "timeouts.busy 3 s" in line, line
        assert json.loads(_worker_http(lab, "GET", "/queue")[1])["queue_pending"] == []
    finally:
        _worker_http(lab, "POST", "/interrupt", {})
    assert job_status(job) in ("running", "failed", "completed")


# ------------------------------------------------------------------------------------- stopping
def test_6_stop_verda_with_mello_cut_off_stops_the_worker_then_status_says_on_purpose(lab, ws):
    inv = _inventory(lab, ws["tmp"], "new-frontend", images={"frontend": NEW_FRONTEND})
    faults.cut("mello")
    try:
        res = invoke("stop-verda", "--hosts", str(inv), timeout=120)
        out = _ok(res)
        assert "WARNING: mello is unreachable" in res.stderr and "not checked: the queue drain" in res.stderr, out
        assert "app host NOT checked" in res.stdout
        assert _containers(lab, "verda")["worker"]["state"] == "exited"
        res = invoke("stop-verda", "--when-idle", "--hosts", str(inv), timeout=120)
        assert res.returncode == 3 and "--when-idle needs the job queue on mello" in res.stderr, res.stderr
    finally:
        faults.reconnect("mello")
    t0 = time.time()
    res = invoke("status", "--json", "--no-probe", "--hosts", str(inv))
    data = json.loads(res.stdout)
    assert res.returncode == 6, res.stdout + res.stderr
    held = data["hosts"]["verda"]["stopped_on_purpose"]
    assert held["task"] == "stop-verda" and held["by"] == who() and held["instance_running"] is True
    assert 0 <= held["stopped_for_s"] < time.time() - t0 + 120
    text = invoke("status", "--no-probe", "--hosts", str(inv))
    assert text.returncode == 6 and "comfyume status: STOPPED ON PURPOSE" in text.stdout, text.stdout
    assert f"stopped on purpose (stop-verda by {who()} at {held['at']})" in text.stdout
    assert "still billing" in text.stdout
    record = lab.hosts["verda"].home / "comfyume" / "stopped.json"
    assert record.exists()
    out = _ok(invoke("start-all", "--hosts", str(inv)))
    assert "start worker" in out and not record.exists(), out
    assert _containers(lab, "verda")["worker"]["health"] == "healthy"


def test_7_the_worker_ignores_sigterm_yet_stops_cleanly_in_under_3_s(lab, ws):
    verda = lab.hosts["verda"]
    cid = _containers(lab, "verda")["worker"]["id"]
    hostsvc.docker(verda, "kill", "-s", "TERM", cid)
    time.sleep(1.5)
    assert _containers(lab, "verda")["worker"]["state"] == "running"  # SIGTERM ignored, as ComfyUI does
    t0 = time.monotonic()
    hostsvc.docker(verda, "stop", cid)  # the compose definition's stop signal, through its init
    took = time.monotonic() - t0
    c = _containers(lab, "verda")["worker"]
    print(f"WORKER STOP {took:.2f} s exit {c['exit']}")
    assert c["state"] == "exited" and c["exit"] != 137 and took < 3, (took, c)
    _ok(invoke("start-all", "--hosts", str(_inventory(lab, ws["tmp"], "new-frontend",
                                                         images={"frontend": NEW_FRONTEND}))))
