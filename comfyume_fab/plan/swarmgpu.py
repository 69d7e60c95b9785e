"""GPUs as a Swarm generic resource, planned: what a GPU worker host's `/etc/docker/daemon.json`
and `/etc/nvidia-container-runtime/config.toml` must say, and what the worker service reserves.

`docker stack deploy` rejects Compose's `deploy.resources.reservations.devices` (docker/cli#3051):
a stack can reserve only `generic_resources`. So each GPU engine advertises its GPUs itself, one
`node-generic-resources` entry per GPU (`NVIDIA-GPU=GPU-<uuid>`, from `nvidia-smi -L`), runs
containers with the `nvidia` runtime by default (Swarm has no `--runtime`), and the NVIDIA
runtime is told which variable carries the GPUs Swarm assigned to a task (`swarm-resource`).

That variable is `DOCKER_RESOURCE_` + the kind in upper case (swarmkit's
`genericresource.EnvFormat(..., "DOCKER_RESOURCE")`, which moby's executor adds to the task's
environment); the runtime reads exactly the variable `swarm-resource` names (the toolkit's
`getDevicesFromEnvvar`). The commented line the toolkit ships, `DOCKER_RESOURCE_GPU`, fits only
the kind `GPU`: with `NVIDIA-GPU=...` resources it is never set, and the container falls back to
the image's `NVIDIA_VISIBLE_DEVICES=all`, every GPU (NVIDIA/nvidia-container-toolkit#57). Here
both come from one constant, `GPU_KIND`, so they cannot disagree.

A GPU in MIG mode is advertised as its MIG devices (`NVIDIA-GPU=MIG-<uuid>`, one task each; the
runtime accepts MIG UUIDs): a CUDA process uses one MIG device, so handing one task the whole GPU
would waste the rest. Pure: text and dicts in, text and dicts out; the host edge applies them.
"""
from __future__ import annotations

import copy
import json
import re
from typing import Iterable

from ..host.facts import ParseError
from ..host.facts.nvidia import ListedGpu

GPU_KIND = "NVIDIA-GPU"  # the generic resource's kind: daemon.json entries and the stack's reservation
SWARM_RESOURCE_ENV = "DOCKER_RESOURCE_" + GPU_KIND.upper()  # what Swarm sets in a task with GPUs
RUNTIME_NAME = "nvidia"
RUNTIME_PATH = "nvidia-container-runtime"  # looked up in dockerd's PATH, as nvidia-ctk writes it
DAEMON_JSON = "/etc/docker/daemon.json"
NVIDIA_RUNTIME_CONFIG = "/etc/nvidia-container-runtime/config.toml"
RESOURCES_KEY = "node-generic-resources"


def gpu_resource_values(gpus: Iterable[ListedGpu]) -> list[str]:
    """The values to advertise, in nvidia-smi's order: each GPU's UUID, or its MIG devices' UUIDs
    where MIG is on."""
    values: list[str] = []
    for gpu in gpus:
        values.extend([m.uuid for m in gpu.mig] or [gpu.uuid])
    return values


def node_generic_resources(gpus: Iterable[ListedGpu]) -> list[str]:
    """`NVIDIA-GPU=<uuid>` per GPU (or MIG device), as daemon.json's `node-generic-resources` lists them."""
    return [f"{GPU_KIND}={value}" for value in gpu_resource_values(gpus)]


def _ours(entry) -> bool:
    return isinstance(entry, str) and entry.split("=", 1)[0] == GPU_KIND


def render_daemon_json(current: dict, gpus: Iterable[ListedGpu]) -> dict:
    """daemon.json as it must be for these GPUs: everything the host had is kept; the
    `NVIDIA-GPU=` entries of `node-generic-resources` are replaced by one per GPU now (other kinds
    the user advertises stay, in place); with GPUs, `default-runtime` is `nvidia` and `runtimes`
    has an `nvidia` entry (one the host already had, e.g. written by `nvidia-ctk runtime
    configure` with an absolute path, is kept as it is). Without GPUs (a CPU worker, the lab) only
    stale `NVIDIA-GPU=` entries go; runtimes are left alone."""
    gpus = list(gpus)
    wanted = copy.deepcopy(current)
    had = current.get(RESOURCES_KEY)
    others = [r for r in had if not _ours(r)] if isinstance(had, list) else []
    resources = others + node_generic_resources(gpus)
    if resources or had is not None:
        wanted[RESOURCES_KEY] = resources
    if not gpus:
        if had is not None and not resources:
            del wanted[RESOURCES_KEY]  # it held only our entries: leave no empty key behind
        return wanted
    wanted["default-runtime"] = RUNTIME_NAME
    runtimes = wanted.get("runtimes") if isinstance(wanted.get("runtimes"), dict) else {}
    entry = runtimes.get(RUNTIME_NAME)
    if not (isinstance(entry, dict) and entry.get("path")):
        runtimes[RUNTIME_NAME] = {"path": RUNTIME_PATH, "runtimeArgs": []}
    wanted["runtimes"] = runtimes
    return wanted


def _show(value) -> str:
    return json.dumps(value, sort_keys=True)


