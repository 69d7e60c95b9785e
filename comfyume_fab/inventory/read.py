"""Reading and validating each section of hosts.yaml into the dataclasses of `inventory`.

Every check records its problem on a `Checker` and goes on, so one run reports the whole file.
The cross-host rules (modes vs roles, ports) live in `inventory_rules`.
"""
from __future__ import annotations

import json
import os
import re
from types import MappingProxyType
from typing import Any, Mapping

from . import model
from ..errors import ConfigError
from .checker import (DURATION_RE, NAME_HINT, URL_RE, Checker, expand, in_range, kind_of, name_check,
                      one_of, pattern, positive, readable_file, seconds)
from .hosts import assign_worker_ids, read_host
from .imagesrc import check_hosts as check_image_hosts, read_images
from .rules import check_modes, check_ports, check_secrets, check_swarm, rented_secrets
from .yamlsrc import FileProblem, YamlDoc, load_yaml_file, read_regular

TOP_KEYS = ("mode", "engine", "project", "num_users", "images", "ports", "worker", "timeouts", "rollout", "health",
            "probe", "serverless", "ssh", "secrets", "hosts")
CURRENCY_RE = re.compile(r"^[A-Z]{3}$")
DEPLOYMENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
MAX_WORKFLOW_BYTES = 4 * 1024 * 1024  # an API-format workflow is KiBs; /dev/zero is refused


def read_inventory(doc: YamlDoc, shown: str, environ: Mapping[str, str], need_secrets: bool = True) -> model.Inventory:
    """Validate `doc` (the parsed file shown as `shown`); the Inventory, or ConfigError with all problems."""
    c = Checker(doc, shown)
    base = os.path.dirname(os.path.abspath(shown))
    for dup in doc.duplicates:
        what = "host" if dup.path[:1] == ("hosts",) and len(dup.path) == 2 else "key"
        hint = "give each host a unique name" if what == "host" else "remove one: YAML keeps only one of them"
        c.err(dup.path, f"duplicate {what} '{dup.path[-1]}', first defined on line {dup.first_line}", hint,
              line=dup.line)
    for path, line, what in doc.key_problems:
        c.err(path, what, "write each key as a plain word followed by ': '", line=line)

    top = c.mapping((), doc.data, TOP_KEYS, "mode: dual-server")
    mode = c.get(top, (), "mode", "str", required=f"one of: {', '.join(model.MODES)}",
                 check=one_of(model.MODES, "mode"))
    engine = c.get(top, (), "engine", "str", "compose", check=one_of(model.ENGINES, "engine"))
    project = c.get(top, (), "project", "str", "comfyume", check=name_check("project name"))
    before = len(c.found)
    num_users = c.get(top, (), "num_users", "int", 20, check=in_range(1, 200, "an integer"))
    ports = _section(c, top, "ports", model.Ports, "int", in_range(1, 65535, "a port"))
    ports_ok = len(c.found) == before
    worker = _worker(c, top)
    timeouts = _timeouts(c, top)
    rollout = _section(c, top, "rollout", model.Rollout, "int", in_range(1, 200, "an integer"))
    health = _section(c, top, "health", model.Health, "str",
                      pattern(DURATION_RE, "is not a compose duration",
                              "a whole number and a unit: ms, s or m, e.g. 5s"))
    probe = _probe(c, top, base)
    serverless = _serverless(c, top)
    ssh = _ssh(c, top, base)
    sec = c.mapping(("secrets",), top.get("secrets"), ("env_file",), "env_file: .secrets.env")
    env_file_given = c.get(sec, ("secrets",), "env_file", "str", None, example=".secrets.env")
    hosts, hosts_ok = _hosts(c, top, base)
    images, sources = read_images(c, top, base, environ, env_file_given)  # images: refs + source
    check_image_hosts(c, sources, hosts)

    if mode and hosts_ok:
        check_modes(c, mode, hosts, serverless)
        if engine == "swarm":
            check_swarm(c, mode, hosts, sources)
    if ports_ok:
        check_ports(c, ports, num_users)
    secrets, env_file, env_file_missing = check_secrets(c, mode, env_file_given, base, environ, need_secrets,
                                                        rented_secrets(hosts))
    if c.found:
        raise ConfigError(c.problems)
    return model.Inventory(
        path=shown, mode=mode, hosts=tuple(hosts), secrets=MappingProxyType(dict(secrets)),
        project=project, engine=engine, num_users=num_users, images=images, ports=ports, worker=worker,
        timeouts=timeouts, rollout=rollout, health=health, probe=probe, serverless=serverless, ssh=ssh,
        sources=sources, env_file=env_file, env_file_missing=env_file_missing, lines=MappingProxyType(dict(doc.lines)))


