"""Fixtures of the unit tests (no root, no lab)."""
from __future__ import annotations

import os

import pytest
import yaml

from tests.support import REDIS_SERVER, REPO, Listeners, RedisServer


@pytest.fixture
def place(tmp_path):
    """A folder outside the checkout with the example inventory, its hosts at local listeners."""
    data = yaml.safe_load((REPO / "hosts.yaml").read_text())
    listener = Listeners(len(data["hosts"]))
    for host, one in zip(data["hosts"].values(), listener.each):
        host["address"], host["port"] = one.address, one.port
    data.setdefault("timeouts", {})["connect"] = 2
    (tmp_path / "hosts.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    yield tmp_path, listener
    listener.close()


@pytest.fixture
def redis_server(tmp_path):
    if not os.access(REDIS_SERVER, os.X_OK):
        pytest.fail(f"{REDIS_SERVER} is missing: these tests need a real Redis (apt-get install redis-server)")
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def worker(start, tmp_path):
    out = tmp_path / "output"
    fault = tmp_path / "fault"
    standin = start("worker", "COMFYUI_LISTEN_PORT", {"OUTPUT_DIR": str(out), "STANDIN_FAULT_FILE": str(fault),
                                                      "STANDIN_CRASH_FILE": str(tmp_path / "crash")},
                    ready_path="/system_stats")
    standin.output, standin.fault = out, fault
    return standin
