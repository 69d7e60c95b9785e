"""Preflight diagnoses of host facts against the inventory, each with its fix (pure)."""
from __future__ import annotations

from typing import Mapping

from ..errors import DriftError, FabError, UnhealthyError
from ..host.state import HostState
from ..inventory.model import Inventory


def preflight_problems(inv: Inventory, states: Mapping[str, HostState]) -> tuple[list[FabError], list[str]]:
    problems: list[FabError] = []
    notes: list[str] = []
    for host in inv.hosts:
        st = states[host.name]
        where = dict(host=host.name, step="preflight")
        if not st.engine:
            problems.append(UnhealthyError(
                f"the Docker engine is not answering ({st.engine_error or 'no reply'})", **where,
                hint="start it on the host (`sudo systemctl start docker`)"))
            continue
        if not st.compose or st.compose.kind != "v2":
            if st.legacy_compose:
                problems.append(UnhealthyError(
                    f"only the legacy docker-compose {st.legacy_compose} is installed; comfyume-fab needs "
                    "Compose v2 (`docker compose`)", **where, hint="install the docker-compose-plugin package"))
            else:
                problems.append(UnhealthyError("Compose v2 (`docker compose`) is not installed", **where,
                                               hint="install the docker-compose-plugin package"))
        is_worker = "worker" in host.roles and inv.mode not in ("serverless", "frontend-testing")
        if is_worker and host.gpu == "required" and not st.has_gpu:
            why = st.gpu_error or "nvidia-smi is missing or found no GPU"
            problems.append(UnhealthyError(f"hosts.yaml says gpu: required but the host has no usable GPU ({why})",
                                           **where, hint="check the driver with `nvidia-smi` on the host, or set "
                                                         "gpu: auto to allow a CPU fallback"))
        if is_worker and st.has_gpu and "nvidia" not in st.runtimes and not st.nvidia_toolkit:
            problems.append(UnhealthyError(
                "the host has a GPU but Docker has no NVIDIA container runtime, so the worker's GPU "
                "reservation would fail", **where,
                hint="install nvidia-container-toolkit and run `sudo nvidia-ctk runtime configure --runtime=docker`"))
        if st.tailscale_ip and host.tailscale_ip and st.tailscale_ip != host.tailscale_ip:
            problems.append(DriftError(
                f"hosts.yaml says tailscale_ip {host.tailscale_ip} but `tailscale ip -4` on the host reports "
                f"{st.tailscale_ip} (Tailscale addresses move when a host is rebuilt)", **where,
                hint=f"update hosts.yaml line {host.line} and rerun start-all"))
    return problems, notes
