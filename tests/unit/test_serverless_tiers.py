"""Serverless GPU tiers in hosts.yaml: validation, and the variables the team's queue manager reads."""
from __future__ import annotations

import pytest

from comfyume_fab.errors import ConfigError
from comfyume_fab.inventory import load_inventory
from comfyume_fab.inventory.model import Tier
from comfyume_fab.inventory.secrets import Secret
from comfyume_fab.plan.planner import make_plan

ENV = {"REDIS_PASSWORD": "r-pass", "ADMIN_PASSWORD": "a-pass", "SERVERLESS_API_KEY": "key-123"}
FOUR = """serverless:
  endpoints:
    h200-spot: https://containers.datacrunch.io/comfyume-h200-spot
    h200-on-demand: https://containers.datacrunch.io/comfyume-h200-on-demand
    b300-spot: {url: 'https://comfyume-b300-spot.containers.verda.com', price_per_hour: 1.70}
    b300-on-demand: {url: 'https://containers.datacrunch.io/comfyume-b300', gpu: 'B300 (premium 4K)'}
  active: %s
"""
HOSTS = "hosts:\n  mello: {address: mello, roles: [app]}\n"


def load(tmp_path, text, environ=None):
    path = tmp_path / "hosts.yaml"
    path.write_text("mode: serverless\n" + text + HOSTS)
    return load_inventory(str(path), environ=dict(ENV if environ is None else environ))


def problems(tmp_path, text) -> str:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, text)
    return str(err.value)


def test_four_tiers_write_exactly_what_the_queue_manager_reads(tmp_path):
    inv = load(tmp_path, FOUR % "b300-spot")
    env = make_plan(inv).app.env
    assert env["SERVERLESS_ACTIVE"] == "b300-spot" and env["INFERENCE_MODE"] == "serverless"
    assert env["SERVERLESS_ENDPOINT_H200_SPOT"] == "https://containers.datacrunch.io/comfyume-h200-spot"
    assert env["SERVERLESS_ENDPOINT_B300_ON_DEMAND"] == "https://containers.datacrunch.io/comfyume-b300"
    assert env["SERVERLESS_ENDPOINT"] == ""  # no fallback given: the team's own default
    assert env["SERVERLESS_API_KEY"] == Secret("key-123")
    assert sorted(k for k in env if k.startswith("SERVERLESS_ENDPOINT_")) == [
        "SERVERLESS_ENDPOINT_B300_ON_DEMAND", "SERVERLESS_ENDPOINT_B300_SPOT", "SERVERLESS_ENDPOINT_H200_ON_DEMAND",
        "SERVERLESS_ENDPOINT_H200_SPOT"]
    sv = inv.serverless
    assert sv.expected_gpu == "B300-288GB-SPOT" and sv.active_url == "https://comfyume-b300-spot.containers.verda.com"
    assert sv.tier("b300-spot").price == 1.70 and sv.tier("h200-spot").price == 0.97  # given, else the noted one
    assert sv.tier("b300-on-demand").gpu_label == "B300 (premium 4K)"
    assert sv.tier("b300-spot").deployment_name == "comfyume-b300-spot"
    assert sv.tier("h200-spot").deployment_name == "comfyume-h200-spot"


def test_only_the_queue_manager_sees_the_tiers(tmp_path):
    """Switching the active tier changes the queue manager's fingerprint and nobody else's."""
    one = make_plan(load(tmp_path, FOUR % "h200-spot")).app
    two = make_plan(load(tmp_path, FOUR % "b300-spot")).app
    assert "serverless.yml" in one.compose_files
    assert "SERVERLESS_ACTIVE" in one.service_vars["queue-manager"]
    assert "SERVERLESS_ENDPOINT_B300_SPOT" in one.service_vars["queue-manager"]
    changed = sorted(s for s in one.service_hashes if one.service_hashes[s] != two.service_hashes[s])
    assert changed == ["queue-manager"]


