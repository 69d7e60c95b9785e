"""Renting the GPU worker (issue 21) against the lab's STAND-IN of Verda's API (lab/verda.py): an
inventory whose worker has `provider: verda` and no instance -> start-all rents one (a real lab
host that ran the startup script), verifies its host key on first contact (strict, never trust
on first use), deploys the worker, the inference and job probes pass; status shows the price and
the cost so far; stop-verda --delete deletes it and keeps the data volume, status says "deleted
on purpose"; start-all again rents a new instance with the same data volume. Then the failures,
one sentence each and nothing left rented: no capacity, bad credentials, a failing startup
script, a provisioning timeout.

One stand-in and one inventory for the module; the tests run in file order.
"""
from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from comfyume_fab.lab import verda
from tests.support import invoke, wait_for

pytestmark = pytest.mark.lab

TYPE = "1H100.80S.30V"
SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "docs" / "status.schema.json").read_text())
PREFIX = "lab"  # the instance's hostname: lab-rented -> the lab host's login user cfab-lab-rented


@pytest.fixture(scope="module")
def standin(lab):
    with verda.running(provisioning_delay=1) as api:
        yield api


@pytest.fixture(scope="module")
def rented(lab, standin, tmp_path_factory):
    """The lab inventory with mello (app) and `rented`, a worker with a provider section."""
    path = lab.inventory(tmp_path_factory.mktemp("provider"), names=("mello",))
    data = yaml.safe_load(path.read_text())
    data["hosts"]["rented"] = {
        "roles": ["worker"], "gpu": "auto", "user": f"cfab-{PREFIX}-rented", "identity_file": str(lab.key),
        "worker_id": "rented-1", "autostop": {"idle": "10m"},  # its install/remove hooks (fires in test_autostop)
        "provider": {"api": standin.url, "instance_type": TYPE, "location": "FIN-01", "volumes": [standin.volume_id],
                     "hostname_prefix": PREFIX, "tailscale_authkey": "LAB_TS_KEY", "provision_timeout": 60}}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def env(standin, **over) -> dict:
    return {"VERDA_CLIENT_ID": standin.client_id, "VERDA_CLIENT_SECRET": standin.client_secret,
            "LAB_TS_KEY": standin.authkey, **over}


def live(standin) -> list[dict]:
    """The stand-in's instances that are not deleted."""
    return [i for i in standin.lab_instances() if i["status"] not in ("discontinued",)]


def record(inv: Path) -> dict:
    return json.loads((inv.parent / ".comfyume-fab" / "instances" / "rented.json").read_text())


def no_secret(res, standin) -> None:
    for value in (standin.client_secret, standin.authkey):
        assert value not in res.stdout + res.stderr


def test_start_all_rents_verifies_and_deploys_then_status_shows_the_bill(lab, standin, rented):
    refused = invoke("start-all", "--hosts", str(rented), env=env(standin))  # no --yes, no terminal
    assert refused.returncode == 2, refused.stderr
    assert "renting 1H100.80S.30V (on demand) in FIN-01 at 2.19/h" in refused.stderr
    assert "not rented, as it was not confirmed (rerun with --yes" in refused.stderr
    assert not live(standin)

    res = invoke("start-all", "--hosts", str(rented), "--yes", env=env(standin))
    assert res.returncode == 0, res.stderr + res.stdout
    no_secret(res, standin)
    out = res.stderr + res.stdout
    assert "instance provisioning" in out and "instance running" in out  # progress lines
    assert "SSH host key verified against the one generated here" in out
    rec = record(rented)
    (inst,) = live(standin)
    assert (inst["id"], inst["status"], inst["hostname"]) == (rec["id"], "running", "lab-rented")
    assert rec["ip"] == inst["address"] and rec["tailscale_ip"] == inst["address"]
    assert rec["volumes"] == [standin.volume_id] and rec["created_by"] and rec["price_per_hour"] == 2.19
    known = (rented.parent / ".comfyume-fab" / "known_hosts").read_text().split()
    assert known[0] == rec["ip"] and known[1] == "ssh-ed25519"
    assert "rented: inference" in out
    assert "rented: autostop on mello installed (deletes the instance after idle 10m;" in out, out  # start-all's hook, after the worker is healthy

    st = invoke("status", "--hosts", str(rented), "--json", env=env(standin))
    data = json.loads(st.stdout)
    assert st.returncode == 0, st.stdout[-3000:]
    jsonschema.validate(data, SCHEMA)
    assert any(c["name"] == "job-probe" and c["ok"] for c in data["checks"]), [c["name"] for c in data["checks"]]
    bill = data["bill"]
    assert bill["hosts"]["rented"]["state"] == "rented" and bill["hosts"]["rented"]["price_per_hour"] == 2.19
    assert bill["hosts"]["rented"]["cost_so_far"] is not None and bill["balance"] is not None
    assert bill["runway_hours"] == pytest.approx(bill["balance"] / 2.19, rel=0.01)
    text = invoke("status", "--hosts", str(rented), "--no-probe", env=env(standin))
    assert "rented: balance" in text.stdout and "at 2.19/h, running" in text.stdout and "cost so far" in text.stdout


