"""A rented worker in hosts.yaml: `provider:` and `autostop:` read into the model, every mistake one
sentence with its line, secrets by reference only."""
from __future__ import annotations

import os

import pytest

from comfyume_fab.inventory import model
from comfyume_fab.inventory.provider import seconds_of
from tests.support import ENV, load_here as load, problems

CLOUD_ENV = {**ENV, "VERDA_CLIENT_ID": "cid", "VERDA_CLIENT_SECRET": "csecret", "TAILSCALE_AUTHKEY": "tskey-auth-x"}

RENTED = """\
mode: dual-server
hosts:
  mello:
    address: mello
    tailscale_ip: 100.99.216.71
    roles: [app]
  verda:
    roles: [worker]
    gpu: required
    provider:
{provider}
{extra}"""

BASIC = """\
      instance_type: 1H100.80S.30V
      volumes: [models-vol-1]"""


def rented(provider: str = BASIC, extra: str = "") -> str:
    return RENTED.format(provider=provider, extra=extra)


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_rented_worker_reads_with_defaults(tmp_path):
    inv = load(rented(extra="    autostop: {idle: 30m, max_lifetime: 12h}\n"), CLOUD_ENV)
    verda = inv.host("verda")
    p = verda.provider
    assert (p.name, p.api, p.instance_type, p.location, p.spot) == \
        ("verda", "https://api.verda.com/v1", "1H100.80S.30V", "FIN-01", False)
    assert (p.image, p.os_volume, p.volumes, p.hostname_prefix, p.ssh_keys) == \
        (model.DEFAULT_CLOUD_IMAGE, None, ("models-vol-1",), "comfyume-worker", ())
    assert (p.tailscale_authkey, p.provision_timeout) == ("TAILSCALE_AUTHKEY", 600.0)
    assert verda.address == "" and verda.tailscale_ip is None and verda.user == "root"
    assert verda.autostop == model.Autostop(idle_s=1800, max_lifetime_s=43200)
    assert inv.provider_hosts == (verda,) and inv.host("mello").provider is None
    assert inv.generated_known_hosts == os.path.join(str(tmp_path), ".comfyume-fab", "known_hosts")
    # the secrets renting needs, resolved by reference (and shown as ***)
    assert inv.secrets["VERDA_CLIENT_SECRET"].reveal() == "csecret"
    assert str(inv.secrets["TAILSCALE_AUTHKEY"]) == "***"


def test_every_key_given():
    inv = load(rented("""\
      name: verda
      api: http://100.64.0.254:8765/v1/
      instance_type: 1B200.30V
      location: ICE-01
      spot: true
      os_volume: 46fc0247-8f65
      volumes: [a, b]
      hostname_prefix: gpu
      ssh_keys: [laptop key, 1234-abcd]
      tailscale_authkey: TS_WORKER_KEY
      provision_timeout: 120"""), {**CLOUD_ENV, "TS_WORKER_KEY": "tskey-auth-y"})
    p = inv.host("verda").provider
    assert p.api == "http://100.64.0.254:8765/v1"  # no trailing slash: paths are appended
    assert (p.spot, p.image, p.os_volume, p.volumes, p.ssh_keys, p.provision_timeout) == \
        (True, None, "46fc0247-8f65", ("a", "b"), ("laptop key", "1234-abcd"), 120.0)
    assert inv.secrets["TS_WORKER_KEY"].reveal() == "tskey-auth-y"


def test_provider_mistakes_each_one_sentence_with_its_line():
    found = problems(rented("""\
      name: aws
      instance_typ: 1H100
      location: fin-01
      spot: "no"
      image: ubuntu
      os_volume: v1
      volumes: [ok, ok, "bad id;"]
      tailscale_authkey: tskey-auth-abc
      provision_timeout: 1"""), CLOUD_ENV)
    assert found == [
        "hosts.yaml:10 hosts.verda.provider.instance_type: required key is missing (the instance type to rent, "
        "e.g. instance_type: 1H100.80S.30V)",
        "hosts.yaml:11 hosts.verda.provider.name: unknown provider 'aws' (expected one of: verda)",
        "hosts.yaml:12 hosts.verda.provider.instance_typ: unknown key 'instance_typ' (did you mean 'instance_type'?)",
        "hosts.yaml:13 hosts.verda.provider.location: 'fin-01' is not a location code (capital letters, digits "
        "and '-', e.g. FIN-01)",
        "hosts.yaml:14 hosts.verda.provider.spot: expected true or false, got a string 'no' (e.g. spot: False)",
        "hosts.yaml:16 hosts.verda.provider.os_volume: give either image or os_volume, not both (os_volume boots "
        "a kept OS volume; image installs a fresh one)",
        "hosts.yaml:17 hosts.verda.provider.volumes[1]: 'ok' is listed twice (list each volume id once)",
        "hosts.yaml:17 hosts.verda.provider.volumes[2]: 'bad id;' is not a volume id (the data volume's id "
        "(`GET /volumes`); it is attached and never deleted by this tool)",
        "hosts.yaml:18 hosts.verda.provider.tailscale_authkey: 'tskey-auth-abc' is not a secret name (the NAME of "
        "the secret holding the auth key (environment variable or secrets.env_file entry), e.g. TAILSCALE_AUTHKEY; "
        "never the key itself)",
        "hosts.yaml:19 hosts.verda.provider.provision_timeout: 1 is out of range (expected a number of seconds "
        "from 10 to 7200)",
    ]


