"""The Swarm GPU branch, pure: `nvidia-smi -L` (recorded on the H100, and composed listings for 8
GPUs, MIG and failures: tests/fixtures/nvidia-smi-L/README.md says which is which) -> daemon.json's
generic resources and runtime, the NVIDIA runtime's `swarm-resource`, and the worker reservation."""
from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from types import SimpleNamespace

import pytest

from comfyume_fab.host.facts import ParseError, nvidia
from comfyume_fab.host.facts.nvidia import ListedGpu, ListedMig, parse_gpu_list, read_gpu_list
from comfyume_fab.plan import swarmgpu
from comfyume_fab.plan.swarmgpu import (GPU_KIND, SWARM_RESOURCE_ENV, advertised_gpus, daemon_json_changes,
                                        daemon_json_text, edit_nvidia_runtime_config, generic_resources,
                                        gpu_resource_values, node_generic_resources, nvidia_runtime_config_changes,
                                        nvidia_runtime_config_line, parse_daemon_json, render_daemon_json)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
LISTINGS = FIXTURES / "nvidia-smi-L"
RECORDED = json.loads((FIXTURES / "recorded-commands.json").read_text())
H100_UUID = "GPU-2b5b31e8-9cf7-8a29-f56d-bf76afee39eb"


def listing(name: str) -> str:
    return (LISTINGS / name).read_text(encoding="utf-8")


def eight() -> list[ListedGpu]:
    return parse_gpu_list(listing("h100-8gpu.composed.txt"))


def swarm_env_names(entries: list[str]) -> set[str]:
    """The variable names Swarm sets in a task holding these resources: swarmkit's
    genericresource.EnvFormat(res, "DOCKER_RESOURCE") is strings.ToUpper(prefix + "_" + kind)."""
    return {("DOCKER_RESOURCE" + "_" + entry.split("=", 1)[0]).upper() for entry in entries}


# --- nvidia-smi -L -------------------------------------------------------------------------------

def test_recorded_h100_listing_is_one_gpu_with_its_uuid():
    assert listing("h100-1gpu.recorded.txt") == (FIXTURES / "h100" / "nvidia-smi-L.txt").read_text()
    assert parse_gpu_list(listing("h100-1gpu.recorded.txt")) == [ListedGpu(0, "NVIDIA H100 80GB HBM3", H100_UUID)]
    assert nvidia.LIST_COMMAND == RECORDED["h100/nvidia-smi-L.txt"] == nvidia.GPU_LIST.command(None)


def test_eight_gpus_in_index_order_with_distinct_uuids():
    gpus = eight()
    assert [g.index for g in gpus] == list(range(8))
    assert {g.name for g in gpus} == {"NVIDIA H100 80GB HBM3"} and all(g.mig == () for g in gpus)
    assert len({g.uuid for g in gpus}) == 8 and all(re.fullmatch(r"GPU-[0-9a-f-]{36}", g.uuid) for g in gpus)


def test_mig_devices_belong_to_the_gpu_above_them_and_are_advertised_instead_of_it():
    gpus = parse_gpu_list(listing("a100-mig.composed.txt"))
    assert [len(g.mig) for g in gpus] == [3, 0]
    assert gpus[0].mig[0] == ListedMig("3g.20gb", 0, "MIG-c6d4f1ef-42e4-5de3-91c7-45d71c87eb3f")
    assert [m.profile for m in gpus[0].mig] == ["3g.20gb", "2g.10gb", "1g.5gb"]
    values = gpu_resource_values(gpus)
    assert values == [m.uuid for m in gpus[0].mig] + [gpus[1].uuid]  # GPU 0 itself is not advertised


def test_old_mig_uuid_format_parses():
    text = ("GPU 0: A100-SXM4-40GB (UUID: GPU-e91edf3b-b297-37c1-a2a7-7601c3238fa2)\n"
            "  MIG 7g.40gb Device 0: (UUID: MIG-GPU-e91edf3b-b297-37c1-a2a7-7601c3238fa2/0/0)\n")
    assert gpu_resource_values(parse_gpu_list(text)) == ["MIG-GPU-e91edf3b-b297-37c1-a2a7-7601c3238fa2/0/0"]


