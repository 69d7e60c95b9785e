"""The STAND-IN of Verda's public API (issue 21 item 6), through plain HTTP as the SDK calls it and
through SSH: an instance is a real lab host that ran its startup script, whose sshd presents
exactly the host key the script installed (strict known_hosts, never trust on first use), whose
`tailscale ip -4` answers and whose Docker engine works; deleting it removes the host and keeps the
data volume; the errors the real API answers (bad credentials, no capacity, deleting a
provisioning instance, a failing startup script).

One stand-in for the module (lab.verda.running); the tests run in file order.
"""
from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import pytest

from comfyume_fab.host.ssh.connect import Target
from comfyume_fab.host.ssh.remote import Remote
from comfyume_fab.lab import dynhost, verda
from tests.support import call, wait_for

pytestmark = pytest.mark.lab

GPU = "1V100.6V"


class Api:
    """What the SDK's HTTPClient does: a token from /oauth2/token, then Bearer on every call."""

    def __init__(self, lab_api: verda.VerdaLab):
        self.url = lab_api.url
        status, _, raw = call("POST", self.url + "/oauth2/token", {
            "grant_type": "client_credentials", "client_id": lab_api.client_id,
            "client_secret": lab_api.client_secret}, headers={"Content-Type": "application/json"})
        assert status == 200, raw
        self.tokens = json.loads(raw)

    def __call__(self, method: str, path: str, body=None):
        status, headers, raw = call(method, self.url + path, body, timeout=30, headers={
            "Authorization": f"Bearer {self.tokens['access_token']}", "Content-Type": "application/json"})
        try:
            data = json.loads(raw) if raw else None
        except ValueError:
            data = raw.decode()
        return status, data


@pytest.fixture(scope="module")
def standin(lab):
    with verda.running(provisioning_delay=1.5) as api:
        yield api
        left = [i["lab_host"] for i in api.lab_instances()]
    # leaving running() removed every host it made, also those never deleted through the API
    assert not [n for n in left if dynhost.find(n)], left


@pytest.fixture(scope="module")
def api(standin):
    return Api(standin)


def _listening(address: str) -> bool:
    try:
        with socket.create_connection((address, 22), timeout=1):
            return True
    except OSError:
        return False


def test_bad_credentials_answer_the_apis_401_and_tokens_refresh(standin, api):
    status, headers, raw = call("POST", standin.url + "/oauth2/token", {
        "grant_type": "client_credentials", "client_id": standin.client_id, "client_secret": "wrong"},
        headers={"Content-Type": "application/json"})
    assert status == 401 and json.loads(raw)["code"] == "unauthorized_request"
    assert "STAND-IN" in headers["Server"]
    assert api("GET", "/balance")[0] == 200
    status, _, raw = call("GET", standin.url + "/balance", headers={"Authorization": "Bearer not-a-token"})
    assert status == 401 and json.loads(raw)["code"] == "unauthorized_request"
    # an expired access token is refused; the refresh token gets a new pair (the SDK's refresh())
    standin.control(token_ttl=0.3)
    short = Api(standin)
    time.sleep(0.5)
    assert short("GET", "/balance")[0] == 401
    status, _, raw = call("POST", standin.url + "/oauth2/token", {
        "grant_type": "refresh_token", "refresh_token": short.tokens["refresh_token"]},
        headers={"Content-Type": "application/json"})
    standin.control(token_ttl=3600)
    assert status == 200 and json.loads(raw)["access_token"] != short.tokens["access_token"]


def test_no_capacity_is_shown_by_availability_and_refused_by_create(standin, api):
    standin.control(no_capacity=[f"{GPU}@FIN-01"])
    try:
        status, avail = api("GET", "/instance-availability?isSpot=false&locationCode=FIN-01")
        assert status == 200 and avail[0]["location_code"] == "FIN-01"
        assert GPU not in avail[0]["availabilities"] and "1A100.22V" in avail[0]["availabilities"]
        assert api("GET", f"/instance-availability/{GPU}?isSpot=false&location_code=FIN-02") == (200, True)
        status, err = api("POST", "/instances", {"instance_type": GPU, "image": "ubuntu-24.04", "hostname": "nocap",
                                                 "description": "", "location_code": "FIN-01"})
        assert status == 503 and err["code"] == "service_unavailable"
        assert f"Not enough resources to deploy a 1 GPU instance type {GPU} in FIN-01" in err["message"]
        assert api("GET", "/instances") == (200, [])
    finally:
        standin.control(no_capacity=[])


