"""The Verda API STAND-IN (standins/verda_api.py) as a child process of a test or a demo:
`running(**knobs)` starts it on the operator's lab address (100.64.0.254, reachable from this
machine and from inside every lab host, e.g. mello's autostop job), waits until it answers, and
on exit stops it and removes every lab host it created (also what a killed stand-in left).

    with verda.running(provisioning_delay=2) as api:
        api.url, api.client_id, api.client_secret   # what the tool's inventory/secrets point at
        api.authkey                                 # the Tailscale auth key the lab accepts
        api.volume_id                               # the pre-made "models" data volume
        api.control(no_capacity=["1H100.80S.30V@FIN-01"], fail_next_script=1, balance=20)
        api.lab_instances()                         # [{"id", "hostname", "status", "lab_host", ...}]

A library for the lab tests and docs (no invoke task). Needs root and a lab that is up.
"""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from . import dynhost
from .layout import GATEWAY
from .system import LabError, kill_wait, pid_alive

START_TIMEOUT = 20.0


@dataclass
class VerdaLab:
    """A running Verda API stand-in."""

    url: str  # base URL incl. /v1, as the SDK's base_url
    client_id: str
    client_secret: str
    authkey: str  # the Tailscale auth key the lab hosts' `tailscale up` accepts
    volume_id: str
    pid: int
    log: Path
    record: Path
    _root: str = field(repr=False, default="")

    def _lab(self, method: str, path: str, body: dict | None = None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self._root + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise LabError(f"the Verda stand-in refused {method} {path}: {exc.read().decode(errors='replace')}") from None

    def control(self, **knobs) -> dict:
        """Change knobs at run time (see standins/verda_api.py); returns all knobs now."""
        return self._lab("POST", "/__lab/knobs", knobs)

    def lab_instances(self) -> list[dict]:
        """Every instance with its lab host (deleted ones while their host is being removed)."""
        return self._lab("GET", "/__lab/instances")

    def wait_for(self, instance_id: str, statuses=("running", "error"), timeout: float = 90) -> dict:
        """The lab's view of an instance once its status is one of `statuses`."""
        deadline = time.monotonic() + timeout
        while True:
            found = [i for i in self.lab_instances() if i["id"] == instance_id]
            if found and found[0]["status"] in statuses:
                return found[0]
            if time.monotonic() > deadline:
                raise LabError(f"instance {instance_id} did not reach {'/'.join(statuses)} within {timeout:.0f} s "
                               f"(now: {found[0]['status'] if found else 'unknown'}); log: {self.log}")
            time.sleep(0.2)


@contextmanager
def running(lab_dir: str | Path | None = None, **knobs) -> Iterator[VerdaLab]:
    """Start the stand-in (knobs as in standins/verda_api.py; also client_id, client_secret,
    tailscale_authkey to fix those), yield a VerdaLab, then stop it and remove its lab hosts."""
    from . import manager
    lab_dir = Path(lab_dir) if lab_dir else manager.LAB_DIR
    work = Path(tempfile.mkdtemp(prefix="verda-standin-"))
    os.chmod(work, 0o700)
    client_id = knobs.pop("client_id", None) or f"lab-client-{secrets.token_hex(4)}"
    client_secret = knobs.pop("client_secret", None) or secrets.token_urlsafe(24)
    authkey = knobs.pop("tailscale_authkey", None) or f"tskey-auth-lab-{secrets.token_hex(12)}"
    config = work / "config.json"
    config.touch(mode=0o600)
    config.write_text(json.dumps({
        "listen": GATEWAY, "port": 0, "client_id": client_id, "client_secret": client_secret,
        "tailscale_authkey": authkey, "ready_file": str(work / "ready.json"),
        "record_file": str(work / "hosts.json"), "knobs": knobs}))
    log = work / "standin.log"
    env = dict(os.environ, COMFYUME_LAB_DIR=str(lab_dir), PYTHONUNBUFFERED="1")
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "comfyume_fab.lab.verda_hosts", str(config)],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                cwd=str(Path(__file__).resolve().parents[2]), start_new_session=True)
    try:
        ready = _wait_ready(proc, work / "ready.json", log)
        config.unlink()  # read at start: the credentials stay in no file
        root = ready["url"][: -len("/v1")]
        yield VerdaLab(ready["url"], client_id, client_secret, authkey, ready["volume_id"], proc.pid, log,
                       work / "hosts.json", _root=root)
    finally:
        config.unlink(missing_ok=True)
        _stop(proc, work / "hosts.json")


def _wait_ready(proc: subprocess.Popen, ready: Path, log: Path) -> dict:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if ready.exists():
            return json.loads(ready.read_text())
        if proc.poll() is not None:
            raise LabError(f"the Verda API stand-in exited at start (status {proc.returncode}): "
                           f"{log.read_text(errors='replace')[-600:]}")
        time.sleep(0.05)
    raise LabError(f"the Verda API stand-in did not answer within {START_TIMEOUT:.0f} s; log: {log}")


def _stop(proc: subprocess.Popen, record: Path) -> None:
    """SIGTERM: the stand-in removes its hosts itself (waiting for any still provisioning); then
    whatever the record still names (a stand-in that died) is removed here."""
    if pid_alive(proc.pid):
        kill_wait(proc.pid, timeout=400)
    proc.wait()
    try:
        left = json.loads(record.read_text())
    except (OSError, ValueError):
        left = []
    for name in left:
        dynhost.remove_host(name)