@pytest.mark.parametrize("code, name, expected", [
    (0, "h100-1gpu.recorded.txt", ((ListedGpu(0, "NVIDIA H100 80GB HBM3", H100_UUID),), "")),
    (6, "no-devices.composed.txt", ((), "")),
    (127, None, (None, "")),  # no nvidia-smi: a CPU host, not an error
])
def test_read_gpu_list_no_gpu_is_not_an_error(code, name, expected):
    assert read_gpu_list(code, listing(name) if name else "bash: nvidia-smi: command not found\n") == expected


def test_read_gpu_list_failures_say_what_nvidia_smi_said():
    gpus, error = read_gpu_list(9, listing("no-driver.composed.txt"))
    assert gpus is None and error.startswith("NVIDIA-SMI has failed because it couldn't communicate")
    gpus, error = read_gpu_list(0, "GPU zero is fine\n")
    assert gpus is None and error == "Expected a 'GPU <n>: <name> (UUID: <uuid>)' line from nvidia-smi -L, but saw 'GPU zero is fine'."
    assert read_gpu_list(1, "")[1] == "nvidia-smi -L exited with 1 and said nothing"


def test_a_mig_line_without_its_gpu_is_refused():
    with pytest.raises(ParseError, match=r"^Expected a 'MIG <profile> Device <n>: \(UUID: MIG-\.\.\.\)' line under"):
        parse_gpu_list("  MIG 1g.5gb Device 0: (UUID: MIG-aaaa)\n")


def test_gpu_list_fact_fills_its_fields():
    st = SimpleNamespace()
    nvidia.GPU_LIST.fill(st, 0, listing("h100-8gpu.composed.txt"))
    assert len(st.gpu_list) == 8 and st.gpu_list_error == ""
    nvidia.GPU_LIST.fill(st, *nvidia.GPU_LIST.absent)
    assert st.gpu_list is None and st.gpu_list_error == ""
    assert [f[0] for f in nvidia.GPU_LIST.fields] == ["gpu_list", "gpu_list_error"]


# --- daemon.json -----------------------------------------------------------------------------------

USER_DAEMON = {"log-driver": "json-file", "log-opts": {"max-size": "100m"}, "registry-mirrors": ["http://m:5000"],
               "node-generic-resources": ["SSD=fast", "NVIDIA-GPU=GPU-gone-0000"]}


def test_daemon_json_keeps_the_users_settings_and_advertises_each_gpu():
    wanted = render_daemon_json(USER_DAEMON, eight())
    assert {k: wanted[k] for k in ("log-driver", "log-opts", "registry-mirrors")} == \
        {k: USER_DAEMON[k] for k in ("log-driver", "log-opts", "registry-mirrors")}
    assert wanted["node-generic-resources"] == ["SSD=fast"] + [f"NVIDIA-GPU={g.uuid}" for g in eight()]
    assert wanted["default-runtime"] == "nvidia"
    assert wanted["runtimes"] == {"nvidia": {"path": "nvidia-container-runtime", "runtimeArgs": []}}
    assert USER_DAEMON["node-generic-resources"] == ["SSD=fast", "NVIDIA-GPU=GPU-gone-0000"]  # input untouched
    assert json.loads(daemon_json_text(wanted)) == wanted and daemon_json_text(wanted).endswith("}\n")


def test_daemon_json_render_is_idempotent_and_plan_then_shows_nothing():
    once = render_daemon_json(USER_DAEMON, eight())
    assert render_daemon_json(once, eight()) == once
    assert daemon_json_changes(once, render_daemon_json(once, eight())) == []