def test_stop_verda_delete_keeps_the_volume_and_status_says_deleted_on_purpose(lab, standin, rented):
    first = record(rented)
    res = invoke("stop-verda", "--hosts", str(rented), "--delete", env=env(standin))
    assert res.returncode == 0, res.stderr + res.stdout
    assert "deleted rented (instance lab-rented" in res.stdout and "no longer billing" in res.stdout
    assert "rented: autostop removed from mello" in res.stdout + res.stderr  # stop-verda --delete's hook
    wait_for(lambda: not standin.lab_instances(), timeout=60, what="the deleted instance's lab host removed")
    rec = record(rented)
    assert rec["deleted_at"] and rec["deleted_by"] and rec["ip"] is None and rec["deleted_how"] == "stop-verda --delete"
    assert first["ip"] not in (rented.parent / ".comfyume-fab" / "known_hosts").read_text()
    st = invoke("status", "--hosts", str(rented), "--json", env=env(standin))
    assert st.returncode == 6, st.stdout[-2000:]
    data = json.loads(st.stdout)
    jsonschema.validate(data, SCHEMA)
    gone = data["hosts"]["rented"]["deleted_on_purpose"]
    assert gone["how"] == "stop-verda --delete" and gone["by"] == rec["deleted_by"] and gone["at"] == rec["deleted_at"]
    assert data["verdict"] == "stopped on purpose"
    assert not any(c["name"] == "reachable-rented" for c in data["checks"])  # not "unreachable"
    text = invoke("status", "--hosts", str(rented), "--no-probe", env=env(standin))
    assert "DELETED ON PURPOSE (stop-verda --delete by" in text.stdout


def test_start_all_again_rents_a_new_instance_with_the_same_volume(lab, standin, rented):
    before = record(rented)["id"]
    res = invoke("start-all", "--hosts", str(rented), "--yes", env=env(standin))
    assert res.returncode == 0, res.stderr + res.stdout
    rec = record(rented)
    assert rec["id"] != before and not rec.get("deleted_at") and rec["volumes"] == [standin.volume_id]
    (inst,) = live(standin)
    assert inst["id"] == rec["id"]
    res = invoke("stop-verda", "--hosts", str(rented), "--delete", env=env(standin))
    assert res.returncode == 0, res.stderr + res.stdout
    wait_for(lambda: not standin.lab_instances(), timeout=60, what="the lab host removed")


@pytest.mark.parametrize("case", ["no-capacity", "bad-credentials", "failing-script", "provisioning-timeout"])
def test_a_failure_is_one_sentence_and_leaves_nothing_rented(lab, standin, rented, case):
    path, extra = rented, {}
    if case == "no-capacity":
        standin.control(no_capacity=[f"{TYPE}@FIN-01"])
    elif case == "bad-credentials":
        extra = {"VERDA_CLIENT_SECRET": "not-the-secret"}
    elif case == "failing-script":
        standin.control(fail_next_script=1)
    else:
        data = yaml.safe_load(rented.read_text())
        data["hosts"]["rented"]["provider"]["provision_timeout"] = 10
        path = rented.parent / "slow.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        standin.control(provisioning_delay=13)
    try:
        res = invoke("start-all", "--hosts", str(path), "--yes", env=env(standin, **extra))
    finally:
        standin.control(no_capacity=[], fail_next_script=0, provisioning_delay=1)
    line = res.stderr.strip().splitlines()[-1]  # the one sentence, after the progress lines
    assert sum("nothing" in ln and "rented" in ln for ln in res.stderr.splitlines()) == 1, res.stderr
    want = {"no-capacity": (4, ["step availability", "no capacity: 1H100.80S.30V (on demand) is not available in "
                                "FIN-01; available in FIN-01:", "nothing was rented"]),
            "bad-credentials": (2, ["refused VERDA_CLIENT_ID / VERDA_CLIENT_SECRET", "nothing was rented"]),
            "failing-script": (4, ["step startup script", "status error", "instance lab-rented was deleted, "
                                   "nothing is left rented"]),
            "provisioning-timeout": (4, ["step provisioning", "not running within provider.provision_timeout (10 s",
                                         "instance lab-rented was deleted, nothing is left rented"])}[case]
    assert res.returncode == want[0], res.stderr
    for part in want[1]:
        assert part in line, line
    assert "not-the-secret" not in res.stderr + res.stdout
    no_secret(res, standin)
    wait_for(lambda: not live(standin), timeout=30, what="nothing rented")
    assert not record(rented).get("ip")
