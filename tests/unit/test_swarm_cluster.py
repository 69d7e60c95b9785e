"""The swarm set-up decided from the hosts' own swarm state and the manager's node list: init, joins,
labels, removals; a rerun with everything in place has nothing to do; a host in another swarm is
refused in one sentence. The parsers of `docker info`, `docker node inspect` and task output, and
the join request (its token only in the body sent on stdin)."""
from __future__ import annotations

import json

import pytest

from comfyume_fab.errors import ConfigError
from comfyume_fab.host.actions import swarm as act
from comfyume_fab.host.facts.swarm import Node, SwarmInfo, parse_images, parse_info, parse_nodes, parse_tasks
from comfyume_fab.plan.cluster import INIT, JOIN, LABEL, REMOVE, cluster_steps
from tests.support import ENV, SWARM_INV, load_here as load

INACTIVE = SwarmInfo("inactive")


@pytest.fixture
def inv(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return load(SWARM_INV, ENV)


def _node(id_, host=None, role=None, state="ready"):
    labels = {k: v for k, v in (("comfyume.host", host), ("comfyume.role", role)) if v}
    return Node(id_, "worker", "active", state, "100.64.0.9", labels)


def _settled():
    infos = {"mello": SwarmInfo("active", "M", manager=True, cluster_id="C"),
             "verda": SwarmInfo("active", "V1", managers=("100.64.0.1:2377",)),
             "verda-2": SwarmInfo("active", "V2", managers=("100.64.0.1:2377",))}
    nodes = [_node("M", "mello", "app"), _node("V1", "verda", "worker"), _node("V2", "verda-2", "worker")]
    return infos, nodes


def test_fresh_hosts_init_first_then_join_then_label(inv):
    infos = {h: INACTIVE for h in ("mello", "verda", "verda-2")}
    assert [s.kind for s in cluster_steps(inv, infos, [])] == [INIT]
    infos["mello"] = SwarmInfo("active", "M", manager=True)
    steps = cluster_steps(inv, infos, [_node("M")])
    assert [(s.kind, s.host) for s in steps] == [(JOIN, "verda"), (JOIN, "verda-2"), (LABEL, "mello")]
    assert steps[-1].role == "app"


def test_a_settled_swarm_has_nothing_to_do(inv):
    assert cluster_steps(inv, *_settled()) == []


def test_a_down_node_no_host_is_now_is_removed_and_a_departed_hosts_node_too(inv):
    infos, nodes = _settled()
    nodes += [_node("OLD", "verda", "worker", state="down"),  # verda's earlier instance
              _node("GONE", "verda-3", "worker", state="ready"),  # a host taken out of hosts.yaml
              _node("STRANGER", state="ready")]  # not ours: left alone
    steps = cluster_steps(inv, infos, nodes)
    assert [(s.kind, s.node_id, s.force) for s in steps] == [(REMOVE, "OLD", False), (REMOVE, "GONE", True)]


def test_a_host_in_another_swarm_is_refused_in_one_sentence(inv):
    infos, nodes = _settled()
    infos["verda-2"] = SwarmInfo("active", "OTHERNODE123456", managers=("10.9.9.9:2377",))
    with pytest.raises(ConfigError) as info:
        cluster_steps(inv, infos, nodes[:2])
    assert info.value.problems == [
        "hosts.yaml: verda-2 is already in another Docker Swarm (node OTHERNODE123, its managers at 10.9.9.9:2377): "
        "run `docker swarm leave --force` on verda-2 to let it join this deployment's swarm, or remove it from "
        "hosts.yaml"]


def test_an_app_host_that_is_another_swarms_worker_is_refused(inv):
    infos, nodes = _settled()
    infos["mello"] = SwarmInfo("active", "M", manager=False, managers=("10.9.9.9:2377",))
    with pytest.raises(ConfigError, match="mello, the app host, is already a worker of another Docker Swarm"):
        cluster_steps(inv, infos, nodes)


def test_parsers_read_the_engines_json():
    info = parse_info(json.dumps({"NodeID": "abc", "NodeAddr": "100.64.0.1", "LocalNodeState": "active",
                                  "ControlAvailable": True, "Error": "", "RemoteManagers": [
                                      {"NodeID": "abc", "Addr": "100.64.0.1:2377"}], "Cluster": {"ID": "cl"}}))
    assert info == SwarmInfo("active", "abc", "100.64.0.1", True, "cl", ("100.64.0.1:2377",), "")
    assert parse_info('{"NodeID":"","NodeAddr":"","LocalNodeState":"inactive","ControlAvailable":false,'
                      '"Error":"","RemoteManagers":null}').state == "inactive"
    node = json.dumps({"ID": "n1", "Spec": {"Labels": {"comfyume.host": "verda"}, "Role": "worker",
                                            "Availability": "active"},
                       "Description": {"Resources": {"GenericResources": [
                           {"NamedResourceSpec": {"Kind": "NVIDIA-GPU", "Value": "GPU-1234"}}]}},
                       "Status": {"State": "ready", "Addr": "100.64.0.2"}})
    (n,) = parse_nodes(node + "\n")
    assert n.host == "verda" and n.gpus == ("GPU-1234",) and n.state == "ready"
    task = json.dumps({"ID": "t1", "ServiceID": "s1", "Slot": 2, "NodeID": "n1", "DesiredState": "running",
                       "Status": {"State": "rejected", "Err": "No such image: comfyume-worker:v0.11.0",
                                  "Timestamp": "2026-12-03T13:00:00Z"}})
    (t,) = parse_tasks(task)
    assert t.slot == 2 and t.state == "rejected" and "No such image" in t.error
    assert parse_images('a:1\t["/e"]\t["x","y"]\nb:2\t@@missing\n') == {"a:1": ("/e", "x", "y"), "b:2": None}


def test_the_join_token_is_only_in_the_body_on_stdin():
    token = "SWMTKN-1-secretsecretsecret"
    assert token not in act.JOIN and "--token" not in act.JOIN
    body = json.loads(act.join_body(token, "100.64.0.1", "100.64.0.3"))
    assert body == {"ListenAddr": "0.0.0.0:2377", "AdvertiseAddr": "100.64.0.3", "DataPathAddr": "100.64.0.3",
                    "RemoteAddrs": ["100.64.0.1:2377"], "JoinToken": token}
    assert act.join_result("\n200\n") == (True, "HTTP 200")
    assert act.join_result('{"message":"This node is already part of a swarm."}\n503\n') == (
        False, "This node is already part of a swarm.")
    assert act.init("100.64.0.1") == ("docker swarm init --advertise-addr 100.64.0.1 --data-path-addr 100.64.0.1 "
                                      "--listen-addr 100.64.0.1:2377")


# --- the parsers on output recorded from a real engine (tests/fixtures/docker-20.10-swarm/) -----------

from pathlib import Path  # noqa: E402

from comfyume_fab.host.facts import swarm as sf  # noqa: E402

REC = Path(__file__).resolve().parents[1] / "fixtures"
RECORDED = json.loads((REC / "recorded-commands.json").read_text())


def _rec(name: str, command: str) -> str:
    key = f"docker-20.10-swarm/{name}"
    assert RECORDED[key] == command  # the module still runs the command the recording was made with
    return (REC / key).read_text()


def test_recorded_swarm_info_nodes_services_tasks_images():
    assert parse_info(_rec("info-inactive.json", sf.INFO_COMMAND)).state == "inactive"
    manager = parse_info(_rec("info-manager.json", sf.INFO_COMMAND))
    assert manager.active and manager.manager and manager.node_id and manager.cluster_id
    (node,) = parse_nodes(_rec("nodes.jsonl", sf.NODES_COMMAND))
    assert node.id == manager.node_id and node.host == "swm-rec" and node.labels["comfyume.role"] == "app"
    assert node.state == "ready" and node.availability == "active" and node.gpus == ()
    services = {s.name: s for s in sf.parse_services(_rec("stack-services.jsonl", sf.services_command("rec")))}
    assert (services["rec_ok"].running, services["rec_ok"].wanted) == (1, 1)
    assert (services["rec_gone"].running, services["rec_gone"].wanted) == (0, 1)
    tasks = parse_tasks(_rec("stack-tasks.jsonl", sf.tasks_command("rec")))
    gone = [t for t in tasks if t.service_id.startswith(services["rec_gone"].id)]
    assert gone and all("No such image" in t.error for t in gone if t.state == "rejected")
    assert any(t.state == "running" for t in tasks if t.service_id.startswith(services["rec_ok"].id))
    images = parse_images(_rec("images.tsv", sf.images_command(["redis:7-alpine", "comfyume-missing:v0"])))
    assert images == {"redis:7-alpine": ("redis-server", "--protected-mode", "no"), "comfyume-missing:v0": None}


def test_a_crowded_worker_service_is_said_with_the_command_that_spreads_it():
    from comfyume_fab.ops.swarm import spread_note
    note = spread_note("comfyume_worker", ["verda", "verda"], ["verda", "verda-2"])
    assert note.startswith("comfyume_worker: 2 task(s) on verda, none on verda-2")
    assert "docker service update --force comfyume_worker" in note
    assert spread_note("comfyume_worker", ["verda", "verda-2"], ["verda", "verda-2"]) is None
    assert spread_note("comfyume_worker", ["verda"], ["verda", "verda-2"]) is None  # one task: nothing to spread
