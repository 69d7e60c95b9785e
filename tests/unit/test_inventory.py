"""hosts.yaml loading: every validation message, exactly; all problems at once; no tracebacks."""
from __future__ import annotations

import json
import logging
import os

import pytest

from comfyume_fab.errors import ConfigError
from comfyume_fab.inventory import load_inventory
from comfyume_fab.inventory.secrets import Secret, parse_env_text
from tests.support import DUAL, ENV, load_here as load, problems


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    """Every test works in its own folder, so messages start with the path as given: hosts.yaml."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


# --- a good file ---------------------------------------------------------------------------------


def test_dual_server_defaults():
    inv = load(DUAL)
    assert inv.path == "hosts.yaml"
    assert inv.mode == "dual-server" and inv.project == "comfyume" and inv.num_users == 20
    assert inv.images.frontend == "comfyume-frontend:v0.11.0" and inv.images.redis == "redis:7-alpine"
    assert (inv.ports.redis, inv.ports.queue_manager, inv.ports.admin, inv.ports.frontend_base,
            inv.ports.worker_comfyui) == (6379, 3000, 8080, 8188, 8300)
    assert (inv.worker.poll_interval, inv.worker.heartbeat_timeout, inv.worker.provider) == (2, 60, "verda")
    assert (inv.timeouts.connect, inv.timeouts.command, inv.timeouts.health, inv.timeouts.redis,
            inv.timeouts.probe, inv.timeouts.lock_wait) == (10, 120, 180, 5, 60, 600)
    assert (inv.health.interval, inv.health.start_period) == ("5s", "10s")
    assert inv.probe.workflow is None and inv.probe.workflow_graph is None  # the probe's built-in graph
    assert inv.ssh.accept_new_host_keys is False
    assert inv.ssh.known_hosts == os.path.expanduser("~/.ssh/known_hosts")
    mello, verda = inv.hosts
    assert (mello.name, mello.roles, mello.gpu, mello.workdir, mello.worker_id, mello.line) == \
        ("mello", ("app",), "none", "comfyume", None, 3)
    assert (verda.name, verda.roles, verda.gpu, verda.worker_id, verda.line) == \
        ("verda", ("worker",), "auto", "worker-1", 7)
    assert verda.user is None and verda.port is None and verda.identity_file is None
    assert inv.app_host is mello and inv.worker_hosts == (verda,)
    assert inv.host("verda") is verda
    assert inv.line_of("hosts.verda.roles[0]") == 9
    assert inv.line_of(("hosts", "verda", "gpu")) == 7  # absent: its host's line
    assert inv.secrets["REDIS_PASSWORD"] == Secret("s3cret-redis-pw")


def test_repo_hosts_yaml_is_valid_and_dual_server():
    here = os.path.dirname(os.path.abspath(__file__))
    inv = load_inventory(os.path.join(here, "..", "..", "hosts.yaml"), environ=ENV)
    assert inv.mode == "dual-server"
    assert [(h.name, h.roles, h.gpu, h.user) for h in inv.hosts] == \
        [("mello", ("app",), "none", "dev"), ("verda", ("worker",), "required", "root")]
    assert inv.app_host.tailscale_ip == "100.99.216.71"


def test_worker_ids_default_in_order_and_skip_taken():
    inv = load("""\
mode: dual-server
hosts:
  mello: {address: mello, tailscale_ip: 100.64.0.1, roles: [app]}
  a: {address: a, roles: [worker]}
  b: {address: b, roles: [worker], worker_id: worker-1}
  c: {address: c, roles: [worker]}
""")
    assert [h.worker_id for h in inv.worker_hosts] == ["worker-2", "worker-1", "worker-3"]


def test_unknown_host_suggests():
    inv = load(DUAL)
    with pytest.raises(ConfigError) as info:
        inv.host("verd")
    assert info.value.problems == ["hosts.yaml: unknown host 'verd' (did you mean 'verda'? hosts in hosts.yaml: "
                                   "mello, verda)"]


def test_all_settings_read():
    workflow = {"3": {"class_type": "EmptyImage", "inputs": {"width": 8}}}
    with open("wf.json", "w") as fh:
        fh.write(__import__("json").dumps(workflow))
    with open("id_test", "w") as fh:
        fh.write("key")
    inv = load("""\
mode: single-server-cpu
project: lab-1
num_users: 7
images: {worker: local/worker:dev}
ports: {redis: 16379, frontend_base: 9000}
worker: {poll_interval: 3, heartbeat_timeout: 30, provider: local}
timeouts: {connect: 2.5, lock_wait: 30}
health: {interval: 500ms, start_period: 1m}
probe: {workflow: wf.json}
ssh: {known_hosts: kh, accept_new_host_keys: true}
hosts:
  box: {address: 10.0.0.5, user: dev, port: 2222, identity_file: id_test, roles: [worker, app],
        workdir: ~/srv/comfyume, worker_id: w-one}