@pytest.fixture(scope="module")
def rented(lab, standin, api, tmp_path_factory):
    """A running instance whose startup script installed a host key generated here."""
    tmp = tmp_path_factory.mktemp("verda")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "lab-test", "-f", str(tmp / "hostkey")],
                   check=True)
    private, public = (tmp / "hostkey").read_text(), (tmp / "hostkey.pub").read_text().strip()
    script = f"""#!/bin/bash
set -euo pipefail
cat > /etc/ssh/ssh_host_ed25519_key <<'KEY'
{private}KEY
chmod 600 /etc/ssh/ssh_host_ed25519_key
echo '{public}' > /etc/ssh/ssh_host_ed25519_key.pub
tailscale up --authkey={standin.authkey} --hostname=worker-a --advertise-tags=tag:gpu
systemctl restart ssh
echo provisioned > /root/marker
hostname > /root/hostname
touch /etc/verda-lab-probe 2> /root/readonly.txt || true
"""
    status, kid = api("POST", "/sshkeys", {"name": "lab", "key": Path(str(lab.key) + ".pub").read_text()})
    assert status == 201
    status, sid = api("POST", "/scripts", {"name": "hostkey", "script": script})
    assert status == 201
    status, iid = api("POST", "/instances", {
        "instance_type": GPU, "image": "ubuntu-24.04-cuda-12.8-open-docker", "hostname": "comfyume-worker-a",
        "description": "lab test", "ssh_key_ids": [kid], "location_code": "FIN-01", "startup_script_id": sid,
        "existing_volumes": [standin.volume_id], "is_spot": False})
    assert status == 202, iid
    # still provisioning (1.5 s knob + the host): the real API refuses to delete it
    status, err = api("PUT", "/instances", {"id": [iid], "action": "delete", "volume_ids": []})
    assert status == 400 and err["code"] == "invalid_request" and "while it is" in err["message"], err
    facts = standin.wait_for(iid, timeout=90)
    known = tmp / "known_hosts"
    known.write_text(f"{facts['address']} {' '.join(public.split()[:2])}\n")
    return {"id": iid, "facts": facts, "known_hosts": known, "public": public}


def test_create_makes_a_lab_host_whose_sshd_presents_the_scripts_host_key(lab, api, rented):
    facts = rented["facts"]
    assert facts["status"] == "running" and facts["script_exit"] == 0, facts
    status, inst = api("GET", f"/instances/{rented['id']}")
    assert status == 200 and inst["status"] == "running" and inst["ip"] == facts["address"]
    assert inst["price_per_hour"] == 0.39 and inst["location"] == "FIN-01"
    target = Target("rented", facts["address"], user=facts["user"], identity_file=str(lab.key),
                    known_hosts=str(rented["known_hosts"]), connect_timeout=5)
    with Remote(target) as remote:  # the tool's SSH layer: strict known_hosts, no trust on first use
        assert remote.run("tailscale ip -4").stdout.strip() == facts["address"]
        assert remote.run("docker version --format '{{.Server.Version}}'").stdout.strip()
    assert facts["tailscale"] == {"ip": facts["address"], "hostname": "worker-a", "tags": ["tag:gpu"]}
    # the script's /etc/ssh and /root were the host's own folders, not this machine's
    host = dynhost.find(facts["lab_host"])
    assert (host.root / "instance" / "root" / "marker").read_text() == "provisioned\n"
    assert "restart ssh" in (host.root / "instance" / "systemctl.log").read_text()
    assert (host.root / "instance" / "root" / "hostname").read_text().strip() == facts["lab_host"]
    assert "Read-only file system" in (host.root / "instance" / "root" / "readonly.txt").read_text()
    assert not Path("/etc/verda-lab-probe").exists()
    assert rented["public"].split()[1] not in "".join(
        p.read_text() for p in Path("/etc/ssh").glob("ssh_host_*.pub"))


