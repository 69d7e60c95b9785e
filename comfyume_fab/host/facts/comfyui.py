"""ComfyUI's HTTP API as a real server answers it (docs/comfyume-system.md): the paths the tool
calls and the pure parsers of their answers.

- `GET /system_stats` -> `parse_system_stats` (the decoded JSON body)
- `POST /prompt` -> `parse_prompt_response` (HTTP status and body)
- `GET /history/{prompt_id}` -> `parse_history` (the decoded JSON body)
- `GET /queue` -> `parse_queue`; `GET /history?max_items=1` -> `parse_last_completed`
- `POST /queue {"delete": [prompt_id]}` (`queue_delete_body`) removes a PENDING prompt
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from . import ParseError, excerpt

SYSTEM_STATS = "/system_stats"
PROMPT = "/prompt"
QUEUE = "/queue"
LAST_HISTORY = "/history?max_items=1"


def history_path(prompt_id: str) -> str:
    return f"/history/{prompt_id}"


# --- ComfyUI GET /system_stats ------------------------------------------------------------------

_CUDA_PREFIX = re.compile(r"^cuda:\d+\s+")
_ALLOCATOR_SUFFIX = re.compile(r"\s+:\s+[A-Za-z]+$")


def gpu_display_name(device_name: str) -> str:
    """'cuda:0 NVIDIA H100 80GB HBM3 : native' -> 'NVIDIA H100 80GB HBM3' (any other name unchanged)."""
    return _ALLOCATOR_SUFFIX.sub("", _CUDA_PREFIX.sub("", device_name.strip()))


@dataclass(frozen=True)
class Device:
    name: str  # as ComfyUI prints it, e.g. "cuda:0 NVIDIA H100 80GB HBM3 : cudaMallocAsync" or "cpu"
    type: str  # "cuda", "cpu", "mps", ...
    index: int | None
    vram_total: int  # bytes
    vram_free: int  # bytes

    @property
    def gpu_name(self) -> str:
        """The card's own name, without ComfyUI's 'cuda:N ' prefix and ' : <allocator>' suffix."""
        return gpu_display_name(self.name)

    @property
    def is_cpu(self) -> bool:
        return self.type == "cpu"


@dataclass(frozen=True)
class SystemStats:
    comfyui_version: str  # "" on servers too old to report it
    python_version: str
    pytorch_version: str
    argv: tuple[str, ...]
    cpu_flag: bool  # "--cpu" in argv: the server runs no inference on a GPU
    devices: tuple[Device, ...]

    def primary_device(self) -> Device | None:
        return self.devices[0] if self.devices else None

    @property
    def gpu_name(self) -> str | None:
        """The first device's card name, or None when it is not a GPU (or there is none)."""
        device = self.primary_device()
        if device is None or device.is_cpu:
            return None
        return device.gpu_name


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _device(entry: Any) -> Device:
    if not isinstance(entry, dict):
        raise ParseError("each of /system_stats 'devices' to be an object", entry)
    name, kind, index = entry.get("name"), entry.get("type"), entry.get("index")
    total, free = entry.get("vram_total"), entry.get("vram_free")
    if not (isinstance(name, str) and isinstance(kind, str)
            and (index is None or (isinstance(index, int) and not isinstance(index, bool)))
            and _number(total) and _number(free)):
        raise ParseError("a /system_stats device with string name and type, integer or null index "
                         "and numeric vram_total and vram_free", entry)
    return Device(name=name, type=kind, index=index, vram_total=int(total), vram_free=int(free))


def _optional_str(system: Mapping[str, Any], key: str) -> str:
    value = system.get(key, "")
    if not isinstance(value, str):
        raise ParseError(f"/system_stats system.{key} to be a string", value)
    return value


def parse_system_stats(data: Any) -> SystemStats:
    """The decoded JSON body of ComfyUI's `GET /system_stats`."""
    if not isinstance(data, dict):
        raise ParseError("the /system_stats body to be a JSON object", data)
    system, devices = data.get("system"), data.get("devices")
    if not isinstance(system, dict):
        raise ParseError("a 'system' object in the /system_stats body", data)
    if not isinstance(devices, list):
        raise ParseError("a 'devices' list in the /system_stats body", data)
    argv = system.get("argv", [])
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
        raise ParseError("/system_stats system.argv to be a list of strings", argv)
    return SystemStats(
        comfyui_version=_optional_str(system, "comfyui_version"),
        python_version=_optional_str(system, "python_version"),
        pytorch_version=_optional_str(system, "pytorch_version"),
        argv=tuple(argv),
        cpu_flag="--cpu" in argv,
        devices=tuple(_device(d) for d in devices),
    )


# --- ComfyUI POST /prompt -----------------------------------------------------------------------

MAX_NODE_ERRORS_LISTED = 5


class PromptRejected(ParseError):
    """ComfyUI refused a POST /prompt; `status`, `error_type` and `node_errors` say why."""

    def __init__(self, message: str, *, status: int, body: Any = None, error_type: str = "",
                 node_errors: tuple[str, ...] = ()):
        self.status = status
        self.body = body
        self.error_type = error_type
        self.node_errors = node_errors
        super().__init__("an accepted prompt (HTTP 200 with a prompt_id)", body, message=message)


