"""Pure parsers for what the hosts print: text or decoded JSON in, frozen dataclasses out.

No I/O here. Each parser takes the output of one exact command or HTTP call, and every test
feeds it output recorded from the real program (tests/fixtures/):

- `parse_nvidia_smi_query`: stdout of
  `nvidia-smi --query-gpu=name,memory.used,memory.total,utilization.gpu --format=csv,noheader,nounits`
  (the `--format=csv` variant with header and units is accepted too).
- `parse_nvidia_smi_list`: stdout of `nvidia-smi -L`.
- `parse_system_stats`: the decoded JSON body of ComfyUI's `GET /system_stats`.
- `parse_prompt_response`: HTTP status and body of ComfyUI's `POST /prompt`.
- `parse_history`: the decoded JSON body of ComfyUI's `GET /history/{prompt_id}`.
- `parse_compose_ps`: stdout of `docker compose ps --all --format json`.
- `parse_inspect`: stdout of `docker inspect --format "$INSPECT_FORMAT" ID...`.
- `parse_compose_version`: stdout of `docker compose version`, `docker-compose version` or
  `docker-compose --version`.
- `parse_tailscale_ip`: stdout of `tailscale ip -4`.
- `parse_key_values`: the `KEY=value` lines that a remote probe script prints.

A parser that cannot make sense of its input raises `ParseError`, whose message says in one
sentence what was expected and quotes a short excerpt of what was seen.
"""
from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, NamedTuple

EXCERPT_CHARS = 120  # an excerpt in a message never exceeds this (plus quotes and an ellipsis)


def excerpt(seen: Any, limit: int = EXCERPT_CHARS) -> str:
    """A short, single-line, quoted excerpt of `seen` for an error message."""
    if isinstance(seen, bytes):
        seen = seen.decode("utf-8", "replace")
    if not isinstance(seen, str):
        try:
            seen = json.dumps(seen, sort_keys=True, default=str)
        except (TypeError, ValueError):
            seen = repr(seen)
    text = " ".join(seen.split())
    if not text:
        return "empty output"
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return repr(text)


class ParseError(ValueError):
    """The output of a command or an HTTP call was not what its parser expects."""

    def __init__(self, expected: str, seen: Any = None, *, message: str | None = None):
        self.expected = expected
        self.seen = seen
        super().__init__(message or f"Expected {expected}, but saw {excerpt(seen)}.")


# --- nvidia-smi ---------------------------------------------------------------------------------

NVIDIA_SMI_QUERY = ("nvidia-smi --query-gpu=name,memory.used,memory.total,utilization.gpu "
                    "--format=csv,noheader,nounits")
_NO_DEVICES = "No devices were found"
_NOT_AVAILABLE = {"[N/A]", "N/A", "[Not Supported]", "[Unknown Error]", "[Insufficient Permissions]",
                  "[GPU requires reset]", "[GPU is lost]"}


@dataclass(frozen=True)
class Gpu:
    index: int  # position in nvidia-smi's output, which lists GPUs in index order
    name: str
    memory_used_mib: int | None
    memory_total_mib: int | None
    utilization_pct: int | None


def _smi_number(value: str, unit: str, line: str) -> int | None:
    value = value.strip()
    if value in _NOT_AVAILABLE:
        return None
    if value.endswith(unit):
        value = value[: -len(unit)].strip()
    try:
        return int(value)
    except ValueError:
        try:
            return int(float(value))
        except ValueError:
            raise ParseError(f"a number of {unit.strip() or 'units'} in nvidia-smi's CSV line", line) from None


