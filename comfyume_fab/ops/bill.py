"""status's view of what is rented: per rented host its instance (still there, or deleted on
purpose: when, by whom), price per hour, hours run and cost so far; the account balance and the
hours of runway at the current burn. Read from the records and the provider's API, beside the
SSH reads."""
from __future__ import annotations

from ..checks.result import CheckResult
from ..cloud import record
from ..cloud.verda import VerdaClient, VerdaError
from ..inventory.model import Inventory


def read_bill(inv: Inventory) -> tuple[dict | None, list[CheckResult], dict[str, dict]]:
    """(the `bill` block of status --json, or None without rented hosts; its checks; the rented
    hosts deleted on purpose or found gone: name -> their record)."""
    if not inv.provider_hosts:
        return None, [], {}
    checks: list[CheckResult] = []
    deleted: dict[str, dict] = {}
    hosts: dict[str, dict] = {}
    balance, currency, api_error = None, "USD", None
    client = _client(inv)
    for host in inv.provider_hosts:
        rec = record.load(inv, host.name)
        if not record.live(rec):
            if rec and rec.get("deleted_at"):
                deleted[host.name] = rec
            hosts[host.name] = _gone_block(rec)
            continue
        status = rec.get("status")
        if client is not None:
            try:
                inst = client.instance(rec["id"])
                status = inst.get("status") or status
            except VerdaError as exc:
                if exc.status == 404:
                    status = "notfound"
                else:
                    api_error = str(exc)
        if status in ("discontinued", "deleted", "notfound"):
            # deleted without this laptop (autostop on the app host, or the console)
            rec = {**rec, "deleted_at": None, "deleted_by": "the provider (autostop or the console)",
                   "deleted_how": f"found {status} at the provider", "status": status}
            deleted[host.name] = rec
            hosts[host.name] = _gone_block(rec)
            continue
        hours = record.hours_since(rec.get("created_at")) or 0.0
        price = float(rec.get("price_per_hour") or 0.0)
        hosts[host.name] = {"state": "rented", "instance_id": rec.get("id"), "hostname": rec.get("hostname"),
                            "instance_type": rec.get("instance_type"), "location": rec.get("location"),
                            "spot": bool(rec.get("spot")), "status": status, "price_per_hour": price,
                            "created_at": rec.get("created_at"), "created_by": rec.get("created_by"),
                            "hours": round(hours, 3), "cost_so_far": round(hours * price, 2),
                            "volumes": rec.get("volumes") or [], "deleted_at": None, "deleted_by": None}
    if client is not None:
        try:
            got = client.balance()
            balance, currency = float(got["amount"]), str(got.get("currency") or "usd").upper()
        except (VerdaError, KeyError, TypeError, ValueError) as exc:
            api_error = api_error or str(exc)
    burn = sum(h["price_per_hour"] for h in hosts.values() if h["state"] == "rented")
    runway = round(balance / burn, 1) if balance is not None and burn > 0 else None
    for name, h in hosts.items():
        if h["state"] != "rented":
            continue
        checks.append(CheckResult(f"bill-{name}", True, f"instance {h['hostname']} ({h['instance_type']}, "
                                  f"{'spot' if h['spot'] else 'on demand'}, {h['status']}) at {h['price_per_hour']:.2f} "
                                  f"{currency}/h, running {_hours(h['hours'])}, cost so far {h['cost_so_far']:.2f} "
                                  f"{currency}", host=name, data={"bill": h}))
    if balance is not None:
        checks.append(CheckResult("balance", True, f"balance {balance:.2f} {currency}" + (
            f", {runway:g} h of runway at the current burn ({burn:.2f} {currency}/h)" if runway is not None
            else ", nothing rented is billing now"), data={"balance": balance}))
    if api_error:
        checks.append(CheckResult("provider-api", True, f"the Verda API could not be read ({api_error}): the bill "
                                  "is from the records only", warning=True))
    return ({"currency": currency, "balance": balance, "burn_per_hour": round(burn, 4), "runway_hours": runway,
             "hosts": hosts, "error": api_error}, checks, deleted)


def _client(inv: Inventory) -> VerdaClient | None:
    cid, secret = inv.secrets.get("VERDA_CLIENT_ID"), inv.secrets.get("VERDA_CLIENT_SECRET")
    if not cid or not secret:
        return None
    return VerdaClient(inv.provider_hosts[0].provider.api, cid.reveal(), secret.reveal(),
                       timeout=inv.timeouts.connect + 5)


def _gone_block(rec: dict | None) -> dict:
    rec = rec or {}
    return {"state": "deleted" if rec.get("deleted_by") else "not rented", "instance_id": rec.get("id"),
            "hostname": rec.get("hostname"), "instance_type": rec.get("instance_type"),
            "location": rec.get("location"), "spot": bool(rec.get("spot")), "status": rec.get("status"),
            "price_per_hour": float(rec.get("price_per_hour") or 0.0), "created_at": rec.get("created_at"),
            "created_by": rec.get("created_by"), "hours": None, "cost_so_far": None,
            "volumes": rec.get("volumes") or [], "deleted_at": rec.get("deleted_at"),
            "deleted_by": rec.get("deleted_by")}


def _hours(h: float) -> str:
    return f"{h * 60:.0f} min" if h < 1 else f"{h:.1f} h"


def deleted_sentence(name: str, rec: dict) -> str:
    """`verda: deleted on purpose (stop-verda --delete by USER at TIME); not billing: start-all rents it anew`."""
    how = rec.get("deleted_how") or "deleted"
    when = f" at {rec['deleted_at']}" if rec.get("deleted_at") else ""
    return (f"deleted on purpose ({how} by {rec.get('deleted_by')}{when}); instance {rec.get('hostname')} is gone "
            f"and not billing, data volumes {', '.join(rec.get('volumes') or []) or '(none)'} kept: start-all "
            "rents a new one")
