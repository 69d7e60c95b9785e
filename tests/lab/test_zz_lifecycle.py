"""The lab's own lifecycle (issue 2): lab.down leaves nothing, lab.up cleans what a killed run left,
and a second lab.up is quick.
Runs last (file name) because it rebuilds the lab; it leaves a fresh lab up."""
from __future__ import annotations

import os
import time

import pytest

from comfyume_fab.lab import manager, network, procs
from comfyume_fab.lab.layout import BRIDGE, LAB_ROOT, RUN_ROOT
from comfyume_fab.lab.system import sh
from tests.support import invoke

pytestmark = pytest.mark.lab


def test_lab_down_leaves_no_process_namespace_bridge_or_folder(lab):
    try:
        res = invoke("lab.down")
        assert res.returncode == 0, res.stderr
        assert procs.lab_pids() == []
        assert network.existing_netns() == []
        assert network.existing_veths() == []
        assert sh(["ip", "link", "show", BRIDGE], check=False).returncode != 0
        assert not (LAB_ROOT / "hosts").exists() and not RUN_ROOT.exists()
        assert "cfab-" not in open("/etc/passwd").read()
        with open("/proc/self/mounts") as f:
            assert not [line for line in f if str(LAB_ROOT) in line or str(RUN_ROOT) in line]
    finally:
        manager.up(workers=1, num_users=3, say=lambda m: None)  # leave a lab up for whoever runs next


def test_lab_up_cleans_what_a_killed_run_left(lab):
    """Kill the lab's processes hard (as a crashed run would leave them) and bring it up again."""
    for pid in procs.lab_pids():
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    res = invoke("lab.up")
    assert res.returncode == 0, res.stderr
    # and once more on top of a healthy one: a second lab.up is quick (the image cache is used)
    t0 = time.monotonic()
    again = invoke("lab.up")
    took = time.monotonic() - t0
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip().splitlines()[-1].endswith(".lab/hosts.yaml")
    assert took < 60, f"second lab.up took {took:.1f} s"
