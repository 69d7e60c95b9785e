"""Fixtures shared by unit and lab tests.

The lab (network namespaces, sshd and a Docker engine per host) is one resource per machine:
the session fixture takes an exclusive flock on it, reuses a lab that is up (as `.ci/run`
leaves it) when THIS checkout made it, or brings one up, and heals every fault before each lab
test. A lab another checkout made (the machine-wide record names its lab folder) is taken over,
i.e. rebuilt for this checkout, by default inside pytest (several checkouts take turns on one
machine); COMFYUME_LAB_TAKEOVER=0 makes the session refuse instead, naming that checkout.

tests/unit needs neither root nor the lab: a unit test that asks for the `lab` fixture (directly
or through `inv`, `healed`, `deployed`, ...) fails before any fixture runs.
"""
from __future__ import annotations

import fcntl
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.support import Standin, invoke

# The tool's cache of secret fingerprints (inventory/fingerprint.py) goes to a folder of this test
# session, inherited by every `invoke` the tests run, never the user's own ~/.cache.
import tempfile  # noqa: E402

os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="comfyume-fab-test-cache-")


@dataclass
class Lab:
    dir: Path
    hosts: dict  # name -> LabHost
    key: Path
    known_hosts: Path
    secrets: dict  # name -> value (for assertions that they never leak)

    def inventory(self, tmp: Path, names=("mello", "verda"), mode="dual-server", roles=None,
                  num_users=3, **overrides) -> Path:
        """Write an inventory for some lab hosts into `tmp` and return its path."""
        from comfyume_fab.lab.files import inventory_dict
        hosts = [self.hosts[n] for n in names]
        data = inventory_dict(hosts, self.key, self.known_hosts, num_users, mode, roles=roles,
                              secrets_file=str(self.dir / "secrets.env"))
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key].update(value)
            else:
                data[key] = value
        tmp.mkdir(parents=True, exist_ok=True)
        path = tmp / "hosts.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path


UNIT = Path(__file__).resolve().parent / "unit"


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """tests/unit must run without root and without the lab: refuse a unit test that uses it."""
    if UNIT in Path(str(item.path)).resolve().parents and "lab" in item.fixturenames:
        via = [f for f in item.fixturenames if f in _LAB_FIXTURES and f != "lab"]
        pytest.fail(f"{item.nodeid}: a unit test must not use the lab (it asks for the `lab` fixture"
                    f"{' through ' + ', '.join(via) if via else ''}); move it to tests/lab/ or drop the fixture",
                    pytrace=False)


_LAB_FIXTURES = ("lab", "healed", "inv", "deployed")


def _lab_is_up() -> bool:
    from comfyume_fab.lab import hostsvc, manager
    if not manager.made_here():  # a lab another checkout made has its own keys and secrets
        return False
    hosts = {h.name: h for h in manager.load_state()}
    if not {"mello", "verda"} <= set(hosts):
        return False
    for h in hosts.values():
        if not hostsvc.read_pid(h.sshd_pid) or (h.engine and not hostsvc.read_pid(h.dockerd_pid)):
            return False
    # Our known_hosts must still name the hosts' keys: a checkout with an older conftest rebuilds
    # the lab without updating the owner record.
    try:
        known = (manager.LAB_DIR / "known_hosts").read_text()
        ours = " ".join((manager.LAB_DIR / "id_ed25519.pub").read_text().split()[:2])
        return all(hostsvc.host_public_key(h) in known and ours in (h.home / ".ssh" / "authorized_keys").read_text()
                   for h in hosts.values())
    except OSError:
        return False


@pytest.fixture(scope="session")
def lab():
    if os.geteuid() != 0 or not shutil.which("dockerd"):
        pytest.fail("the lab tests need root and the lab's system packages: run `bash .ci/run` "
                    "(or `bash scripts/install-system.sh`) as root")
    from comfyume_fab.lab import faults, manager
    manager.LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(manager.LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        os.environ[manager.LOCK_HELD_ENV] = "1"  # our own `invoke lab.up` subprocesses must not wait on us
        if not _lab_is_up():
            takeover = os.environ.get(manager.TAKEOVER_ENV, "1") != "0"
            try:
                manager.up(workers=1, num_users=3, takeover=takeover)
            except manager.LabError as exc:
                pytest.fail(f"the lab session: {exc}", pytrace=False)
        faults.heal_all()
        secrets = {}
        for line in (manager.LAB_DIR / "secrets.env").read_text().splitlines():
            if "=" in line and not line.startswith("#"):
                k, v = line.split("=", 1)
                secrets[k] = v
        yield Lab(manager.LAB_DIR, {h.name: h for h in manager.load_state()}, manager.LAB_DIR / "id_ed25519",
                  manager.LAB_DIR / "known_hosts", secrets)


@pytest.fixture
def healed(lab):
    """Undo every lab fault after the test, whatever happened in it."""
    from comfyume_fab.lab import faults
    yield lab
    faults.heal_all()


@pytest.fixture(scope="session")
def inv(lab, tmp_path_factory) -> Path:
    """The two-host dual-server inventory (mello app, verda worker) the lab tests drive."""
    return lab.inventory(tmp_path_factory.mktemp("inv"))


@pytest.fixture
def deployed(inv, healed):
    """The dual-server deployment is up and healthy (a no-op rerun when it already is); --yes: a
    test before may have deployed another Redis password (the lab's own is put back)."""
    res = invoke("start-all", "--hosts", str(inv), "--yes")
    assert res.returncode == 0, res.stderr + res.stdout
    return inv


@pytest.fixture
def start(tmp_path):
    """start(script, port_var, env, ready_path): a stand-in running as a process, stopped after the test."""
    started: list[Standin] = []

    def _start(script, port_var, env=None, ready_path="/"):
        standin = Standin(script, port_var, env or {}, tmp_path, ready_path)
        started.append(standin)
        return standin
    yield _start
    for standin in started:
        standin.stop()