def _section(c: Checker, top: dict, name: str, cls: type, kind: str, check) -> Any:
    """A flat section whose keys are the fields of `cls`, all of one kind and one check."""
    fields = tuple(cls.__dataclass_fields__)
    defaults = cls()
    sec = c.mapping((name,), top.get(name), fields, f"{fields[0]}: {getattr(defaults, fields[0])}")
    return cls(**{f: c.get(sec, (name,), f, kind, getattr(defaults, f), check=check) for f in fields})


# The smallest sensible value of each timeout: below it a real network (or Fabric, for which a
# connect timeout of 0 means "wait forever") makes the setting meaningless.
TIMEOUT_MINIMUM = {"connect": (1, "an SSH handshake over a real network needs about a second"),
                   "command": (1, "a remote command needs at least a second"),
                   "health": (1, "containers need at least a second to turn healthy"),
                   "redis": (0.1, "a Redis round trip needs more than 0.1 s"),
                   "probe": (1, "an inference probe needs at least a second"),
                   "lock_wait": (0.1, "a lock wait below 0.1 s is no wait"),
                   "busy": (1, "a prompt needs at least a second to finish"),
                   "build": (1, "an image build needs at least a second"),
                   "pull": (1, "an image pull needs at least a second")}


def _timeouts(c: Checker, top: dict) -> model.Timeouts:
    """Finite seconds, each at least its minimum, kept as floats (never truncated to int)."""
    fields = tuple(model.Timeouts.__dataclass_fields__)
    d = model.Timeouts()
    sec = c.mapping(("timeouts",), top.get("timeouts"), fields, f"connect: {d.connect}")
    out = {}
    for f in fields:
        minimum, why = TIMEOUT_MINIMUM[f]
        out[f] = float(c.get(sec, ("timeouts",), f, "number", getattr(d, f), check=seconds(minimum, why)))
    return model.Timeouts(**out)


def _worker(c: Checker, top: dict) -> model.WorkerSettings:
    sec = c.mapping(("worker",), top.get("worker"), ("poll_interval", "heartbeat_timeout", "provider",
                                                     "cpu_fallback"), "poll_interval: 2")
    d = model.WorkerSettings()
    return model.WorkerSettings(
        poll_interval=int(c.get(sec, ("worker",), "poll_interval", "number", d.poll_interval, check=whole_seconds)),
        heartbeat_timeout=c.get(sec, ("worker",), "heartbeat_timeout", "int", d.heartbeat_timeout,
                                check=positive),
        provider=c.get(sec, ("worker",), "provider", "str", d.provider,
                       check=one_of(model.PROVIDERS, "provider")),
        cpu_fallback=c.get(sec, ("worker",), "cpu_fallback", "bool", d.cpu_fallback))


def whole_seconds(value: Any) -> tuple[str, str] | None:
    """The real worker reads WORKER_POLL_INTERVAL with int(): only a whole number of seconds > 0."""
    bad = positive(value)
    if bad:
        return bad
    if value != int(value):
        return (f"{value} is not a whole number of seconds: the worker reads WORKER_POLL_INTERVAL with int() "
                "and would not start", f"give a whole number of seconds, e.g. poll_interval: {max(1, round(value))}")
    return None