def test_old_single_endpoint_still_works(tmp_path):
    inv = load(tmp_path, "serverless: {endpoint: 'https://api.runpod.ai/v2/abc/run'}\n")
    env = make_plan(inv).app.env
    assert env["SERVERLESS_ENDPOINT"] == "https://api.runpod.ai/v2/abc/run" and env["SERVERLESS_ACTIVE"] == "default"
    assert inv.serverless.expected_gpu == "serverless" and inv.serverless.active_url == env["SERVERLESS_ENDPOINT"]


def test_a_tier_the_queue_manager_does_not_know_goes_through_the_fallback(tmp_path):
    inv = load(tmp_path, "serverless:\n  endpoints: {a100-lab: 'http://10.0.0.5:8401'}\n")
    env = make_plan(inv).app.env
    assert inv.serverless.active == "a100-lab"  # the only tier is the active one
    assert env["SERVERLESS_ENDPOINT_A100_LAB"] == "http://10.0.0.5:8401" == env["SERVERLESS_ENDPOINT"]
    assert inv.serverless.expected_gpu == "serverless"


@pytest.mark.parametrize("text, expected", [
    (FOUR % "h300-spot", "serverless.active: 'h300-spot' is not a tier in serverless.endpoints (did you mean "
                         "'h200-spot'?"),
    ("serverless:\n  endpoints: {a: 'http://x:1', b: 'http://y:2'}\n",
     "serverless.active: serverless.endpoints lists 2 tiers but none is active (write serverless.active: one of a, b)"),
    ("serverless:\n  endpoints: {H200: 'http://x:1'}\n", "serverless.endpoints.H200: tier name 'H200' is not allowed"),
    ("serverless:\n  endpoints: {h200-spot: 'http://x:1', h200_spot: 'http://y:1'}\n  active: h200-spot\n",
     "tier 'h200_spot' and tier 'h200-spot' both become SERVERLESS_ENDPOINT_H200_SPOT"),
    ("serverless:\n  endpoints: {a: 'ftp://x'}\n", "serverless.endpoints.a.url: 'ftp://x' is not an http(s) URL"),
    ("serverless:\n  endpoints: {a: {url: 'http://x:1', price_per_hour: -1}}\n",
     "serverless.endpoints.a.price_per_hour: -1 is out of range"),
    ("serverless:\n  endpoints: {a: {url: 'http://x:1', cost: 1}}\n", "serverless.endpoints.a.cost: unknown key 'cost'"),
    ("serverless:\n  endpoints: {a: {gpu: H200}}\n", "serverless.endpoints.a.url: required key is missing"),
    ("serverless: {active: default, endpoints: {a: 'http://x:1'}}\n",
     "serverless.active: serverless.active is 'default' (the fallback endpoint) but serverless.endpoint is not set"),
    ("serverless: {currency: euro}\n", "serverless.currency: 'euro' is not a currency code"),
    ("serverless: {}\n", "mode serverless needs serverless.endpoints (or serverless.endpoint)"),
])
def test_bad_tiers_get_one_sentence_each_with_the_line(tmp_path, text, expected):
    text_out = problems(tmp_path, text)
    assert expected in text_out
    assert "hosts.yaml:" in text_out and "Traceback" not in text_out


def test_bad_tier_line_is_its_own(tmp_path):
    out = problems(tmp_path, FOUR.replace("b300-spot: {url", "b300-spot: {urll") % "h200-spot")
    assert "hosts.yaml:6 serverless.endpoints.b300-spot" in out


def test_tier_deployment_name_from_either_url_form():
    assert Tier("x", "https://containers.datacrunch.io/my-dep/").deployment_name == "my-dep"
    assert Tier("x", "https://my-dep.containers.verda.com").deployment_name == "my-dep"
    assert Tier("x", "http://100.64.0.2:8401", deployment="lab-a").deployment_name == "lab-a"
