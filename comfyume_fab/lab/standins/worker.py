"""STAND-IN for the comfyume inference worker (lab only; not the real ComfyUI worker).

Speaks ComfyUI 0.8.0's HTTP API (shapes recorded in tests/fixtures/comfyui-0.8.0-cpu/) and REALLY
executes the model-free probe graph (EmptyImage -> SaveImage, real PNG files), honouring ComfyUI's
result cache; plus the real worker's queue-manager polling loop (HTTP only, never Redis).

Endpoints (0.0.0.0:COMFYUI_LISTEN_PORT, default 8188):
  GET  /system_stats       system section + one device: cuda only when `nvidia-smi` truly works
                           (WORKER_DEVICE=auto), else the cpu device and "--cpu" in argv
  POST /prompt             {"prompt": graph, "client_id", "front"} -> 200 {"prompt_id", "number", "node_errors"}
                           or 400 with ComfyUI's validation error bodies; `front: true` queues it first
                           (ComfyUI's number = -number: the lowest number runs next)
  POST /queue              {"delete": [prompt_id, ...]} removes those PENDING prompts, {"clear": true}
                           every pending one (a running prompt is never removed), as ComfyUI does
  POST /interrupt          stops the running prompt (its history: execution_interrupted)
  GET  /prompt             {"exec_info": {"queue_remaining": n}}
  GET  /queue              {"queue_running": [[number, id, graph, extra, outputs]], "queue_pending": [...]}
  GET  /history[/<id>]     finished prompts in ComfyUI's history shape ({} for unknown/unfinished ids)
  GET  /object_info[/<C>]  node definitions ({} for an unknown class)
  GET  /view?filename=&subfolder=&type=output   the saved PNG (404 when absent, 400 on traversal)

Env: COMFYUI_LISTEN_PORT (8188), COMFYUI_ARGS (extra argv; "--cpu" forces the cpu device),
WORKER_DEVICE (auto | cpu), OUTPUT_DIR (/tmp/comfyui-output), QUEUE_MANAGER_URL (polling is off when
unset), WORKER_ID (worker-1), WORKER_POLL_INTERVAL (2 s, whole seconds as the real worker reads it), JOB_TIMEOUT (1800 s),
STANDIN_MAX_PIXELS (67108864: a bigger EmptyImage fails at execution, as an out-of-memory would),
STANDIN_BLUR_RATE (2000000): the STAND-IN's ImageBlur node (real ComfyUI's name and inputs) only
waits, width*height*batch*blur_radius / rate seconds, interruptible -- the slow node that keeps a
worker busy the way a large real ImageBlur does; STANDIN_IGNORE_SIGTERM (0 | pid1 | 1, default 0):
never ignore SIGTERM, ignore it only as PID 1 (what ComfyUI's main.py does: the kernel drops it),
or always (the lab test of clean worker stops bakes 1 into its image); SIGINT (KeyboardInterrupt)
always stops it.

Fault injection for tests (the file is re-read before every request):
  STANDIN_FAULT_FILE (default /tmp/standin-fault) containing
    "500"     -> every endpoint but GET /system_stats answers HTTP 500 {"error": "stand-in fault injected"}
    "500-all" -> every endpoint answers that 500
    "hang"    -> POST /prompt never answers (it waits until the client goes away)
  STANDIN_CRASH_FILE (default /tmp/standin-crash): if it exists at start, the worker prints
    "stand-in worker: crash requested by <path>" to stderr and exits 1 (a crash-looping container).
"""
from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import urllib.parse
import uuid

try:
    from . import common
except ImportError:  # run as a script inside the stand-in container
    import common

FAULT_FILE = common.env_str("STANDIN_FAULT_FILE", "/tmp/standin-fault")
CRASH_FILE = common.env_str("STANDIN_CRASH_FILE", "/tmp/standin-crash")
PORT = common.env_int("COMFYUI_LISTEN_PORT", 8188)
OUTPUT_DIR = os.path.abspath(common.env_str("OUTPUT_DIR", "/tmp/comfyui-output"))
NVIDIA_SMI = ["nvidia-smi", "--query-gpu=name,memory.total,memory.used", "--format=csv,noheader,nounits"]


