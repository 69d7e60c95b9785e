"""What the worker's own ComfyUI says about its device (GPU or CPU), from the worker host."""
from __future__ import annotations

import json
import time

from ..errors import TunnelError
from ..host.facts import ParseError
from ..host.facts.comfyui import SYSTEM_STATS, parse_system_stats
from ..host.ssh.remote import Remote
from ..inventory.model import GPU_MODES
from .links import http_via
from .result import CheckResult


def device_check(remote: Remote, port: int, timeout: float, mode: str) -> CheckResult:
    """GET /system_stats on the worker host's loopback: ComfyUI's version and device; a warning
    when a GPU mode runs on CPU."""
    t0 = time.monotonic()
    name = f"device-{remote.name}"
    try:
        status, body = http_via(remote, "127.0.0.1", port, "GET", SYSTEM_STATS, timeout=timeout)
        stats = parse_system_stats(json.loads(body))
    except TunnelError as exc:
        return CheckResult(name, False, f"worker ComfyUI not reachable: {exc.cause}", time.monotonic() - t0,
                           remote.name)
    except (OSError, ValueError, ParseError) as exc:
        return CheckResult(name, False, f"worker ComfyUI /system_stats unusable: {exc}", time.monotonic() - t0,
                           remote.name)
    dev = stats.primary_device()
    kind = dev.type if dev else "none"
    detail = f"ComfyUI {stats.comfyui_version} on {kind}" + (f" ({stats.gpu_name}, {dev.vram_total // 2**20} MiB)"
                                                            if kind == "cuda" else "")
    return CheckResult(name, True, detail, time.monotonic() - t0, remote.name, warning=kind != "cuda" and mode in GPU_MODES,
                       data={"device": kind, "cpu_flag": stats.cpu_flag})