def _decode_body(body: Any) -> Any:
    if isinstance(body, (bytes, str)):
        try:
            return json.loads(body)
        except ValueError:
            return body
    return body


def _clause(text: Any) -> str:
    return " ".join(str(text).split()).rstrip(".")


def _node_error_lines(node_errors: Any) -> list[str]:
    lines = []
    if not isinstance(node_errors, dict):
        return lines
    for node_id, node in node_errors.items():
        node = node if isinstance(node, dict) else {}
        cls = node.get("class_type") or "?"
        errors = node.get("errors") if isinstance(node.get("errors"), list) else []
        for err in errors or [{}]:
            err = err if isinstance(err, dict) else {"type": str(err)}
            words = [w for w in (_clause(err.get("type", "")), _clause(err.get("details", ""))) if w]
            lines.append(f"node {node_id} ({cls}): {' '.join(words) or 'error'}")
    return lines


def parse_prompt_response(status: int, body: Any) -> str:
    """The prompt_id from ComfyUI's `POST /prompt` answer, or PromptRejected saying why it was refused."""
    data = _decode_body(body)
    if status == 200:
        prompt_id = data.get("prompt_id") if isinstance(data, dict) else None
        if not isinstance(prompt_id, str) or not prompt_id:
            raise ParseError("a 'prompt_id' string in ComfyUI's POST /prompt answer", body)
        return prompt_id
    error = data.get("error") if isinstance(data, dict) else None
    if status == 400 and isinstance(error, dict):
        error_type = _clause(error.get("type", "")) or "unknown_error"
        message = _clause(error.get("message", ""))
        details = _clause(error.get("details", ""))
        head = f"ComfyUI rejected the prompt (HTTP 400): {error_type}"
        if message:
            head += f": {message}"
        if details and details != message:
            head += f" ({details})"
        nodes = _node_error_lines(data.get("node_errors"))
        shown = nodes[:MAX_NODE_ERRORS_LISTED]
        if len(nodes) > len(shown):
            shown.append(f"and {len(nodes) - len(shown)} more node errors")
        sentence = "; ".join([head, *shown]) + "."
        raise PromptRejected(sentence, status=status, body=body, error_type=error_type,
                             node_errors=tuple(nodes))
    raise PromptRejected(f"ComfyUI answered POST /prompt with HTTP {status} instead of 200: {excerpt(body)}.",
                         status=status, body=body)


# --- ComfyUI GET /history/{prompt_id} -----------------------------------------------------------

@dataclass(frozen=True)
class HistoryResult:
    status_str: str  # "success" or "error"
    completed: bool
    graph_node_ids: tuple[str, ...]  # the nodes of the graph that was queued
    cached_nodes: tuple[str, ...]  # from the "execution_cached" message: served from cache, not run
    outputs: dict = field(hash=False)
    images: tuple[str, ...] = ()  # output image filenames, in output-node order
    error: str | None = None  # from an "execution_error" (or "execution_interrupted") message

    @property
    def succeeded(self) -> bool:
        return self.completed and self.status_str == "success" and self.error is None

    @property
    def executed_nodes(self) -> tuple[str, ...]:
        """Graph nodes that were not served from cache (nodes that feed no output are not run either)."""
        cached = set(self.cached_nodes)
        return tuple(n for n in self.graph_node_ids if n not in cached)

    @property
    def fully_executed(self) -> bool:
        """True when the prompt succeeded and no node came from ComfyUI's cache: it really ran."""
        return self.succeeded and not self.cached_nodes


def _messages(status: dict) -> list[tuple[str, dict]]:
    messages = status.get("messages", [])
    if not isinstance(messages, list):
        raise ParseError("history status.messages to be a list", messages)
    found = []
    for message in messages:
        if not (isinstance(message, list) and len(message) == 2 and isinstance(message[0], str)):
            raise ParseError("each history status message to be a [name, data] pair", message)
        found.append((message[0], message[1] if isinstance(message[1], dict) else {}))
    return found


def _error_from(messages: list[tuple[str, dict]]) -> str | None:
    for name, data in messages:
        if name == "execution_error":
            text = _clause(data.get("exception_message", "")) or _clause(data.get("exception_type", "")) or "error"
            return f"node {data.get('node_id', '?')} ({data.get('node_type', '?')}): {text}"
        if name == "execution_interrupted":
            return f"interrupted at node {data.get('node_id', '?')} ({data.get('node_type', '?')})"
    return None


def _graph_node_ids(entry: dict) -> tuple[str, ...]:
    prompt = entry.get("prompt")
    # ComfyUI stores [number, prompt_id, graph, extra_data, outputs_to_execute]
    if isinstance(prompt, list) and len(prompt) > 2 and isinstance(prompt[2], dict):
        return tuple(str(k) for k in prompt[2])
    return ()


def _images(outputs: dict) -> tuple[str, ...]:
    names = []
    for node_output in outputs.values():
        images = node_output.get("images", []) if isinstance(node_output, dict) else []
        for image in images if isinstance(images, list) else []:
            if isinstance(image, dict) and isinstance(image.get("filename"), str):
                names.append(image["filename"])
    return tuple(names)


