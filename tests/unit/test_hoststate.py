"""Host state and preflight diagnoses from output recorded on real hosts (pure, no SSH)."""
from __future__ import annotations

import json
from pathlib import Path

from comfyume_fab.host import commands
from comfyume_fab.errors import ExitCode
from comfyume_fab.host.facts.comfyui import parse_system_stats
from comfyume_fab.host.state import parse_state
from comfyume_fab.inventory import Host, Inventory
from comfyume_fab.checks.preflight import preflight_problems
from comfyume_fab.inventory.secrets import Secret

LIVE = Path(__file__).resolve().parents[1] / "fixtures" / "h100-live"


def inventory(gpu="required", tailscale_ip="100.88.0.2") -> Inventory:
    hosts = (Host("mello", "100.99.216.71", ("app",), tailscale_ip="100.99.216.71", line=3),
             Host("verda", "verda", ("worker",), tailscale_ip=tailscale_ip, gpu=gpu, line=9))
    return Inventory("hosts.yaml", "dual-server", hosts, {"REDIS_PASSWORD": Secret("x"), "ADMIN_PASSWORD": Secret("y")})


def test_recorded_preflight_of_a_real_h100_host_without_docker():
    st = parse_state("verda", (LIVE / "preflight-sections.txt").read_text())
    assert st.has_gpu and st.gpus[0].name == "NVIDIA H100 80GB HBM3" and st.gpus[0].memory_total_mib == 81559
    assert st.engine is None and "docker: command not found" in st.engine_error
    assert st.compose is None and st.legacy_compose is None and st.tailscale_ip is None


def test_preflight_names_the_missing_engine_on_that_host():
    st = parse_state("verda", (LIVE / "preflight-sections.txt").read_text())
    ok = parse_state("mello", _healthy_app_output())
    problems, _ = preflight_problems(inventory(), {"verda": st, "mello": ok})
    assert [p.sentence() for p in problems] == [
        "host verda, step preflight: the Docker engine is not answering (bash: line 1: docker: command not found) "
        "(start it on the host (`sudo systemctl start docker`))"]
    assert problems[0].code == ExitCode.UNHEALTHY


def _healthy_app_output(tailscale="100.99.216.71", compose="Docker Compose version 2.26.1-4", runtimes='{"runc":{}}',
                        nvidia=("", 127), toolkit=1) -> str:
    parts = {"engine": ("20.10.24+dfsg1", 0), "compose": (compose, 0), "legacy_compose": ("", 1),
             "nvidia": nvidia, "runtimes": (runtimes, 0), "nvidia_toolkit": ("", toolkit),
             "tailscale": (tailscale, 0 if tailscale else 1)}
    return "\n".join(f"{commands.SECTION}-begin {k}\n{v}\n{commands.SECTION}-end {k} {c}" for k, (v, c) in parts.items())


def test_moved_tailnet_address_is_a_config_problem_with_the_line():
    mello = parse_state("mello", _healthy_app_output(tailscale="100.99.1.1"))
    verda = parse_state("verda", _healthy_app_output(tailscale="100.88.0.2", nvidia=("NVIDIA H100 80GB HBM3, 0, 81559, 0", 0),
                                                     runtimes='{"nvidia":{},"runc":{}}'))
    problems, _ = preflight_problems(inventory(), {"mello": mello, "verda": verda})
    assert [p.sentence() for p in problems] == [
        "host mello, step preflight: hosts.yaml says tailscale_ip 100.99.216.71 but `tailscale ip -4` on the host "
        "reports 100.99.1.1 (Tailscale addresses move when a host is rebuilt) (update hosts.yaml line 3 and rerun start-all)"]
    assert problems[0].code == ExitCode.CONFIG


def test_gpu_without_the_nvidia_container_runtime_and_legacy_compose_only():
    verda = parse_state("verda", _healthy_app_output(tailscale="", compose="", nvidia=(
        (LIVE / "nvidia-smi-query.csv").read_text(), 0)).replace(
        f"{commands.SECTION}-end compose 0", f"{commands.SECTION}-end compose 1").replace(
        f"{commands.SECTION}-begin legacy_compose\n\n{commands.SECTION}-end legacy_compose 1",
        f"{commands.SECTION}-begin legacy_compose\n1.29.2\n{commands.SECTION}-end legacy_compose 0"))
    mello = parse_state("mello", _healthy_app_output())
    problems, _ = preflight_problems(inventory(), {"mello": mello, "verda": verda})
    texts = [p.sentence() for p in problems]
    assert texts[0].startswith("host verda, step preflight: only the legacy docker-compose 1.29.2 is installed")
    assert "no NVIDIA container runtime" in texts[1] and "nvidia-ctk runtime configure" in texts[1]


def test_gpu_required_but_absent():
    verda = parse_state("verda", _healthy_app_output(tailscale=""))
    problems, _ = preflight_problems(inventory(), {"mello": parse_state("mello", _healthy_app_output()), "verda": verda})
    assert problems and "gpu: required but the host has no usable GPU" in problems[0].sentence()
    problems, _ = preflight_problems(inventory(gpu="auto"), {"mello": parse_state("mello", _healthy_app_output()),
                                                            "verda": verda})
    assert problems == []


def test_worker_device_recorded_on_a_real_h100_reads_as_cuda():
    stats = parse_system_stats(json.loads((LIVE / "standin-system_stats-gpu.json").read_text()))
    assert stats.primary_device().type == "cuda" and not stats.cpu_flag
    assert stats.gpu_name == "NVIDIA H100 80GB HBM3"
    torch_entry = json.loads((LIVE / "torch-devices-entry.json").read_text())
    assert stats.primary_device().name == torch_entry["name"]
