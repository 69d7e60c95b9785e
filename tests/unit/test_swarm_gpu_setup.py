"""start-all's GPU step with engine: swarm, driven by recorded `nvidia-smi -L` output: a GPU worker
host gets its NVIDIA-GPU generic resources, the nvidia default runtime and the runtime's
swarm-resource line (a backup kept, the engine restarted only when something changed); a host
without GPUs (the lab) needs nothing; a rerun on the written files needs nothing."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from comfyume_fab.errors import UnhealthyError
from comfyume_fab.host import commands as cmd
from comfyume_fab.host.actions import daemonjson as dj
from comfyume_fab.ops.swarm import gpu_setup

FIX = Path(__file__).resolve().parents[1] / "fixtures"
SMI_L = (FIX / "h100" / "nvidia-smi-L.txt").read_text()  # recorded on a real H100 host
TOML = (FIX / "nvidia-smi-L" / "nvidia-container-runtime-config.toml").read_text()


RUNTIME = "/usr/bin/nvidia-container-runtime"


def _read_output(smi_code: int, smi: str, daemon: str, toml: str, runtime: str = RUNTIME) -> str:
    """What `daemonjson.READ` prints (the sectioned script's framing), with these answers."""
    parts = [("nvidia_list", smi_code, smi), ("daemon_json", 0, daemon), ("runtime_toml", 0, toml),
             ("nvidia_runtime", 0, runtime)]
    return "\n".join(f"{cmd.SECTION}-begin {n}\n{out}\n{cmd.SECTION}-end {n} {code}" for n, code, out in parts)


def test_a_gpu_host_gets_its_generic_resources_and_the_nvidia_runtime():
    setup = gpu_setup("verda", _read_output(0, SMI_L, '{"log-driver": "json-file"}', TOML))
    daemon = json.loads(setup.daemon_json)
    assert daemon["node-generic-resources"] == ["NVIDIA-GPU=GPU-2b5b31e8-9cf7-8a29-f56d-bf76afee39eb"]
    assert daemon["default-runtime"] == "nvidia" and daemon["log-driver"] == "json-file"
    assert 'swarm-resource = "DOCKER_RESOURCE_NVIDIA-GPU"' in setup.runtime_toml
    assert any("node-generic-resources" in line for line in setup.lines)  # what start-all says first

    again = gpu_setup("verda", _read_output(0, SMI_L, setup.daemon_json, setup.runtime_toml))
    assert (again.daemon_json, again.runtime_toml, again.lines) == (None, None, [])  # no restart on a rerun


def test_a_host_without_gpus_needs_nothing():
    setup = gpu_setup("swm-w1", _read_output(127, "sh: 1: nvidia-smi: not found", "", ""))
    assert (setup.gpus, setup.daemon_json, setup.runtime_toml, setup.lines, setup.error) == (None, None, None, [], "")


def test_the_write_keeps_a_backup_and_reads_the_text_from_stdin():
    line = dj.write_file(dj.DAEMON_JSON, "20261203T130000")
    assert "cp -p /etc/docker/daemon.json /etc/docker/daemon.json.comfyume-20261203T130000" in line
    assert "tee /etc/docker/daemon.json.comfyume-new" in line and "mv /etc/docker/daemon.json.comfyume-new" in line


def test_a_failing_nvidia_smi_leaves_the_gpu_settings_alone():
    """A driver hiccup must not strip the NVIDIA-GPU entries an engine advertises (nor restart it)."""
    written = gpu_setup("verda", _read_output(0, SMI_L, "{}", TOML)).daemon_json
    setup = gpu_setup("verda", _read_output(9, "NVIDIA-SMI has failed because it couldn't communicate with the "
                                               "NVIDIA driver.", written, TOML))
    assert setup.error and (setup.daemon_json, setup.runtime_toml, setup.lines) == (None, None, [])


def test_gpus_without_the_nvidia_runtime_are_refused_before_anything_is_written():
    with pytest.raises(UnhealthyError) as exc:
        gpu_setup("verda", _read_output(0, SMI_L, "{}", TOML, runtime=""))
    assert "nvidia-container-runtime" in str(exc.value)
