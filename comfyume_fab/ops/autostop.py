"""Autostop on the app host, installed and removed: a helper of start-all and of `stop-verda
--delete`, not an operation of its own.

`install(inv, session, record, say)`: after start-all rented (or found) a worker host's instance,
write its autostop's program, config, env file (0600: the Verda credentials stay on the app host,
never on the GPU host, never in a command line) and compose service on the app host and start it;
rerunning with nothing changed uploads nothing and leaves the running container alone. A host
without `autostop:` gets none (and loses one an earlier inventory installed).
`remove(inv, session, host_name, say)`: stop and remove it with its folder (env file included).

The program (host/agents/autostop.py) then runs there by itself; `status` reads its state file
(checks/autostop.py). Design and why a compose service: docs/provider.md#autostop.
"""
from __future__ import annotations

from typing import Callable

from ..errors import ConfigError, UnhealthyError
from ..host.actions import autostop as act
from ..host.agents.autostop import span
from ..host.commands import workdir_path
from ..host.facts import autostop as facts
from ..inventory.model import Host, Inventory
from ..plan import autostop as plan
from .audit import local_revision

STEP = "autostop"


def _host(inv: Inventory, record: dict, host: str | None) -> Host:
    """The worker host the record is of: `host`, else the record's own `host`, else the only rented one."""
    name = host or record.get("host")
    if name:
        return inv.host(name)
    rented = [h for h in inv.hosts if getattr(h, "provider", None) is not None]
    if len(rented) != 1:
        raise ValueError("install() needs host= when the inventory rents more than one worker host")
    return rented[0]


def install(inv: Inventory, session, record: dict, say: Callable[[str], None], *, host: str | None = None,
            config_hash: str = "-") -> dict:
    """Install or update the autostop of the worker host whose instance `record` is (the provider's
    record: id, hostname, created_at). Returns {"host", "changed": [paths], "started": bool}."""
    h = _host(inv, record or {}, host)
    if record is None or not record.get("id"):
        say(f"{h.name}: no instance is recorded, so no autostop was installed")
        return {"host": h.name, "changed": [], "started": False, "removed": False}
    if getattr(h, "autostop", None) is None:
        removed = remove(inv, session, h.name, lambda _msg: None)
        if removed:
            say(f"{h.name}: autostop removed from {inv.app_host.name} (no autostop section any more)")
        return {"host": h.name, "changed": [], "started": False, "removed": removed}
    missing = [name for name in plan.SECRETS if name not in inv.secrets]
    if missing:
        raise ConfigError(f"{inv.path}: hosts.{h.name}.autostop deletes the instance from the app host through the "
                          f"Verda API and needs the secret(s) {', '.join(missing)} (export them or add them to the "
                          "secrets file)")
    app = inv.app_host
    remote = session[app.name]
    files = plan.render(inv, h, record, by=f"autostop@{app.name}", revision=local_revision(),
                        config_hash=config_hash)
    folder = plan.folder(h.name)
    seen = remote.run(facts.installed_command(app.workdir, folder, files.project, sorted(files.files)),
                      timeout=inv.timeouts.command, step=STEP)
    digests, container = facts.parse_installed(seen.stdout if seen.ok else "")
    changed = [path for path, digest in files.digests().items() if digests.get(path) != digest]
    if not changed and container == "running":
        say(f"{h.name}: autostop on {app.name} unchanged ({_rule(h)})")
        return {"host": h.name, "changed": [], "started": False, "removed": False}
    res = remote.run(act.prepare(app.workdir, folder), timeout=inv.timeouts.command, step=STEP)
    if not res.ok:
        raise UnhealthyError(f"preparing the autostop folder failed: {res.tail()}", host=app.name, step=STEP)
    base = workdir_path(app.workdir, folder)
    for path in changed:  # the program and the compose file last, once what they read is there
        if path not in (plan.COMPOSE, f"conf/{plan.PROGRAM}"):
            remote.put(f"{base}/{path}", files.files[path], mode=0o600)
    for path in (f"conf/{plan.PROGRAM}", plan.COMPOSE):
        if path in changed:
            remote.put(f"{base}/{path}", files.files[path], mode=0o600)
    res = remote.run(act.up(app.workdir, folder, files.project), timeout=inv.timeouts.command, step=STEP)
    if not res.ok:
        raise UnhealthyError(f"starting the autostop service failed: {res.tail()}", host=app.name, step=STEP,
                             hint=f"the queue manager's image ({inv.images.queue_manager}) must be on {app.name}; "
                                  "start-all puts it there")
    shown = [p for p in changed if p != files.secret] + (["the credentials"] if files.secret in changed else [])
    say(f"{h.name}: autostop on {app.name} {'installed' if not digests else 'updated'} ({_rule(h)}; "
        f"{', '.join(shown) or 'restarted'})")
    return {"host": h.name, "changed": changed, "started": True, "removed": False}


def remove(inv: Inventory, session, host_name: str, say: Callable[[str], None]) -> bool:
    """Stop and remove `host_name`'s autostop from the app host (its env file too); True when one
    was there. Idempotent."""
    app = inv.app_host
    remote = session[app.name]
    folder = plan.folder(host_name)
    project = plan.project_name(inv, host_name)
    seen = remote.run(facts.installed_command(app.workdir, folder, project, [plan.COMPOSE]),
                      timeout=inv.timeouts.command, step=STEP)
    digests, container = facts.parse_installed(seen.stdout if seen.ok else "")
    if not digests and not container:
        return False
    res = remote.run(act.remove(app.workdir, folder, project), timeout=inv.timeouts.command, step=STEP)
    if not res.ok:
        raise UnhealthyError(f"removing the autostop service failed: {res.tail()}", host=app.name, step=STEP)
    say(f"{host_name}: autostop removed from {app.name}")
    return True


def _rule(h: Host) -> str:
    a = h.autostop
    life = f", max lifetime {span(a.max_lifetime_s)}" if a.max_lifetime_s else ""
    return f"deletes the instance after idle {span(a.idle_s)}{life}; checks every {span(plan.check_every(a))}"
