"""The cloud layer without the lab: the record of a rented instance (0600, atomic, resolved into
the inventory), the locally generated host key and the known_hosts it goes to, the startup
script, and the Verda client's REST calls against a small HTTP server speaking the SDK's contract
(the shapes from the SDK's source; the lab's stand-in is exercised by tests/lab/test_provider.py)."""
from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import paramiko
import pytest

from comfyume_fab.cloud import hostkey, record, startup
from comfyume_fab.cloud.verda import VerdaClient, VerdaError
from tests.support import ENV, load_here

CLOUD_ENV = {**ENV, "VERDA_CLIENT_ID": "cid-123", "VERDA_CLIENT_SECRET": "s3cret-client", "TAILSCALE_AUTHKEY": "tskey-x"}
INV = """\
mode: dual-server
hosts:
  mello: {address: mello, tailscale_ip: 100.99.216.71, roles: [app]}
  verda:
    roles: [worker]
    port: 2222
    provider: {instance_type: 1H100.80S.30V, volumes: [vol-models]}
"""


@pytest.fixture
def inv(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return load_here(INV, CLOUD_ENV)


def test_a_record_is_private_and_resolves_the_rented_hosts_address(inv, tmp_path):
    assert record.load(inv, "verda") is None
    assert record.resolve(inv).host("verda").address == ""
    record.save(inv, "verda", {"id": "i-1", "hostname": "comfyume-worker-abc", "ip": "10.0.0.7",
                               "tailscale_ip": "100.64.0.7", "created_at": "2026-12-03T10:00:00Z"})
    where = tmp_path / ".comfyume-fab" / "instances" / "verda.json"
    assert stat.S_IMODE(where.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / ".comfyume-fab").stat().st_mode) == 0o700
    assert stat.S_IMODE(where.parent.stat().st_mode) == 0o700
    resolved = record.resolve(inv)
    assert (resolved.host("verda").address, resolved.host("verda").tailscale_ip) == ("10.0.0.7", "100.64.0.7")
    assert resolved.host("mello") == inv.host("mello")
    assert not list(where.parent.glob(".tmp-*"))  # written atomically, nothing left beside it
    done = record.mark_deleted(inv, "verda", "me@laptop", at="2026-12-03T12:00:00Z")
    assert (done["deleted_by"], done["deleted_at"], done["ip"], done["id"]) == \
        ("me@laptop", "2026-12-03T12:00:00Z", None, "i-1")
    assert not record.live(record.load(inv, "verda"))
    assert record.resolve(inv).host("verda").address == ""
    assert record.hours_since("2026-12-03T10:00:00Z", "2026-12-03T11:30:00Z") == 1.5


def test_the_host_key_is_generated_here_and_recorded_for_its_address(inv, tmp_path):
    private, public = hostkey.generate("comfyume-worker-abc")
    key = paramiko.Ed25519Key.from_private_key(io.StringIO(private))  # a real OpenSSH ed25519 key
    assert public.split()[:2] == [key.get_name(), key.get_base64()] and public.endswith(" comfyume-worker-abc")
    known = inv.generated_known_hosts
    hostkey.remember(known, "10.0.0.7", 2222, public)
    hostkey.remember(known, "10.0.0.8", None, public)
    _, other = hostkey.generate("next")
    hostkey.remember(known, "10.0.0.7", 2222, other)  # a reused address: the newer key replaces it
    lines = open(known).read().splitlines()
    assert lines == [f"10.0.0.8 {' '.join(public.split()[:2])}", f"[10.0.0.7]:2222 {' '.join(other.split()[:2])}"]
    assert stat.S_IMODE(os.stat(known).st_mode) == 0o600
    keys = paramiko.HostKeys(known)  # what the SSH layer loads
    assert keys.lookup("[10.0.0.7]:2222")["ssh-ed25519"].get_base64() == other.split()[1]
    assert hostkey.forget(known, "10.0.0.7", 2222) and not hostkey.forget(known, "10.0.0.7", 2222)
    assert open(known).read().splitlines() == lines[:1]


def test_the_ssh_layer_checks_a_rented_host_against_the_generated_keys(inv):
    from comfyume_fab.host.session import target
    resolved = record.resolve(inv)
    assert target(resolved, resolved.host("verda")).tool_known_hosts == inv.generated_known_hosts
    assert target(resolved, resolved.host("mello")).tool_known_hosts is None


