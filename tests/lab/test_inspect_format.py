"""INSPECT_FORMAT against a real container on a lab engine (moved out of tests/unit: it needs the lab)."""
from __future__ import annotations

import io
import os
import subprocess
import tarfile
import uuid

import pytest

from comfyume_fab.host.facts.docker import INSPECT_FORMAT, parse_inspect


@pytest.mark.lab
def test_inspect_format_against_a_real_container(tmp_path, lab):
    """Against the lab's mello engine. An image made from an empty tar: the container is only
    created, never run, so no binary is needed."""
    engine_env = dict(os.environ, DOCKER_HOST=lab.hosts["mello"].docker_host)
    tag = f"comfyume-fab-facts-test:{uuid.uuid4().hex[:12]}"
    name = f"comfyume-fab-facts-{uuid.uuid4().hex[:12]}"
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        info = tarfile.TarInfo("tmp")
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    (tmp_path / "empty.tar").write_bytes(archive.getvalue())

    def docker(*args: str) -> str:
        return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=60, check=True,
                              env=engine_env).stdout

    docker("import", str(tmp_path / "empty.tar"), tag)
    try:
        docker("create", "--name", name, "--network", "none", "--label", "com.docker.compose.service=redis",
               "--label", "com.docker.compose.project=comfyume", "--label", "org.comfyume.env-hash=abc123",
               "-e", "REDIS_PASSWORD=do-not-print-me", tag, "/nonexistent")
        printed = docker("inspect", "--format", INSPECT_FORMAT, name)
        assert "do-not-print-me" not in printed
        (info,) = parse_inspect(printed)
        assert (info.name, info.service, info.project, info.state, info.health) == (name, "redis", "comfyume",
                                                                                   "created", "")
        assert (info.env_hash, info.image, info.restart_count, info.exit_code) == ("abc123", tag, 0, 0)
        assert len(info.id) == 64 and info.started_at.startswith("0001-01-01")
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60, env=engine_env)
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, timeout=60, env=engine_env)
