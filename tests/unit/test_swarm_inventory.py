"""`engine: swarm|compose` in hosts.yaml: the default, and each refusal as one sentence with file:line."""
from __future__ import annotations

import pytest

from tests.support import DUAL, load_here as load, problems

SWARM_DUAL = DUAL.replace("    roles: [worker]\n", "    tailscale_ip: 100.64.0.3\n    roles: [worker]\n")


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def test_engine_defaults_to_compose():
    assert load(DUAL).engine == "compose"


def test_engine_swarm_is_read():
    assert load("engine: swarm\n" + SWARM_DUAL).engine == "swarm"


def test_unknown_engine_is_one_sentence():
    assert problems("engine: kubernetes\n" + SWARM_DUAL) == [
        "hosts.yaml:1 engine: unknown engine 'kubernetes' (expected one of: compose, swarm)"]


def test_swarm_needs_dual_server():
    text = ("engine: swarm\nmode: single-server-cpu\nhosts:\n  box:\n    address: box\n"
            "    tailscale_ip: 100.64.0.9\n    roles: [app, worker]\n")
    assert problems(text) == [
        "hosts.yaml:1 engine: engine: swarm places an app host and worker hosts (mode dual-server), but mode is "
        "single-server-cpu (use engine: compose for mode single-server-cpu, or mode: dual-server)"]


def test_swarm_needs_every_tailnet_address():
    found = problems("engine: swarm\n" + DUAL)
    assert found == ["hosts.yaml:8 hosts.verda.tailscale_ip: engine: swarm needs a tailscale_ip on every host, "
                     "verda has none (Swarm advertises verda and carries its traffic on that address: write what "
                     "`tailscale ip -4` prints on verda)"]


def test_swarm_refuses_images_it_would_have_to_build():
    text = ("engine: swarm\n" + SWARM_DUAL +
            "images:\n  source: build\n  repository: git@github.com:team/comfyume.git\n")
    found = problems(text)
    assert len(found) == 1 and found[0].startswith("hosts.yaml:13 images.source: engine: swarm deploys images "
                                                   "already on the hosts, but images.")
    assert "images.queue_manager comes from build" in found[0]