def test_the_startup_script_installs_the_key_and_joins_the_tailnet(tmp_path):
    private, public = hostkey.generate("h")
    text = startup.script(private, public, "tskey-auth-k'ey", "comfyume-worker-abc")
    path = tmp_path / "s.sh"
    path.write_text(text)
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0
    assert "/etc/ssh/ssh_host_ed25519_key" in text and "systemctl restart ssh" in text
    assert "tailscale up --authkey=\"$TS_KEY\" --hostname=comfyume-worker-abc" in text
    assert "TS_KEY='tskey-auth-k'\"'\"'ey'" in text  # quoted once: a quote in the key stays inside it
    assert 'rm -f -- "$0"' in text  # the script file (keys inside) is unlinked as it starts


# --- the client against the SDK's REST contract ------------------------------------------------


class Api(BaseHTTPRequestHandler):
    """A few of the SDK's endpoints, recording what it was sent (a test server, not the stand-in)."""
    seen: list = []

    def log_message(self, *a):
        pass

    def _send(self, code: int, body, text: bool = False):
        raw = body.encode() if text else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain" if text else "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _handle(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        Api.seen.append((self.command, self.path, body, self.headers.get("Authorization")))
        if self.path == "/v1/oauth2/token":
            if body.get("client_secret") != "s3cret-client":
                return self._send(401, {"code": "unauthorized_request", "message": "Invalid client credentials"})
            return self._send(200, {"access_token": "tok", "refresh_token": "ref", "scope": "x",
                                    "token_type": "Bearer", "expires_in": 3600})
        if self.headers.get("Authorization") != "Bearer tok":
            return self._send(401, {"code": "unauthorized_request", "message": "bad token"})
        if self.path.startswith("/v1/instance-availability/1H100.80S.30V"):
            return self._send(200, False)
        if self.path == "/v1/instances" and self.command == "POST":
            return self._send(202, "inst-42", text=True)
        if self.path == "/v1/instances" and self.command == "PUT":
            return self._send(400, {"code": "invalid_request", "message": "Instance is provisioning"})
        if self.path == "/v1/balance":
            return self._send(200, {"amount": 96.5, "currency": "usd"})
        return self._send(404, {"code": "not_found", "message": "no such path"})

    do_GET = do_POST = do_PUT = do_DELETE = _handle


@pytest.fixture
def api():
    Api.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Api)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_the_client_speaks_the_sdks_contract(api):
    c = VerdaClient(api, "cid-123", "s3cret-client", timeout=5)
    assert c.is_available("1H100.80S.30V", False, "FIN-01") is False
    assert c.balance() == {"amount": 96.5, "currency": "usd"}
    new = c.create_instance(instance_type="1H100.80S.30V", image="ubuntu", hostname="h", description="d",
                            ssh_key_ids=["k1"], location="FIN-01", startup_script_id="s1",
                            existing_volumes=["vol-models"], is_spot=False)
    assert new == "inst-42"
    with pytest.raises(VerdaError) as info:
        c.action("inst-42", "delete")
    assert (info.value.status, info.value.code, info.value.message) == (400, "invalid_request", "Instance is provisioning")
    token = [s for s in Api.seen if s[1] == "/v1/oauth2/token"]
    assert len(token) == 1 and token[0][2] == {"grant_type": "client_credentials", "client_id": "cid-123",
                                               "client_secret": "s3cret-client"}
    avail = next(s for s in Api.seen if s[1].startswith("/v1/instance-availability/"))
    assert avail[1] == "/v1/instance-availability/1H100.80S.30V?isSpot=false&location_code=FIN-01"
    create = next(s for s in Api.seen if s[0] == "POST" and s[1] == "/v1/instances")
    assert create[2]["existing_volumes"] == ["vol-models"] and create[2]["location_code"] == "FIN-01"
    assert create[3] == "Bearer tok"
    delete = next(s for s in Api.seen if s[0] == "PUT")
    assert delete[2] == {"id": ["inst-42"], "action": "delete", "volume_ids": None}  # never the data volumes
    assert all("s3cret-client" not in s[1] for s in Api.seen)  # the secret only in the token body


def test_refused_credentials_are_one_clear_error(api):
    c = VerdaClient(api, "cid-123", "wrong", timeout=5)
    with pytest.raises(VerdaError) as info:
        c.balance()
    assert info.value.unauthorized and "wrong" not in str(info.value)
    assert str(info.value) == "Invalid client credentials (unauthorized_request)"


def test_no_answer_is_one_clear_error():
    c = VerdaClient("http://127.0.0.1:9/v1", "a", "b", timeout=2)
    with pytest.raises(VerdaError) as info:
        c.balance()
    assert info.value.status == 0 and "is not reachable" in info.value.message
