#!/usr/bin/env python3
"""Check, on a host with a real NVIDIA GPU (a Verda worker, say), the GPU paths comfyume-fab
relies on, with the real driver: the nvidia-smi query that `status` parses, the preflight
script's GPU section, and the worker's GPU-or-CPU start (the lab's stand-in worker reports
`cuda` only when nvidia-smi truly works). Needs python3 only (no SSH, no Docker).

    python3 scripts/gpu-check.py [OUT_DIR]     # exit 0 when every check passed

Writes the raw outputs and a results.json into OUT_DIR when given.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from comfyume_fab.host import commands  # noqa: E402  (pure modules: stdlib only)
from comfyume_fab.host.facts import ParseError, comfyui, nvidia  # noqa: E402
from comfyume_fab.host.state import preflight_parts  # noqa: E402

results: list[dict] = []
raw: dict[str, str] = {}


def check(name: str, ok: bool, detail: str) -> bool:
    results.append({"name": name, "ok": bool(ok), "detail": detail})
    print(f"[{'ok' if ok else 'FAIL':>4}] {name}: {detail}", flush=True)
    return ok


def http(port: int, method: str, path: str, body=None, timeout=10.0):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                 headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.status, json.loads(resp.read() or b"{}")


def start_worker(port: int, device: str, tmp: str) -> subprocess.Popen:
    env = dict(os.environ, COMFYUI_LISTEN_PORT=str(port), STANDIN_LISTEN_HOST="127.0.0.1", WORKER_DEVICE=device,
               OUTPUT_DIR=tmp, STANDIN_FAULT_FILE=f"{tmp}/fault", STANDIN_CRASH_FILE=f"{tmp}/crash")
    env.pop("QUEUE_MANAGER_URL", None)
    proc = subprocess.Popen([sys.executable, str(REPO / "comfyume_fab/lab/standins/worker.py")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            http(port, "GET", "/system_stats", timeout=1)
            return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"stand-in worker did not answer on {port}: {proc.stdout.read()[-500:]}")


def main() -> int:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else None
    try:
        q = subprocess.run(list(nvidia.QUERY), capture_output=True, text=True)
    except FileNotFoundError:
        check("nvidia-smi query parses", False, "nvidia-smi is not installed here: this is not a GPU host")
        return finish(out)
    raw["nvidia-smi-query.csv"] = q.stdout
    try:
        gpus = nvidia.parse_nvidia_smi_query(q.stdout) if q.returncode == 0 else ()
    except ParseError as exc:
        gpus = ()
        check("nvidia-smi query parses", False, str(exc))
    if not check("nvidia-smi query parses", bool(gpus), f"{len(gpus)} GPU(s): " + "; ".join(
            f"{g.name} {g.memory_used_mib}/{g.memory_total_mib} MiB {g.utilization_pct}%" for g in gpus)
            if gpus else f"exit {q.returncode}: {(q.stderr or q.stdout).strip()[:200]}"):
        return finish(out)
    lst = subprocess.run(list(nvidia.LIST), capture_output=True, text=True)
    raw["nvidia-smi-L.txt"] = lst.stdout
    listed = nvidia.parse_nvidia_smi_list(lst.stdout)
    check("nvidia-smi -L agrees", [x.name for x in listed] == [g.name for g in gpus], str([x.name for x in listed]))

    script = commands.sections(preflight_parts())
    pre = subprocess.run(["bash", "-c", script], capture_output=True, text=True)
    raw["preflight-sections.txt"] = pre.stdout
    sec = commands.split_sections(pre.stdout)
    code, text = sec.get("nvidia", (1, ""))
    check("preflight script's GPU section", code == 0 and nvidia.parse_nvidia_smi_query(text)[0].name == gpus[0].name,
          f"exit {code}; engine section exit {sec.get('engine', (None,))[0]}, runtimes exit {sec.get('runtimes', (None,))[0]}")

    try:
        import torch  # what ComfyUI itself uses to name the device
        name = torch.cuda.get_device_name(0)
        free, total = torch.cuda.mem_get_info(0)
        entry = {"name": f"cuda:0 {name} : native", "type": "cuda", "index": 0, "vram_total": total,
                 "vram_free": free, "torch_vram_total": 0, "torch_vram_free": 0}
        raw["torch-devices-entry.json"] = json.dumps(entry)
        x = torch.randn(2048, 2048, device="cuda")
        torch.cuda.synchronize()
        y = (x @ x).sum().item()
        check("torch sees the same GPU", comfyui.gpu_display_name(entry["name"]) == gpus[0].name,
              f"{entry['name']}, {total // 2**20} MiB (nvidia-smi: {gpus[0].memory_total_mib} MiB); matmul ok ({y:.1f})")
    except ImportError:
        check("torch sees the same GPU", True, "torch not installed here: skipped this cross-check only")

    with tempfile.TemporaryDirectory() as tmp:
        gpu_worker = start_worker(18301, "auto", tmp)
        try:
            _, stats = http(18301, "GET", "/system_stats")
            raw["standin-system_stats-gpu.json"] = json.dumps(stats)
            parsed = comfyui.parse_system_stats(stats)
            dev = parsed.primary_device()
            check("worker starts on the GPU when there is one", dev.type == "cuda" and not parsed.cpu_flag
                  and parsed.gpu_name == gpus[0].name, f"device {dev.name!r}, argv {list(parsed.argv)}")
            graph = {"1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1,
                                                                  "color": int(time.time()) % 0xFFFFFF}},
                     "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "gpu-check"}}}
            status, body = http(18301, "POST", "/prompt", {"prompt": graph, "client_id": "gpu-check"})
            pid = comfyui.parse_prompt_response(status, body)
            for _ in range(100):
                _, hist = http(18301, "GET", f"/history/{pid}")
                res = comfyui.parse_history(hist, pid)
                if res:
                    break
                time.sleep(0.05)
            check("probe graph executes on the GPU worker", bool(res and res.fully_executed),
                  f"status {res.status_str if res else 'none'}, cached {list(res.cached_nodes) if res else '?'}")
        finally:
            gpu_worker.terminate()
        cpu_worker = start_worker(18302, "cpu", tmp)
        try:
            _, stats = http(18302, "GET", "/system_stats")
            parsed = comfyui.parse_system_stats(stats)
            check("WORKER_DEVICE=cpu forces CPU even with a GPU", parsed.primary_device().type == "cpu"
                  and parsed.cpu_flag, f"argv {list(parsed.argv)}")
        finally:
            cpu_worker.terminate()
    return finish(out)


def finish(out: Path | None) -> int:
    ok = all(r["ok"] for r in results) and bool(results)
    if out:
        out.mkdir(parents=True, exist_ok=True)
        for name, text in raw.items():
            (out / name).write_text(text)
        (out / "results.json").write_text(json.dumps({"ok": ok, "results": results}, indent=1))
    print(f"gpu-check: {'all passed' if ok else 'FAILED'} ({sum(r['ok'] for r in results)}/{len(results)})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