def _probe(c: Checker, top: dict, base: str) -> model.Probe:
    sec = c.mapping(("probe",), top.get("probe"), ("workflow",), "workflow: probe.json")
    given = c.get(sec, ("probe",), "workflow", "str", None, example="probe-workflow.json")
    if given is None:
        return model.Probe()
    name = os.path.basename(c.filename)
    hint = (f"give an API-format workflow JSON, relative to {name}, or remove probe.workflow "
            f"to use the built-in EmptyImage->SaveImage graph")
    full = expand(given, base)
    api_hint = "export it from ComfyUI with 'Export (API)'"
    try:
        graph = json.loads(read_regular(full, MAX_WORKFLOW_BYTES).decode("utf-8"))
    except FileProblem as exc:
        c.err(("probe", "workflow"), f"'{given}' {exc}", hint)
        return model.Probe()
    except json.JSONDecodeError as exc:
        c.err(("probe", "workflow"), f"{given}:{exc.lineno}: not valid JSON: {exc.msg}", api_hint)
        return model.Probe()
    except UnicodeDecodeError:
        c.err(("probe", "workflow"), f"'{given}' is not UTF-8 text", "save the workflow JSON as UTF-8")
        return model.Probe()
    except RecursionError:
        c.err(("probe", "workflow"), f"'{given}' is nested too deeply to be a workflow", api_hint)
        return model.Probe()
    why = _not_api_graph(graph)
    if why:
        c.err(("probe", "workflow"), f"{given} is not an API-format workflow: {why}",
              f"{api_hint}; each node needs class_type and inputs")
        return model.Probe()
    return model.Probe(workflow=full, workflow_graph=graph)


def _not_api_graph(graph: Any) -> str | None:
    if not isinstance(graph, dict) or not graph:
        return "the top level is not a non-empty JSON object of nodes"
    for node_id, node in graph.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str) \
                or not isinstance(node.get("inputs"), dict):
            return f"node '{node_id}' has no class_type and inputs"
    return None


SERVERLESS_KEYS = ("endpoint", "provider", "endpoints", "active", "currency", "api")
TIER_KEYS = ("url", "gpu", "price_per_hour", "deployment")
URL_HINT = "e.g. https://containers.datacrunch.io/DEPLOYMENT; no spaces or quotes"


def _serverless(c: Checker, top: dict) -> model.Serverless:
    sec = c.mapping(("serverless",), top.get("serverless"), SERVERLESS_KEYS, "endpoint: https://...")
    where = ("serverless",)
    endpoint = c.get(sec, where, "endpoint", "str", None, example="https://api.example.com/run",
                     check=pattern(URL_RE, "is not an http(s) URL",
                                   "e.g. https://api.example.com/v2/ENDPOINT/run; no spaces or quotes"))
    if endpoint is None and sec.get("endpoint") is not None:
        endpoint = str(sec["endpoint"])  # reported already; kept so the mode rules do not repeat it
    tiers = _tiers(c, sec.get("endpoints"))
    names = [t.name for t in tiers]
    active = c.get(sec, where, "active", "str", None, example=names[0] if names else "h200-spot")
    if active is not None and active != model.DEFAULT_ACTIVE and active not in names and "endpoints" in sec:
        close = model.suggest(active, names)
        c.err(where + ("active",), f"'{active}' is not a tier in serverless.endpoints",
              (f"did you mean '{close}'? " if close else "") + f"tiers: {', '.join(names) or 'none'}"
              f"{'' if not endpoint else f', or {model.DEFAULT_ACTIVE} for serverless.endpoint'}")
    elif active is None and len(tiers) == 1:
        active = names[0]
    elif active is None and len(tiers) > 1:
        c.err(where + ("active",), f"serverless.endpoints lists {len(tiers)} tiers but none is active",
              f"write serverless.active: one of {', '.join(names)}")
    currency = c.get(sec, where, "currency", "str", "EUR", check=pattern(CURRENCY_RE, "is not a currency code",
                                                                         "three capital letters, e.g. EUR"))
    api = c.get(sec, where, "api", "str", None, example="https://api.verda.com/v1",
                check=pattern(URL_RE, "is not an http(s) URL", "the deployment API, e.g. https://api.verda.com/v1"))
    return model.Serverless(
        endpoint=endpoint,
        provider=c.get(sec, where, "provider", "str", None, example="runpod",
                       check=one_of(model.PROVIDERS, "provider")),
        tiers=tuple(tiers), active=active, currency=currency, api=api)


