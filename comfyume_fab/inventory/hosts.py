"""The `hosts:` section: one Host per entry, plus the checks that compare hosts with each other."""
from __future__ import annotations

import dataclasses

from . import model
from .checker import (USER_RE, Checker, address_check, in_range, ip_check, kind_of,
                               name_check, one_of, pattern, readable_file, shown, workdir_check)
from .provider import read_autostop, read_provider

HOST_KEYS = ("address", "user", "port", "identity_file", "tailscale_ip", "roles", "gpu", "workdir",
             "worker_id", "provider", "autostop")
ROLE_HINT = f"expected one of: {', '.join(model.ROLES)}"


def read_host(c: Checker, name: object, spec: object, base: str) -> model.Host | None:
    """The Host for `hosts.<name>`, or None when it is too broken to use (problems recorded)."""
    path = ("hosts", name)
    bad_name = name_check("host name")(name)
    if bad_name:
        c.err(path, *bad_name)
    if not isinstance(spec, dict):
        c.err(path, f"expected a mapping of host settings, got {kind_of(spec)}{shown(spec)}",
              f"e.g. {name}: {{address: {name}, roles: [worker]}}")
        return None
    spec = c.mapping(path, spec, HOST_KEYS, "address: mello")
    rented = "provider" in spec
    provider = read_provider(c, path, spec["provider"]) if rented else None
    for key in ("address", "tailscale_ip") if rented else ():
        if key in spec:
            c.err(path + (key,), f"{name} is rented (provider:), so its {key} comes from the instance start-all "
                  "creates", f"remove {key}: it is recorded in {model.STATE_DIR}/instances/{name}.json, "
                  "never written into hosts.yaml")
    address = None if rented else c.get(spec, path, "address", "str", None, check=address_check,
                                         required="the SSH address: a hostname, IP address or ssh_config alias")
    user = c.get(spec, path, "user", "str", "root" if rented else None, example="root",
                 check=pattern(USER_RE, "is not a valid login name",
                               "letters, digits, '.', '_' and '-', not starting with '-'"))
    port = c.get(spec, path, "port", "int", None, example=22, check=in_range(1, 65535, "a port"))
    identity = c.get(spec, path, "identity_file", "str", None, example="~/.ssh/id_ed25519")
    if identity is not None:
        identity = readable_file(c, path + ("identity_file",), identity, base,
                                 "check the path and its permissions, or remove identity_file "
                                 "to let ssh_config choose the key")
    tailscale_ip = None if rented else c.get(spec, path, "tailscale_ip", "str", None, example="100.99.216.71",
                                             check=ip_check)
    if tailscale_ip is None and spec.get("tailscale_ip") is not None and not rented:
        tailscale_ip = str(spec["tailscale_ip"])  # reported already; kept so mode rules do not repeat it
    roles = _roles(c, path, spec)
    is_worker = roles is not None and "worker" in roles
    gpu = c.get(spec, path, "gpu", "str", "auto" if is_worker else "none", example="none",
                check=one_of(model.GPU_SETTINGS, "gpu setting"))
    if gpu == "required" and roles is not None and not is_worker:
        c.err(path + ("gpu",), f"gpu: required on {name}, which has no worker role",
              "only the worker uses a GPU; write gpu: none, or add worker to roles")
    workdir = c.get(spec, path, "workdir", "str", "comfyume", check=workdir_check)
    worker_id = c.get(spec, path, "worker_id", "str", None, example="worker-1",
                      check=name_check("worker id"))
    if worker_id is not None and roles is not None and not is_worker:
        c.err(path + ("worker_id",), f"{name} has no worker role, so worker_id is not used",
              "remove worker_id, or add worker to roles")
    if rented and roles is not None and roles != ("worker",):
        c.err(path + ("roles",), f"{name} is rented (provider:) but has roles [{', '.join(roles)}]",
              "only a worker host is rented and deleted: give it roles: [worker] and keep the app host always on")
    autostop = None
    if "autostop" in spec:
        autostop = read_autostop(c, path, spec["autostop"])
        if not rented:
            c.err(path + ("autostop",), f"autostop deletes a rented instance, but {name} has no provider section",
                  "add provider: (see docs/provider.md), or remove autostop")
    if roles is None or bad_name:
        return None
    # A bad or missing address is reported already; the host still takes part in the mode rules.
    address = "" if rented else address or str(spec.get("address") or "")
    return model.Host(name=str(name), address=address, roles=roles, user=user, port=port,
                    identity_file=identity, tailscale_ip=tailscale_ip, gpu=gpu, workdir=workdir,
                    worker_id=worker_id, line=c.doc.line_of(path), provider=provider, autostop=autostop)