def test_an_existing_nvidia_runtime_entry_is_kept_and_other_runtimes_stay():
    current = {"default-runtime": "runc",
               "runtimes": {"nvidia": {"args": [], "path": "/usr/bin/nvidia-container-runtime"},
                            "crun": {"path": "/usr/bin/crun"}}}
    wanted = render_daemon_json(current, parse_gpu_list(listing("h100-1gpu.recorded.txt")))
    assert wanted["runtimes"] == current["runtimes"]
    assert daemon_json_changes(current, wanted) == [
        'default-runtime: "runc" -> "nvidia"',
        f'node-generic-resources: set to ["NVIDIA-GPU={H100_UUID}"]']


def test_plan_lines_for_a_fresh_engine_and_for_a_gpu_swap():
    wanted = render_daemon_json({}, parse_gpu_list(listing("h100-1gpu.recorded.txt")))
    assert daemon_json_changes({}, wanted) == [
        f'node-generic-resources: set to ["NVIDIA-GPU={H100_UUID}"]', 'default-runtime: set to "nvidia"',
        'runtimes: set to {"nvidia": {"path": "nvidia-container-runtime", "runtimeArgs": []}}']
    swapped = render_daemon_json(wanted, [ListedGpu(0, "NVIDIA H100 80GB HBM3", "GPU-new")])
    assert daemon_json_changes(wanted, swapped) == [f"node-generic-resources: + NVIDIA-GPU=GPU-new, - NVIDIA-GPU={H100_UUID}"]


def test_without_gpus_only_stale_gpu_entries_go_and_runtimes_are_left_alone():
    assert render_daemon_json({"log-level": "warn"}, []) == {"log-level": "warn"}
    assert daemon_json_changes({"log-level": "warn"}, render_daemon_json({"log-level": "warn"}, [])) == []
    stale = {"node-generic-resources": ["NVIDIA-GPU=GPU-gone-0000"], "default-runtime": "runc"}
    wanted = render_daemon_json(stale, [])
    assert wanted == {"default-runtime": "runc"}
    assert daemon_json_changes(stale, wanted) == ['node-generic-resources: remove (was ["NVIDIA-GPU=GPU-gone-0000"])']
    assert render_daemon_json(USER_DAEMON, [])["node-generic-resources"] == ["SSD=fast"]


def test_daemon_json_parse_errors_are_one_sentence_with_the_fix():
    assert parse_daemon_json("") == {} and parse_daemon_json("  \n") == {}
    with pytest.raises(ParseError) as bad:
        parse_daemon_json('{\n  "log-level": "warn",\n}\n', "verda:/etc/docker/daemon.json")
    assert str(bad.value) == ("verda:/etc/docker/daemon.json is not valid JSON (line 3, column 1: Expecting "
                              "property name enclosed in double quotes); dockerd would not start with it "
                              "either: fix it by hand, then run the command again.")
    with pytest.raises(ParseError, match=r"^/etc/docker/daemon.json holds a JSON list, not an object"):
        parse_daemon_json('["NVIDIA-GPU=GPU-x"]')


# --- config.toml: swarm-resource -------------------------------------------------------------------

SHIPPED = (LISTINGS / "nvidia-container-runtime-config.toml").read_text()


def test_the_runtime_reads_the_variable_swarm_sets_for_our_kind():
    """NVIDIA/nvidia-container-toolkit#57: the shipped DOCKER_RESOURCE_GPU never matches NVIDIA-GPU."""
    entries = node_generic_resources(eight())
    assert swarm_env_names(entries) == {SWARM_RESOURCE_ENV} == {"DOCKER_RESOURCE_NVIDIA-GPU"}
    assert nvidia_runtime_config_line() == f'swarm-resource = "{SWARM_RESOURCE_ENV}"'
    shipped = re.search(r'#swarm-resource = "([^"]+)"', SHIPPED).group(1)
    assert shipped not in swarm_env_names(entries)  # uncommenting the shipped line would not do
    assert generic_resources(eight())[0]["discrete_resource_spec"]["kind"] == entries[0].split("=")[0] == GPU_KIND