""")
    assert (inv.project, inv.num_users, inv.images.worker, inv.ports.redis, inv.ports.frontend_base) == \
        ("lab-1", 7, "local/worker:dev", 16379, 9000)
    assert (inv.worker.poll_interval, inv.worker.provider, inv.timeouts.connect, inv.timeouts.lock_wait) == \
        (3, "local", 2.5, 30)
    assert (inv.health.interval, inv.health.start_period) == ("500ms", "1m")
    assert inv.probe.workflow == os.path.abspath("wf.json") and inv.probe.workflow_graph == workflow
    assert inv.ssh.known_hosts == os.path.abspath("kh") and inv.ssh.accept_new_host_keys is True
    box = inv.hosts[0]
    assert (box.address, box.user, box.port, box.identity_file, box.roles, box.gpu, box.workdir,
            box.worker_id) == ("10.0.0.5", "dev", 2222, os.path.abspath("id_test"), ("app", "worker"),
                               "auto", "~/srv/comfyume", "w-one")


# --- every message, exactly ----------------------------------------------------------------------

CASES = {
    "unknown role": (DUAL.replace("roles: [worker]", "roles: [wroker]"),
                     ["hosts.yaml:9 hosts.verda.roles[0]: unknown role 'wroker' (expected one of: app, worker)"]),
    "unknown key suggestion": (DUAL.replace("    address: verda\n", "    address: verda\n    tailscale_iip: 1.2.3.4\n"),
                               ["hosts.yaml:9 hosts.verda.tailscale_iip: unknown key 'tailscale_iip' "
                                "(did you mean 'tailscale_ip'?)"]),
    "unknown top key": ("theme: red\n" + DUAL,
                        ["hosts.yaml:1 theme: unknown key 'theme' (expected one of: mode, engine, project, num_users, "
                         "images, ports, worker, timeouts, rollout, health, probe, serverless, ssh, secrets, hosts)"]),
    "unknown key in section": (DUAL + "ports: {admn: 9}\n",
                               ["hosts.yaml:10 ports.admn: unknown key 'admn' (did you mean 'admin'?)"]),
    "section not a mapping": (DUAL + "ports: 8080\n",
                              ["hosts.yaml:10 ports: expected a mapping, got an integer (e.g. redis: 6379)"]),
    "string for int": (DUAL + "num_users: '20'\n",
                       ["hosts.yaml:10 num_users: expected an integer, got a string '20' (e.g. num_users: 20)"]),
    "bool is not int": (DUAL + "ports: {redis: true}\n",
                        ["hosts.yaml:10 ports.redis: expected an integer, got a boolean True (e.g. redis: 6379)"]),
    "float is not int": (DUAL + "num_users: 2.5\n",
                         ["hosts.yaml:10 num_users: expected an integer, got a number 2.5 (e.g. num_users: 20)"]),
    "int for string": (DUAL + "images: {redis: 7}\n",
                       ["hosts.yaml:10 images.redis: expected a string, got an integer 7 (e.g. redis: redis:7-alpine)"]),
    "bool expected": (DUAL + "ssh: {accept_new_host_keys: 'yes'}\n",
                      ["hosts.yaml:10 ssh.accept_new_host_keys: expected true or false, got a string 'yes' "
                       "(e.g. accept_new_host_keys: False)"]),
    "num_users range": (DUAL + "num_users: 0\n",
                        ["hosts.yaml:10 num_users: 0 is out of range (expected an integer from 1 to 200)"]),
    "port range": (DUAL + "ports:\n  redis: 70000\n  admin: 0\n",
                   ["hosts.yaml:11 ports.redis: 70000 is out of range (expected a port from 1 to 65535)",
                    "hosts.yaml:12 ports.admin: 0 is out of range (expected a port from 1 to 65535)"]),
    "ssh port range": (DUAL.replace("    address: verda\n", "    address: verda\n    port: 65536\n"),
                       ["hosts.yaml:9 hosts.verda.port: 65536 is out of range (expected a port from 1 to 65535)"]),
    "timeout not positive": (DUAL + "timeouts: {connect: 0, probe: -1}\n",
                             ["hosts.yaml:10 timeouts.connect: 0 is not greater than 0 "
                              "(give a number of seconds greater than 0)",
                              "hosts.yaml:10 timeouts.probe: -1 is not greater than 0 "
                              "(give a number of seconds greater than 0)"]),
    "heartbeat not int": (DUAL + "worker: {heartbeat_timeout: 1.5}\n",
                          ["hosts.yaml:10 worker.heartbeat_timeout: expected an integer, got a number 1.5 "
                           "(e.g. heartbeat_timeout: 60)"]),
    "unknown provider": (DUAL + "worker: {provider: aws}\n",
                         ["hosts.yaml:10 worker.provider: unknown provider 'aws' "
                          "(expected one of: verda, runpod, modal, local)"]),
    "unknown mode": (DUAL.replace("dual-server", "dual"),
                     ["hosts.yaml:1 mode: unknown mode 'dual' (expected one of: frontend-testing, dual-server, "
                      "single-server-gpu, single-server-cpu, serverless)"]),
    "missing mode": (DUAL.replace("mode: dual-server\n", ""),
                     ["hosts.yaml:1 mode: required key is missing (one of: frontend-testing, dual-server, "
                      "single-server-gpu, single-server-cpu, serverless)"]),
    "empty mode": (DUAL.replace("mode: dual-server", "mode:"),
                   ["hosts.yaml:1 mode: has no value (one of: frontend-testing, dual-server, "
                    "single-server-gpu, single-server-cpu, serverless)"]),
    "missing hosts": ("mode: dual-server\n",
                      ["hosts.yaml:1 hosts: required key is missing (list each machine under hosts:, "
                       "see docs/inventory.md)"]),
    "empty hosts": ("mode: dual-server\nhosts: {}\n",
                    ["hosts.yaml:2 hosts: expected a mapping of host names, got an empty one "
                     "(e.g. hosts: {mello: {address: mello, roles: [app]}})"]),
    "hosts a list": ("mode: dual-server\nhosts: [mello]\n",
                     ["hosts.yaml:2 hosts: expected a mapping of host names, got something else "
                      "(e.g. hosts: {mello: {address: mello, roles: [app]}})"]),
    "host not a mapping": (DUAL + "  extra: 5\n",
                           ["hosts.yaml:10 hosts.extra: expected a mapping of host settings, got an integer 5 "
                            "(e.g. extra: {address: extra, roles: [worker]})"]),
    "missing address": (DUAL.replace("    address: verda\n", ""),
                        ["hosts.yaml:7 hosts.verda.address: required key is missing "
                         "(the SSH address: a hostname, IP address or ssh_config alias)"]),
    "missing roles": (DUAL.replace("    roles: [worker]\n", ""),
                      ["hosts.yaml:7 hosts.verda.roles: required key is missing "
                       "(a list of roles, expected one of: app, worker)"]),
    "roles not a list": (DUAL.replace("roles: [worker]", "roles: worker"),
                         ["hosts.yaml:9 hosts.verda.roles: expected a list, got a string 'worker' "
                          "(e.g. roles: [worker])"]),
    "roles empty": (DUAL.replace("roles: [worker]", "roles: []"),
                    ["hosts.yaml:9 hosts.verda.roles: no roles given (a list of roles, expected one of: app, worker)"]),
    "role not a string": (DUAL.replace("roles: [worker]", "roles: [1]"),
                          ["hosts.yaml:9 hosts.verda.roles[0]: expected a role name, got an integer 1 "
                           "(expected one of: app, worker)"]),
    "role twice": (DUAL.replace("roles: [worker]", "roles: [worker, worker]"),
                   ["hosts.yaml:9 hosts.verda.roles[1]: role 'worker' is listed twice (list each role once)"]),
    "duplicate host": (DUAL + "  verda:\n    address: other\n    roles: [worker]\n",
                       ["hosts.yaml:10 hosts.verda: duplicate host 'verda', first defined on line 7 "
                        "(give each host a unique name)"]),
    "duplicate key": (DUAL.replace("    address: verda\n", "    address: verda\n    address: verda2\n"),
                      ["hosts.yaml:9 hosts.verda.address: duplicate key 'address', first defined on line 8 "
                       "(remove one: YAML keeps only one of them)"]),
    "host name": (DUAL.replace("  verda:", "  Verda;x:"),
                  ["hosts.yaml:7 hosts.Verda;x: host name 'Verda;x' is not allowed "
                   "(use lowercase letters, digits, '-' and '_', starting with a letter or digit)"]),
    "project name": (DUAL + "project: 'My App'\n",
                     ["hosts.yaml:10 project: project name 'My App' is not allowed "
                      "(use lowercase letters, digits, '-' and '_', starting with a letter or digit)"]),
    "worker id name": (DUAL.replace("roles: [worker]", "roles: [worker]\n    worker_id: '$(id)'"),
                       ["hosts.yaml:10 hosts.verda.worker_id: worker id '$(id)' is not allowed "
                        "(use lowercase letters, digits, '-' and '_', starting with a letter or digit)"]),
    "address metachar": (DUAL.replace("address: verda", "address: 'verda; rm -rf ~'"),
                         ["hosts.yaml:8 hosts.verda.address: 'verda; rm -rf ~' is not a hostname, IP address or "
                          "ssh_config alias (letters, digits, '-', '.' and '_' only, not starting with '-')"]),
    "address option": (DUAL.replace("address: verda", "address: -oProxyCommand=x"),
                       ["hosts.yaml:8 hosts.verda.address: '-oProxyCommand=x' is not a hostname, IP address or "
                        "ssh_config alias (letters, digits, '-', '.' and '_' only, not starting with '-')"]),
    "user": (DUAL.replace("address: verda", "address: verda\n    user: 'ro ot'"),
             ["hosts.yaml:9 hosts.verda.user: 'ro ot' is not a valid login name "
              "(letters, digits, '.', '_' and '-', not starting with '-')"]),
    "tailscale ip": (DUAL.replace("100.99.216.71", "100.99.216"),
                     ["hosts.yaml:5 hosts.mello.tailscale_ip: '100.99.216' is not an IP address "
                      "(run 'tailscale ip -4' on that host and copy its address)"]),
    "same tailscale ip": (DUAL.replace("roles: [worker]", "roles: [worker]\n    tailscale_ip: 100.99.216.71"),
                          ["hosts.yaml:10 hosts.verda.tailscale_ip: 100.99.216.71 is also the tailscale_ip of mello "
                           "on line 5 (each host has its own tailnet address; run 'tailscale ip -4' on each)"]),
    "workdir": (DUAL.replace("roles: [worker]", "roles: [worker]\n    workdir: '../x;y'"),
                ["hosts.yaml:10 hosts.verda.workdir: '../x;y' is not a safe folder name (letters, digits and "
                 ". _ / ~ - only, no '..', not starting with '-'; a relative path starts at the login user's home)"]),
    "workdir dotdot": (DUAL.replace("roles: [worker]", "roles: [worker]\n    workdir: a/../../b"),
                       ["hosts.yaml:10 hosts.verda.workdir: 'a/../../b' is not a safe folder name (letters, digits "
                        "and . _ / ~ - only, no '..', not starting with '-'; a relative path starts at the login "
                        "user's home)"]),
    "gpu value": (DUAL.replace("roles: [worker]", "roles: [worker]\n    gpu: yes"),
                  ["hosts.yaml:10 hosts.verda.gpu: expected a string, got a boolean True (e.g. gpu: none)"]),
    "gpu unknown": (DUAL.replace("roles: [worker]", "roles: [worker]\n    gpu: cuda"),
                    ["hosts.yaml:10 hosts.verda.gpu: unknown gpu setting 'cuda' (expected one of: auto, required, none)"]),
    "gpu required on app": (DUAL.replace("roles: [app]", "roles: [app]\n    gpu: required"),
                            ["hosts.yaml:7 hosts.mello.gpu: gpu: required on mello, which has no worker role "
                             "(only the worker uses a GPU; write gpu: none, or add worker to roles)"]),
    "worker id on app": (DUAL.replace("roles: [app]", "roles: [app]\n    worker_id: worker-9"),
                         ["hosts.yaml:7 hosts.mello.worker_id: mello has no worker role, so worker_id is not used "
                          "(remove worker_id, or add worker to roles)"]),
    "same worker id": (DUAL + "  verda2:\n    address: verda2\n    roles: [worker]\n    worker_id: w\n"
                       "  verda3:\n    address: verda3\n    roles: [worker]\n    worker_id: w\n",
                       ["hosts.yaml:17 hosts.verda3.worker_id: worker id 'w' is also used by verda2 on line 13 "
                        "(give each worker its own id)"]),
    "image": (DUAL + "images: {worker: 'bad image'}\n",
              ["hosts.yaml:10 images.worker: 'bad image' is not an image reference "
               "(letters, digits and . _ / : @ - only, e.g. comfyume-worker:v0.11.0)"]),
    "duration": (DUAL + "health: {interval: 5 sec}\n",
                 ["hosts.yaml:10 health.interval: '5 sec' is not a compose duration "
                  "(a whole number and a unit: ms, s or m, e.g. 5s)"]),
    "duration as int": (DUAL + "health: {start_period: 10}\n",
                        ["hosts.yaml:10 health.start_period: expected a string, got an integer 10 "
                         "(e.g. start_period: 10s)"]),
    "identity file missing": (DUAL.replace("roles: [worker]", "roles: [worker]\n    identity_file: ~/no-such-key"),
                              ["hosts.yaml:10 hosts.verda.identity_file: '~/no-such-key' does not exist (check the "
                               "path and its permissions, or remove identity_file to let ssh_config choose the key)"]),
    "identity file dir": (DUAL.replace("roles: [worker]", "roles: [worker]\n    identity_file: ."),
                          ["hosts.yaml:10 hosts.verda.identity_file: '.' is a directory, not a file (check the "
                           "path and its permissions, or remove identity_file to let ssh_config choose the key)"]),
    "ssh config missing": (DUAL + "ssh: {config_file: nope.conf}\n",
                           ["hosts.yaml:10 ssh.config_file: 'nope.conf' does not exist (check the path and its "
                            "permissions, or remove config_file to use ~/.ssh/config)"]),
    "probe missing": (DUAL + "probe: {workflow: probe.json}\n",
                      ["hosts.yaml:10 probe.workflow: 'probe.json' does not exist (give an API-format workflow "
                       "JSON, relative to hosts.yaml, or remove probe.workflow to use the built-in "
                       "EmptyImage->SaveImage graph)"]),
    "endpoint not url": (DUAL + "serverless: {endpoint: 'ftp://x'}\n",
                         ["hosts.yaml:10 serverless.endpoint: 'ftp://x' is not an http(s) URL "
                          "(e.g. https://api.example.com/v2/ENDPOINT/run; no spaces or quotes)"]),
    "env_file not a string": (DUAL + "secrets: {env_file: 3}\n",
                              ["hosts.yaml:10 secrets.env_file: expected a string, got an integer 3 "
                               "(e.g. env_file: .secrets.env)"]),
    # ports
    "frontends past 65535": (DUAL + "ports: {frontend_base: 65530}\n",
                             ["hosts.yaml:10 ports.frontend_base: user020 would get port 65549, past 65535 "
                              "(lower frontend_base or num_users)"]),
    "port in frontend range": (DUAL + "ports: {admin: 8190}\n",
                               ["hosts.yaml:10 ports.admin: port 8190 clashes with the frontend ports 8188-8207 "
                                "of user001-user020 (pick a port outside 8188-8207, or move frontend_base)"]),
    "two equal ports": (DUAL + "ports:\n  redis: 7000\n  queue_manager: 7000\n",
                        ["hosts.yaml:12 ports.queue_manager: port 7000 is also ports.redis "
                         "(give each service its own port)"]),
    # modes and roles
    "dual with worker on app": (DUAL.replace("roles: [app]", "roles: [app, worker]"),
                                ["hosts.yaml:6 hosts.mello.roles: mode dual-server runs the worker on its own host, "
                                 "but mello has roles [app, worker] (give it roles: [app] and the worker another "
                                 "host, or use mode single-server-gpu)"]),
    "dual without app": (DUAL.replace("roles: [app]", "roles: [worker]"),
                         ["hosts.yaml:2 hosts: mode dual-server needs exactly one host with roles [app], found none "
                          "(add the app host, e.g. mello with roles: [app])"]),
    "dual with two apps": (DUAL.replace("roles: [worker]", "roles: [app]\n    tailscale_ip: 100.64.0.9"),
                           ["hosts.yaml:2 hosts: mode dual-server needs exactly one host with roles [app], found 2: "
                            "mello, verda (keep one app host)",
                            "hosts.yaml:2 hosts: mode dual-server needs at least one host with roles [worker], "
                            "found none (add the GPU host with roles: [worker], or use mode single-server-gpu)"]),
    "dual without tailscale ip": (DUAL.replace("    tailscale_ip: 100.99.216.71\n", ""),
                                  ["hosts.yaml:3 hosts.mello.tailscale_ip: mode dual-server needs a tailscale_ip on "
                                   "the app host (a remote worker reaches Redis and the queue manager at the app "
                                   "host's tailnet address)"]),
    "single on two hosts": (DUAL.replace("dual-server", "single-server-gpu"),
                            ["hosts.yaml:2 hosts: mode single-server-gpu runs everything on one host, found 2 hosts: "
                             "mello, verda (list one host with roles: [app, worker], or use mode dual-server)"]),
    "single with app only": ("mode: single-server-cpu\nhosts:\n  box:\n    address: box\n    roles: [app]\n",
                             ["hosts.yaml:5 hosts.box.roles: mode single-server-cpu needs roles [app, worker] on its "
                              "one host, found [app] (write roles: [app, worker])"]),
    "serverless with worker": (DUAL.replace("dual-server", "serverless") + "serverless: {endpoint: 'https://x.y/run'}\n",
                               ["hosts.yaml:9 hosts.verda.roles: mode serverless runs no worker, but verda has the "
                                "worker role (remove the worker role: the queue manager sends jobs to "
                                "serverless.endpoint)"]),
    "serverless without endpoint": ("mode: serverless\nhosts:\n  cpu:\n    address: cpu\n    roles: [app]\n",
                                    ["hosts.yaml:1 serverless.endpoint: mode serverless needs serverless.endpoints "
                                     "(or serverless.endpoint) (the URLs the queue manager sends jobs to, e.g. "
                                     "endpoints: {h200-spot: https://containers.datacrunch.io/DEPLOYMENT})"]),
    "frontend-testing with worker": ("mode: frontend-testing\nhosts:\n  box:\n    address: box\n    roles: [app, worker]\n",
                                     ["hosts.yaml:5 hosts.box.roles: mode frontend-testing runs no worker, but box has "
                                      "the worker role (remove the worker role: frontend-testing runs the UI only; "
                                      "use single-server-cpu to infer)"]),
    "frontend-testing two apps": ("mode: frontend-testing\nhosts:\n  a: {address: a, roles: [app]}\n"
                                  "  b: {address: b, roles: [app]}\n",
                                  ["hosts.yaml:2 hosts: mode frontend-testing needs exactly one host with roles [app], "
                                   "found 2: a, b (keep one host with roles: [app])"]),
    "serverless no app": ("mode: serverless\nserverless: {endpoint: 'https://x.y'}\nhosts:\n"
                          "  w: {address: w, roles: [worker]}\n",
                          ["hosts.yaml:3 hosts: mode serverless needs exactly one host with roles [app], found none "
                           "(keep one host with roles: [app])",
                           "hosts.yaml:4 hosts.w.roles: mode serverless runs no worker, but w has the worker role "
                           "(remove the worker role: the queue manager sends jobs to serverless.endpoint)"]),
    # yamlsrc key problems
    "non-scalar key": (DUAL + "? [a, b]\n: 1\n",
                       ["hosts.yaml:10 (top level): a key must be a plain word, not a list or mapping "
                        "(write each key as a plain word followed by ': ')"]),
    "merge key": ("base: &b {address: x}\n" + DUAL.replace("    address: verda\n", "    <<: *b\n"),
                  ["hosts.yaml:1 base: unknown key 'base' (expected one of: mode, engine, project, num_users, images, ports, "
                   "worker, timeouts, rollout, health, probe, serverless, ssh, secrets, hosts)",
                   "hosts.yaml:8 hosts.verda.address: required key is missing "
                   "(the SSH address: a hostname, IP address or ssh_config alias)",
                   "hosts.yaml:9 hosts.verda: merge keys ('<<') are not supported "
                   "(write each key as a plain word followed by ': ')"]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_message(name):
    text, expected = CASES[name]
    assert problems(text) == expected


def test_every_problem_at_once_in_file_order():
    text = """\