def test_the_data_volume_is_attached_and_the_balance_goes_down(standin, api, rented):
    status, vol = api("GET", f"/volumes/{standin.volume_id}")
    assert status == 200 and vol["status"] == "attached" and vol["instance_id"] == rented["id"]
    standin.control(billing_speed=3600)  # one billed hour per second
    before = api("GET", "/balance")[1]["amount"]
    time.sleep(1.0)
    after = api("GET", "/balance")[1]["amount"]
    standin.control(billing_speed=1)
    assert before - after >= 0.39 * 0.9, (before, after)


def test_shutdown_stops_the_host_and_start_brings_it_back_with_the_same_key(lab, api, rented):
    facts = rented["facts"]
    assert api("PUT", "/instances", {"id": rented["id"], "action": "shutdown"})[0] == 202
    assert api("GET", f"/instances/{rented['id']}")[1]["status"] == "offline"
    assert not _listening(facts["address"])
    assert api("PUT", "/instances", {"id": rented["id"], "action": "start"})[0] == 202
    wait_for(lambda: _listening(facts["address"]), timeout=20, what="sshd after start")
    target = Target("rented", facts["address"], user=facts["user"], identity_file=str(lab.key),
                    known_hosts=str(rented["known_hosts"]), connect_timeout=5)
    with Remote(target) as remote:
        assert remote.run("docker info --format '{{.ServerVersion}}'").stdout.strip()


def test_the_api_answers_from_inside_a_lab_host(standin):
    """mello's autostop job calls it from mello's namespace."""
    out = subprocess.run(["nsenter", "--net=/run/netns/cfab-mello", "curl", "-s", "-o", "/dev/null", "-w",
                          "%{http_code}", standin.url + "/balance"], capture_output=True, text=True, timeout=20)
    assert out.stdout == "401", out


def test_delete_removes_the_host_and_keeps_the_data_volume(standin, api, rented):
    name, address = rented["facts"]["lab_host"], rented["facts"]["address"]
    assert api("PUT", "/instances", {"id": [rented["id"]], "action": "delete", "volume_ids": []})[0] == 202
    assert api("GET", f"/instances/{rented['id']}")[1]["status"] == "discontinued"
    assert api("GET", "/instances") == (200, [])
    wait_for(lambda: dynhost.find(name) is None, timeout=60, what=f"lab host {name} to be removed")
    assert not Path(f"/run/netns/cfab-{name}").exists()
    assert not _listening(address)
    status, vol = api("GET", f"/volumes/{standin.volume_id}")
    assert vol["status"] == "detached" and vol["instance_id"] is None
    # volume_ids [] kept the OS volume too (the SDK's example), detached
    assert [v["is_os_volume"] for v in api("GET", "/volumes")[1]].count(True) == 1


def test_a_failing_startup_script_or_a_wrong_tailscale_key_puts_the_instance_in_error(standin, api):
    status, sid = api("POST", "/scripts", {"name": "bad-key", "script": "#!/bin/bash\nset -e\n"
                                           "tailscale up --authkey=tskey-auth-wrong\necho never\n"})
    status, iid = api("POST", "/instances", {"instance_type": GPU, "image": "ubuntu-24.04", "hostname": "broken",
                                             "description": "", "location_code": "FIN-01", "startup_script_id": sid})
    assert status == 202, iid
    facts = standin.wait_for(iid, timeout=90)
    assert facts["status"] == "error" and facts["script_exit"] == 1, facts
    host = dynhost.find(facts["lab_host"])
    assert "invalid key" in (host.root / "instance" / "startup-script.log").read_text()
    assert not _listening(facts["address"])  # no sshd on a host whose script failed
    assert api("PUT", "/instances", {"id": iid, "action": "delete"})[0] == 202
    status, err = api("GET", "/instances/nope")
    assert status == 404 and err["code"] == "not_found"
    # rented again at once under the same hostname: the same lab host name (so the same login user),
    # once the deleted one's host is gone. Left running: leaving running() must remove it.
    status, again = api("POST", "/instances", {"instance_type": GPU, "image": "ubuntu-24.04", "hostname": "broken",
                                               "description": "", "location_code": "FIN-01"})
    new = standin.wait_for(again, timeout=120)
    assert new["status"] == "running" and new["lab_host"] == facts["lab_host"] == "broken", new
    assert _listening(new["address"])