def test_a_rented_host_has_no_fixed_address_and_is_a_worker_only():
    text = rented(extra="    address: 1.2.3.4\n    tailscale_ip: 100.64.0.9\n").replace(
        "    roles: [worker]\n    gpu: required", "    roles: [worker]")
    found = problems(text, CLOUD_ENV)
    assert found == [
        "hosts.yaml:12 hosts.verda.address: verda is rented (provider:), so its address comes from the instance "
        "start-all creates (remove address: it is recorded in .comfyume-fab/instances/verda.json, never written "
        "into hosts.yaml)",
        "hosts.yaml:13 hosts.verda.tailscale_ip: verda is rented (provider:), so its tailscale_ip comes from the "
        "instance start-all creates (remove tailscale_ip: it is recorded in .comfyume-fab/instances/verda.json, "
        "never written into hosts.yaml)",
    ]
    single = """\
mode: single-server-gpu
hosts:
  box:
    roles: [app, worker]
    provider: {instance_type: 1H100.80S.30V}
"""
    assert "hosts.yaml:4 hosts.box.roles: box is rented (provider:) but has roles [app, worker] (only a worker " \
           "host is rented and deleted: give it roles: [worker] and keep the app host always on)" in \
           problems(single, CLOUD_ENV)


def test_provider_is_a_mapping():
    assert problems(rented("").replace("    provider:\n", "    provider: verda\n"), CLOUD_ENV) == [
        "hosts.yaml:10 hosts.verda.provider: expected a mapping, got a string 'verda' (e.g. provider: {name: verda, "
        "instance_type: 1H100.80S.30V, location: FIN-01}; see docs/provider.md)"]


def test_secrets_of_a_rented_host_are_required_by_name():
    found = problems(rented(BASIC + "\n      tailscale_authkey: TS_KEY"), ENV)
    assert found == [
        "hosts.yaml:1 secrets: VERDA_CLIENT_ID is not set (export VERDA_CLIENT_ID=... or name an env file that has "
        "it in secrets.env_file)",
        "hosts.yaml:1 secrets: VERDA_CLIENT_SECRET is not set (export VERDA_CLIENT_SECRET=... or name an env file "
        "that has it in secrets.env_file)",
        "hosts.yaml:1 secrets: TS_KEY is not set (export TS_KEY=... or name an env file that has it in "
        "secrets.env_file)",
    ]
    assert all("cid" not in line and "csecret" not in line for line in found)


def test_autostop_mistakes():
    found = problems(rented(extra="    autostop: {idle: 10s, max_lifetime: 12 hours, after: 1h}\n"), CLOUD_ENV)
    assert found == [
        "hosts.yaml:13 hosts.verda.autostop.after: unknown key 'after' (expected one of: idle, max_lifetime)",
        "hosts.yaml:13 hosts.verda.autostop.idle: 10s is shorter than 1 minute(s) (give 1m or more: the app host's "
        "timer looks once a minute)",
        "hosts.yaml:13 hosts.verda.autostop.max_lifetime: '12 hours' is not a duration (a number and a unit: s, m, "
        "h or d, e.g. 30m, 12h or 1h30m)",
    ]
    assert problems(rented(extra="    autostop: {max_lifetime: 2h}\n"), CLOUD_ENV) == [
        "hosts.yaml:13 hosts.verda.autostop.idle: required key is missing (how long the queue must be idle before "
        "the instance is deleted, e.g. idle: 30m)"]


def test_autostop_needs_a_rented_host():
    text = """\
mode: dual-server
hosts:
  mello: {address: mello, tailscale_ip: 100.99.216.71, roles: [app]}
  verda:
    address: verda
    roles: [worker]
    autostop: {idle: 1m}
"""
    assert problems(text) == [
        "hosts.yaml:7 hosts.verda.autostop: autostop deletes a rented instance, but verda has no provider section "
        "(add provider: (see docs/provider.md), or remove autostop)"]


def test_durations():
    assert [seconds_of(t) for t in ("30m", "12h", "1h30m", "90s", "1d", "", "m", "1.5h")] == \
        [1800, 43200, 5400, 90, 86400, None, None, None]
    inv = load(rented(extra="    autostop: {idle: 60}\n"), CLOUD_ENV)  # plain seconds
    assert inv.host("verda").autostop == model.Autostop(idle_s=60, max_lifetime_s=None)


def test_plan_and_dry_run_need_no_cloud_secrets():
    from comfyume_fab.inventory import load_inventory
    with open("hosts.yaml", "w") as fh:
        fh.write(rented())
    inv = load_inventory("hosts.yaml", environ={}, need_secrets=False)
    assert str(inv.secrets["VERDA_CLIENT_ID"]) == "unset"
