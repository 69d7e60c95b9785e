"""The remote folder (workdir): a failed `mkdir`/`chmod` stops the run with a sentence naming the
host and the folder, before anything is uploaded (issue 11 item 3)."""
from __future__ import annotations

import os
import shutil

import pytest
import yaml

from comfyume_fab.errors import ExitCode
from tests.support import invoke

pytestmark = pytest.mark.lab


def test_a_workdir_that_cannot_be_created_stops_with_host_and_folder(lab, deployed, tmp_path):
    verda = lab.hosts["verda"]
    blocker = verda.home / "blocker"
    blocker.write_text("a file where the folder should be\n")
    shutil.chown(blocker, verda.user, verda.user)
    try:
        data = yaml.safe_load(deployed.read_text())
        data["hosts"]["verda"]["workdir"] = "blocker/comfyume"
        path = tmp_path / "hosts.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        res = invoke("start-all", "--hosts", str(path))
        assert res.returncode == ExitCode.UNHEALTHY, res.stdout + res.stderr
        assert "host verda, step upload: could not create the folder blocker/comfyume" in res.stderr, res.stderr
        assert "Traceback" not in res.stderr and "uploading" not in res.stderr.split("error:")[-1]
        assert not os.path.isdir(blocker)
    finally:
        blocker.unlink()
