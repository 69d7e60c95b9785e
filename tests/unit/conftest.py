"""Fixtures of the unit tests (no root, no lab)."""
from __future__ import annotations

import pytest
import yaml

from tests.support import REPO, Listeners


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