def daemon_json_changes(current: dict, wanted: dict) -> list[str]:
    """What `plan` shows: one line per changed key of daemon.json (a list as the entries it gains
    and loses, a dict as its changed sub-keys); [] when the file already says what it must."""
    lines: list[str] = []
    for key in list(current) + [k for k in wanted if k not in current]:
        if key in current and key in wanted and current[key] == wanted[key]:
            continue
        if key not in wanted:
            lines.append(f"{key}: remove (was {_show(current[key])})")
        elif key not in current:
            lines.append(f"{key}: set to {_show(wanted[key])}")
        elif isinstance(current[key], list) and isinstance(wanted[key], list):
            gained = [x for x in wanted[key] if x not in current[key]]
            lost = [x for x in current[key] if x not in wanted[key]]
            parts = [f"+ {x}" for x in gained] + [f"- {x}" for x in lost] or ["reordered"]
            lines.append(f"{key}: " + ", ".join(parts))
        elif isinstance(current[key], dict) and isinstance(wanted[key], dict):
            for sub in list(current[key]) + [s for s in wanted[key] if s not in current[key]]:
                if current[key].get(sub) != wanted[key].get(sub):
                    was = _show(current[key][sub]) if sub in current[key] else "unset"
                    now = _show(wanted[key][sub]) if sub in wanted[key] else "removed"
                    lines.append(f"{key}.{sub}: {was} -> {now}")
        else:
            lines.append(f"{key}: {_show(current[key])} -> {_show(wanted[key])}")
    return lines


def parse_daemon_json(text: str, where: str = DAEMON_JSON) -> dict:
    """The engine's daemon.json as a dict; an absent or empty file is {}. Anything else that is not
    a JSON object raises ParseError with one sentence naming the file, the line and the fix."""
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ParseError("", text, message=(
            f"{where} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); dockerd "
            f"would not start with it either: fix it by hand, then run the command again.")) from None
    if not isinstance(data, dict):
        raise ParseError("", text, message=(
            f"{where} holds a JSON {type(data).__name__}, not an object of settings; fix it by hand "
            f"(it must look like {{\"key\": value}}), then run the command again."))
    return data


def daemon_json_text(wanted: dict) -> str:
    """The file's new text (keys in their order, two-space indent, a final newline)."""
    return json.dumps(wanted, indent=2) + "\n"


# --- /etc/nvidia-container-runtime/config.toml ---------------------------------------------------

def nvidia_runtime_config_line(kind: str = GPU_KIND) -> str:
    """The top-level config.toml line that makes the NVIDIA runtime take a task's GPUs from the
    variable Swarm sets for `kind`."""
    return f'swarm-resource = "DOCKER_RESOURCE_{kind.upper()}"'


_TABLE = re.compile(r"^\s*\[")
_SWARM_KEY = re.compile(r"^(\s*)(#\s*)?swarm-resource\s*=")


def edit_nvidia_runtime_config(text: str, kind: str = GPU_KIND) -> str:
    """config.toml with `swarm-resource` set for `kind`; everything else (comments included) kept.

    The key is top-level, so only lines before the first `[table]` are looked at: an active
    `swarm-resource` line there is replaced (a wrong value such as the shipped
    `DOCKER_RESOURCE_GPU` included); failing that the shipped commented line is uncommented in
    place; failing both, the line goes just before the first table (or at the end). Running it on
    its own output changes nothing."""
    line = nvidia_runtime_config_line(kind)
    lines = text.splitlines(keepends=True)
    first_table = next((i for i, l in enumerate(lines) if _TABLE.match(l)), len(lines))
    active = [i for i in range(first_table) if (m := _SWARM_KEY.match(lines[i])) and not m.group(2)]
    commented = [i for i in range(first_table) if (m := _SWARM_KEY.match(lines[i])) and m.group(2)]
    if active:
        target = active[0]
        for extra in reversed(active[1:]):  # a key twice is invalid TOML: keep one
            del lines[extra]
    elif commented:
        target = commented[0]
    else:
        lines.insert(first_table, line + "\n")
        if first_table and not lines[first_table - 1].endswith("\n"):
            lines[first_table - 1] += "\n"
        if first_table + 1 < len(lines) and lines[first_table + 1].strip():
            lines.insert(first_table + 1, "\n")  # keep a blank line before the table
        return "".join(lines)
    indent = _SWARM_KEY.match(lines[target]).group(1)
    ending = "\n" if lines[target].endswith("\n") else ""
    lines[target] = indent + line + ending
    return "".join(lines)


def nvidia_runtime_config_changes(current: str, wanted: str) -> list[str]:
    """What `plan` shows for config.toml: the swarm-resource line it gets, or [] when it has it."""
    if current == wanted:
        return []
    before = [l.strip() for l in current.splitlines() if _SWARM_KEY.match(l)]
    return [f"{NVIDIA_RUNTIME_CONFIG}: {nvidia_runtime_config_line()} "
            f"(was {before[0] if before else 'absent'})"]


# --- the stack ------------------------------------------------------------------------------------

def generic_resources(gpus: Iterable[ListedGpu] | bool, per_task: int = 1) -> list[dict]:
    """The worker service's `deploy.resources.reservations.generic_resources`: `NVIDIA-GPU`
    `per_task` (default 1) where the workers have GPUs (a list of GPUs, or True), [] where they
    have none (CPU workers, the lab), so the reservation never blocks a CPU-only deploy."""
    has = gpus if isinstance(gpus, bool) else bool(list(gpus))
    if not has:
        return []
    return [{"discrete_resource_spec": {"kind": GPU_KIND, "value": per_task}}]


def advertised_gpus(node_generic_resources: list | None) -> list[str]:
    """The GPU values a node advertises, from `docker node inspect`'s
    `.Description.Resources.GenericResources` (named or discrete; a discrete count reads as
    "<n> (count)")."""
    found: list[str] = []
    for res in node_generic_resources or []:
        named = res.get("NamedResourceSpec") or {}
        discrete = res.get("DiscreteResourceSpec") or {}
        if named.get("Kind") == GPU_KIND:
            found.append(str(named.get("Value")))
        elif discrete.get("Kind") == GPU_KIND:
            found.append(f"{discrete.get('Value')} (count)")
    return found