# ----------------------------------------------------------------------------- device
def query_gpu() -> tuple[dict | None, str]:
    """(cuda device entry, why) when nvidia-smi works, else (None, why not)."""
    try:
        run = subprocess.run(NVIDIA_SMI, capture_output=True, text=True, timeout=10)
    except FileNotFoundError:
        return None, "nvidia-smi not found"
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"nvidia-smi failed: {exc}"
    if run.returncode != 0:
        return None, f"nvidia-smi exited {run.returncode}: {(run.stderr or run.stdout).strip()[:200]}"
    try:
        name, total, used = [part.strip() for part in run.stdout.strip().splitlines()[0].split(",")][:3]
        total_mib, used_mib = int(float(total)), int(float(used))
    except (IndexError, ValueError):
        return None, f"nvidia-smi output not understood: {run.stdout.strip()[:200]!r}"
    if not name or total_mib <= 0:
        return None, f"nvidia-smi output not understood: {run.stdout.strip()[:200]!r}"
    return ({"name": f"cuda:0 {name} : native", "type": "cuda", "index": 0,
             "vram_total": total_mib * 1048576, "vram_free": (total_mib - used_mib) * 1048576,
             "torch_vram_total": 0, "torch_vram_free": 0}, f"nvidia-smi reports {name}")


def choose_device(args: list[str]) -> tuple[bool, str]:
    """(use cuda?, why), decided once at start."""
    wanted = common.env_str("WORKER_DEVICE", "auto").lower()
    if wanted == "cpu":
        return False, "WORKER_DEVICE=cpu"
    if "--cpu" in args:
        return False, "COMFYUI_ARGS contains --cpu"
    if wanted != "auto":
        common.log(f"worker: WORKER_DEVICE={wanted!r} is not auto|cpu; using auto")
    device, why = query_gpu()
    return device is not None, why


# ----------------------------------------------------------------------------- execution
def now_ms() -> int:
    return int(time.time() * 1000)


def signature(prompt: dict, node_id: str, memo: dict):
    """ComfyUI's cache key: class + inputs, links replaced by their upstream node's signature."""
    if node_id not in memo:
        memo[node_id] = None  # a placeholder while computing: a (never valid) cycle ends here
        try:
            node = prompt[node_id]
            parts = [[k, ["LINK", signature(prompt, v[0], memo), v[1]] if isinstance(v, list) else v]
                     for k, v in sorted(node["inputs"].items())]
            memo[node_id] = json.dumps([node["class_type"], parts], sort_keys=True)
        except (KeyError, IndexError, TypeError, AttributeError):
            memo[node_id] = None  # a broken node (only possible beside a valid output): never cached
    return memo[node_id]


def execution_order(prompt: dict, outputs: list) -> list:
    """The outputs and their ancestors, each after the nodes it links from."""
    order: list = []

    def visit(node_id):
        if node_id not in order:
            for value in prompt[node_id]["inputs"].values():
                if isinstance(value, list) and len(value) == 2:
                    visit(value[0])
            order.append(node_id)
    for output in outputs:
        visit(output)
    return order


