"""What the next run finds about a rented instance: `.comfyume-fab/instances/<host>.json` beside the
inventory (folder 0700, file 0600, written atomically), never the user's hosts.yaml.

  {id, hostname, ip, tailscale_ip, status, instance_type, location, spot, price_per_hour, volumes,
   created_at (ISO UTC), created_by (user@machine), deleted_at, deleted_by, deleted_how}

A record with `deleted_at` says the instance was deleted on purpose (stop-verda --delete, or
autostop); `status` shows it so instead of "unreachable". `resolve(inv)` gives each rented host
its recorded address and tailnet address for the SSH layer.
"""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from datetime import datetime, timezone
from typing import Any

from ..inventory.model import Host, Inventory

INSTANCES = "instances"


def path(inv: Inventory, host: str) -> str:
    return os.path.join(inv.state_dir, INSTANCES, f"{host}.json")


def load(inv: Inventory, host: str) -> dict | None:
    """The host's record, or None when there is none (or it cannot be read as JSON)."""
    try:
        with open(path(inv, host), encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def live(rec: dict | None) -> bool:
    """Whether the record names an instance that was not deleted (it may still be provisioning)."""
    return bool(rec) and bool(rec.get("id")) and not rec.get("deleted_at")


def _private_dir(folder: str) -> None:
    os.makedirs(folder, mode=0o700, exist_ok=True)
    os.chmod(folder, 0o700)


def write_private(target: str, text: str) -> None:
    """`text` to `target` with mode 0600, atomically (a crash leaves the previous file)."""
    folder = os.path.dirname(target)
    _private_dir(os.path.dirname(folder) if os.path.basename(folder) == INSTANCES else folder)
    _private_dir(folder)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def save(inv: Inventory, host: str, rec: dict[str, Any]) -> dict:
    write_private(path(inv, host), json.dumps(rec, indent=2, sort_keys=True) + "\n")
    return rec


def now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def mark_deleted(inv: Inventory, host: str, by: str, how: str = "stop-verda --delete", at: str | None = None) -> dict:
    """The record kept as a note that the instance was deleted on purpose: when, by whom, how; its
    addresses are gone (the next start-all rents a new instance)."""
    rec = dict(load(inv, host) or {})
    rec.update({"status": "deleted", "ip": None, "tailscale_ip": None, "deleted_at": at or now_iso(),
                "deleted_by": by, "deleted_how": how})
    return save(inv, host, rec)


def hours_since(iso: str | None, until: str | None = None) -> float | None:
    """Hours from `iso` to `until` (default now), None when `iso` is not a timestamp."""
    start = parse_iso(iso)
    end = parse_iso(until) if until else datetime.now(timezone.utc)
    if start is None or end is None:
        return None
    return max(0.0, (end - start).total_seconds() / 3600)


def parse_iso(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        when = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def resolve(inv: Inventory) -> Inventory:
    """The inventory with each rented host's address and tailscale_ip taken from its live record
    (empty when it has none: start-all rents it, status says it is not rented or was deleted)."""
    if not inv.provider_hosts:
        return inv
    hosts: list[Host] = []
    for host in inv.hosts:
        rec = load(inv, host.name) if host.provider is not None else None
        if host.provider is not None:
            ok = live(rec)
            host = dataclasses.replace(host, address=str(rec.get("ip") or "") if ok else "",
                                       tailscale_ip=(rec.get("tailscale_ip") or None) if ok else None)
        hosts.append(host)
    return dataclasses.replace(inv, hosts=tuple(hosts))
