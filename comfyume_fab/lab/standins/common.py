"""Shared helpers for the lab's STAND-IN services (lab only; never the real ComfyuME services).

The stand-ins speak the real HTTP contracts (see docs/comfyume-system.md) so that the orchestrator
can be tested without GPUs or the team's private images. They run inside bare Debian 12
containers: only the Python 3.11 standard library and Debian's redis-py 4.3 may be imported.

This module holds what every stand-in needs: env parsing, the start banner, a JSON-speaking
ThreadingHTTPServer handler (every response carries `X-Comfyume-Standin: <name>`), a quiet access
log on stderr, a tiny JSON HTTP client, and the ComfyUI pieces shared by the frontend and worker
stand-ins (`/system_stats` sections, a pure-Python PNG encoder).
"""
from __future__ import annotations

import json
import os
import signal
import struct
import sys
import time
import traceback
import urllib.error
import urllib.request
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

COMFYUI_VERSION = "0.8.0-standin"


# ----------------------------------------------------------------------------- env and logging
def env_str(name: str, default: str = "") -> str:
    value = os.environ.get(name)
    return default if value is None or value.strip() == "" else value.strip()


def env_int(name: str, default: int) -> int:
    try:
        return int(env_str(name, str(default)))
    except ValueError:
        log(f"{name}={os.environ.get(name)!r} is not an integer; using {default}")
        return default


def env_float(name: str, default: float) -> float:
    try:
        return float(env_str(name, str(default)))
    except ValueError:
        log(f"{name}={os.environ.get(name)!r} is not a number; using {default}")
        return default


def log(message: str) -> None:
    sys.stderr.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {message}\n")
    sys.stderr.flush()


def banner(name: str, service: str) -> None:
    print(f"STAND-IN {name} for the comfyume {service} (lab only; not the real service)", flush=True)


class Throttled:
    """Log a recurring message at most once per `every` seconds (e.g. poll errors)."""

    def __init__(self, every: float = 30.0):
        self.every, self.last = every, None

    def __call__(self, message: str) -> None:
        now = time.monotonic()
        if self.last is None or now - self.last >= self.every:
            self.last = now
            log(message)


# ----------------------------------------------------------------------------- HTTP server side
class HTTPError(Exception):
    """Raise from a route to answer `status` with a JSON `body`."""

    def __init__(self, status: int, body, headers: dict | None = None):
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers or {}


class StandinHandler(BaseHTTPRequestHandler):
    """Base handler: subclasses set `standin` and implement `route(method, path, query)`."""

    standin = "stand-in"
    quiet_paths: tuple = ("/health", "/system_stats", "/api/workers/next-job")
    server_version = "comfyume-standin/1"

    def route(self, method: str, path: str, query: dict) -> None:  # pragma: no cover - abstract
        raise HTTPError(404, {"error": "not found"})

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        self._responded, self._body = False, None
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        try:
            self.route(method, url.path, query)
        except HTTPError as exc:
            self.read_body()  # an unread request body would make the client see a reset, not the answer
            self.send_json(exc.status, exc.body, exc.headers)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # a stand-in bug must answer 500, never kill the server
            log(f"{self.standin}: {method} {self.path} failed: {exc!r}\n{traceback.format_exc()}")
            if not self._responded:
                self.send_json(500, {"error": f"stand-in internal error: {exc}"})

    def read_body(self) -> bytes:
        """The request body (read once; later calls return the same bytes)."""
        if self._body is None:
            length = int(self.headers.get("Content-Length") or 0)
            self._body = self.rfile.read(length) if length > 0 else b""
        return self._body

    def read_json(self):
        """The request body as JSON (None when empty); 400 when it is not JSON."""
        raw = self.read_body()
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise HTTPError(400, {"error": f"request body is not JSON: {exc}"}) from exc

    def send_response(self, code, message=None):
        super().send_response(code, message)
        self.send_header("X-Comfyume-Standin", self.standin)

    def send_bytes(self, status: int, body: bytes, content_type: str, headers: dict | None = None):
        self._responded = True
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, status: int, obj, headers: dict | None = None) -> None:
        self.send_bytes(status, json.dumps(obj).encode(), "application/json; charset=utf-8", headers)

    def log_request(self, code="-", size="-"):
        quiet = urlsplit(self.path).path.startswith(self.quiet_paths)
        if not (quiet and str(code).startswith("2")):
            self.log_message('"%s" %s', self.requestline, code)

    def log_message(self, format, *args):  # noqa: A002 - BaseHTTPRequestHandler's signature
        sys.stderr.write(f"{self.standin}: {self.client_address[0]} {format % args}\n")