class Executor:
    """ComfyUI's prompt queue: one thread runs prompts in order; results of the previous prompt
    are reused for nodes whose signature is unchanged (listed in execution_cached)."""

    def __init__(self, output_dir: str, max_pixels: int):
        self.output_dir, self.max_pixels = output_dir, max_pixels
        self.cond = threading.Condition()
        self.pending, self.running, self.history, self.cache, self.number = [], None, {}, {}, 0
        self.interrupted = threading.Event()
        self.blur_rate = common.env_float("STANDIN_BLUR_RATE", 2_000_000.0)
        threading.Thread(target=self._loop, name="executor", daemon=True).start()

    def submit(self, prompt, extra: dict, front: bool = False) -> dict:
        prompt, outputs, node_errors = common.validate_prompt(prompt)  # raises HTTPError(400)
        with self.cond:
            number = -self.number if front else self.number  # ComfyUI's server.py post_prompt
            item = [number, str(uuid.uuid4()), prompt, {**extra, "create_time": now_ms()}, outputs]
            self.number += 1
            self.pending.append(item)
            self.pending.sort(key=lambda it: it[0])  # ComfyUI's PromptQueue is a heap on number
            self.cond.notify_all()
        return {"prompt_id": item[1], "number": item[0], "node_errors": node_errors}

    def delete(self, prompt_ids) -> None:
        """POST /queue {"delete": [...]}: drop those pending prompts (never the running one)."""
        with self.cond:
            self.pending = [it for it in self.pending if it[1] not in set(prompt_ids)]

    def clear(self) -> None:
        with self.cond:
            self.pending = []

    def interrupt(self) -> None:
        self.interrupted.set()

    def remaining(self) -> int:
        with self.cond:
            return len(self.pending) + (self.running is not None)

    def queue_view(self) -> dict:
        with self.cond:
            return {"queue_running": [self.running] if self.running else [], "queue_pending": list(self.pending)}

    def history_view(self, prompt_id, max_items) -> dict:
        with self.cond:
            if prompt_id is not None:
                return {prompt_id: self.history[prompt_id]} if prompt_id in self.history else {}
            items = list(self.history.items())
        count = int(max_items) if str(max_items or "").isdigit() else len(items)
        return dict(items[len(items) - count:])

    def wait(self, prompt_id: str, timeout: float):
        deadline = time.monotonic() + timeout
        with self.cond:
            while prompt_id not in self.history:
                if not self.cond.wait(max(0.0, deadline - time.monotonic())) and time.monotonic() >= deadline:
                    return None
            return self.history[prompt_id]

    def _loop(self) -> None:
        while True:
            with self.cond:
                while not self.pending:
                    self.cond.wait()
                self.running = item = self.pending.pop(0)
                self.interrupted.clear()
            try:
                entry = self._execute(*item)
            except Exception as exc:  # noqa: BLE001 - a stand-in bug must not stop the queue
                common.log(f"worker: prompt {item[1]} crashed the executor: {exc!r}")
                entry = {"prompt": item, "outputs": {}, "meta": {}, "status": {
                    "status_str": "error", "completed": False, "messages": []}}
            with self.cond:
                self.history[item[1]] = entry
                self.running = None
                self.cond.notify_all()

    def _execute(self, number, prompt_id, prompt, extra, outputs) -> dict:
        stamp = {"prompt_id": prompt_id}
        messages = [["execution_start", {**stamp, "timestamp": now_ms()}]]
        memo: dict = {}
        sigs = {node_id: signature(prompt, node_id, memo) for node_id in prompt}
        cached = [n for n in prompt if sigs[n] is not None and sigs[n] in self.cache]
        messages.append(["execution_cached", {"nodes": cached, **stamp, "timestamp": now_ms()}])
        results, executed, status = {}, [], "success"
        for node_id in execution_order(prompt, outputs):
            if node_id in cached:
                results[node_id] = self.cache[sigs[node_id]]
                continue
            try:
                results[node_id] = self._run_node(prompt, node_id, results)
                executed.append(node_id)
            except Interrupted:
                status = "error"
                messages.append(["execution_interrupted", {
                    **stamp, "node_id": node_id, "node_type": prompt[node_id]["class_type"], "executed": executed,
                    "timestamp": now_ms()}])
                break
            except Exception as exc:  # noqa: BLE001 - reported the way ComfyUI reports it
                status = "error"
                messages.append(["execution_error", {
                    **stamp, "node_id": node_id, "node_type": prompt[node_id]["class_type"], "executed": executed,
                    "exception_message": str(exc), "exception_type": type(exc).__name__,
                    "traceback": traceback.format_tb(exc.__traceback__), "current_inputs": {},
                    "current_outputs": list(results), "timestamp": now_ms()}])
                break
        if status == "success":
            messages.append(["execution_success", {**stamp, "timestamp": now_ms()}])
        self.cache = {sigs[n]: results.get(n) or self.cache[sigs[n]] for n in prompt
                      if sigs[n] is not None and (n in results or sigs[n] in self.cache)}
        ui = {n: r[1] for n, r in results.items() if r[1] is not None}
        return {"prompt": [number, prompt_id, prompt, extra, outputs], "outputs": ui,
                "status": {"status_str": status, "completed": status == "success", "messages": messages},
                "meta": {n: {"node_id": n, "display_node": n, "parent_node": None, "real_node_id": n} for n in ui}}

    def _run_node(self, prompt: dict, node_id: str, results: dict) -> tuple:
        """(value, ui) of one node; SaveImage writes real PNG files."""
        node, inputs = prompt[node_id], prompt[node_id]["inputs"]
        if node["class_type"] == "EmptyImage":
            width, height, batch, color = (inputs[k] for k in ("width", "height", "batch_size", "color"))
            if width * height * batch > self.max_pixels:
                raise MemoryError(f"stand-in refuses {width}x{height}x{batch} images "
                                  f"(over STANDIN_MAX_PIXELS={self.max_pixels})")
            rgb = ((color >> 16) & 0xFF, (color >> 8) & 0xFF, color & 0xFF)
            return {"width": width, "height": height, "batch": batch, "rgb": rgb}, None
        if node["class_type"] == "ImageBlur":  # STAND-IN: takes the time, changes no pixel
            image = results[inputs["image"][0]][0]
            seconds = image["width"] * image["height"] * image["batch"] * inputs["blur_radius"] / self.blur_rate
            if self.interrupted.wait(seconds):
                raise Interrupted()
            return image, None
        image = results[inputs["images"][0]][0]
        norm = os.path.normpath(inputs["filename_prefix"])
        subfolder, stem = os.path.dirname(norm), os.path.basename(norm)
        folder = os.path.abspath(os.path.join(self.output_dir, subfolder))
        if os.path.commonpath([self.output_dir, folder]) != self.output_dir:
            raise ValueError("**** ERROR: Saving image outside the output folder is not allowed.")
        os.makedirs(folder, exist_ok=True)
        pattern = re.compile(re.escape(stem) + r"_(\d+)_")
        counter = max([int(m.group(1)) for m in map(pattern.match, os.listdir(folder)) if m] or [0]) + 1
        png = common.png_bytes(image["width"], image["height"], image["rgb"], {"prompt": json.dumps(prompt)})
        images = []
        for index in range(image["batch"]):
            filename = f"{stem}_{counter + index:05}_.png"
            with open(os.path.join(folder, filename), "wb") as handle:
                handle.write(png)
            images.append({"filename": filename, "subfolder": subfolder, "type": "output"})
        return None, {"images": images}