def _tiers(c: Checker, raw: Any) -> list[model.Tier]:
    """serverless.endpoints: tier name -> URL, or -> {url, gpu, price_per_hour, deployment}."""
    where = ("serverless", "endpoints")
    if raw is None:
        return []
    if not isinstance(raw, dict) or not raw:
        c.err(where, "expected a mapping of tier names to endpoint URLs",
              "e.g. endpoints: {h200-spot: https://containers.datacrunch.io/my-h200-spot}")
        return []
    tiers, seen = [], {}
    for name, spec in raw.items():
        path = where + (name,)
        name_text = str(name)
        bad = name_check("tier name")(name_text) if isinstance(name, str) else (
            f"tier name {name!r} is not a word", NAME_HINT)
        if bad:
            c.err(path, bad[0], bad[1] + " (it becomes the variable SERVERLESS_ENDPOINT_<NAME>)")
            continue
        var = model.tier_env_name(name_text)
        if var in seen:
            c.err(path, f"tier '{name_text}' and tier '{seen[var]}' both become {var}",
                  "rename one: '-' and '_' read the same in the variable name")
            continue
        seen[var] = name_text
        if isinstance(spec, str) or spec is None:
            spec = {"url": spec}
        elif not isinstance(spec, dict):
            c.err(path, f"expected a URL or a mapping, got {kind_of(spec)}",
                  f"e.g. {name_text}: https://containers.datacrunch.io/DEPLOYMENT")
            continue
        else:
            spec = c.mapping(path, spec, TIER_KEYS, "url: https://...")
        before = len(c.found)
        url = c.get(spec, path, "url", "str", None, required=f"the endpoint URL of tier {name_text}, {URL_HINT}",
                    example="https://containers.datacrunch.io/DEPLOYMENT",
                    check=pattern(URL_RE, "is not an http(s) URL", URL_HINT))
        gpu = c.get(spec, path, "gpu", "str", None, example="H200 141 GB, spot")
        price = c.get(spec, path, "price_per_hour", "number", None, example="0.97",
                      check=in_range(0, None, "a price"))
        deployment = c.get(spec, path, "deployment", "str", None, example="my-h200-spot",
                           check=pattern(DEPLOYMENT_RE, "is not a deployment name",
                                         "letters, digits, '-' and '_' only"))
        if url is None and "url" in spec and spec.get("url") is not None:
            url = "invalid"  # reported; the tier is kept so `active` checks do not repeat it
        if url is not None or len(c.found) == before:
            tiers.append(model.Tier(name_text, url or "", gpu, price, deployment))
    return tiers


def _ssh(c: Checker, top: dict, base: str) -> model.SshSettings:
    sec = c.mapping(("ssh",), top.get("ssh"), ("known_hosts", "accept_new_host_keys", "config_file"),
                    "accept_new_host_keys: false")
    known = c.get(sec, ("ssh",), "known_hosts", "str", model.KNOWN_HOSTS)
    accept = c.get(sec, ("ssh",), "accept_new_host_keys", "bool", False)
    config_given = c.get(sec, ("ssh",), "config_file", "str", None, example="~/.ssh/config")
    config = None
    if config_given is not None:
        config = readable_file(c, ("ssh", "config_file"), config_given, base,
                               "check the path and its permissions, or remove config_file to use ~/.ssh/config")
    return model.SshSettings(known_hosts=expand(known, base), accept_new_host_keys=accept, config_file=config)


def _hosts(c: Checker, top: dict, base: str) -> tuple[list[model.Host], bool]:
    """Every host that could be read, and whether all of them (and their roles) were valid."""
    raw = top.get("hosts")
    if raw is None:
        c.err(("hosts",), "required key is missing" if "hosts" not in top else "has no value",
              "list each machine under hosts:, see docs/inventory.md")
        return [], False
    if not isinstance(raw, dict) or not raw:
        c.err(("hosts",), f"expected a mapping of host names, got {'an empty one' if raw == {} else 'something else'}",
              "e.g. hosts: {mello: {address: mello, roles: [app]}}")
        return [], False
    hosts = [h for h in (read_host(c, name, spec, base) for name, spec in raw.items()) if h is not None]
    hosts = assign_worker_ids(c, hosts)
    return hosts, len(hosts) == len(raw)


def load_inventory(path: str, environ: Mapping[str, str] | None = None, need_secrets: bool = True) -> model.Inventory:
    """Read, validate and resolve the inventory at `path`; ConfigError lists every problem.
    `need_secrets=False` (plan, --dry-run): a secret that is not set is `Unset`, not a problem."""
    doc = load_yaml_file(path, shown=str(path))
    return read_inventory(doc, str(path), os.environ if environ is None else environ, need_secrets)
