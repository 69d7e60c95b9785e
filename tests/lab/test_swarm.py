"""engine: swarm on three dedicated lab hosts (an app host, two worker hosts; the shared mello/verda
engines are never swarm-initialised): start-all / status / stop-verda / start-all, placement by
node label, Redis and the queue manager published in host mode, a join token in no output, and a
worker host cut off the tailnet: its task moves to the other worker host within Swarm's own
timeouts and status says so; back on the tailnet, start-all converges. The hosts are removed at the end.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import jsonschema

import pytest
import yaml

from tests.support import invoke

APP, W1, W2 = "swm-app", "swm-w1", "swm-w2"
SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "docs" / "status.schema.json").read_text())


@pytest.fixture(scope="module")
def swarm(lab, tmp_path_factory):
    from comfyume_fab.lab import dynhost
    from comfyume_fab.lab.files import inventory_dict, write_known_hosts
    tmp = tmp_path_factory.mktemp("swarm")
    for name in (APP, W1, W2):
        dynhost.remove_host(name)  # what an interrupted earlier run left
    hosts = [dynhost.add_host(APP, "app"), dynhost.add_host(W1, "worker"), dynhost.add_host(W2, "worker")]
    try:
        known = write_known_hosts(tmp, hosts)
        data = inventory_dict(hosts, lab.key, known, 2, secrets_file=str(lab.dir / "secrets.env"))
        data["engine"] = "swarm"
        data["project"] = "cfabswarm"
        path = tmp / "hosts.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        outputs: list[str] = []
        yield {h.name: h for h in hosts}, path, outputs
    finally:
        for name in (APP, W1, W2):
            dynhost.remove_host(name)


def _run(outputs, *args):
    res = invoke(*args, timeout=300)
    outputs.append(res.stdout + res.stderr)
    return res


def _manager(hosts, *args):
    from comfyume_fab.lab.hostsvc import docker
    return docker(hosts[APP], *args, check=False).stdout


def _worker_nodes(hosts) -> dict[str, str]:
    """task slot -> the host label of the node its running task is on (from the manager directly)."""
    out = {}
    nodes = {}
    for line in _manager(hosts, "node", "ls", "-q").split():
        labels = json.loads(_manager(hosts, "node", "inspect", "--format", "{{json .Spec.Labels}}", line))
        nodes[line] = labels.get("comfyume.host")
    tasks = _manager(hosts, "service", "ps", "-q", "--no-trunc", "--filter", "desired-state=running",
                     "cfabswarm_worker").split()
    for task in tasks:
        info = json.loads(_manager(hosts, "inspect", "--type", "task", "--format", "{{json .}}", task))
        if info["Status"]["State"] == "running":
            out[info["Slot"]] = nodes.get(info["NodeID"])
    return out


def test_swarm_start_status_stop_reschedule(swarm, lab):
    hosts, inv, outputs = swarm
    # a worker host without the worker image: named with the copy-image line, nothing touched, exit 7
    from comfyume_fab.lab.hostsvc import docker
    ref = yaml.safe_load(inv.read_text()).get("images", {}).get("worker", "comfyume-worker:v0.11.0")
    docker(hosts[W2], "image", "tag", ref, "cfab-kept/worker:saved")
    docker(hosts[W2], "image", "rm", ref)
    try:
        missing = _run(outputs, "start-all", "--hosts", str(inv))
        assert missing.returncode == 7, missing.stdout + missing.stderr
        assert f"{W2} has no image {ref}" in missing.stderr and f"--source {W1} --target {W2}" in missing.stderr
        assert _manager(hosts, "info", "--format", "{{.Swarm.LocalNodeState}}").strip() == "inactive"
    finally:
        docker(hosts[W2], "image", "tag", "cfab-kept/worker:saved", ref)
        docker(hosts[W2], "image", "rm", "cfab-kept/worker:saved")
    res = _run(outputs, "start-all", "--hosts", str(inv))
    assert res.returncode == 0, res.stderr + res.stdout
    assert "docker swarm init" in res.stdout and f"{W1}: joining the swarm" in res.stdout

    # placement by label: the app's services on the app host's node, one worker task per worker host
    nodes = {n: json.loads(_manager(hosts, "node", "inspect", "--format", "{{json .Spec.Labels}}", n))
             for n in _manager(hosts, "node", "ls", "-q").split()}
    assert sorted((v["comfyume.host"], v["comfyume.role"]) for v in nodes.values()) == [
        (APP, "app"), (W1, "worker"), (W2, "worker")]
    assert sorted(_worker_nodes(hosts).values()) == [W1, W2]
    status = _run(outputs, "status", "--hosts", str(inv), "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    data = json.loads(status.stdout)
    jsonschema.validate(data, SCHEMA)  # the shipped `status --json` schema, kept in step
    tasks = [t for t in data["swarm"]["tasks"] if t["desired"] == "running"]
    assert {t["host"] for t in tasks if t["service"] != "cfabswarm_worker"} == {APP}
    # host mode: Redis and the queue manager listen on the app host itself (no routing mesh)
    for svc, port in (("redis", 6379), ("queue-manager", 3000)):
        spec = json.loads(_manager(hosts, "service", "inspect", "--format", "{{json .Endpoint.Ports}}",
                                   f"cfabswarm_{svc}"))
        assert spec == [{"Protocol": "tcp", "TargetPort": port, "PublishedPort": port, "PublishMode": "host"}]
    assert any(c["name"] == "job-probe" and c["ok"] for c in data["checks"]), data["checks"]
    # the overlay fits the tailnet: a task's overlay interface has 1280 - 50 (VXLAN)
    from comfyume_fab.lab.hostsvc import docker as engine
    cid = engine(hosts[W1], "ps", "-q", "--filter", "label=com.docker.swarm.service.name=cfabswarm_worker"
                 ).stdout.split()[0]
    mtus = engine(hosts[W1], "exec", cid, "sh", "-c", "cat /sys/class/net/eth*/mtu").stdout.split()
    assert min(int(m) for m in mtus) == 1230, mtus

    # a rerun changes nothing
    again = _run(outputs, "start-all", "--hosts", str(inv))
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stdout + again.stderr

    # stop-verda: the worker service at 0, the app host untouched; status says stopped on purpose (6)
    stop = _run(outputs, "stop-verda", "--hosts", str(inv))
    assert stop.returncode == 0 and "untouched" in stop.stdout, stop.stdout + stop.stderr
    assert _run(outputs, "status", "--hosts", str(inv)).returncode == 6
    back = _run(outputs, "start-all", "--hosts", str(inv))
    assert back.returncode == 0, back.stdout + back.stderr

    # cut W2 off the tailnet: Swarm marks its node Down and moves its worker task to W1
    from comfyume_fab.lab.system import sh
    sh(["ip", "-n", hosts[W2].netns, "link", "set", "eth0", "down"])
    try:
        t0 = time.monotonic()
        while sorted(_worker_nodes(hosts).values()) != [W1, W1]:
            assert time.monotonic() - t0 < 90, f"the worker task did not move: {_worker_nodes(hosts)}"
            time.sleep(2)
        cut = _run(outputs, "status", "--hosts", str(inv), "--json")
        data = json.loads(cut.stdout)
        jsonschema.validate(data, SCHEMA)
        assert any(line.endswith(f"from {W2} (node down) to {W1}") for line in data["swarm"]["moved"]), data["swarm"]
        assert cut.returncode == 3  # W2 is unreachable
    finally:
        sh(["ip", "-n", hosts[W2].netns, "link", "set", "eth0", "up"])
    t0 = time.monotonic()
    while '"ready"' not in "".join(
            _manager(hosts, "node", "inspect", "--format", "{{json .Status.State}}", n) for n in nodes
            if nodes[n]["comfyume.host"] == W2):
        assert time.monotonic() - t0 < 60, "W2's node did not come back"
        time.sleep(1)
    final = _run(outputs, "start-all", "--hosts", str(inv))
    assert final.returncode == 0, final.stdout + final.stderr
    # Swarm leaves both tasks on W1: start-all says so, with the command that spreads them again
    assert f"none on {W2}" in final.stdout + final.stderr, final.stdout + final.stderr
    assert _run(outputs, "status", "--hosts", str(inv)).returncode == 0

    # W2 taken out of hosts.yaml: its node is removed from the swarm, the worker service shrinks to one
    data = yaml.safe_load(inv.read_text())
    del data["hosts"][W2]
    smaller = inv.with_name("hosts-without-w2.yaml")
    smaller.write_text(yaml.safe_dump(data, sort_keys=False))
    shrunk = _run(outputs, "start-all", "--hosts", str(smaller))
    assert shrunk.returncode == 0, (f"exit {shrunk.returncode}\n{shrunk.stdout}\nstderr:\n{shrunk.stderr}\n" +
                                    _manager(hosts, "service", "ps", "--no-trunc", "cfabswarm_queue-manager") +
                                    _manager(hosts, "service", "inspect", "--format",
                                             "{{json .UpdateStatus}} {{json .PreviousSpec.TaskTemplate.ContainerSpec.Env}}",
                                             "cfabswarm_queue-manager"))
    assert f"of {W2}, no longer in" in shrunk.stdout
    labels = [json.loads(_manager(hosts, "node", "inspect", "--format", "{{json .Spec.Labels}}", n))
              for n in _manager(hosts, "node", "ls", "-q").split()]
    assert sorted(v["comfyume.host"] for v in labels) == [APP, W1]

    # the join token never appeared in any output, nor in a file the tool left on a host
    token = _manager(hosts, "swarm", "join-token", "-q", "worker").strip()
    assert token.startswith("SWMTKN-")
    assert not [o for o in outputs if token in o]
    for h in hosts.values():
        for path in (h.home / "comfyume").rglob("*"):
            if path.is_file():
                assert token not in path.read_text(errors="replace"), path
    # the secrets are Swarm secrets: no service has them in its environment
    for svc in ("queue-manager", "worker", "admin"):
        env = _manager(hosts, "service", "inspect", "--format", "{{json .Spec.TaskTemplate.ContainerSpec.Env}}",
                       f"cfabswarm_{svc}")
        for value in lab.secrets.values():
            assert value not in env
