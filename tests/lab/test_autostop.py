"""Autostop in the lab (issue 21): an instance rented from the Verda API stand-in (a real lab host
it creates) is deleted by the program installed on mello, with no command run from here, within two
minutes of the queue going idle; a job kept running on the lab's worker holds it.

The instance is rented with the SDK's REST calls and autostop installed with `ops.autostop.install`,
as start-all does after renting (the whole start-all on a rented worker is the provider's test);
after that this test only watches: the Verda API's view of the instance, the state file and the
audit line on mello. About 3 minutes: `idle: 1m` is the shortest idle the inventory allows, a job
must outlast it to show that it holds the instance, and the idle minute follows the job.
"""
from __future__ import annotations

import json
import math
import stat
import time
import urllib.error
import urllib.request

import jsonschema
import pytest
import yaml

from comfyume_fab.checks import autostop as autostopcheck
from comfyume_fab.host.session import Session
from comfyume_fab.inventory import load_inventory
from comfyume_fab.lab import hostsvc, verda
from comfyume_fab.ops import autostop
from comfyume_fab.plan import autostop as plan
from tests.support import REPO, invoke, job_status, submit_job, workdir_file

IDLE_S = 60  # `idle: 1m`; read every 15 s (a quarter of idle)
INSTANCE_TYPE = "1H100.80S.30V"