def serve(handler: type, port: int, on_sigterm=None) -> None:
    """Serve forever on STANDIN_LISTEN_HOST (default 0.0.0.0); SIGTERM stops it cleanly unless
    `on_sigterm` sets another disposition; SIGINT (KeyboardInterrupt) always does."""
    host = env_str("STANDIN_LISTEN_HOST", "0.0.0.0")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if on_sigterm is not None:
        on_sigterm()
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    print(f"{handler.standin}: listening on http://{host}:{port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


# ----------------------------------------------------------------------------- HTTP client side
def http_json(method: str, url: str, body=None, timeout: float = 5.0):
    """Send `body` as JSON and return the decoded JSON answer; raises on HTTP >= 400."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        raw = response.read()
    return json.loads(raw) if raw.strip() else None


def describe_http_error(exc: Exception) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return f"{exc.reason}"
    return f"{exc!r}"


# ----------------------------------------------------------------------------- ComfyUI pieces
def meminfo() -> tuple[int, int]:
    """(MemTotal, MemAvailable) in bytes from /proc/meminfo, as psutil reports them to ComfyUI."""
    values = {}
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                key, _, rest = line.partition(":")
                values[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    total = values.get("MemTotal", 0)
    return total, values.get("MemAvailable", values.get("MemFree", 0))


def cpu_device() -> dict:
    total, free = meminfo()
    return {"name": "cpu", "type": "cpu", "index": None, "vram_total": total, "vram_free": free,
            "torch_vram_total": total, "torch_vram_free": free}


def comfy_argv(args: list[str], port: int) -> list[str]:
    host = env_str("STANDIN_LISTEN_HOST", "0.0.0.0")
    return ["main.py", *args, "--listen", host, "--port", str(port)]


def system_stats(argv: list[str], devices: list[dict]) -> dict:
    """GET /system_stats in ComfyUI 0.8.0's shape."""
    total, free = meminfo()
    return {"system": {"os": sys.platform, "ram_total": total, "ram_free": free,
                       "comfyui_version": COMFYUI_VERSION, "python_version": sys.version,
                       "pytorch_version": "none (stand-in)", "embedded_python": False,
                       "argv": argv},
            "devices": devices}


def png_bytes(width: int, height: int, rgb: tuple[int, int, int], text: dict | None = None) -> bytes:
    """A valid 8-bit RGB PNG of one solid colour (zlib + struct only); `text` adds tEXt chunks."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (struct.pack(">I", len(payload)) + kind + payload
                + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF))

    row = b"\x00" + bytes(rgb) * width  # filter type 0 (None) + pixels
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    texts = b"".join(chunk(b"tEXt", key.encode("latin-1") + b"\x00" + value.encode("latin-1", "replace"))
                     for key, value in (text or {}).items())
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + texts
            + chunk(b"IDAT", zlib.compress(row * height, 4)) + chunk(b"IEND", b""))


# ----------------------------------------------------------------------------- ComfyUI graphs
def _int(default: int, low: int, high: int, **extra) -> list:
    return ["INT", {"default": default, "min": low, "max": high, **extra}]


# GET /object_info for the two model-free classes, exactly as ComfyUI 0.8.0 answers it.
OBJECT_INFO = {
    "EmptyImage": {
        "input": {"required": {"width": _int(512, 1, 16384, step=1), "height": _int(512, 1, 16384, step=1),
                               "batch_size": _int(1, 1, 4096),
                               "color": _int(0, 0, 16777215, step=1, display="color")}},
        "input_order": {"required": ["width", "height", "batch_size", "color"]},
        "output": ["IMAGE"], "output_is_list": [False], "output_name": ["IMAGE"], "name": "EmptyImage",
        "display_name": "EmptyImage", "description": "", "python_module": "nodes", "category": "image",
        "output_node": False},
    "ImageBlur": {
        "input": {"required": {"image": ["IMAGE"], "blur_radius": _int(1, 1, 31, step=1),
                               "sigma": ["FLOAT", {"default": 1.0, "min": 0.1, "max": 10.0, "step": 0.1}]}},
        "input_order": {"required": ["image", "blur_radius", "sigma"]},
        "output": ["IMAGE"], "output_is_list": [False], "output_name": ["IMAGE"], "name": "ImageBlur",
        "display_name": "Image Blur", "description": "", "python_module": "comfy_extras.nodes_post_processing",
        "category": "image/postprocessing", "output_node": False},
    "SaveImage": {
        "input": {"required": {
            "images": ["IMAGE", {"tooltip": "The images to save."}],
            "filename_prefix": ["STRING", {"default": "ComfyUI", "tooltip": (
                "The prefix for the file to save. This may include formatting information such as "
                "%date:yyyy-MM-dd% or %Empty Latent Image.width% to include values from nodes.")}]},
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}},
        "input_order": {"required": ["images", "filename_prefix"], "hidden": ["prompt", "extra_pnginfo"]},
        "output": [], "output_is_list": [], "output_name": [], "name": "SaveImage",
        "display_name": "Save Image", "description": "Saves the input images to your ComfyUI output directory.",
        "python_module": "nodes", "category": "image", "output_node": True},
}


def _fail(kind: str, message: str, details: str = "", node_errors: dict | None = None):
    raise HTTPError(400, {"error": {"type": kind, "message": message, "details": details, "extra_info": {}},
                          "node_errors": node_errors or {}})


def _input_error(kind: str, message: str, details: str, name: str, **extra) -> dict:
    return {"type": kind, "message": message, "details": details, "extra_info": {"input_name": name, **extra}}


def _validate_node(prompt: dict, node_id: str, validated: dict) -> tuple[bool, list]:
    """ComfyUI 0.8.0's validate_inputs for one node (converts values in place, recurses on links)."""
    if node_id in validated:
        return validated[node_id]
    node = prompt[node_id]
    inputs, info = node["inputs"], OBJECT_INFO[node["class_type"]]
    errors, valid = [], True
    for name in info["input_order"]["required"]:
        spec = info["input"]["required"][name]
        kind, extra = spec[0], (spec[1] if len(spec) > 1 else {})
        config = list(spec)
        if name not in inputs:
            errors.append(_input_error("required_input_missing", "Required input is missing", name, name))
            continue
        value = inputs[name]
        if isinstance(value, list):
            if len(value) != 2:
                errors.append(_input_error("bad_linked_input", "Bad linked input, must be a length-2 list of "
                                           "[node_id, slot_index]", name, name, input_config=config,
                                           received_value=value))
                continue
            received = OBJECT_INFO[prompt[value[0]]["class_type"]]["output"][value[1]]
            if received != kind:
                errors.append(_input_error("return_type_mismatch", "Return type mismatch between linked nodes",
                                           f"{name}, received_type({received}) mismatch input_type({kind})",
                                           name, input_config=config, received_type=received, linked_node=value))
                continue
            if not _validate_node(prompt, value[0], validated)[0]:
                valid = False
            continue
        try:
            value = int(value) if kind == "INT" else str(value) if kind == "STRING" else value
        except (TypeError, ValueError) as exc:
            errors.append(_input_error("invalid_input_type", f"Failed to convert an input value to a {kind} value",
                                       f"{name}, {value}, {exc}", name, input_config=config,
                                       received_value=value, exception_message=str(exc)))
            continue
        inputs[name] = value
        if "min" in extra and value < extra["min"]:
            errors.append(_input_error("value_smaller_than_min", f"Value {value} smaller than min of {extra['min']}",
                                       name, name, input_config=config, received_value=value))
        elif "max" in extra and value > extra["max"]:
            errors.append(_input_error("value_bigger_than_max", f"Value {value} bigger than max of {extra['max']}",
                                       name, name, input_config=config, received_value=value))
    validated[node_id] = (valid and not errors, errors)
    return validated[node_id]


def validate_prompt(prompt) -> tuple[dict, list, dict]:
    """ComfyUI 0.8.0's validate_prompt: (converted copy of the graph, good output ids, node_errors);
    raises HTTPError(400, <ComfyUI's error body>) when nothing can run."""
    if not isinstance(prompt, dict) or not prompt:
        _fail("no_prompt", "No prompt provided", "No prompt provided")
    prompt = json.loads(json.dumps(prompt))  # a private copy; values are converted in place
    outputs = []
    for node_id, node in prompt.items():
        if not isinstance(node, dict) or "class_type" not in node:
            _fail("invalid_prompt", "Cannot execute because a node is missing the class_type property.",
                  f"Node ID '#{node_id}'")
        if node["class_type"] not in OBJECT_INFO:
            _fail("invalid_prompt", f"Cannot execute because node {node['class_type']} does not exist.",
                  f"Node ID '#{node_id}'")
        if OBJECT_INFO[node["class_type"]]["output_node"]:
            outputs.append(node_id)
    if not outputs:
        _fail("prompt_no_outputs", "Prompt has no outputs")
    validated, node_errors, failed = {}, {}, []
    for output in outputs:
        try:
            ok, reasons = _validate_node(prompt, output, validated)
        except Exception as exc:  # noqa: BLE001 - e.g. a link to a node that is not in the graph
            ok, reasons = False, [{"type": "exception_during_validation", "message": "Exception when validating node",
                                   "details": str(exc), "extra_info": {"exception_type": type(exc).__name__}}]
            validated[output] = (ok, reasons)
        if ok:
            continue
        failed.append((output, reasons))
        for node_id, (node_ok, node_reasons) in validated.items():
            if not node_ok and node_reasons:
                entry = node_errors.setdefault(node_id, {"errors": node_reasons, "dependent_outputs": [],
                                                         "class_type": prompt[node_id]["class_type"]})
                entry["dependent_outputs"].append(output)
    if len(failed) == len(outputs):
        _fail("prompt_outputs_failed_validation", "Prompt outputs failed validation",
              "\n".join(f"{r['message']}: {r['details']}" for _, reasons in failed for r in reasons), node_errors)
    return prompt, [o for o in outputs if o not in dict(failed)], node_errors
