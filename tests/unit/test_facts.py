"""The pure parsers in comfyume_fab.host.facts, fed with output recorded from the real programs."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from comfyume_fab.host.facts import ParseError
from comfyume_fab.host.facts.comfyui import (Device, PromptRejected, gpu_display_name, parse_history,
                                             parse_prompt_response, parse_system_stats)
from comfyume_fab.host.facts.compose import ComposeVersion, parse_compose_version
from comfyume_fab.host.facts.docker import INSPECT_FIELDS, INSPECT_FORMAT, ContainerInfo, parse_inspect
from comfyume_fab.host.facts.nvidia import Gpu, ListedGpu, ListedMig, parse_nvidia_smi_list, parse_nvidia_smi_query
from comfyume_fab.host.facts.tailscale import parse_tailscale_ip

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
H100 = FIXTURES / "h100"
COMFY = FIXTURES / "comfyui-0.8.0-cpu"
COMPOSE = FIXTURES / "compose-2.26"


def text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def capture() -> dict:
    return json.loads(text(COMFY / "probe-capture.json"))


def raises(exc: type[ParseError], pattern: str, func, *args) -> ParseError:
    with pytest.raises(exc, match=pattern) as info:
        func(*args)
    assert len(str(info.value)) < 400, str(info.value)
    assert "\n" not in str(info.value)
    return info.value


# --- ParseError ---------------------------------------------------------------------------------

def test_parse_error_excerpt_is_short_and_single_line():
    error = ParseError("a thing", "x" * 5000 + "\n" + "y")
    assert str(error).startswith("Expected a thing, but saw 'xxx")
    assert len(str(error)) < 200
    assert str(ParseError("a thing", "")) == "Expected a thing, but saw empty output."
    assert isinstance(error, ValueError)


# --- nvidia-smi ---------------------------------------------------------------------------------

H100_GPU = Gpu(index=0, name="NVIDIA H100 80GB HBM3", memory_used_mib=0, memory_total_mib=81559, utilization_pct=0)


@pytest.mark.parametrize("fixture", ["nvidia-smi-query-noheader-nounits.csv", "nvidia-smi-query-header.csv"])
def test_nvidia_smi_query_real_h100(fixture):
    assert parse_nvidia_smi_query(text(H100 / fixture)) == (H100_GPU,)


@pytest.mark.parametrize("output, expected", [
    ("No devices were found\n", ()),
    ("NVIDIA H100 80GB HBM3, 1024, 81559, 37\nNVIDIA H100 80GB HBM3, [N/A], 81559, [Not Supported]\n",
     (Gpu(0, "NVIDIA H100 80GB HBM3", 1024, 81559, 37), Gpu(1, "NVIDIA H100 80GB HBM3", None, 81559, None))),
    ("name, memory.used [MiB], memory.total [MiB], utilization.gpu [%]\nTesla T4, 3 MiB, 15360 MiB, [N/A]\n",
     (Gpu(0, "Tesla T4", 3, 15360, None),)),
    ("\r\nNVIDIA A100-SXM4-80GB, 5, 81920, 100\r\n\r\n", (Gpu(0, "NVIDIA A100-SXM4-80GB", 5, 81920, 100),)),
])
def test_nvidia_smi_query_variants(output, expected):
    assert parse_nvidia_smi_query(output) == expected


@pytest.mark.parametrize("output, pattern", [
    (text(H100 / "nvidia-smi-bad-field.txt"), r"it rejected a field\), but saw 'Field \"bogus\" is not a valid"),
    ("", r"^Expected one CSV line per GPU from nvidia-smi --query-gpu, but saw empty output\.$"),
    ("  \n\n", r"but saw empty output"),
    ("NVIDIA H100 80GB HBM3, 0, 81559\n", r"4 comma-separated fields .* but saw 'NVIDIA H100 80GB HBM3, 0, 81559'"),
    ("NVIDIA H100, lots, 81559, 0\n", r"a number of MiB in nvidia-smi's CSV line"),
    ("name, memory.used [MiB], memory.total [MiB], utilization.gpu [%]\n", r"at least one GPU line after"),
    (text(H100 / "nvidia-smi-plain.txt"), r"4 comma-separated fields"),
    ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the "
     "latest NVIDIA driver is installed and running.\n", r"4 comma-separated fields"),
])
def test_nvidia_smi_query_malformed(output, pattern):
    raises(ParseError, pattern, parse_nvidia_smi_query, output)


def test_nvidia_smi_list_real_h100():
    gpus = parse_nvidia_smi_list(text(H100 / "nvidia-smi-L.txt"))
    assert gpus == (ListedGpu(0, "NVIDIA H100 80GB HBM3", "GPU-2b5b31e8-9cf7-8a29-f56d-bf76afee39eb"),)
    assert gpus[0][:3] == (0, "NVIDIA H100 80GB HBM3", "GPU-2b5b31e8-9cf7-8a29-f56d-bf76afee39eb")
    assert gpus[0] == ListedGpu(0, "NVIDIA H100 80GB HBM3", "GPU-2b5b31e8-9cf7-8a29-f56d-bf76afee39eb")
    assert gpus[0].uuid.startswith("GPU-")


@pytest.mark.parametrize("output, expected", [
    ("No devices were found\n", ()),
    ("GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-aaaa)\n  MIG 1g.5gb     Device  0: (UUID: MIG-bbbb)\n"
     "GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-cccc)\n",
     (ListedGpu(0, "NVIDIA A100-SXM4-40GB", "GPU-aaaa", (ListedMig("1g.5gb", 0, "MIG-bbbb"),)),
      ListedGpu(1, "NVIDIA A100-SXM4-40GB", "GPU-cccc"))),
])
def test_nvidia_smi_list_variants(output, expected):
    assert parse_nvidia_smi_list(output) == expected


@pytest.mark.parametrize("output, pattern", [
    ("", r"^Expected one 'GPU <n>: <name> \(UUID: <uuid>\)' line per GPU from nvidia-smi -L, but saw empty output\.$"),
    (text(H100 / "nvidia-smi-bad-field.txt"), r"line from nvidia-smi -L, but saw 'Field \"bogus\""),
    ("-bash: nvidia-smi: command not found\n", r"but saw '-bash: nvidia-smi: command not found'"),
])
def test_nvidia_smi_list_malformed(output, pattern):
    raises(ParseError, pattern, parse_nvidia_smi_list, output)


# --- GET /system_stats --------------------------------------------------------------------------

def test_system_stats_real_cpu_server():
    stats = parse_system_stats(json.loads(text(COMFY / "system_stats.json")))
    assert stats.comfyui_version == "0.8.0"
    assert stats.python_version.startswith("3.11.7 ")
    assert stats.pytorch_version == "2.13.0+cpu"
    assert stats.argv == ("main.py", "--cpu", "--listen", "127.0.0.1", "--port", "8188")
    assert stats.cpu_flag is True
    assert stats.devices == (Device("cpu", "cpu", None, 25276510208, 24388481024),)
    assert stats.primary_device() is stats.devices[0]
    assert stats.primary_device().is_cpu
    assert stats.gpu_name is None
    assert parse_system_stats(capture()["system_stats"]["body"]).cpu_flag is True


def test_system_stats_real_h100_device_entry():
    entry = json.loads(text(H100 / "comfyui-devices-entry.json"))
    body = {"system": {"comfyui_version": "0.8.0", "python_version": "3.12.3", "pytorch_version": "2.11.0+cu130",
                       "argv": ["main.py", "--listen", "0.0.0.0"]},
            "devices": [entry]}
    stats = parse_system_stats(body)
    device = stats.primary_device()
    assert device == Device("cuda:0 NVIDIA H100 80GB HBM3 : native", "cuda", 0, 85017493504, 84465090560)
    assert device.gpu_name == "NVIDIA H100 80GB HBM3"
    assert stats.gpu_name == "NVIDIA H100 80GB HBM3"
    assert stats.cpu_flag is False


@pytest.mark.parametrize("name, expected", [
    ("cuda:0 NVIDIA H100 80GB HBM3 : native", "NVIDIA H100 80GB HBM3"),
    ("cuda:0 NVIDIA H100 80GB HBM3 : cudaMallocAsync", "NVIDIA H100 80GB HBM3"),
    ("cuda:1 NVIDIA GeForce RTX 4090 : cudaMallocAsync", "NVIDIA GeForce RTX 4090"),
    ("cpu", "cpu"),
    ("mps", "mps"),
])
def test_gpu_display_name(name, expected):
    assert gpu_display_name(name) == expected


def test_system_stats_without_versions_or_devices():
    stats = parse_system_stats({"system": {"argv": []}, "devices": []})
    assert (stats.comfyui_version, stats.argv, stats.devices, stats.primary_device(), stats.gpu_name) == \
        ("", (), (), None, None)


@pytest.mark.parametrize("body, pattern", [
    ([], r"^Expected the /system_stats body to be a JSON object, but saw '\[\]'\.$"),
    ({"system": {"argv": []}}, r"a 'devices' list in the /system_stats body"),
    ({"devices": []}, r"a 'system' object in the /system_stats body"),
    ({"system": {"argv": "main.py --cpu"}, "devices": []}, r"system\.argv to be a list of strings"),
    ({"system": {"comfyui_version": 8}, "devices": []}, r"system\.comfyui_version to be a string, but saw '8'"),
    ({"system": {}, "devices": ["cpu"]}, r"each of /system_stats 'devices' to be an object"),
    ({"system": {}, "devices": [{"name": "cpu", "type": "cpu", "index": None, "vram_total": "lots",
                                 "vram_free": 1}]}, r"numeric vram_total and vram_free, but saw .*lots"),
    ({"system": {}, "devices": [{"name": "cpu", "type": "cpu", "index": True, "vram_total": 1,
                                 "vram_free": 1}]}, r"integer or null index"),
    ({"error": "Internal Server Error"}, r"a 'system' object"),
])
def test_system_stats_malformed(body, pattern):
    raises(ParseError, pattern, parse_system_stats, body)


# --- POST /prompt -------------------------------------------------------------------------------

def test_prompt_response_real_accepted():
    post = capture()["post_valid"]
    assert parse_prompt_response(post["http_status"], post["body"]) == "1e544451-da4c-456f-a8d9-3202132157fd"
    assert parse_prompt_response(200, json.dumps(post["body"])) == "1e544451-da4c-456f-a8d9-3202132157fd"


@pytest.mark.parametrize("key, message, error_type, node_errors", [
    ("post_invalid_unknown_class",
     "ComfyUI rejected the prompt (HTTP 400): invalid_prompt: Cannot execute because node NoSuchNodeClass "
     "does not exist (Node ID '#1').",
     "invalid_prompt", ()),
    ("post_invalid_missing_input",
     "ComfyUI rejected the prompt (HTTP 400): prompt_outputs_failed_validation: Prompt outputs failed "
     "validation; node 1 (EmptyImage): required_input_missing width.",
     "prompt_outputs_failed_validation", ("node 1 (EmptyImage): required_input_missing width",)),
    ("post_no_prompt",
     "ComfyUI rejected the prompt (HTTP 400): no_prompt: No prompt provided.",
     "no_prompt", ()),
])
def test_prompt_response_real_rejections(key, message, error_type, node_errors):
    post = capture()[key]
    assert post["http_status"] == 400
    with pytest.raises(PromptRejected) as info:
        parse_prompt_response(post["http_status"], post["body"])
    error = info.value
    assert str(error) == message
    assert (error.status, error.error_type, error.node_errors) == (400, error_type, node_errors)
    assert isinstance(error, ParseError)


def test_prompt_response_many_node_errors_are_capped():
    node_errors = {str(i): {"class_type": "KSampler", "errors": [
        {"type": "value_not_in_list", "message": "Value not in list", "details": f"ckpt_name: 'm{i}.safetensors'"}]}
        for i in range(9)}
    body = {"error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation",
                      "details": "", "extra_info": {}}, "node_errors": node_errors}
    with pytest.raises(PromptRejected) as info:
        parse_prompt_response(400, body)
    assert "node 0 (KSampler): value_not_in_list ckpt_name: 'm0.safetensors'" in str(info.value)
    assert str(info.value).endswith("; and 4 more node errors.")
    assert len(info.value.node_errors) == 9


@pytest.mark.parametrize("status, body, pattern", [
    (502, "<html><head><title>502 Bad Gateway</title></head></html>",
     r"^ComfyUI answered POST /prompt with HTTP 502 instead of 200: '<html><head><title>502 Bad Gateway"),
    (500, {"detail": "boom"}, r"HTTP 500 instead of 200: '\{\"detail\": \"boom\"\}'\.$"),
    (400, "not json", r"HTTP 400 instead of 200: 'not json'"),
    (413, "x" * 10000, r"HTTP 413 instead of 200: 'x+…'\.$"),
])
def test_prompt_response_other_statuses(status, body, pattern):
    error = raises(PromptRejected, pattern, parse_prompt_response, status, body)
    assert error.status == status


@pytest.mark.parametrize("body, pattern", [
    ({"number": 0, "node_errors": {}}, r"^Expected a 'prompt_id' string in ComfyUI's POST /prompt answer"),
    ("<html>ok</html>", r"a 'prompt_id' string .* but saw '<html>ok</html>'"),
    ({"prompt_id": ""}, r"a 'prompt_id' string"),
])
def test_prompt_response_200_without_prompt_id(body, pattern):
    error = raises(ParseError, pattern, parse_prompt_response, 200, body)
    assert not isinstance(error, PromptRejected)


# --- GET /history/{id} --------------------------------------------------------------------------

PROMPT_ID = "1e544451-da4c-456f-a8d9-3202132157fd"


def test_history_real_success():
    result = parse_history(capture()["history"], PROMPT_ID)
    assert result is not None
    assert (result.status_str, result.completed, result.error) == ("success", True, None)
    assert result.graph_node_ids == ("1", "2")
    assert result.cached_nodes == ()
    assert result.executed_nodes == ("1", "2")
    assert result.images == ("probe_00007_.png",)
    assert result.outputs == {"2": {"images": [{"filename": "probe_00007_.png", "subfolder": "", "type": "output"}]}}
    assert result.succeeded and result.fully_executed


def test_history_served_from_cache():
    body = capture()["history"]
    messages = body[PROMPT_ID]["status"]["messages"]
    messages[1][1]["nodes"] = ["1", "2"]  # what ComfyUI records when the identical graph is posted again
    result = parse_history(body, PROMPT_ID)
    assert result.cached_nodes == ("1", "2")
    assert result.executed_nodes == ()
    assert result.succeeded and not result.fully_executed


@pytest.mark.parametrize("body", [
    {},
    {"other-prompt": {"status": {"status_str": "success", "completed": True, "messages": []}, "outputs": {}}},
    {PROMPT_ID: {"status": {"status_str": "success", "completed": False, "messages": []}, "outputs": {}}},
])
def test_history_not_done_yet(body):
    assert parse_history(body, PROMPT_ID) is None


def test_history_execution_error():
    body = {PROMPT_ID: {"prompt": [1, PROMPT_ID, {"3": {"class_type": "KSampler", "inputs": {}}}, {}, ["3"]],
                        "outputs": {}, "status": {"status_str": "error", "completed": False, "messages": [
                            ["execution_start", {"prompt_id": PROMPT_ID, "timestamp": 1}],
                            ["execution_cached", {"nodes": [], "prompt_id": PROMPT_ID, "timestamp": 2}],
                            ["execution_error", {"prompt_id": PROMPT_ID, "node_id": "3", "node_type": "KSampler",
                                                 "executed": [], "exception_message": "CUDA out of memory.\n",
                                                 "exception_type": "torch.OutOfMemoryError", "traceback": []}]]}}}
    result = parse_history(body, PROMPT_ID)
    assert result.error == "node 3 (KSampler): CUDA out of memory"
    assert (result.status_str, result.completed, result.images) == ("error", False, ())
    assert not result.succeeded and not result.fully_executed


def test_history_interrupted():
    body = {PROMPT_ID: {"outputs": {}, "status": {"status_str": "error", "completed": False, "messages": [
        ["execution_interrupted", {"prompt_id": PROMPT_ID, "node_id": "5", "node_type": "VAEDecode", "executed": []}]]}}}
    assert parse_history(body, PROMPT_ID).error == "interrupted at node 5 (VAEDecode)"


@pytest.mark.parametrize("body, pattern", [
    ([], r"^Expected the /history body to be a JSON object, but saw '\[\]'\.$"),
    ({PROMPT_ID: {"outputs": {}}}, r"a history entry with a 'status' object for prompt " + PROMPT_ID),
    ({PROMPT_ID: {"status": {"status_str": "success", "completed": "yes"}}}, r"a boolean completed"),
    ({PROMPT_ID: {"status": {"status_str": "success", "completed": True, "messages": "none"}}},
     r"status\.messages to be a list"),
    ({PROMPT_ID: {"status": {"status_str": "success", "completed": True, "messages": [["execution_start"]]}}},
     r"a \[name, data\] pair, but saw '\[\"execution_start\"\]'"),
    ({PROMPT_ID: {"status": {"status_str": "success", "completed": True,
                             "messages": [["execution_cached", {"nodes": "1"}]]}}}, r"'nodes' to be a list"),
    ({PROMPT_ID: {"status": {"status_str": "success", "completed": True, "messages": []}, "outputs": []}},
     r"history 'outputs' to be an object"),
])
def test_history_malformed(body, pattern):
    raises(ParseError, pattern, parse_history, body, PROMPT_ID)


# --- docker inspect -----------------------------------------------------------------------------

def test_inspect_format_never_reads_the_environment():
    assert ".Env" not in INSPECT_FORMAT
    assert "json ." not in INSPECT_FORMAT and "{{.Config}}" not in INSPECT_FORMAT and "{{.}}" not in INSPECT_FORMAT
    for action in re.findall(r"\{\{(.*?)\}\}", INSPECT_FORMAT):
        fields = re.findall(r"\.[A-Za-z.]+", action)
        assert all(not f.startswith(".Config") or f in (".Config.Labels", ".Config.Image") for f in fields), action
    assert INSPECT_FORMAT.count('{{"\\t"}}') == len(INSPECT_FIELDS) - 1
    assert "\n" not in INSPECT_FORMAT and "\t" not in INSPECT_FORMAT  # safe to quote for a remote shell


def test_inspect_real_compose_containers():
    recorded = text(COMPOSE / "inspect.tsv")
    assert "do-not-print-me" not in recorded  # every container's env held REDIS_PASSWORD=do-not-print-me
    info = {c.service: c for c in parse_inspect(recorded)}
    assert sorted(info) == ["admin", "nginx", "queue-manager", "redis", "user001", "user002", "worker-1"]
    redis = info["redis"]
    assert redis.id == "2fd585cfb8e5d26a5043e4d142c02b68008100f7870f8a12f9564466a2870c79"
    assert (redis.name, redis.project, redis.state, redis.health) == ("comfy-redis", "comfyume", "running", "healthy")
    assert (redis.env_hash, redis.image, redis.restart_count, redis.exit_code) == ("3f2a9c1e0b7d", "factsbb:1", 0, 0)
    assert redis.created == "2026-11-26T18:31:29.501274123Z"
    assert redis.finished_at == "0001-01-01T00:00:00Z"
    assert {s: (c.state, c.health) for s, c in info.items()} == {
        "admin": ("running", ""), "nginx": ("created", ""), "queue-manager": ("running", "unhealthy"),
        "redis": ("running", "healthy"), "user001": ("running", "starting"), "user002": ("exited", ""),
        "worker-1": ("restarting", "")}
    assert info["user002"].exit_code == 3
    assert (info["worker-1"].exit_code, info["worker-1"].restart_count) == (1, 11)
    assert info["nginx"].started_at == "0001-01-01T00:00:00Z"
    assert info["admin"].env_hash == ""


def test_inspect_line_outside_compose_and_blank_lines():
    line = ("c0ffee\t/plain\t\t\texited\t\t2\t2026-01-02T03:04:05.678Z\t2026-01-02T03:04:06Z\t"
            "2026-01-02T03:05:00Z\t137\t\tredis:7-alpine\r\n")
    (info,) = parse_inspect("\n" + line + "\n")
    assert info == ContainerInfo(id="c0ffee", name="plain", service="", project="", state="exited", health="",
                                       restart_count=2, created="2026-01-02T03:04:05.678Z",
                                       started_at="2026-01-02T03:04:06Z", finished_at="2026-01-02T03:05:00Z",
                                       exit_code=137, env_hash="", image="redis:7-alpine")
    assert parse_inspect("") == ()


GOOD_LINE = "id\t/n\ts\tp\trunning\thealthy\t0\tc\ts\tf\t0\th\ti"


@pytest.mark.parametrize("output, pattern", [
    ("Error: No such object: comfy-redis", r"13 TAB-separated fields .* \(got 1\), but saw 'Error: No such object"),
    (GOOD_LINE + "\textra", r"\(got 14\)"),
    (GOOD_LINE.replace("\t0\tc", "\tmany\tc"), r"an integer RestartCount"),
    (GOOD_LINE.replace("\tf\t0", "\tf\tnope"), r"an integer ExitCode"),
    (GOOD_LINE.replace("healthy", "sick"), r"a health of '', starting, healthy or unhealthy"),
    ('[{"Id": "abc", "State": {}}]', r"TAB-separated fields"),
])
def test_inspect_malformed(output, pattern):
    raises(ParseError, pattern, parse_inspect, output)


# --- docker compose version ---------------------------------------------------------------------

@pytest.mark.parametrize("output, expected", [
    (text(COMPOSE / "compose-version.txt"), ComposeVersion("v2", "2.26.1-4")),  # real, Debian's build
    (text(COMPOSE / "compose-version-short.txt"), ComposeVersion("v2", "2.26.1-4")),  # real, --short
    ("Docker Compose version v2.26.1\n", ComposeVersion("v2", "2.26.1")),
    ("Docker Compose version v2.40.3-desktop.1\n", ComposeVersion("v2", "2.40.3-desktop.1")),
    ("Docker Compose version v5.0.0\n", ComposeVersion("v2", "5.0.0")),
    ("docker-compose version 1.29.2, build 5becea4c\n", ComposeVersion("legacy", "1.29.2")),
    ("docker-compose version 1.29.2, build 5becea4c\ndocker-py version: 5.0.0\nCPython version: 3.7.10\n"
     "OpenSSL version: OpenSSL 1.1.0l  10 Sep 2019\n", ComposeVersion("legacy", "1.29.2")),
    ("docker-compose version 1.25.0, build unknown\n", ComposeVersion("legacy", "1.25.0")),
    ("", ComposeVersion(None, "")),
    ("docker: 'compose' is not a docker command.\nSee 'docker --help'\n", ComposeVersion(None, "")),
    ("bash: docker-compose: command not found\n", ComposeVersion(None, "")),
])
def test_compose_version(output, expected):
    assert parse_compose_version(output) == expected


# --- tailscale ip -4 --------------------------------------------------

@pytest.mark.parametrize("output, expected", [
    ("100.99.216.71\n", "100.99.216.71"),
    ("\n100.64.0.7\n100.64.0.8\n", "100.64.0.7"),
    ("Tailscale is stopped.\n", None),
    ("", None),
    ("fd7a:115c:a1e0::1\n", None),
    ("999.1.1.1\n", None),
])
def test_tailscale_ip(output, expected):
    assert parse_tailscale_ip(output) == expected