def parse_history(body: Any, prompt_id: str) -> HistoryResult | None:
    """The result in ComfyUI's `GET /history/{prompt_id}` body, or None while it is not done yet."""
    if not isinstance(body, dict):
        raise ParseError("the /history body to be a JSON object", body)
    entry = body.get(prompt_id)
    if entry is None:
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("status"), dict):
        raise ParseError(f"a history entry with a 'status' object for prompt {prompt_id}", entry)
    status = entry["status"]
    status_str, completed = status.get("status_str", ""), status.get("completed")
    if not isinstance(status_str, str) or not isinstance(completed, bool):
        raise ParseError("history status with a string status_str and a boolean completed", status)
    messages = _messages(status)
    error = _error_from(messages)
    if error is None and status_str == "error":
        error = "ComfyUI reported status error without an execution_error message"
    if not completed and error is None:
        return None
    cached: tuple[str, ...] = ()
    for name, data in messages:
        if name == "execution_cached":
            nodes = data.get("nodes", [])
            if not isinstance(nodes, list):
                raise ParseError("execution_cached 'nodes' to be a list", data)
            cached += tuple(str(n) for n in nodes)
    outputs = entry.get("outputs", {})
    if not isinstance(outputs, dict):
        raise ParseError("history 'outputs' to be an object", outputs)
    return HistoryResult(status_str=status_str, completed=completed, graph_node_ids=_graph_node_ids(entry),
                         cached_nodes=cached, outputs=outputs, images=_images(outputs), error=error)


# --- ComfyUI GET /queue, POST /queue, GET /history?max_items=1 ---------------------------------

@dataclass(frozen=True)
class QueueItem:
    """One queued prompt: ComfyUI's [number, prompt_id, prompt, extra_data, outputs_to_execute, ...]."""
    number: float
    prompt_id: str
    client_id: str  # extra_data.client_id ("" when absent)
    create_time_ms: int | None  # extra_data.create_time (ms since the epoch), when the server records it


@dataclass(frozen=True)
class QueueState:
    running: tuple[QueueItem, ...]
    pending: tuple[QueueItem, ...]

    def others(self, own: str | None = None) -> "QueueState":
        """The queue without prompt `own` (the probe's)."""
        return QueueState(tuple(i for i in self.running if i.prompt_id != own),
                          tuple(i for i in self.pending if i.prompt_id != own))

    @property
    def busy(self) -> bool:
        return bool(self.running or self.pending)


def _queue_item(raw: Any) -> QueueItem:
    if not (isinstance(raw, list) and len(raw) >= 2 and isinstance(raw[1], str)
            and isinstance(raw[0], (int, float)) and not isinstance(raw[0], bool)):
        raise ParseError("each /queue item to be [number, prompt_id, prompt, extra_data, outputs, ...]", raw)
    extra = raw[3] if len(raw) > 3 and isinstance(raw[3], dict) else {}
    created = extra.get("create_time")
    return QueueItem(number=raw[0], prompt_id=raw[1], client_id=str(extra.get("client_id") or ""),
                     create_time_ms=created if isinstance(created, int) and not isinstance(created, bool) else None)


def parse_queue(body: Any) -> QueueState:
    """The decoded JSON body of ComfyUI's `GET /queue` ({"queue_running": [...], "queue_pending": [...]});
    pending in run order (ComfyUI keeps them in a heap on `number`)."""
    if not isinstance(body, dict) or not isinstance(body.get("queue_running"), list) \
            or not isinstance(body.get("queue_pending"), list):
        raise ParseError("a /queue body with 'queue_running' and 'queue_pending' lists", body)
    running = tuple(_queue_item(i) for i in body["queue_running"])
    pending = tuple(sorted((_queue_item(i) for i in body["queue_pending"]), key=lambda i: i.number))
    return QueueState(running, pending)


def queue_delete_body(prompt_ids: list[str]) -> dict:
    """The body of `POST /queue` that removes these pending prompts (ComfyUI answers 200, empty)."""
    return {"delete": list(prompt_ids)}


@dataclass(frozen=True)
class Completed:
    prompt_id: str
    finished_ms: int | None  # timestamp of its last status message (execution_success/_error/...)
    status_str: str


def parse_last_completed(body: Any) -> Completed | None:
    """The newest entry of `GET /history?max_items=1` (None when the history is empty)."""
    if not isinstance(body, dict):
        raise ParseError("the /history body to be a JSON object", body)
    if not body:
        return None
    prompt_id, entry = list(body.items())[-1]
    status = entry.get("status") if isinstance(entry, dict) else None
    if not isinstance(status, dict):
        raise ParseError(f"a history entry with a 'status' object for prompt {prompt_id}", entry)
    stamps = [data["timestamp"] for _, data in _messages(status)
              if isinstance(data.get("timestamp"), int) and not isinstance(data.get("timestamp"), bool)]
    return Completed(prompt_id=prompt_id, finished_ms=max(stamps) if stamps else None,
                     status_str=str(status.get("status_str", "")))