def test_shipped_config_gets_the_line_in_place_of_the_commented_one_and_keeps_the_rest():
    edited = edit_nvidia_runtime_config(SHIPPED)
    before, after = SHIPPED.splitlines(), edited.splitlines()
    changed = [(b, a) for b, a in zip(before, after) if b != a]
    assert len(before) == len(after) and changed == [('#swarm-resource = "DOCKER_RESOURCE_GPU"',
                                                      'swarm-resource = "DOCKER_RESOURCE_NVIDIA-GPU"')]
    parsed, original = tomllib.loads(edited), tomllib.loads(SHIPPED)
    assert parsed.pop("swarm-resource") == "DOCKER_RESOURCE_NVIDIA-GPU" and parsed == original
    assert edit_nvidia_runtime_config(edited) == edited
    assert nvidia_runtime_config_changes(SHIPPED, edited) == [
        '/etc/nvidia-container-runtime/config.toml: swarm-resource = "DOCKER_RESOURCE_NVIDIA-GPU" '
        '(was #swarm-resource = "DOCKER_RESOURCE_GPU")']
    assert nvidia_runtime_config_changes(edited, edit_nvidia_runtime_config(edited)) == []


def test_a_hand_edited_wrong_value_is_corrected_and_duplicates_removed():
    text = 'disable-require = false\nswarm-resource = "DOCKER_RESOURCE_GPU"  \nswarm-resource = "X"\n\n[nvidia-container-cli]\n'
    edited = edit_nvidia_runtime_config(text)
    assert edited == 'disable-require = false\nswarm-resource = "DOCKER_RESOURCE_NVIDIA-GPU"\n\n[nvidia-container-cli]\n'
    assert tomllib.loads(edited)["swarm-resource"] == "DOCKER_RESOURCE_NVIDIA-GPU"


@pytest.mark.parametrize("text, expected", [
    ("", 'swarm-resource = "DOCKER_RESOURCE_NVIDIA-GPU"\n'),
    ("disable-require = false", 'disable-require = false\nswarm-resource = "DOCKER_RESOURCE_NVIDIA-GPU"\n'),
    ("# mine\n[nvidia-container-cli]\nswarm-resource = \"in-a-table\"\n",
     "# mine\nswarm-resource = \"DOCKER_RESOURCE_NVIDIA-GPU\"\n\n[nvidia-container-cli]\nswarm-resource = \"in-a-table\"\n"),
])
def test_the_line_is_added_at_top_level_when_absent(text, expected):
    edited = edit_nvidia_runtime_config(text)
    assert edited == expected and edit_nvidia_runtime_config(edited) == edited
    assert tomllib.loads(edited)["swarm-resource"] == "DOCKER_RESOURCE_NVIDIA-GPU"


# --- the stack and status ---------------------------------------------------------------------------

def test_worker_reservation_only_where_there_are_gpus():
    assert generic_resources([]) == [] and generic_resources(False) == []
    assert generic_resources(eight()) == generic_resources(True) == \
        [{"discrete_resource_spec": {"kind": "NVIDIA-GPU", "value": 1}}]
    assert generic_resources(True, per_task=2)[0]["discrete_resource_spec"]["value"] == 2


def test_advertised_gpus_from_node_inspect():
    # The shape of the Engine API's Node.Description.Resources.GenericResources (named and discrete).
    resources = [{"NamedResourceSpec": {"Kind": "NVIDIA-GPU", "Value": H100_UUID}},
                 {"NamedResourceSpec": {"Kind": "SSD", "Value": "fast"}},
                 {"DiscreteResourceSpec": {"Kind": "NVIDIA-GPU", "Value": 2}}]
    assert advertised_gpus(resources) == [H100_UUID, "2 (count)"]
    assert advertised_gpus(None) == [] and advertised_gpus([]) == []


def test_module_paths_are_the_documented_ones():
    assert swarmgpu.DAEMON_JSON == "/etc/docker/daemon.json"
    assert swarmgpu.NVIDIA_RUNTIME_CONFIG == "/etc/nvidia-container-runtime/config.toml"