mode: dual-serverr
num_users: "20"
projectt: x
hosts:
  mello:
    address: "mel lo"
    roles: [app]
    tailscale_ip: 100.99.216
  verda:
    address: verda
    roles: [wroker]
"""
    assert problems(text, environ={}) == [
        "hosts.yaml:1 mode: unknown mode 'dual-serverr' (expected one of: frontend-testing, dual-server, "
        "single-server-gpu, single-server-cpu, serverless)",
        "hosts.yaml:1 secrets: REDIS_PASSWORD is not set (export REDIS_PASSWORD=... or name an env file that "
        "has it in secrets.env_file)",
        "hosts.yaml:2 num_users: expected an integer, got a string '20' (e.g. num_users: 20)",
        "hosts.yaml:3 projectt: unknown key 'projectt' (did you mean 'project'?)",
        "hosts.yaml:6 hosts.mello.address: 'mel lo' is not a hostname, IP address or ssh_config alias "
        "(letters, digits, '-', '.' and '_' only, not starting with '-')",
        "hosts.yaml:8 hosts.mello.tailscale_ip: '100.99.216' is not an IP address "
        "(run 'tailscale ip -4' on that host and copy its address)",
        "hosts.yaml:11 hosts.verda.roles[0]: unknown role 'wroker' (expected one of: app, worker)",
    ]


def test_unreadable_identity_file(monkeypatch):
    with open("key", "w") as fh:
        fh.write("x")
    real = os.open

    def refuse(p, *a, **k):  # the tests may run as root, which no file mode keeps out
        if str(p).endswith("/key"):
            raise PermissionError(13, "Permission denied")
        return real(p, *a, **k)
    monkeypatch.setattr(os, "open", refuse)
    assert problems(DUAL.replace("roles: [worker]", "roles: [worker]\n    identity_file: key")) == [
        "hosts.yaml:10 hosts.verda.identity_file: 'key' is not readable by this user (check the path and its "
        "permissions, or remove identity_file to let ssh_config choose the key)"]


@pytest.mark.parametrize("content, expected", [
    ('{"1": {"class_type": "X",\n "inputs": {}\n "x": 1}}',
     "hosts.yaml:10 probe.workflow: bad.json:3: not valid JSON: Expecting ',' delimiter "
     "(export it from ComfyUI with 'Export (API)')"),
    ("[1, 2]",
     "hosts.yaml:10 probe.workflow: bad.json is not an API-format workflow: the top level is not a non-empty "
     "JSON object of nodes (export it from ComfyUI with 'Export (API)'; each node needs class_type and inputs)"),
    ('{"1": {"inputs": {}}}',
     "hosts.yaml:10 probe.workflow: bad.json is not an API-format workflow: node '1' has no class_type and "
     "inputs (export it from ComfyUI with 'Export (API)'; each node needs class_type and inputs)"),
])
def test_probe_workflow_json(content, expected):
    with open("bad.json", "w") as fh:
        fh.write(content)
    assert problems(DUAL + "probe: {workflow: bad.json}\n") == [expected]


# --- malformed YAML: one line, never a traceback --------------------------------------------------

MALFORMED = {
    "tab": ("mode: x\n\tfoo: 1\n",
            "hosts.yaml:2: malformed YAML: found character '\\t' that cannot start any token while scanning for "
            "the next token (indent with spaces; YAML does not allow tabs for indentation)"),
    "unclosed quote": ('mode: "dual-server\nhosts: {}\n',
                       "hosts.yaml:1: malformed YAML: found unexpected end of stream while scanning a quoted scalar "
                       "(a quote was opened and never closed)"),
    "top-level list": ("- mode: dual-server\n",
                       "hosts.yaml:1: malformed YAML: the top level is a list, not a mapping "
                       "(the inventory is a mapping of keys such as 'mode:' and 'hosts:')"),
    "top-level scalar": ("dual-server\n",
                         "hosts.yaml:1: malformed YAML: the top level is a single value (str), not a mapping "
                         "(the inventory is a mapping of keys such as 'mode:' and 'hosts:')"),
    "empty": ("", "hosts.yaml:1: malformed YAML: the file is empty "
                  "(start with 'mode: dual-server' and a 'hosts:' mapping; see docs/inventory.md)"),
    "only comments": ("# nothing\n", "hosts.yaml:1: malformed YAML: the file is empty "
                                     "(start with 'mode: dual-server' and a 'hosts:' mapping; see docs/inventory.md)"),
    "colon in value": ("mode: a: b\n", "hosts.yaml:1: malformed YAML: mapping values are not allowed here "
                                      "(quote a value that contains ': ', or check the indentation of this key)"),
    "bad indentation": ("hosts:\n  a:\n    b: 1\n   c: 2\n",
                        "hosts.yaml:4: malformed YAML: expected <block end>, but found '<block mapping start>' "
                        "while parsing a block mapping (check the indentation: keys of one mapping must line up)"),
    "unclosed flow": ("roles: [app, worker\nmode: x\n",
                      "hosts.yaml:2: malformed YAML: expected ',' or ']', but got ':' while parsing a flow sequence "
                      "(close each '[' with ']' and each '{' with '}', and separate items with ', ')"),
    "two documents": ("mode: x\n---\nmode: y\n",
                      "hosts.yaml:2: malformed YAML: expected a single document in the stream, but found another "
                      "document (remove the '---' separator: the inventory is one YAML document)"),
    "undefined alias": ("mode: *x\n", "hosts.yaml:1: malformed YAML: found undefined alias 'x' "
                                     "(define each &anchor before its *alias, once)"),
    "duplicate anchor": ("a: &x 1\nb: &x 2\n", "hosts.yaml:2: malformed YAML: found duplicate anchor 'x' "
                                               "(define each &anchor before its *alias, once)"),
    "recursive alias": ("a: &x [*x]\n", "hosts.yaml:1: malformed YAML: an alias refers to itself "
                                        "(an &anchor cannot be used inside its own value)"),
    "python tag": ("mode: !!python/object:os.system x\n",
                   "hosts.yaml:1: malformed YAML: could not determine a constructor for the tag "
                   "'tag:yaml.org,2002:python/object:os.system' (remove the !tag or quote the value)"),
    "python tag on a list": ("mode: dual-server\nhosts: !!python/tuple [a]\n",
                             "hosts.yaml:2: malformed YAML: could not determine a constructor for the tag "
                             "'tag:yaml.org,2002:python/tuple' (remove the !tag or quote the value)"),
    "python tag on a mapping": ("mode: dual-server\nhosts:\n  a: !!python/object:os.system {address: a}\n",
                                "hosts.yaml:3: malformed YAML: could not determine a constructor for the tag "
                                "'tag:yaml.org,2002:python/object:os.system' (remove the !tag or quote the value)"),
    "own tag on a mapping": ("mode: dual-server\nhosts: !mine\n  a: {address: a}\n",
                             "hosts.yaml:2: malformed YAML: could not determine a constructor for the tag "
                             "'!mine' (remove the !tag or quote the value)"),
    "bad date": ("mode: 2001-02-30\n", "hosts.yaml:1: malformed YAML: '2001-02-30' is not a valid timestamp "
                                       "(quote the value to keep it as text)"),
    "control char": ("mode: a\x01\n", "hosts.yaml:1: malformed YAML: character U+0001 is not allowed "
                                      "(remove the control character; save the file as UTF-8 text)"),
    "alias bomb": ("a: &a [1,1,1,1,1,1,1,1,1,1]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
                   "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
                   "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\n",
                   "hosts.yaml:5: malformed YAML: more than 20000 values (aliases expand too far) "
                   "(an inventory is small; remove the nested aliases)"),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_yaml_is_one_line(name):
    text, expected = MALFORMED[name]
    assert problems(text) == [expected]


def test_not_utf8_and_missing_file():
    with open("hosts.yaml", "wb") as fh:
        fh.write(b"mode: dual-server\nhosts: \xff\n")
    with pytest.raises(ConfigError) as info:
        load_inventory("hosts.yaml", environ=ENV)
    assert info.value.problems == ["hosts.yaml:2: malformed YAML: the file is not UTF-8 text (save it as UTF-8)"]
    with pytest.raises(ConfigError) as info:
        load_inventory("nope.yaml", environ=ENV)
    assert info.value.problems == ["nope.yaml: cannot read the inventory: it does not exist "
                                   "(check the path, or name another with --hosts PATH or $COMFYUME_HOSTS)"]
    assert info.value.code == 2


@pytest.mark.parametrize("text", [
    "mode: [", "{", "hosts: {a: {roles: [}", "\t", "'", '"\\x"', "a: !!binary zz", "- - -", "? ?",
    "mode: dual-server\nhosts:\n  a: {address: a, roles: [app], tailscale_ip: 100.64.0.1}\n  b: [x]\n",
    "mode: dual-server\nhosts:\n  1: {address: 1, roles: [worker]}\n  2: null\n",
    "mode: dual-server\nhosts:\n  a:\n", "mode: 5\nhosts: 5\nports: [1]\nimages: 'x'\n",
    "num_users: .inf\n", "hosts: {a: {port: 1e9999}}\n", "x" * 5000 + ": 1\n",
])
def test_garbage_gives_config_error_only(text):
    with pytest.raises(ConfigError) as info:
        load(text)
    assert info.value.problems and all("\n" not in p for p in info.value.problems)


# --- secrets -------------------------------------------------------------------------------------

def test_secret_never_prints():
    secret = Secret("hunter2-$(x)")
    assert repr(secret) == str(secret) == f"{secret}" == f"{secret!r}" == f"{secret:>20}" == "***"
    assert "%s %r" % (secret, secret) == "*** ***"
    assert secret.reveal() == "hunter2-$(x)"
    assert secret == Secret("hunter2-$(x)") and secret != Secret("other") and secret != "hunter2-$(x)"
    assert len({secret, Secret("hunter2-$(x)")}) == 1
    with pytest.raises(AttributeError):
        secret._value = "x"
    with pytest.raises(TypeError):
        __import__("pickle").dumps(secret)


def test_inventory_host_and_logs_never_show_secrets(caplog):
    inv = load(DUAL)
    for text in (repr(inv), str(inv), f"{inv}", repr(inv.hosts), str(inv.secrets), repr(inv.app_host)):
        assert "s3cret-redis-pw" not in text and "s3cret-admin-pw" not in text
    assert "'REDIS_PASSWORD': ***" in repr(inv)
    with caplog.at_level(logging.INFO):
        logging.getLogger("t").info("secrets %s %r", inv.secrets["REDIS_PASSWORD"], inv.secrets)
    assert "s3cret-redis-pw" not in caplog.text and "***" in caplog.text


def test_env_var_beats_env_file_and_file_fills_gaps():
    with open(".secrets.env", "w") as fh:
        fh.write("# comment\n\nexport REDIS_PASSWORD='from-file'\nADMIN_PASSWORD=\"admin from file\"\n"
                 "SERVERLESS_API_KEY=key$(x);`y`\n")
    os.chmod(".secrets.env", 0o600)
    text = DUAL + "secrets: {env_file: .secrets.env}\n"
    inv = load(text, environ={"REDIS_PASSWORD": "from-env"})
    assert inv.secrets["REDIS_PASSWORD"].reveal() == "from-env"
    assert inv.secrets["ADMIN_PASSWORD"].reveal() == "admin from file"
    assert inv.secrets["SERVERLESS_API_KEY"].reveal() == "key$(x);`y`"
    assert inv.env_file == os.path.abspath(".secrets.env")
    inv = load(text, environ={"REDIS_PASSWORD": ""})  # an empty variable does not hide the file
    assert inv.secrets["REDIS_PASSWORD"].reveal() == "from-file"


def test_env_file_relative_to_inventory(tmp_path):
    os.mkdir("conf")
    with open("conf/s.env", "w") as fh:
        fh.write("REDIS_PASSWORD=r\nADMIN_PASSWORD=a\n")
    os.chmod("conf/s.env", 0o600)
    with open("conf/hosts.yaml", "w") as fh:
        fh.write(DUAL + "secrets: {env_file: s.env}\n")
    inv = load_inventory("conf/hosts.yaml", environ={})
    assert inv.secrets["REDIS_PASSWORD"].reveal() == "r"


SECRET_CASES = {
    "missing with env file": (DUAL + "secrets: {env_file: .secrets.env}\n", {},
                              ["hosts.yaml:10 secrets.env_file: '.secrets.env' does not exist (create it (mode 0600) "
                               "with lines like REDIS_PASSWORD=..., or remove secrets.env_file and export the "
                               "secrets instead)"]),
    "missing without env file": (DUAL, {"ADMIN_PASSWORD": "adm-secret-9"},
                                 ["hosts.yaml:1 secrets: REDIS_PASSWORD is not set "
                                  "(export REDIS_PASSWORD=... or name an env file that has it in secrets.env_file)"]),
    "empty redis password": (DUAL, {"REDIS_PASSWORD": "", "ADMIN_PASSWORD": "adm-secret-9"},
                             ["hosts.yaml:1 secrets: REDIS_PASSWORD is empty (Redis across the tailnet must always "
                              "require a password; set a non-empty value)"]),
    "empty admin password": (DUAL, {"REDIS_PASSWORD": "red-secret-9", "ADMIN_PASSWORD": ""},
                             ["hosts.yaml:1 secrets: ADMIN_PASSWORD is empty (an empty password lets anyone in; "
                              "set a non-empty value)"]),
    "quote in password": (DUAL, {"REDIS_PASSWORD": "it's-secret", "ADMIN_PASSWORD": "adm\nsecret"},
                          ["hosts.yaml:1 secrets: REDIS_PASSWORD contains a character that cannot be used (the env "
                           "file and the Redis config cannot carry single quotes, double quotes, backslashes, "
                           "newlines or other control characters safely; choose a value without them)",
                           "hosts.yaml:1 secrets: ADMIN_PASSWORD contains a character that cannot be used (the env "
                           "file and the Redis config cannot carry single quotes, double quotes, backslashes, "
                           "newlines or other control characters safely; choose a value without them)"]),
    "admin not needed for frontend-testing": ("mode: frontend-testing\nhosts:\n  a: {address: a, roles: [app]}\n",
                                              {"REDIS_PASSWORD": "r"}, None),
    "redis always needed": ("mode: frontend-testing\nhosts:\n  a: {address: a, roles: [app]}\n", {},
                            ["hosts.yaml:1 secrets: REDIS_PASSWORD is not set (export REDIS_PASSWORD=... or name "
                             "an env file that has it in secrets.env_file)"]),
}


@pytest.mark.parametrize("name", list(SECRET_CASES))
def test_secret_messages(name):
    text, environ, expected = SECRET_CASES[name]
    if expected is None:
        assert load(text, environ).secrets.keys() == {"REDIS_PASSWORD"}
        return
    got = problems(text, environ)
    assert got == expected
    for value in environ.values():
        if value:
            assert not any(value in line for line in got)


def test_missing_env_file_is_named_by_plan_and_refused_by_a_real_run():
    """A secrets file that does not exist: plan (no secrets needed) says so plainly, naming the file;
    a real run refuses with one sentence naming it."""
    from comfyume_fab.plan.planner import make_plan
    from comfyume_fab.plan.steps import render_json, render_text
    with open("hosts.yaml", "w") as fh:
        fh.write(DUAL + "secrets: {env_file: .secrets.env}\n")
    inv = load_inventory("hosts.yaml", environ={}, need_secrets=False)
    assert inv.env_file_missing
    path = os.path.abspath(".secrets.env")
    text = render_text(make_plan(inv))
    assert f"NOTE: the secrets file {path} does not exist" in text
    assert json.loads(render_json(make_plan(inv)))["missing_env_file"] == path
    with pytest.raises(ConfigError) as info:
        load_inventory("hosts.yaml", environ={})
    assert info.value.problems == [
        "hosts.yaml:10 secrets.env_file: '.secrets.env' does not exist (create it (mode 0600) with lines like "
        "REDIS_PASSWORD=..., or remove secrets.env_file and export the secrets instead)"]
    # Every secret exported: the file is not needed, and plan still says it is missing.
    inv = load_inventory("hosts.yaml", environ=ENV)
    assert inv.env_file_missing and "does not exist" in render_text(make_plan(inv))


def test_env_file_problems():
    with open(".secrets.env", "w") as fh:
        fh.write("REDIS_PASSWORD=ok\nthis is not a pair\nADMIN_PASSWORD='unclosed\n")
    os.chmod(".secrets.env", 0o600)
    assert problems(DUAL + "secrets:\n  env_file: .secrets.env\n", {}) == [
        "hosts.yaml:10 secrets: ADMIN_PASSWORD is not set (export ADMIN_PASSWORD=... or add it to .secrets.env)",
        "hosts.yaml:11 secrets.env_file: .secrets.env:2: expected KEY=value "
        "(write lines like REDIS_PASSWORD=...; '#' starts a comment)",
        "hosts.yaml:11 secrets.env_file: .secrets.env:3: ADMIN_PASSWORD: the value's opening quote is never closed "
        "(write lines like REDIS_PASSWORD=...; '#' starts a comment)",
    ]
    os.remove(".secrets.env")
    os.mkdir(".secrets.env")
    assert problems(DUAL + "secrets:\n  env_file: .secrets.env\n", ENV) == [
        "hosts.yaml:11 secrets.env_file: '.secrets.env' is a directory, not a file "
        "(name a regular file of KEY=value lines, mode 0600, owned by you)"]


def test_parse_env_text():
    parsed = parse_env_text("A=1\n B = ' spaced $(x) ' \n#C=3\nexport D=\"d\"\nE=\n")
    assert dict(parsed.values) == {"A": "1", "B": " spaced $(x) ", "D": "d", "E": ""}
    assert parsed.problems == ()


# --- issue 11: the holes a review found (each failed before its fix) -----------------------------

WD = "not a folder under the login user's home (give a relative path such as comfyume: it starts at the " \
     "login user's home; no leading '/', no '..', not the home itself)"


@pytest.mark.parametrize("workdir", ["/", "/etc", "/srv/comfyume", "~/", "~//etc", "~", ".", "./", "~/.", "~root/x",
                                     "a/~/b"])
def test_workdir_only_under_the_login_home(workdir):
    text = DUAL.replace("roles: [worker]", f"roles: [worker]\n    workdir: '{workdir}'")
    assert problems(text) == [f"hosts.yaml:10 hosts.verda.workdir: '{workdir}' is {WD}"]


@pytest.mark.parametrize("workdir", ["comfyume", "~/comfyume", "apps/comfyume", "./comfyume", "~/a/b.c_d-e"])
def test_workdir_relative_paths_are_kept(workdir):
    inv = load(DUAL.replace("roles: [worker]", f"roles: [worker]\n    workdir: '{workdir}'"))
    assert inv.host("verda").workdir == workdir


NEWLINE_CASES = {
    "user": (DUAL.replace("address: verda", 'address: verda\n    user: "root\\n"'),
             "hosts.yaml:9 hosts.verda.user: 'root\\n' is not a valid login name "
             "(letters, digits, '.', '_' and '-', not starting with '-')"),
    "project": (DUAL + 'project: "comfyume\\n"\n',
                "hosts.yaml:10 project: project name 'comfyume\\n' is not allowed "
                "(use lowercase letters, digits, '-' and '_', starting with a letter or digit)"),
    "address": (DUAL.replace("address: verda", 'address: "verda\\n"'),
                "hosts.yaml:8 hosts.verda.address: 'verda\\n' is not a hostname, IP address or ssh_config alias "
                "(letters, digits, '-', '.' and '_' only, not starting with '-')"),
    "worker id": (DUAL.replace("roles: [worker]", 'roles: [worker]\n    worker_id: "w1\\n"'),
                  "hosts.yaml:10 hosts.verda.worker_id: worker id 'w1\\n' is not allowed "
                  "(use lowercase letters, digits, '-' and '_', starting with a letter or digit)"),
    "image": (DUAL + 'images: {worker: "w:1\\n"}\n',
              "hosts.yaml:10 images.worker: 'w:1\\n' is not an image reference "
              "(letters, digits and . _ / : @ - only, e.g. comfyume-worker:v0.11.0)"),
    "duration": (DUAL + 'health: {interval: "5s\\n"}\n',
                 "hosts.yaml:10 health.interval: '5s\\n' is not a compose duration "
                 "(a whole number and a unit: ms, s or m, e.g. 5s)"),
    "workdir": (DUAL.replace("roles: [worker]", 'roles: [worker]\n    workdir: "comfyume\\n"'),
                "hosts.yaml:10 hosts.verda.workdir: 'comfyume\\n' is not a safe folder name (letters, digits and "
                ". _ / ~ - only, no '..', not starting with '-'; a relative path starts at the login user's home)"),
    "endpoint": (DUAL + 'serverless: {endpoint: "https://x.y/run\\n"}\n',
                 "hosts.yaml:10 serverless.endpoint: 'https://x.y/run\\n' is not an http(s) URL "
                 "(e.g. https://api.example.com/v2/ENDPOINT/run; no spaces or quotes)"),
}


@pytest.mark.parametrize("name", list(NEWLINE_CASES))
def test_a_trailing_newline_never_matches(name):
    text, expected = NEWLINE_CASES[name]
    assert problems(text) == [expected]


@pytest.mark.parametrize("value, shown", [(".nan", "nan"), (".inf", "inf"), ("-.inf", "-inf")])
def test_timeouts_are_finite(value, shown):
    assert problems(DUAL + f"timeouts: {{command: {value}}}\nworker: {{poll_interval: {value}}}\n") == [
        f"hosts.yaml:10 timeouts.command: {shown} is not a finite number (e.g. command: 120)",
        f"hosts.yaml:11 worker.poll_interval: {shown} is not a finite number (e.g. poll_interval: 2)"]


def test_timeouts_have_a_minimum_and_stay_floats():
    assert problems(DUAL + "timeouts: {connect: 0.5, redis: 0.05}\n") == [
        "hosts.yaml:10 timeouts.connect: 0.5 is below the minimum of 1 s (an SSH handshake over a real network "
        "needs about a second; give 1 or more)",
        "hosts.yaml:10 timeouts.redis: 0.05 is below the minimum of 0.1 s (a Redis round trip needs more than "
        "0.1 s; give 0.1 or more)"]
    inv = load(DUAL + "timeouts: {connect: 1.5, command: 30}\n")
    assert inv.timeouts.connect == 1.5 and type(inv.timeouts.command) is float and inv.timeouts.command == 30.0
    from comfyume_fab.host.session import target
    assert target(inv, inv.hosts[0]).connect_timeout == 1.5  # not int(1.5) == 1, never 0 ("no timeout")


def test_ipv6_scope_ids_are_refused():
    text = DUAL.replace("address: mello", "address: '::1%eth0'").replace("100.99.216.71", "'fe80::1%25x'")
    assert problems(text) == [
        "hosts.yaml:4 hosts.mello.address: '::1%eth0' has an IPv6 scope id ('%...') (give a routable address "
        "without '%': a scope id names a local interface, not a host)",
        "hosts.yaml:5 hosts.mello.tailscale_ip: 'fe80::1%25x' has an IPv6 scope id ('%...') (give a routable "
        "address without '%': a scope id names a local interface, not a host)"]


def test_two_hosts_with_one_address_are_refused():
    assert problems(DUAL.replace("address: verda", "address: MELLO")) == [
        "hosts.yaml:8 hosts.verda.address: MELLO is also the address of mello on line 4 (two entries for one "
        "machine would remove each other's containers (compose removes a project's orphans); list each machine "
        "once, with all its roles (e.g. mode single-server-gpu for one machine))"]
    inv = load(DUAL.replace("address: verda", "address: mello\n    port: 2222"))  # another sshd: allowed
    assert [h.port for h in inv.hosts] == [None, 2222]


def special(kind: str, tmp_path) -> str:
    """A path that is not a small regular file: a device, a FIFO (nobody writes), a folder, a big file."""
    if kind == "device":
        return "/dev/zero"
    path = tmp_path / f"special-{kind}"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dir":
        path.mkdir()
    else:
        path.write_bytes(b"#" * (5 * 1024 * 1024))
        os.chmod(path, 0o600)
    return str(path)


SPECIAL_WHY = {"device": "is a device, not a regular file", "fifo": "is a FIFO (named pipe), not a regular file",
               "dir": "is a directory, not a file", "huge": "is 5242880 bytes, more than the {cap} bytes allowed"}


@pytest.mark.parametrize("kind", list(SPECIAL_WHY))
def test_the_inventory_must_be_a_small_regular_file(kind, tmp_path):
    path = special(kind, tmp_path)
    with pytest.raises(ConfigError) as info:
        load_inventory(path, environ=ENV)
    why = SPECIAL_WHY[kind].format(cap=1048576)
    assert info.value.problems == [f"{path}: cannot read the inventory: it {why} "
                                   "(check the path, or name another with --hosts PATH or $COMFYUME_HOSTS)"]


@pytest.mark.parametrize("kind", list(SPECIAL_WHY))
def test_named_files_must_be_small_regular_files(kind, tmp_path):
    path = special(kind, tmp_path)
    text = DUAL + f"secrets: {{env_file: '{path}'}}\nprobe: {{workflow: '{path}'}}\n"
    got = problems(text.replace("roles: [worker]", f"roles: [worker]\n    identity_file: '{path}'"))
    assert got == [
        f"hosts.yaml:10 hosts.verda.identity_file: '{path}' {SPECIAL_WHY[kind].format(cap=1048576)} (check the "
        "path and its permissions, or remove identity_file to let ssh_config choose the key)",
        f"hosts.yaml:11 secrets.env_file: '{path}' {SPECIAL_WHY[kind].format(cap=65536)} (name a regular file "
        "of KEY=value lines, mode 0600, owned by you)",
        f"hosts.yaml:12 probe.workflow: '{path}' {SPECIAL_WHY[kind].format(cap=4194304)} (give an API-format "
        "workflow JSON, relative to hosts.yaml, or remove probe.workflow to use the built-in "
        "EmptyImage->SaveImage graph)"]


def test_deep_nesting_is_a_clean_message():
    deep = "[" * 50000 + "]" * 50000
    assert problems(f"mode: dual-server\nx: {deep}\n") == [
        "hosts.yaml:1: malformed YAML: the values are nested too deeply (an inventory needs only a few levels)"]
    with open("wf.json", "w") as fh:
        fh.write(deep)
    assert problems(DUAL + "probe: {workflow: wf.json}\n") == [
        "hosts.yaml:10 probe.workflow: 'wf.json' is nested too deeply to be a workflow "
        "(export it from ComfyUI with 'Export (API)')"]


def test_long_strings_are_refused():
    assert problems(DUAL + f"project: {'a' * 64}\n") == [
        "hosts.yaml:10 project: project name is 64 characters long (at most 63)"]
    assert problems(DUAL + f"images: {{worker: {'a' * 5000}}}\n") == [
        "hosts.yaml:10 images.worker: the value is 5000 characters long, more than the 4096 allowed "
        "(e.g. worker: comfyume-worker:v0.11.0)"]
    text = DUAL + f"project: {'a' * 10_000_000}\n"
    with pytest.raises(ConfigError) as info:  # a 10 MB project name: the file itself is refused
        load(text)
    assert info.value.problems == [f"hosts.yaml: cannot read the inventory: it is {len(text)} bytes, more than "
                                   "the 1048576 bytes allowed (check the path, or name another with --hosts PATH or $COMFYUME_HOSTS)"]


SECRETS_TEXT = DUAL + "secrets: {env_file: s.env}\n"


def write_secrets(data: bytes, mode: int = 0o600) -> str:
    with open("s.env", "wb") as fh:
        fh.write(data)
    os.chmod("s.env", mode)
    return os.path.abspath("s.env")


@pytest.mark.parametrize("mode, who", [(0o644, "its group and other users"), (0o640, "its group"),
                                       (0o602, "other users")])
def test_a_secrets_file_others_can_read_is_refused(mode, who):
    full = write_secrets(b"REDIS_PASSWORD=r\nADMIN_PASSWORD=a\n", mode)
    assert problems(SECRETS_TEXT, {}) == [
        f"hosts.yaml:10 secrets.env_file: 's.env' can be read or changed by {who} (mode {mode:04o}) (run "
        f"`chmod 600 {full}`; like ssh with a private key, a secrets file that others can read is refused)"]


def test_a_secrets_file_of_another_user_is_refused(monkeypatch):
    full = write_secrets(b"REDIS_PASSWORD=r\nADMIN_PASSWORD=a\n")
    me = os.geteuid()
    monkeypatch.setattr(os, "geteuid", lambda: me + 1)  # the file is then someone else's
    assert problems(SECRETS_TEXT, {}) == [
        f"hosts.yaml:10 secrets.env_file: 's.env' is owned by uid {me}, not by this user (uid {me + 1}) "
        f"(a secrets file must be yours alone: `chown {me + 1} {full}` and `chmod 600 {full}`)"]


def test_a_secrets_file_that_is_not_utf8_is_refused():
    write_secrets(b"REDIS_PASSWORD=ok\nADMIN_PASSWORD=caf\xe9\n")
    assert problems(SECRETS_TEXT, {}) == [
        "hosts.yaml:10 secrets.env_file: 's.env' is not UTF-8 text (line 2) (save it as UTF-8; a secret is "
        "never guessed from bytes that are not text)"]


def test_a_missing_secrets_file_is_named_only_when_it_was_needed():
    assert problems(SECRETS_TEXT, {"ADMIN_PASSWORD": "a"}) == [
        "hosts.yaml:10 secrets.env_file: 's.env' does not exist (create it (mode 0600) with lines like "
        "REDIS_PASSWORD=..., or remove secrets.env_file and export the secrets instead)"]
    assert load(SECRETS_TEXT).secrets["REDIS_PASSWORD"].reveal() == "s3cret-redis-pw"  # all exported: fine


def test_poll_interval_must_be_whole_seconds():
    """The real worker does int(WORKER_POLL_INTERVAL): 0.5 would crash it at start, so it is refused."""
    assert problems(DUAL + "worker: {poll_interval: 0.5}\n") == [
        "hosts.yaml:10 worker.poll_interval: 0.5 is not a whole number of seconds: the worker reads "
        "WORKER_POLL_INTERVAL with int() and would not start (give a whole number of seconds, e.g. poll_interval: 1)"]
    assert load(DUAL + "worker: {poll_interval: 3.0}\n").worker.poll_interval == 3