def long_job(seconds: float) -> dict:
    """~`seconds` of work on the lab's stand-in worker (its ImageBlur waits w*h*batch*radius / 2e6 s;
    ComfyUI allows a blur_radius of at most 31, so a long job is a batch)."""
    batch = math.ceil(seconds / 15.5)
    radius = round(seconds * 2 / batch)
    return {"1": {"class_type": "EmptyImage", "inputs": {"width": 1000, "height": 1000, "batch_size": batch,
                                                         "color": 0x2468AC}},
            "2": {"class_type": "ImageBlur", "inputs": {"image": ["1", 0], "blur_radius": radius, "sigma": 1.0}},
            "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "autostop-held"}}}


def api(cloud, method: str, path: str, body=None, token: str | None = None):
    """One call as the `verda` SDK makes it: (status, parsed JSON or text)."""
    req = urllib.request.Request(cloud.url + path, data=None if body is None else json.dumps(body).encode(),
                                 method=method, headers={"Content-Type": "application/json",
                                                         **({"Authorization": f"Bearer {token}"} if token else {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw, status = resp.read(), resp.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw or b"null")
    except ValueError:
        return status, raw.decode()


@pytest.fixture(scope="module")
def cloud(lab):
    with verda.running(lab.dir) as running:
        yield running


@pytest.fixture
def rented(lab, deployed, cloud, tmp_path, monkeypatch):
    """The lab inventory with a rented worker host `rented` (autostop idle 1m), its instance running."""
    for name, value in {"VERDA_CLIENT_ID": cloud.client_id, "VERDA_CLIENT_SECRET": cloud.client_secret,
                        "TAILSCALE_AUTHKEY": cloud.authkey}.items():
        monkeypatch.setenv(name, value)
    path = lab.inventory(tmp_path)
    data = yaml.safe_load(path.read_text())
    data["hosts"]["rented"] = {"roles": ["worker"], "provider": {"instance_type": INSTANCE_TYPE, "api": cloud.url,
                                                                 "location": "FIN-01"},
                               "autostop": {"idle": "1m"}}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    inv = load_inventory(str(path))
    status, auth = api(cloud, "POST", "/oauth2/token", {"grant_type": "client_credentials",
                                                        "client_id": cloud.client_id,
                                                        "client_secret": cloud.client_secret})
    assert status == 200, auth
    token = auth["access_token"]
    status, iid = api(cloud, "POST", "/instances", {
        "instance_type": INSTANCE_TYPE, "image": "ubuntu-24.04-cuda-12.8-open-docker",
        "hostname": "comfyume-worker-autostop", "description": "autostop lab test", "ssh_key_ids": [],
        "location_code": "FIN-01", "startup_script_id": None, "existing_volumes": [], "is_spot": False}, token)
    assert status in (200, 201, 202), iid
    cloud.wait_for(iid, ("running",))
    status, inst = api(cloud, "GET", f"/instances/{iid}", token=token)
    assert status == 200 and inst["status"] == "running", inst
    record = {"id": iid, "hostname": inst["hostname"], "created_at": inst["created_at"]}
    with Session(inv, [inv.app_host]) as session:
        session.connect()
        session.require_all()
        try:
            yield inv, session, record, lambda: api(cloud, "GET", f"/instances/{iid}", token=token)
        finally:
            autostop.remove(inv, session, "rented", lambda _m: None)
            if api(cloud, "GET", f"/instances/{iid}", token=token)[1].get("status") == "running":
                api(cloud, "PUT", "/instances", {"id": [iid], "action": "delete", "volume_ids": None}, token)


def state_of(lab) -> dict:
    path = workdir_file(lab, "mello", "autostop/rented/state/state.json")
    return json.loads(path.read_text()) if path.exists() else {}


def test_idle_instance_is_deleted_without_the_laptop_and_a_running_job_holds_it(lab, cloud, rented):
    inv, session, record, instance = rented
    job = submit_job("user001", long_job(95))  # the lab's worker (verda) runs it
    deadline = time.monotonic() + 20
    while job_status(job) != "running":
        assert time.monotonic() < deadline, "the lab's worker did not take the long job"
        time.sleep(0.2)
    said: list[str] = []
    autostop.install(inv, session, record, said.append, host="rented")
    t0 = time.monotonic()
    assert "autostop on mello installed" in said[-1] and "idle 1m" in said[-1] and "every 15s" in said[-1]
    assert autostop.install(inv, session, record, said.append, host="rented")["changed"] == []  # a rerun: nothing
    assert "unchanged" in said[-1]
    env_file = workdir_file(lab, "mello", "autostop/rented/conf/verda.env")
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    mello = lab.hosts["mello"]
    ids = hostsvc.docker(mello, "ps", "-q", "--filter",
                         f"label=com.docker.compose.project={plan.project_name(inv, 'rented')}").stdout.split()
    assert len(ids) == 1
    inspect = hostsvc.docker(mello, "inspect", ids[0]).stdout
    assert json.loads(inspect)[0]["State"]["Status"] == "running"
    assert cloud_secret(inv) not in inspect  # not in the container's environment or argv

    # Held: past the first moment an idle queue would have fired (watching began ~t0; 1m + one 15 s
    # round), the instance is still running while the job runs, and the state says busy; status
    # (run meanwhile) shows it for the rented host, in text and --json.
    res = invoke("status", "--json", "--no-probe", "--hosts", str(inv.path))
    assert "Traceback" not in res.stdout + res.stderr, res.stderr
    data = json.loads(res.stdout)
    jsonschema.validate(data, json.loads((REPO / "docs" / "status.schema.json").read_text()))
    block = data["hosts"]["rented"]["autostop"]
    assert block["state"] == "watching" and block["instance_id"] == record["id"], block
    assert block["text"].startswith("watching, busy (1 running, 0 pending) at "), block
    check = next(c for c in data["checks"] if c["name"] == "autostop-rented")
    assert check["ok"] and not check["warning"] and check["detail"] == block["text"]
    while time.monotonic() < t0 + IDLE_S + 20:
        assert instance()[1]["status"] == "running", state_of(lab)
        time.sleep(2)
    assert job_status(job) == "running", "the long job ended too early to show that it holds the instance"
    st = state_of(lab)
    assert (st["state"], st["reason"], st["instance_id"]) == ("watching", "busy", record["id"]), st
    assert autostopcheck.view(st)["text"].startswith("watching, busy (1 running, 0 pending) at ")

    # Idle: once the job completed, the instance goes within two minutes, with nothing run from here.
    deadline = time.monotonic() + 60
    while job_status(job) != "completed":
        assert time.monotonic() < deadline, f"the long job did not complete: {job_status(job)}"
        time.sleep(0.5)
    idle_since = time.monotonic()
    while instance()[1].get("status") not in ("discontinued", "deleted"):
        assert time.monotonic() - idle_since < 120, f"not deleted within 2 min of going idle: {state_of(lab)}"
        time.sleep(1)
    took = time.monotonic() - idle_since
    # the stand-in removes the deleted instance's lab host in the background: wait for it, so that
    # nothing after this test (the lab's fault healing, the stand-in's exit) races with it
    deadline = time.monotonic() + 60
    while any(i["id"] == record["id"] for i in cloud.lab_instances()):
        assert time.monotonic() < deadline, f"the deleted instance's lab host is still there: {cloud.lab_instances()}"
        time.sleep(0.5)
    assert took >= IDLE_S - 16, f"deleted {took:.0f} s after the queue went idle, before idle (1m) passed"
    st = state_of(lab)
    assert (st["state"], st["fires_for"], st["instance_id"]) == ("deleted", "idle", record["id"]), st
    assert autostopcheck.view(st)["text"].startswith("deleted the instance at ")
    audit = workdir_file(lab, "mello", "audit.log").read_text().splitlines()
    mine = [line for line in audit if f"instance={record['id']}" in line]
    assert len(mine) == 1 and " by=autostop@mello task=autostop-delete " in mine[0] and " reason=idle " in mine[0]
    assert cloud_secret(inv) not in "\n".join(audit) + json.dumps(st)


def cloud_secret(inv) -> str:
    return inv.secrets["VERDA_CLIENT_SECRET"].reveal()