class Interrupted(Exception):
    """POST /interrupt reached the running node (ComfyUI's InterruptProcessingException)."""


# ----------------------------------------------------------------------------- HTTP API
def read_fault() -> str:
    try:
        with open(FAULT_FILE, encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError:
        return ""


class Handler(common.StandinHandler):
    standin = "worker"
    quiet_paths = ("/system_stats", "/history", "/queue", "/prompt")
    executor: Executor = None  # set in main()
    use_cuda = False
    argv: list = []

    def route(self, method, path, query):
        fault = read_fault()
        if fault == "500-all" or (fault == "500" and (method, path) != ("GET", "/system_stats")):
            self.read_body()
            raise common.HTTPError(500, {"error": "stand-in fault injected"})
        if fault == "hang" and (method, path) == ("POST", "/prompt"):
            self.read_body()
            return self.hang()
        ex = self.executor
        if method == "GET" and path == "/system_stats":
            return self.send_json(200, common.system_stats(self.argv, [self.device()]))
        if method == "POST" and path == "/prompt":
            body = self.read_json()
            body = body if isinstance(body, dict) else {}
            extra = dict(body.get("extra_data") or {})
            if "client_id" in body:
                extra["client_id"] = body["client_id"]
            return self.send_json(200, ex.submit(body.get("prompt"), extra, front=bool(body.get("front"))))
        if method == "GET" and path == "/prompt":
            return self.send_json(200, {"exec_info": {"queue_remaining": ex.remaining()}})
        if method == "GET" and path == "/queue":
            return self.send_json(200, ex.queue_view())
        if method == "POST" and path == "/queue":
            body = self.read_json()
            body = body if isinstance(body, dict) else {}
            if body.get("clear"):
                ex.clear()
            if isinstance(body.get("delete"), list):
                ex.delete([str(p) for p in body["delete"]])
            return self.send_bytes(200, b"", "text/plain")
        if method == "POST" and path == "/interrupt":
            self.read_body()
            ex.interrupt()
            return self.send_bytes(200, b"", "text/plain")
        if method == "GET" and (path == "/history" or path.startswith("/history/")):
            return self.send_json(200, ex.history_view(path[len("/history/"):] or None, query.get("max_items")))
        if method == "GET" and (path == "/object_info" or path.startswith("/object_info/")):
            name = urllib.parse.unquote(path[len("/object_info/"):])
            info = common.OBJECT_INFO if not name else {k: v for k, v in common.OBJECT_INFO.items() if k == name}
            return self.send_json(200, info)
        if method == "GET" and path == "/view":
            return self.view(query)
        raise common.HTTPError(404, {"error": "not found"})

    def device(self) -> dict:
        if not self.use_cuda:
            return common.cpu_device()
        device, why = query_gpu()
        if device is None:  # never claim a GPU that nvidia-smi no longer shows
            raise common.HTTPError(500, {"error": f"GPU lost since start: {why}"})
        return device

    def view(self, query: dict) -> None:
        name, sub = query.get("filename", ""), query.get("subfolder", "")
        if query.get("type", "output") != "output":
            raise common.HTTPError(400, {"error": "the stand-in only serves type=output"})
        if not name or name[0] in "/\\" or ".." in name.replace("\\", "/").split("/"):
            raise common.HTTPError(400, {"error": "invalid filename"})
        path = os.path.realpath(os.path.join(OUTPUT_DIR, sub, name))
        if os.path.commonpath([os.path.realpath(OUTPUT_DIR), path]) != os.path.realpath(OUTPUT_DIR):
            raise common.HTTPError(403, {"error": "path outside the output folder"})
        if not os.path.isfile(path):
            raise common.HTTPError(404, {"error": "not found"})
        with open(path, "rb") as handle:
            self.send_bytes(200, handle.read(), "image/png" if path.endswith(".png") else "application/octet-stream",
                            {"Content-Disposition": f'filename="{os.path.basename(path)}"'})

    def hang(self) -> None:
        """Never answer; return (closing the connection) once the client has gone away."""
        self.close_connection = True
        while True:
            readable, _, _ = select.select([self.connection], [], [], 1.0)
            if readable:
                try:
                    if not self.connection.recv(1, socket.MSG_PEEK):
                        return
                except OSError:
                    return
                time.sleep(1.0)


# ----------------------------------------------------------------------------- queue polling
def poll_forever(executor: Executor, base_url: str, worker_id: str) -> None:
    """The real worker's loop, over HTTP only (it never connects to Redis): next-job -> execute ->
    complete-job / fail-job with the queue manager's declared shapes (job_id as a query parameter,
    the body {"result": {...}} or {"error": "..."}). Never stops."""
    interval = common.env_int("WORKER_POLL_INTERVAL", 2)  # the real worker does int() on it
    # the real worker's httpx client waits HTTP_CLIENT_TIMEOUT (30 s) for the queue manager: a
    # next-job held up by a Redis outage still hands its job to this worker instead of losing it
    http_timeout = common.env_float("HTTP_CLIENT_TIMEOUT", 30.0)
    base = base_url.rstrip("/")
    url = f"{base}/api/workers/next-job?worker_id={urllib.parse.quote(worker_id)}"
    warn = common.Throttled(30.0)
    while True:
        step, job = f"polling {url}", None
        try:
            job = (common.http_json("GET", url, timeout=http_timeout) or {}).get("job")
            if isinstance(job, dict) and job.get("id"):
                path, payload = run_job(executor, job)
                step = f"reporting job {job['id']} to {base}{path}"
                common.http_json("POST", f"{base}{path}?job_id={urllib.parse.quote(job['id'])}", payload,
                                 timeout=http_timeout)
        except Exception as exc:  # noqa: BLE001 - logged (at most every 30 s); the loop goes on
            warn(f"worker: {step} failed: {common.describe_http_error(exc)}")
        if not (isinstance(job, dict) and job.get("id")):
            time.sleep(interval)


def run_job(executor: Executor, job: dict) -> tuple[str, dict]:
    """(the path to report to, its body): the result as the real worker builds it."""
    started = time.time()
    try:
        workflow = job.get("workflow")
        workflow = json.loads(workflow) if isinstance(workflow, str) else workflow
        prompt_id = executor.submit(workflow, {"client_id": job.get("user_id") or ""})["prompt_id"]
    except ValueError as exc:
        return "/api/workers/fail-job", {"error": f"workflow is not JSON: {exc}"}
    except common.HTTPError as exc:
        return "/api/workers/fail-job", {"error": json.dumps(exc.body)}
    entry = executor.wait(prompt_id, common.env_float("JOB_TIMEOUT", 1800.0))
    if entry is None:
        return "/api/workers/fail-job", {"error": f"Workflow {prompt_id} exceeded timeout"}
    if entry["status"]["status_str"] != "success":
        errors = [m[1].get("exception_message", "") for m in entry["status"]["messages"] if m[0] == "execution_error"]
        return "/api/workers/fail-job", {"error": "Workflow execution failed: " + ("; ".join(errors) or "error")}
    return "/api/workers/complete-job", {"result": {
        "prompt_id": prompt_id, "status": "completed", "outputs": entry["outputs"],
        "execution_time": time.time() - started, "output_path": os.path.join("/outputs", job.get("user_id") or ""),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())}}


