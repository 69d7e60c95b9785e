"""Renting and deleting a worker host (`provider:` in hosts.yaml): start-all's first step and
`stop-verda --delete`'s last.

Renting, in order: the client credentials checked and the price read; availability (a sentence
naming the type, the location and what is available instead); the price per hour confirmed
(`--yes`, or a `y` on a terminal); an SSH host key generated here; a startup script that installs
it and joins the tailnet; the instance created with the kept data volumes attached; `running`
with an address awaited (progress lines); SSH verified against the generated key (never trust on
first use); the tailnet address read back; everything recorded (cloud/record.py). A failure at
any step is one sentence naming the step, and what was rented is deleted (the startup script
too) unless `keep_failed`. Data volumes are never deleted: `delete` is sent with no volume ids.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import time
from typing import Callable

from ..cloud import hostkey, record, startup
from ..cloud.verda import VerdaClient, VerdaError
from ..errors import ConfigError, FabError, UnhealthyError, UnreachableError
from ..host.session import Session
from ..inventory.checker import is_ip
from ..inventory.model import Host, Inventory
from .audit import who

GONE = ("discontinued", "deleted", "notfound")
SETTLED = ("running", "error", "offline", "discontinued")
POLL_S = 1.0
CLEANUP_WAIT_S = 300.0  # how long a failed rent waits for its instance to become deletable


def client_for(inv: Inventory, host: Host) -> VerdaClient:
    """The provider's client for `host`, with the client credentials by reference."""
    cid, secret = inv.secrets.get("VERDA_CLIENT_ID"), inv.secrets.get("VERDA_CLIENT_SECRET")
    if not cid or not secret:
        raise ConfigError(f"{inv.path}: {host.name} is rented (provider: verda) but VERDA_CLIENT_ID or "
                          "VERDA_CLIENT_SECRET is not set (export them, or add them to secrets.env_file)")
    return VerdaClient(host.provider.api, cid.reveal(), secret.reveal(), timeout=inv.timeouts.connect + 10)


def api_failed(host: Host, step: str, exc: VerdaError, hint: str | None = None) -> FabError:
    """One sentence for an API failure; refused credentials are the inventory's secrets (exit 2)."""
    if exc.unauthorized:
        return ConfigError(f"{host.name}: the Verda API at {host.provider.api} refused VERDA_CLIENT_ID / "
                           f"VERDA_CLIENT_SECRET at step '{step}' ({exc.message}); nothing was rented (check the "
                           "client credentials in Verda's console under Keys, and where they are set)")
    return UnhealthyError(f"the Verda API answered: {exc}", host=host.name, step=step,
                          hint=hint or "retry later; `status` shows what is rented")


# --- start-all's step: every rented host has a live instance ------------------------------------------


def ensure_instances(inv: Inventory, say: Callable[[str], None], warn: Callable[[str], None],
                     confirm: Callable[[str], None], keep_failed: bool = False) -> Inventory:
    """Rent each rented host that has no live instance (after `confirm(price line)`), check that a
    recorded one still exists; the inventory with their addresses (record.resolve). Held under a
    lock on the records: a second start-all of the same inventory waits, then finds the instance the
    first one rented instead of renting another."""
    with _renting_lock(inv, say):
        for host in inv.provider_hosts:
            client = client_for(inv, host)
            rec = record.load(inv, host.name)
            if record.live(rec) and _still_there(inv, host, client, rec, say, warn):
                continue
            rent(inv, host, client, say, confirm, keep_failed)
    return record.resolve(inv)


