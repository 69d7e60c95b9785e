"""Each fact is a command plus a pure parser in one module: here every module's command is checked
against the command its recording was made with (tests/fixtures/recorded-commands.json), and its
parser against that recording. A command that drifts from its recordings fails here."""
from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from comfyume_fab.host import commands as cmd
from comfyume_fab.host.facts import comfyui, compose, docker, nvidia, tailscale
from comfyume_fab.host.state import preflight_parts
from comfyume_fab.host.state import parse_state

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
RECORDED = json.loads((FIXTURES / "recorded-commands.json").read_text())


def recording(key: str):
    path, _, part = key.partition("#")
    raw = (FIXTURES / path).read_text(encoding="utf-8")
    if path.endswith(".json"):
        data = json.loads(raw)
        return data[part] if part else data
    return raw


def test_nvidia_query_is_the_recorded_command():
    for key in ("h100/nvidia-smi-query-noheader-nounits.csv", "h100-live/nvidia-smi-query.csv"):
        assert shlex.split(RECORDED[key]) == list(nvidia.QUERY)
        gpus = nvidia.parse_nvidia_smi_query(recording(key))
        assert [g.name for g in gpus] == ["NVIDIA H100 80GB HBM3"] and gpus[0].memory_total_mib == 81559


def test_nvidia_list_is_the_recorded_command():
    key = "h100/nvidia-smi-L.txt"
    assert shlex.split(RECORDED[key]) == list(nvidia.LIST)
    assert [g.name for g in nvidia.parse_nvidia_smi_list(recording(key))] == ["NVIDIA H100 80GB HBM3"]


def test_compose_version_runs_the_recorded_command():
    key = "compose-2.26/compose-version.txt"
    # The plugin binary's `version` is what `docker compose version` runs; the fallback is that command.
    assert compose.VERSION_COMMAND.rstrip("; fi").endswith(RECORDED[key])
    assert compose.parse_compose_version(recording(key)) == compose.ComposeVersion("v2", "2.26.1-4")


def test_containers_command_uses_the_recorded_format():
    key = "compose-2.26/inspect.tsv"
    recorded_format = RECORDED[key].split(" --format ", 1)[1]
    assert recorded_format == docker.INSPECT_FORMAT
    assert shlex.join(["docker", "inspect", "--format", docker.INSPECT_FORMAT]) in docker.containers_command("p")
    containers = docker.by_service(docker.parse_inspect(recording(key)))
    assert containers["redis"].ok and containers["redis"].env_hash
    assert not containers["queue-manager"].ok and containers["worker-1"].state == "restarting"


def test_comfyui_calls_are_the_recorded_ones():
    assert RECORDED["comfyui-0.8.0-cpu/system_stats.json"] == f"GET {comfyui.SYSTEM_STATS}"
    stats = comfyui.parse_system_stats(recording("comfyui-0.8.0-cpu/system_stats.json"))
    assert stats.comfyui_version == "0.8.0" and stats.primary_device().is_cpu
    assert RECORDED["comfyui-0.8.0-cpu/probe-capture.json#post_valid"] == f"POST {comfyui.PROMPT}"
    posted = recording("comfyui-0.8.0-cpu/probe-capture.json#post_valid")
    prompt_id = comfyui.parse_prompt_response(posted["http_status"], posted["body"])
    assert RECORDED["comfyui-0.8.0-cpu/probe-capture.json#history"] == "GET " + comfyui.history_path("{prompt_id}")
    history = comfyui.parse_history(recording("comfyui-0.8.0-cpu/probe-capture.json#history"), prompt_id)
    assert history.succeeded and history.executed_nodes == ("1", "2")


def test_preflight_runs_each_subjects_command_and_reads_the_live_recording():
    parts = dict(preflight_parts())
    assert parts["nvidia"] == nvidia.QUERY_COMMAND and parts["compose"] == compose.VERSION_COMMAND
    assert parts["engine"] == docker.ENGINE_COMMAND and parts["tailscale"] == tailscale.COMMAND
    # The sectioned script as recorded on the H100 host parses with the same parsers.
    st = parse_state("h100", (FIXTURES / "h100-live" / "preflight-sections.txt").read_text())
    assert st.has_gpu and st.gpus[0].name == "NVIDIA H100 80GB HBM3" and st.engine is None
    sections = cmd.split_sections((FIXTURES / "h100-live" / "preflight-sections.txt").read_text())
    assert set(sections) <= set(parts)


@pytest.mark.parametrize("module", [comfyui, compose, docker, nvidia, tailscale])
def test_fact_modules_do_no_io(module):
    """Pure: a fact module imports no SSH, socket, subprocess or HTTP client."""
    source = Path(module.__file__).read_text()
    for forbidden in ("paramiko", "fabric", "socket", "subprocess", "http.client", "urllib"):
        assert f"import {forbidden}" not in source and f"from {forbidden}" not in source