def ignore_sigterm() -> None:
    """ComfyUI's main.py installs no SIGTERM handler; as a container's PID 1 the kernel then drops
    SIGTERM, so `docker stop` waits out its grace period. Do the same (STANDIN_IGNORE_SIGTERM)."""
    how = common.env_str("STANDIN_IGNORE_SIGTERM", "0").lower()
    if how == "1" or (how == "pid1" and os.getpid() == 1):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def main() -> None:
    if os.path.exists(CRASH_FILE):
        sys.stderr.write(f"stand-in worker: crash requested by {CRASH_FILE}\n")
        sys.exit(1)
    common.banner("worker", "inference worker (ComfyUI API)")
    args = [a for a in common.env_str("COMFYUI_ARGS").split() if a != "--cpu"]
    use_cuda, why = choose_device(common.env_str("COMFYUI_ARGS").split())
    print(f"worker: device {'cuda' if use_cuda else 'cpu'} ({why})", flush=True)
    Handler.use_cuda = use_cuda
    Handler.argv = common.comfy_argv(args if use_cuda else ["--cpu", *args], PORT)
    Handler.executor = Executor(OUTPUT_DIR, common.env_int("STANDIN_MAX_PIXELS", 64 * 1024 * 1024))
    base_url, worker_id = common.env_str("QUEUE_MANAGER_URL"), common.env_str("WORKER_ID", "worker-1")
    try:  # the real worker does int(WORKER_POLL_INTERVAL) at import: "0.5" stops it before it starts
        int(os.environ.get("WORKER_POLL_INTERVAL", "2"))
    except ValueError as exc:
        sys.stderr.write(f"stand-in worker: WORKER_POLL_INTERVAL: {exc}\n")
        sys.exit(1)
    if base_url:
        threading.Thread(target=poll_forever, args=(Handler.executor, base_url, worker_id), daemon=True).start()
        print(f"worker: polling {base_url} as {worker_id}", flush=True)
    common.serve(Handler, PORT, on_sigterm=ignore_sigterm)


if __name__ == "__main__":
    main()