@contextlib.contextmanager
def _renting_lock(inv: Inventory, say):
    """An exclusive flock on <state dir>/renting.lock for the check-and-rent above."""
    os.makedirs(inv.state_dir, mode=0o700, exist_ok=True)
    with open(os.path.join(inv.state_dir, "renting.lock"), "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say("waiting for another start-all of this inventory, which is renting its workers")
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _still_there(inv: Inventory, host: Host, client: VerdaClient, rec: dict, say, warn) -> bool:
    """Whether the recorded instance is there and usable; an instance deleted elsewhere (autostop
    on the app host, the console) is recorded as gone, so it is rented anew."""
    try:
        inst = client.instance(rec["id"])
    except VerdaError as exc:
        if exc.status != 404:
            raise api_failed(host, "read the recorded instance", exc) from None
        inst = {"status": "notfound"}
    status = inst.get("status")
    if status in GONE:
        warn(f"{host.name}: instance {rec['id']} ({rec.get('hostname')}) is gone at the provider (deleted outside "
             "this run: autostop or the console); renting a new one")
        record.mark_deleted(inv, host.name, "the provider", how="found gone by start-all")
        hostkey.forget(inv.generated_known_hosts, rec.get("ip"), host.port)
        return False
    if status == "error":
        raise UnhealthyError(f"instance {rec['id']} ({rec.get('hostname')}) is in status error at the provider",
                             host=host.name, step="rent",
                             hint="delete it with `stop-verda --delete` (the data volumes are kept), then rerun start-all")
    if status in ("offline", "hibernating"):
        say(f"{host.name}: instance {rec.get('hostname')} is {status}: starting it")
        try:
            client.action(rec["id"], "start")
        except VerdaError as exc:
            raise api_failed(host, "start the instance", exc) from None
    if status != "running":
        inst = _wait_running(inv, host, client, rec["id"], say, time.monotonic() + host.provider.provision_timeout)
    if inst.get("ip") and inst.get("ip") != rec.get("ip"):
        raise UnhealthyError(f"instance {rec['id']} now has the address {inst.get('ip')}, not the recorded "
                             f"{rec.get('ip')}", host=host.name, step="rent",
                             hint="its host key was installed for the recorded address: delete it with "
                                  "`stop-verda --delete` and rerun start-all")
    return True


def rent(inv: Inventory, host: Host, client: VerdaClient, say: Callable[[str], None],
         confirm: Callable[[str], None], keep_failed: bool = False) -> dict:
    """Rent one instance for `host` and record it; see the module docstring. Returns the record."""
    p = host.provider
    kind = "spot" if p.spot else "on demand"
    # 1. the credentials and the price (nothing rented yet)
    try:
        types = client.instance_types()
    except VerdaError as exc:
        raise api_failed(host, "price", exc) from None
    price = next((float(t.get("spot_price" if p.spot else "price_per_hour") or 0) for t in types
                  if t.get("instance_type") == p.instance_type), None)
    if price is None:
        offered = ", ".join(sorted(str(t.get("instance_type")) for t in types)) or "none"
        raise ConfigError(f"{inv.path}:{inv.line_of(('hosts', host.name, 'provider', 'instance_type'))} "
                          f"hosts.{host.name}.provider.instance_type: Verda offers no instance type "
                          f"'{p.instance_type}' (offered: {offered})")
    # 2. availability, before anything is rented
    try:
        available = client.is_available(p.instance_type, p.spot, p.location)
        if not available:
            raise UnhealthyError(_no_capacity(client, p), host=host.name, step="availability",
                                 hint="change provider.instance_type or provider.location in hosts.yaml (or spot), "
                                      "or retry later; nothing was rented")
        balance = _balance(client)
    except VerdaError as exc:
        raise api_failed(host, "availability", exc) from None
    # 3. the price, said and confirmed before renting
    line = (f"{host.name}: renting {p.instance_type} ({kind}) in {p.location} at {price:.2f}/h"
            + (f"; balance {balance[0]:.2f} {balance[1]} = {balance[0] / price:.0f} h at this price"
               if balance and price > 0 else ""))
    say(line)
    confirm(line)
    # 4. the SSH keys that may log in, the host key, the startup script
    key_ids = _ssh_key_ids(host, client)
    # one name per worker host, stable across rentals: the tailnet node (and MagicDNS name) stays
    # recognisable; a new instance is told apart by its id
    name = f"{p.hostname_prefix}-{host.name}"[:63].rstrip("-")
    private, public = hostkey.generate(name)
    authkey = inv.secrets[p.tailscale_authkey].reveal()
    rec: dict = {"id": None, "hostname": name, "ip": None, "tailscale_ip": None, "status": "ordering",
                 "instance_type": p.instance_type, "location": p.location, "spot": p.spot,
                 "price_per_hour": price, "volumes": list(p.volumes), "created_at": None, "created_by": who(),
                 "deleted_at": None, "deleted_by": None}
    script_id = None
    step = "startup script"
    try:
        script_id = client.add_startup_script(f"comfyume-fab {name}", startup.script(private, public, authkey, name))
        del private, authkey
        # 5. create, and record at once (a crash from here on leaves a record to delete)
        step = "create"
        rec["id"] = client.create_instance(
            instance_type=p.instance_type, image=p.os_volume or p.image, hostname=name,
            description=f"comfyume worker {host.name} (comfyume-fab, {who()})", ssh_key_ids=key_ids,
            location=p.location, startup_script_id=script_id, existing_volumes=list(p.volumes), is_spot=p.spot)
        rec.update(status="ordered", created_at=record.now_iso())
        record.save(inv, host.name, rec)
        say(f"{host.name}: instance {name} ({rec['id']}) ordered; waiting until it runs "
            f"(at most {p.provision_timeout:g} s)")
        # 6. running, with an address
        step = "provisioning"
        inst = _wait_running(inv, host, client, rec["id"], say, time.monotonic() + p.provision_timeout)
        rec.update(status="running", ip=inst["ip"], price_per_hour=float(inst.get("price_per_hour") or price))
        if inst.get("created_at"):
            rec["created_at"] = inst["created_at"]
        record.save(inv, host.name, rec)
        _delete_script(client, script_id)
        script_id = None
        # 7. SSH, verified against the key generated here; the tailnet address read back
        step = "first SSH contact"
        hostkey.remember(inv.generated_known_hosts, inst["ip"], host.port, public)
        rec["tailscale_ip"] = _first_contact(inv, host, inst["ip"], say)
        record.save(inv, host.name, rec)
    except (FabError, VerdaError) as exc:
        err = api_failed(host, step, exc) if isinstance(exc, VerdaError) else exc
        raise _failed(inv, host, client, rec, script_id, keep_failed, step, err, say) from None
    except BaseException:  # Ctrl-C or a bug: what was rented is deleted all the same
        _failed(inv, host, client, rec, script_id, keep_failed, step, None, say)
        raise
    say(f"{host.name}: instance {name} running at {rec['ip']} (tailnet {rec['tailscale_ip']}), host key verified, "
        f"{price:.2f}/h from now on")
    return rec


def _no_capacity(client: VerdaClient, p) -> str:
    kind = "spot" if p.spot else "on demand"
    try:
        found = client.availabilities(p.spot)
    except VerdaError:
        found = []
    here = sorted({t for a in found if a.get("location_code") == p.location for t in a.get("availabilities") or []})
    elsewhere = sorted({str(a.get("location_code")) for a in found if p.instance_type in (a.get("availabilities") or [])})
    return (f"no capacity: {p.instance_type} ({kind}) is not available in {p.location}; available in {p.location}: "
            f"{', '.join(here) or 'nothing'}; {p.instance_type} is available in: {', '.join(elsewhere) or 'no location'}")


def _balance(client: VerdaClient) -> tuple[float, str] | None:
    try:
        b = client.balance()
        return float(b["amount"]), str(b.get("currency") or "usd").upper()
    except (VerdaError, KeyError, TypeError, ValueError):
        return None


def _ssh_key_ids(host: Host, client: VerdaClient) -> list[str]:
    """The Verda SSH keys allowed to log in: provider.ssh_keys (names or ids), else the host's
    identity_file's public half (registered when Verda does not have it yet)."""
    have = client.ssh_keys()
    if host.provider.ssh_keys:
        out = []
        for want in host.provider.ssh_keys:
            match = next((k for k in have if want in (k.get("id"), k.get("name"))), None)
            if match is None:
                raise ConfigError(f"{host.name}: provider.ssh_keys names '{want}', which is not one of your Verda "
                                  f"SSH keys ({', '.join(str(k.get('name')) for k in have) or 'none'})")
            out.append(str(match["id"]))
        return out
    candidates = [host.identity_file + ".pub"] if host.identity_file else \
        [os.path.expanduser(f"~/.ssh/id_{t}.pub") for t in ("ed25519", "ecdsa", "rsa")]
    pub = next((c for c in candidates if os.path.isfile(c)), None)
    if pub is None:
        raise ConfigError(f"{host.name}: no SSH public key to log into the rented instance with (looked for "
                          f"{', '.join(candidates)}); set identity_file (with its .pub beside it) or provider.ssh_keys")
    with open(pub, encoding="utf-8") as fh:
        parts = fh.read().split()
    material = " ".join(parts[:2])
    match = next((k for k in have if " ".join(str(k.get("key", "")).split()[:2]) == material), None)
    if match is not None:
        return [str(match["id"])]
    return [client.add_ssh_key(f"comfyume-fab {who()}", material)]


def _wait_running(inv: Inventory, host: Host, client: VerdaClient, instance_id: str, say, deadline: float) -> dict:
    """Poll until `running` with an address; a progress line per status; error/timeout raise."""
    last, t0 = None, time.monotonic()
    while True:
        inst = client.instance(instance_id)
        status = inst.get("status")
        if status != last:
            say(f"{host.name}: instance {status} ({time.monotonic() - t0:.0f} s)")
            last = status
        if status == "running" and inst.get("ip"):
            return inst
        if status == "error":
            raise UnhealthyError("the instance went to status error: its startup script failed (host key, sshd "
                                 "restart or `tailscale up`)", host=host.name, step="startup script",
                                 hint="check the Tailscale auth key (a reusable or ephemeral key that has not "
                                      "expired) and the image; rerun with --keep-failed to inspect the instance")
        if status in GONE:
            raise UnhealthyError(f"the instance was {status} while being provisioned", host=host.name,
                                 step="provisioning", hint="retry; `status` shows what is rented")
        if time.monotonic() > deadline:
            raise UnhealthyError(f"the instance was not running within provider.provision_timeout "
                                 f"({host.provider.provision_timeout:g} s; last status {status})", host=host.name,
                                 step="provisioning", hint="retry later or raise provider.provision_timeout")
        time.sleep(POLL_S)


def _first_contact(inv: Inventory, host: Host, ip: str, say) -> str:
    """SSH to the new instance, its host key checked against the generated one; `tailscale ip -4`."""
    import dataclasses
    target = dataclasses.replace(host, address=ip)
    deadline = time.monotonic() + max(30.0, inv.timeouts.connect * 3)
    while True:
        with Session(inv, [target]) as s:
            s.connect()
            err = s.errors.get(host.name)
            if err is None:
                res = s[host.name].run("tailscale ip -4", timeout=inv.timeouts.command, step="tailscale ip")
                addr = (res.stdout.strip().splitlines() or [""])[0].strip() if res.ok else ""
                if not is_ip(addr):
                    raise UnhealthyError(f"`tailscale ip -4` on the instance answered "
                                         f"{res.tail(160) or 'nothing'!r}, not a tailnet address", host=host.name,
                                         step="tailnet", hint="the startup script's `tailscale up` did not join; "
                                                              "check the auth key")
                say(f"{host.name}: SSH host key verified against the one generated here; tailnet address {addr}")
                return addr
        if "CHANGED" in err.cause or "unknown host key" in err.cause or "refused" in err.cause.lower() \
                and "connection refused" not in err.cause or time.monotonic() > deadline:
            raise UnreachableError(f"first SSH contact with {ip} failed: {err.cause}", host=host.name,
                                   step="first SSH contact",
                                   hint="the instance's host key must be the one the startup script installed")
        time.sleep(2)


def _delete_script(client: VerdaClient, script_id: str | None) -> None:
    if script_id:
        try:
            client.delete_startup_script(script_id)
        except VerdaError:
            pass  # best effort: it holds a host key no longer used and an auth key (advice: ephemeral)


def _failed(inv: Inventory, host: Host, client: VerdaClient, rec: dict, script_id: str | None, keep: bool,
            step: str, err: FabError | None, say) -> FabError | None:
    """Clean up after a failed rent: delete the instance (unless `keep`) and the startup script,
    forget the host key, record it; `err` told what became of the instance (for the caller to raise)."""
    _delete_script(client, script_id)
    left = "nothing was rented"
    if rec.get("id") and keep:
        left = (f"instance {rec['hostname']} ({rec['id']}) was KEPT (--keep-failed) and is billing: inspect it, "
                "then `stop-verda --delete`")
        rec["status"] = "failed"
        record.save(inv, host.name, rec)
    elif rec.get("id"):
        # an instance still provisioning is deleted once it settles: wait for that rather than
        # leave it billing (the provisioning timeout may be what failed)
        gone = delete_instance(inv, host, client, rec["id"], say,
                               wait_s=max(host.provider.provision_timeout, CLEANUP_WAIT_S))
        hostkey.forget(inv.generated_known_hosts, rec.get("ip"), host.port)
        record.mark_deleted(inv, host.name, who(), how=f"start-all (failed at {step})")
        left = (f"instance {rec['hostname']} was deleted, nothing is left rented" if gone else
                f"deleting instance {rec['hostname']} ({rec['id']}) FAILED: delete it in Verda's console")
    if err is None:
        return None
    if isinstance(err, ConfigError):
        err.problems = [f"{p}; {left}" for p in err.problems]
        return err
    err.cause = f"renting failed: {err.cause}; {left}"
    err.host, err.step = host.name, err.step or step
    return err


def delete_instance(inv: Inventory, host: Host, client: VerdaClient, instance_id: str, say,
                    wait_s: float | None = None) -> bool:
    """PUT /instances delete with no volume ids (the data volumes are detached and kept). An
    instance still ordered/provisioning cannot be deleted (the API refuses: the SDK's "too eager"):
    it is retried until it settles, for at most `wait_s` (default: provision_timeout)."""
    deadline = time.monotonic() + (host.provider.provision_timeout if wait_s is None else wait_s)
    said = False
    while True:
        try:
            client.action(instance_id, "delete", volume_ids=None)
            say(f"{host.name}: instance {instance_id} deleted (data volumes kept)")
            return True
        except VerdaError as exc:
            if exc.status == 404:
                return True
            if exc.unauthorized or exc.status not in (400, 409) or time.monotonic() > deadline:
                return False
        try:
            status = client.instance(instance_id).get("status")
        except VerdaError:
            status = None
        if status in GONE:
            return True
        if not said:
            say(f"{host.name}: instance {instance_id} is {status}: the API deletes it once it settles; waiting")
            said = True
        time.sleep(POLL_S)


# --- stop-verda --delete -----------------------------------------------------------------------


def delete_rented(inv: Inventory, host: Host, say: Callable[[str], None]) -> dict:
    """Delete `host`'s recorded instance (data volumes kept: no volume ids are sent), forget its
    host key and address, and record who deleted it and when; the record as it now is."""
    rec = record.load(inv, host.name)
    if not record.live(rec):
        when = f" (deleted {rec.get('deleted_at')} by {rec.get('deleted_by')})" if rec and rec.get("deleted_at") else ""
        say(f"{host.name}: no rented instance is recorded{when}: nothing to delete")
        return rec or {}
    client = client_for(inv, host)
    say(f"{host.name}: deleting instance {rec.get('hostname')} ({rec['id']}); data volumes "
        f"{', '.join(rec.get('volumes') or []) or '(none)'} are kept")
    try:
        gone = delete_instance(inv, host, client, rec["id"], say)
    except VerdaError as exc:
        raise api_failed(host, "delete instance", exc) from None
    if not gone:
        raise UnhealthyError(f"the Verda API did not delete instance {rec['id']}", host=host.name,
                             step="delete instance", hint="rerun `stop-verda --delete`, or delete it in Verda's console; "
                                                           "it is billing until then")
    hostkey.forget(inv.generated_known_hosts, rec.get("ip"), host.port)
    return record.mark_deleted(inv, host.name, who(), how="stop-verda --delete")