def parse_nvidia_smi_query(text: str) -> tuple[Gpu, ...]:
    """GPUs from `nvidia-smi --query-gpu=name,memory.used,memory.total,utilization.gpu --format=csv[,noheader,nounits]`."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise ParseError("one CSV line per GPU from nvidia-smi --query-gpu", text)
    if any(_NO_DEVICES in line for line in lines):
        return ()
    for line in lines:
        if "is not a valid field to query" in line:
            raise ParseError("one CSV line per GPU from nvidia-smi --query-gpu (it rejected a field)", line)
    if lines[0].startswith("name,") and "memory.used" in lines[0]:
        lines = lines[1:]
        if not lines:
            raise ParseError("at least one GPU line after nvidia-smi's CSV header", text)
    gpus = []
    for index, line in enumerate(lines):
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 4:
            raise ParseError("4 comma-separated fields (name, memory.used, memory.total, utilization.gpu)", line)
        name = ", ".join(parts[:-3])  # a name with a comma in it would split; put it back together
        used, total, util = parts[-3:]
        gpus.append(Gpu(index=index, name=name,
                        memory_used_mib=_smi_number(used, " MiB", line),
                        memory_total_mib=_smi_number(total, " MiB", line),
                        utilization_pct=_smi_number(util, " %", line)))
    return tuple(gpus)


class ListedGpu(NamedTuple):
    index: int
    name: str
    uuid: str


_SMI_L_LINE = re.compile(r"^GPU (\d+): (.+?) \(UUID: ([^)]+)\)$")


def parse_nvidia_smi_list(text: str) -> tuple[ListedGpu, ...]:
    """(index, name, uuid) per GPU from `nvidia-smi -L`; MIG sub-device lines are skipped."""
    if not text.strip():
        raise ParseError("one 'GPU <n>: <name> (UUID: <uuid>)' line per GPU from nvidia-smi -L", text)
    gpus = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("MIG "):
            continue
        if _NO_DEVICES in line:
            return ()
        match = _SMI_L_LINE.match(line)
        if not match:
            raise ParseError("a 'GPU <n>: <name> (UUID: <uuid>)' line from nvidia-smi -L", line)
        gpus.append(ListedGpu(int(match.group(1)), match.group(2), match.group(3)))
    return tuple(gpus)


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


def executed_without_cache(result: HistoryResult, graph_node_ids: tuple[str, ...] | list[str]) -> bool:
    """Whether the run succeeded and none of `graph_node_ids` (the graph that was posted) came from cache."""
    cached = set(result.cached_nodes)
    return result.succeeded and not any(str(n) in cached for n in graph_node_ids)


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


# --- docker compose ps --------------------------------------------------------------------------

@dataclass(frozen=True)
class ComposeContainer:
    name: str
    service: str
    state: str  # created, running, restarting, exited, paused, dead, removing
    health: str  # "", starting, healthy, unhealthy
    exit_code: int  # compose 2.26 fills it in for exited containers only
    project: str
    status: str = ""  # the human column, e.g. "Up 6 seconds (healthy)", "Restarting (1) 2 seconds ago"


def _compose_container(item: Any) -> ComposeContainer:
    if not isinstance(item, dict):
        raise ParseError("a JSON object per container from docker compose ps", item)
    name, service, state = item.get("Name"), item.get("Service"), item.get("State")
    health, exit_code = item.get("Health") or "", item.get("ExitCode", 0)
    project, status = item.get("Project") or "", item.get("Status") or ""
    if not (isinstance(name, str) and isinstance(service, str) and isinstance(state, str)
            and isinstance(health, str) and isinstance(project, str) and isinstance(status, str)
            and isinstance(exit_code, int) and not isinstance(exit_code, bool)):
        raise ParseError("a docker compose ps object with string Name, Service, State and integer ExitCode", item)
    return ComposeContainer(name=name, service=service, state=state, health=health, exit_code=exit_code,
                            project=project, status=status)


def parse_compose_ps(text: str) -> tuple[ComposeContainer, ...]:
    """Containers from `docker compose ps --all --format json`: JSON lines (>= 2.21) or one JSON array (older 2.x)."""
    stripped = text.strip()
    if not stripped:
        return ()
    if stripped.startswith("["):
        try:
            items = json.loads(stripped)
        except ValueError:
            raise ParseError("a JSON array from docker compose ps --format json", text) from None
        if not isinstance(items, list):
            raise ParseError("a JSON array from docker compose ps --format json", text)
    else:
        items = []
        for line in stripped.splitlines():
            if not line.strip():
                continue
            try:
                items.append(json.loads(line))
            except ValueError:
                raise ParseError("one JSON object per line from docker compose ps --format json", line) from None
    return tuple(_compose_container(item) for item in items)


# --- docker inspect -----------------------------------------------------------------------------

# One line per container, fields separated by TABs (Go's "\t" in a template string). It reads only
# labels and state, never .Config.Env: the environment holds the secrets. `.ID` (not `.Id`) makes
# the docker CLI execute it on its typed struct, where a missing Health or label prints as ""
# (on the raw-JSON fallback, `.State.Health` of a container without a healthcheck is an error).
INSPECT_FIELDS = ("id", "name", "service", "project", "state", "health", "restart_count", "created",
                  "started_at", "finished_at", "exit_code", "env_hash", "image")
ENV_HASH_LABEL = "org.comfyume.env-hash"
INSPECT_FORMAT = '{{"\\t"}}'.join((
    "{{.ID}}",
    "{{.Name}}",
    '{{index .Config.Labels "com.docker.compose.service"}}',
    '{{index .Config.Labels "com.docker.compose.project"}}',
    "{{.State.Status}}",
    "{{if .State.Health}}{{.State.Health.Status}}{{end}}",
    "{{.RestartCount}}",
    "{{.Created}}",
    "{{.State.StartedAt}}",
    "{{.State.FinishedAt}}",
    "{{.State.ExitCode}}",
    '{{index .Config.Labels "' + ENV_HASH_LABEL + '"}}',
    "{{.Config.Image}}",
))
_HEALTH_STATES = {"", "starting", "healthy", "unhealthy"}


@dataclass(frozen=True)
class ContainerInfo:
    id: str
    name: str  # without docker's leading "/"
    service: str  # label com.docker.compose.service ("" outside compose)
    project: str  # label com.docker.compose.project
    state: str  # created, running, restarting, exited, paused, dead, removing
    health: str  # "", starting, healthy, unhealthy
    restart_count: int
    created: str  # RFC 3339 as docker prints it, e.g. 2026-11-26T18:31:29.504857849Z
    started_at: str  # 0001-01-01T00:00:00Z when never started
    finished_at: str  # 0001-01-01T00:00:00Z when never stopped
    exit_code: int
    env_hash: str  # label org.comfyume.env-hash, "" if absent
    image: str  # as configured (.Config.Image), e.g. redis:7-alpine


def _int_field(value: str, what: str, line: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ParseError(f"an integer {what} in a docker inspect line", line) from None


def parse_inspect(text: str) -> tuple[ContainerInfo, ...]:
    """Containers from `docker inspect --format "$INSPECT_FORMAT" ID...` (blank lines skipped)."""
    containers = []
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = line.rstrip("\r\n").split("\t")
        if len(fields) != len(INSPECT_FIELDS):
            raise ParseError(f"{len(INSPECT_FIELDS)} TAB-separated fields per line of docker inspect "
                             f"--format INSPECT_FORMAT (got {len(fields)})", line)
        row = dict(zip(INSPECT_FIELDS, fields))
        if row["health"] not in _HEALTH_STATES:
            raise ParseError("a health of '', starting, healthy or unhealthy in a docker inspect line", line)
        containers.append(ContainerInfo(
            id=row["id"], name=row["name"].lstrip("/"), service=row["service"], project=row["project"],
            state=row["state"], health=row["health"],
            restart_count=_int_field(row["restart_count"], "RestartCount", line),
            created=row["created"], started_at=row["started_at"], finished_at=row["finished_at"],
            exit_code=_int_field(row["exit_code"], "ExitCode", line),
            env_hash=row["env_hash"], image=row["image"]))
    return tuple(containers)


# --- docker compose version ---------------------------------------------------------------------

@dataclass(frozen=True)
class ComposeVersion:
    kind: str | None  # "v2" (the Go plugin/binary, any major >= 2), "legacy" (Python docker-compose 1.x), None
    version: str  # "2.26.1", "2.26.1-4" (a distribution's build), "1.29.2"; "" when kind is None


_COMPOSE_VERSION = re.compile(r"(?i)^\s*docker[ -]compose version:?\s+v?(\d+\.\d+\.\d+[^\s,]*)")
_BARE_VERSION = re.compile(r"^\s*v?(\d+\.\d+\.\d+\S*)\s*$")


def parse_compose_version(text: str) -> ComposeVersion:
    """`docker compose version` / `docker-compose version` / `--version` / `--short`; kind None if no compose."""
    first = next((line for line in text.splitlines() if line.strip()), "")
    match = _COMPOSE_VERSION.match(first) or _BARE_VERSION.match(first)
    if not match:
        return ComposeVersion(kind=None, version="")
    version = match.group(1)
    major = int(version.split(".", 1)[0])
    return ComposeVersion(kind="legacy" if major < 2 else "v2", version=version)


# --- tailscale and probe scripts ----------------------------------------------------------------

def parse_tailscale_ip(text: str) -> str | None:
    """The first IPv4 address printed by `tailscale ip -4`, or None (e.g. 'Tailscale is stopped.')."""
    for line in text.splitlines():
        candidate = line.strip()
        try:
            return str(ipaddress.IPv4Address(candidate))
        except ValueError:
            continue
    return None


def parse_key_values(text: str) -> dict[str, str]:
    """`KEY=value` lines from a probe script: blank lines skipped, split on the first '=', last one wins."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.rstrip("\r")
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key or any(c.isspace() for c in key):
            raise ParseError("KEY=value lines from the probe script", line)
        values[key] = value
    return values
