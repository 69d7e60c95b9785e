"""nvidia-smi: the GPUs of a host (name, memory, utilisation), and their list with UUIDs and MIG
devices (`nvidia-smi -L`, what Swarm advertises as generic resources)."""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import NamedTuple

from . import Fact, ParseError, field, fixed

# The exact command (argv) whose stdout `parse_nvidia_smi_query` reads.
QUERY = ("nvidia-smi", "--query-gpu=name,memory.used,memory.total,utilization.gpu", "--format=csv,noheader,nounits")
QUERY_COMMAND = shlex.join(QUERY)
LIST = ("nvidia-smi", "-L")  # read by parse_gpu_list
LIST_COMMAND = shlex.join(LIST)

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


class ListedMig(NamedTuple):
    """A MIG device of a GPU in MIG mode, as `nvidia-smi -L` lists it under its GPU."""
    profile: str  # e.g. "1g.10gb"
    device: int   # its number under its GPU ("Device  0")
    uuid: str     # "MIG-<uuid>" (driver R470+) or "MIG-GPU-<uuid>/<gi>/<ci>" (R450)


class ListedGpu(NamedTuple):
    """One `GPU <n>: <name> (UUID: <uuid>)` line of `nvidia-smi -L` and its MIG devices (none when
    MIG is off)."""
    index: int
    name: str
    uuid: str
    mig: tuple[ListedMig, ...] = ()


_SMI_L_LINE = re.compile(r"^GPU (\d+): (.+?) \(UUID: ([^)]+)\)$")
_SMI_L_MIG = re.compile(r"^MIG (\S+)\s+Device\s+(\d+): \(UUID: ([^)]+)\)$")


def parse_gpu_list(text: str) -> list[ListedGpu]:
    """(index, name, uuid, MIG devices) per GPU from `nvidia-smi -L`; [] for "No devices were found".
    A MIG line (indented `MIG <profile> Device <n>: (UUID: MIG-...)`) belongs to the GPU above it."""
    if not text.strip():
        raise ParseError("one 'GPU <n>: <name> (UUID: <uuid>)' line per GPU from nvidia-smi -L", text)
    gpus: list[ListedGpu] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if _NO_DEVICES in line:
            return []
        if line.startswith("MIG "):
            mig = _SMI_L_MIG.match(line)
            if not mig or not gpus:
                raise ParseError("a 'MIG <profile> Device <n>: (UUID: MIG-...)' line under a GPU line from "
                                 "nvidia-smi -L", line)
            gpus[-1] = gpus[-1]._replace(mig=gpus[-1].mig + (ListedMig(mig.group(1), int(mig.group(2)),
                                                                       mig.group(3)),))
            continue
        match = _SMI_L_LINE.match(line)
        if not match:
            raise ParseError("a 'GPU <n>: <name> (UUID: <uuid>)' line from nvidia-smi -L", line)
        gpus.append(ListedGpu(int(match.group(1)), match.group(2), match.group(3)))
    return gpus


def parse_nvidia_smi_list(text: str) -> tuple[ListedGpu, ...]:
    """`parse_gpu_list` as a tuple (what scripts/gpu-check.py compares)."""
    return tuple(parse_gpu_list(text))


def read_gpu_list(code: int, out: str) -> tuple[tuple[ListedGpu, ...] | None, str]:
    """(GPUs, error) from `nvidia-smi -L`'s exit code and output: (None, "") where nvidia-smi does
    not exist (exit 127: no GPU, and no error either), ((), "") for "No devices were found" (which
    nvidia-smi reports with a non-zero exit), (None, <its message>) where it failed otherwise (no
    driver, a lost GPU) or said something this parser cannot read."""
    if code == 127:
        return None, ""
    if _NO_DEVICES in out:
        return (), ""
    if code != 0:
        return None, " ".join(out.split())[-200:] or f"nvidia-smi -L exited with {code} and said nothing"
    try:
        return tuple(parse_gpu_list(out)), ""
    except ParseError as exc:
        return None, str(exc)


def _fill_query(st, code: int, out: str) -> None:
    if code == 0:
        try:
            st.gpus = parse_nvidia_smi_query(out)
        except ParseError as exc:
            st.gpu_error = str(exc)
    elif code != 127:
        st.gpu_error = out.strip()[-200:]


# exit 127 (no nvidia-smi): no GPU, and no error either
GPUS = Fact("nvidia", fixed(QUERY_COMMAND), _fill_query, absent=(127, ""), preflight=True,
            fields=(field("gpus", "tuple[Gpu, ...] | None"),  # None: no usable nvidia-smi on the host
                    field("gpu_error", str, "")))


def _fill_list(st, code: int, out: str) -> None:
    st.gpu_list, st.gpu_list_error = read_gpu_list(code, out)


# `nvidia-smi -L`, for Swarm's GPU set-up (each GPU's UUID becomes a node generic resource). Not in
# host.state's FACTS: the read that needs it names it, so status does not run nvidia-smi twice.
GPU_LIST = Fact("nvidia_list", fixed(LIST_COMMAND), _fill_list, absent=(127, ""),
                fields=(field("gpu_list", "tuple[ListedGpu, ...] | None"),  # None: no usable nvidia-smi
                        field("gpu_list_error", str, "")))