def _roles(c: Checker, path: tuple, spec: dict) -> tuple[str, ...] | None:
    """Roles in canonical order (app, worker); None after a problem."""
    raw = c.get(spec, path, "roles", "list", None, example="[worker]",
                required=f"a list of roles, {ROLE_HINT}")
    if raw is None:
        return None
    if not raw:
        c.err(path + ("roles",), "no roles given", f"a list of roles, {ROLE_HINT}")
        return None
    ok, seen = True, set()
    for index, role in enumerate(raw):
        where = path + ("roles", index)
        if not isinstance(role, str):
            c.err(where, f"expected a role name, got {kind_of(role)}{shown(role)}", ROLE_HINT)
            ok = False
        elif role not in model.ROLES:
            c.err(where, f"unknown role '{role}'", ROLE_HINT)
            ok = False
        elif role in seen:
            c.err(where, f"role '{role}' is listed twice", "list each role once")
            ok = False
        seen.add(role)
    return tuple(r for r in model.ROLES if r in seen) if ok else None


def assign_worker_ids(c: Checker, hosts: list[model.Host]) -> list[model.Host]:
    """Give each worker host without worker_id the next free worker-N; flag shared ids and IPs."""
    taken = {h.worker_id: h for h in hosts if h.is_worker and h.worker_id}
    out, counter = [], 0
    for host in hosts:
        if host.is_worker and host.worker_id is None:
            counter += 1
            while f"worker-{counter}" in taken:
                counter += 1
            host = dataclasses.replace(host, worker_id=f"worker-{counter}")
        elif host.is_worker:
            first = next(h for h in hosts if h.is_worker and h.worker_id == host.worker_id)
            if first is not host:
                c.err(("hosts", host.name, "worker_id"),
                      f"worker id '{host.worker_id}' is also used by {first.name} "
                      f"on line {c.doc.line_of(('hosts', first.name, 'worker_id'))}",
                      "give each worker its own id")
        out.append(host)
    check_same_address(c, out)
    seen: dict[str, model.Host] = {}
    for host in out:
        if host.tailscale_ip is None:
            continue
        first = seen.setdefault(host.tailscale_ip, host)
        if first is not host:
            c.err(("hosts", host.name, "tailscale_ip"),
                  f"{host.tailscale_ip} is also the tailscale_ip of {first.name} "
                  f"on line {c.doc.line_of(('hosts', first.name, 'tailscale_ip'))}",
                  "each host has its own tailnet address; run 'tailscale ip -4' on each")
    return out


def check_same_address(c: Checker, hosts: list[model.Host]) -> None:
    """Two entries that log into the same machine (same address and SSH port) cannot both deploy:
    each runs the compose project removing its orphans, which removes the other's containers
    (in dual-server the worker's `up` would remove the whole app stack)."""
    seen: dict[tuple[str, int | None], model.Host] = {}
    for host in hosts:
        if not host.address:
            continue
        first = seen.setdefault((host.address.lower(), host.port), host)
        if first is not host:
            c.err(("hosts", host.name, "address"),
                  f"{host.address} is also the address of {first.name} on line "
                  f"{c.doc.line_of(('hosts', first.name, 'address'))}",
                  "two entries for one machine would remove each other's containers (compose removes a project's "
                  "orphans); list each machine once, with all its roles (e.g. mode single-server-gpu for one machine)")
