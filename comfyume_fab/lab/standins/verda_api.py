"""STAND-IN of Verda's public cloud API (lab only; NOT Verda's service): the REST contract the
official `verda` SDK (formerly `datacrunch`; repository DataCrunch-io/datacrunch-python) speaks,
reproduced from the SDK's source (http_client, authentication, instances, instance_types,
ssh_keys, startup_scripts, volumes, balance, locations, images, constants, exceptions), so the
tool can rent and delete GPU instances in the lab with only the base URL changed. Creating an
instance REALLY makes a lab host (lab/verda_hosts.py): a network namespace on the lab tailnet
with its own sshd and Docker engine, which runs the instance's startup script.

Runs on this machine (root), not in a lab image: lab/verda.py's `running()` starts it as
`python -m comfyume_fab.lab.verda_hosts CONFIG` (this module stays standard-library only, like
every stand-in; verda_hosts adds the lab hosts). Every answer carries `Server: verda-api-STAND-IN`
and `X-Comfyume-Standin: verda-api`.

The contract (base URL `https://api.verda.com/v1`, the SDK's default; here http://100.64.0.254:PORT/v1).
Requests and answers are JSON unless said otherwise.

Errors (http_client.handle_error): any status >= 400 with the body {"code": ..., "message": ...};
the SDK raises APIException(code, message). Codes are the SDK's ErrorCodes:
  400 invalid_request     bad body, unknown instance type/image/location/ssh key/script, an action
                          the instance's status does not allow (the SDK's "too eager" example: an
                          action on an instance still ordered/provisioning is refused)
  400 insufficient_funds  the balance does not cover one hour of the instance type
  401 unauthorized_request bad client credentials, missing/expired/unknown access token
  404 not_found           unknown instance/volume/key/script id, unknown path
  503 service_unavailable no capacity: "Not enough resources to deploy a 1 GPU instance type
                          <type> in <location>" (the real API's words, as users quote them)

Authentication (authentication.py): every call but the token one needs
`Authorization: Bearer <access_token>`.
  POST /oauth2/token {"grant_type": "client_credentials", "client_id", "client_secret"}
       or {"grant_type": "refresh_token", "refresh_token"}
       -> 200 {"access_token", "refresh_token", "scope", "token_type": "Bearer", "expires_in"}
       Access tokens expire after expires_in seconds (knob token_ttl), refresh tokens after
       refresh_ttl; a refresh answers a new pair. Bad credentials or refresh token -> 401.

Catalogue:
  GET /instance-types -> [{"id", "instance_type", "price_per_hour", "spot_price", "description",
       "cpu", "gpu", "memory", "gpu_memory", "storage", "currency"}]
  GET /instance-availability[?isSpot=true|false][&locationCode=FIN-01]
       -> [{"location_code", "availabilities": [instance_type, ...]}]
  GET /instance-availability/<type>[?isSpot=..][&location_code=..] -> true | false
       (is_spot/location_code/locationCode spellings all accepted: the SDK uses both)
  GET /locations -> [{"code", "name", "country_code"}]
  GET /images -> [{"id", "name", "image_type", "details", "is_default", "is_cluster", "category"}]
  GET /balance -> {"amount", "currency": "usd"}

Instances (instances.py; statuses as constants.InstanceStatus):
  POST /instances {"instance_type", "image" (an image_type or a detached OS volume's id),
       "hostname", "description", "ssh_key_ids" (list or one id), "location_code",
       "startup_script_id", "existing_volumes" [ids], "volumes", "os_volume" {"name","size"},
       "is_spot", "contract", "pricing", "coupon"} -> 202, the new id as text/plain.
       The instance is `ordered`, then `provisioning` (the SDK's create() returns once it left
       `ordered`), then `running` with `ip` set, or `error` when its startup script failed.
  GET /instances[?status=S] -> [Instance] (deleted ones are not listed)
  GET /instances/<id> -> Instance {"id", "instance_type", "price_per_hour", "hostname",
       "description", "ip", "status", "created_at", "ssh_key_ids", "cpu", "gpu", "memory",
       "storage", "gpu_memory", "os_volume_id", "location", "image", "startup_script_id",
       "is_spot", "contract", "pricing"}; a deleted one answers status "discontinued".
  PUT /instances {"id": id | [ids], "action": start|shutdown|delete|hibernate|restore,
       "volume_ids": [ids] | null, "delete_permanently": bool} -> 202, empty.
       start: offline/hibernating -> running; shutdown: running -> offline (the lab host's sshd
       and Docker engine stop); hibernate: offline -> hibernating; delete: running, offline,
       error or hibernating -> discontinued, the lab host is removed in the background. Volumes
       on delete (the SDK's instances_and_volumes example): volume_ids null -> the OS volume is
       deleted, the others detached; a list -> exactly those are deleted (to the trash, or for
       good with delete_permanently), the others detached. Anything else -> 400, nothing done.

Keys, scripts, volumes:
  GET /sshkeys -> [{"id", "name", "key"}]; GET /sshkeys/<id> -> [{...}] (a list of one, as the
       SDK reads it); POST /sshkeys {"name", "key"} -> 201, id as text; DELETE /sshkeys {"keys": [ids]};
       DELETE /sshkeys/<id>
  GET /scripts -> [{"id", "name", "script"}]; GET /scripts/<id> -> [{...}]; POST /scripts
       {"name", "script"} -> 201, id as text; DELETE /scripts {"scripts": [ids]}; DELETE /scripts/<id>
  GET /volumes[?status=S] -> [Volume]; GET /volumes/<id>; GET /volumes/trash -> deleted ones.
       Volume {"id", "status" (attached|detached|deleted), "name", "size", "type", "is_os_volume",
       "created_at", "target", "location", "instance_id", "ssh_key_ids", "deleted_at"}.
       The stand-in starts with one data volume, "models" (NVMe, FIN-01 unless the knob
       volume_location says otherwise), which create's existing_volumes attaches (same location
       only, detached only; instance_id then names the instance) and delete detaches.

Billing (STAND-IN rule; Verda does not document when a shut-down instance bills): an instance
bills per second at its price_per_hour (spot_price when is_spot) from the moment it leaves
`provisioning` (running or error) until it is deleted, also while `offline`; `hibernating` does
not bill. GET /balance answers the starting balance less all of it. Knob billing_speed multiplies
the clock for billing only (3600: one billed hour per second). Nothing happens at zero.

The startup script (lab/verda_hosts.py runs it): as root, in the lab host's network namespace,
in a private mount namespace where /etc/ssh and /root are folders of that lab host, with PATH
starting at shims for `tailscale` (up --authkey=K checks K against the accepted key: the lab host's
tailnet address is its lab address; `tailscale ip -4` prints it) and `systemctl` (logged; `restart
ssh` is honoured by starting sshd after the script). When the script exits 0, the host's sshd
starts with /etc/ssh/ssh_host_ed25519_key as the script left it, and the instance is running.

Lab-only endpoints (never in Verda's API, no token needed):
  GET  /__lab/instances -> [{"id", "hostname", "status", "lab_host", "address", "user",
       "host_present", "script_exit", "tailscale", "cost"}] (deleted ones too, while their host exists)
  POST /__lab/knobs {knob: value} -> the knobs now (GET: the same without changing). Knobs (also
       at start): no_capacity ["TYPE[@LOCATION][/spot|/ondemand]", "*"...], ordered_delay (0.5 s),
       provisioning_delay (0 s, before the lab host is made), fail_next_script (count: the next
       instances' scripts fail), script_timeout (300 s), balance (500 usd: the balance now),
       billing_speed (1), prices {type: {"price_per_hour", "spot_price"}} (for instances created
       later), token_ttl (3600 s), refresh_ttl (86400 s), volume_location (at start only).
  POST /__lab/shutdown -> deletes every instance's lab host, then the process ends.
"""
from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
import traceback
import uuid
from typing import Callable, Protocol

try:
    from . import common
except ImportError:  # pragma: no cover - run as a script
    import common

STANDIN = "verda-api"
SERVER_HEADER = "verda-api-STAND-IN/1 (comfyume lab only; not Verda's API)"
API = "/v1"

LOCATIONS = [
    {"code": "FIN-01", "name": "Finland 1", "country_code": "FI"},
    {"code": "FIN-02", "name": "Finland 2", "country_code": "FI"},
    {"code": "FIN-03", "name": "Finland 3", "country_code": "FI"},
    {"code": "ICE-01", "name": "Iceland 1", "country_code": "IS"},
]

# (instance_type, gpus, gpu model, gpu GB, vCPUs, RAM GB, price/h, spot/h): the lab's catalogue and
# prices (stand-in figures in Verda's naming, not a quote).
_TYPES = [
    ("1H100.80S.30V", 1, "H100 SXM5 80GB", 80, 30, 120, 2.19, 0.99),
    ("1A100.22V", 1, "A100 SXM4 40GB", 40, 22, 120, 1.29, 0.57),
    ("1L40S.20V", 1, "L40S 48GB", 48, 20, 60, 0.91, 0.40),
    ("1V100.6V", 1, "Tesla V100 16GB", 16, 6, 23, 0.39, 0.14),
    ("CPU.4V.16G", 0, "", 0, 4, 16, 0.03, 0.01),
]

IMAGES = [
    ("ubuntu-24.04-cuda-12.8-open-docker", "Ubuntu 24.04 + CUDA 12.8 Open + Docker", True),
    ("ubuntu-22.04-cuda-12.4-docker", "Ubuntu 22.04 + CUDA 12.4 + Docker", False),
    ("ubuntu-24.04", "Ubuntu 24.04", False),
]

ORDERED, PROVISIONING, RUNNING, OFFLINE = "ordered", "provisioning", "running", "offline"
HIBERNATING, ERROR, DISCONTINUED = "hibernating", "error", "discontinued"
BILLED = (RUNNING, OFFLINE, ERROR)
DELETABLE = (RUNNING, OFFLINE, ERROR, HIBERNATING)

DEFAULT_KNOBS = {
    "no_capacity": [], "ordered_delay": 0.5, "provisioning_delay": 0.0, "fail_next_script": 0,
    "script_timeout": 300.0, "balance": 500.0, "billing_speed": 1.0, "prices": {},
    "token_ttl": 3600, "refresh_ttl": 86400, "volume_location": "FIN-01",
}


class ApiError(common.HTTPError):
    """An answer in the API's error shape: {"code", "message"}."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(status, {"code": code, "message": message})
        self.code, self.message = code, message

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"


def bad(message: str) -> ApiError:
    return ApiError(400, "invalid_request", message)


def not_found(what: str, ident: str) -> ApiError:
    return ApiError(404, "not_found", f"{what} {ident} not found")


class ProvisionFailed(Exception):
    """The instance's lab host or startup script failed: the instance goes to `error`."""


class Provisioner(Protocol):
    """What makes and removes the lab hosts behind instances (lab/verda_hosts.py)."""

    def host_name(self, hostname: str, instance_id: str) -> str: ...  # may wait for a removal
    def create(self, name: str, *, authorized_keys: str, script: str | None, fail: bool,
               timeout: float) -> dict: ...
    def power(self, name: str, on: bool) -> None: ...
    def remove(self, name: str) -> None: ...


def iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


def instance_types(prices: dict) -> list[dict]:
    out = []
    for name, gpus, model, gpu_gb, cpus, ram, price, spot in _TYPES:
        p = prices.get(name, {})
        gpu_desc = f"{gpus}x {model}" if gpus else ""
        out.append({
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"verda-lab-type:{name}")),
            "instance_type": name,
            "price_per_hour": float(p.get("price_per_hour", price)),
            "spot_price": float(p.get("spot_price", spot)),
            "description": gpu_desc or f"{cpus} CPU {ram}GB RAM",
            "cpu": {"description": f"{cpus} CPU", "number_of_cores": cpus},
            "gpu": {"description": gpu_desc, "number_of_gpus": gpus},
            "memory": {"description": f"{ram}GB RAM", "size_in_gigabytes": ram},
            "gpu_memory": {"description": f"{gpu_gb}GB GPU RAM" if gpus else "", "size_in_gigabytes": gpu_gb},
            "storage": {"description": "dynamic"},
            "currency": "usd",
        })
    return out


def parse_no_capacity(entries) -> list[tuple[str, str | None, bool | None]]:
    """["TYPE[@LOCATION][/spot|/ondemand]", ...] -> [(type or "*", location or None, spot or None)]."""
    if isinstance(entries, str):
        entries = [entries]
    if not isinstance(entries, list):
        raise ValueError("no_capacity must be a list of \"TYPE[@LOCATION][/spot|/ondemand]\" strings")
    out = []
    for entry in entries:
        text, spot = str(entry), None
        if "/" in text:
            text, kind = text.split("/", 1)
            if kind not in ("spot", "ondemand"):
                raise ValueError(f"no_capacity entry {entry!r}: after '/' say spot or ondemand")
            spot = kind == "spot"
        kind_type, _, loc = text.partition("@")
        out.append((kind_type or "*", loc or None, spot))
    return out


def has_capacity(rules, instance_type: str, location: str, spot: bool) -> bool:
    for t, loc, s in rules:
        if t in ("*", instance_type) and loc in (None, location) and s in (None, spot):
            return False
    return True


def truthy(value) -> bool | None:
    if value is None or value == "":
        return None
    return str(value).lower() in ("1", "true", "yes")


class Cloud:
    """The account's state and every rule of the contract, without HTTP (unit-testable)."""

    def __init__(self, *, client_id: str, client_secret: str, provisioner: Provisioner | None,
                 knobs: dict | None = None, clock: Callable[[], float] = time.time,
                 background: Callable[[Callable[[], None]], None] | None = None):
        self.client_id, self.client_secret = client_id, client_secret
        self.provisioner = provisioner
        self.clock = clock
        self.background = background or (lambda fn: threading.Thread(target=fn, daemon=True).start())
        self.lock = threading.RLock()
        self.knobs = dict(DEFAULT_KNOBS)
        self.no_capacity: list = []
        self.access: dict[str, float] = {}
        self.refresh: dict[str, float] = {}
        self.instances: dict[str, dict] = {}
        self.keys: dict[str, dict] = {}
        self.scripts: dict[str, dict] = {}
        self.volumes: dict[str, dict] = {}
        self.lab: dict[str, dict] = {}  # instance id -> lab facts
        self.spent = 0.0
        self.last_tick = clock()
        self.set_knobs(knobs or {})
        now = clock()
        self.volume_id = str(uuid.uuid4())
        self.volumes[self.volume_id] = {
            "id": self.volume_id, "status": "detached", "name": "models", "size": 500, "type": "NVMe",
            "is_os_volume": False, "created_at": iso(now), "target": None,
            "location": self.knobs["volume_location"], "instance_id": None, "ssh_key_ids": [], "deleted_at": None}

    # -- knobs and billing ------------------------------------------------------------------
    def set_knobs(self, changes: dict) -> dict:
        if not isinstance(changes, dict):
            raise bad("knobs must be a JSON object")
        unknown = sorted(set(changes) - set(DEFAULT_KNOBS))
        if unknown:
            raise bad(f"unknown knob(s) {', '.join(unknown)}; known: {', '.join(sorted(DEFAULT_KNOBS))}")
        with self.lock:
            self._tick()
            try:
                if "no_capacity" in changes:
                    self.no_capacity = parse_no_capacity(changes["no_capacity"])
                for key in ("ordered_delay", "provisioning_delay", "script_timeout", "billing_speed",
                            "balance", "token_ttl", "refresh_ttl"):
                    if key in changes:
                        changes = dict(changes, **{key: float(changes[key])})
                if "fail_next_script" in changes:
                    changes = dict(changes, fail_next_script=int(changes["fail_next_script"]))
                if "prices" in changes and not isinstance(changes["prices"], dict):
                    raise ValueError("prices must be {instance_type: {price_per_hour, spot_price}}")
            except (TypeError, ValueError) as exc:
                raise bad(f"bad knob value: {exc}") from None
            self.knobs.update(changes)
            if "balance" in changes:
                self.spent = 0.0
            return self.knob_view()

    def knob_view(self) -> dict:
        return dict(self.knobs, balance=round(self.balance_amount(), 6))

    def _tick(self) -> None:
        now = self.clock()
        elapsed = max(0.0, now - self.last_tick) * float(self.knobs["billing_speed"])
        self.last_tick = now
        for iid, inst in self.instances.items():
            if inst["status"] in BILLED:
                cost = inst["price_per_hour"] * elapsed / 3600.0
                self.spent += cost
                self.lab[iid]["cost"] += cost

    def balance_amount(self) -> float:
        with self.lock:
            self._tick()
            return float(self.knobs["balance"]) - self.spent

    # -- authentication ---------------------------------------------------------------------
    def token(self, body) -> dict:
        if not isinstance(body, dict):
            raise bad("the token request needs a JSON body")
        grant = body.get("grant_type")
        with self.lock:
            now = self.clock()
            if grant == "client_credentials":
                if not (secrets.compare_digest(str(body.get("client_id", "")), self.client_id)
                        and secrets.compare_digest(str(body.get("client_secret", "")), self.client_secret)):
                    raise ApiError(401, "unauthorized_request", "Invalid client credentials")
            elif grant == "refresh_token":
                old = str(body.get("refresh_token", ""))
                if self.refresh.get(old, 0) <= now:
                    raise ApiError(401, "unauthorized_request", "Invalid or expired refresh token")
                del self.refresh[old]
            else:
                raise bad("grant_type must be client_credentials or refresh_token")
            access, refresh = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
            ttl = float(self.knobs["token_ttl"])
            self.access[access] = now + ttl
            self.refresh[refresh] = now + float(self.knobs["refresh_ttl"])
            return {"access_token": access, "refresh_token": refresh, "scope": "cloud-api-v1",
                    "token_type": "Bearer", "expires_in": int(ttl) if ttl >= 1 else ttl}

    def authorize(self, header: str | None) -> None:
        kind, _, token = (header or "").partition(" ")
        with self.lock:
            if kind.lower() != "bearer" or self.access.get(token.strip(), 0) <= self.clock():
                raise ApiError(401, "unauthorized_request", "Access token is missing, invalid or expired")

    # -- catalogue --------------------------------------------------------------------------
    def types(self) -> list[dict]:
        return instance_types(self.knobs["prices"])

    def type_named(self, name: str) -> dict:
        for t in self.types():
            if t["instance_type"] == name:
                return t
        raise bad(f"Invalid instance type {name!r}")

    def availability(self, spot: bool | None, location: str | None) -> list[dict]:
        with self.lock:
            out = []
            for loc in LOCATIONS:
                if location and loc["code"] != location:
                    continue
                avail = [t["instance_type"] for t in self.types()
                         if all(has_capacity(self.no_capacity, t["instance_type"], loc["code"], s)
                                for s in ((False, True) if spot is None else (spot,)))]
                out.append({"location_code": loc["code"], "availabilities": avail})
            return out

    def is_available(self, instance_type: str, spot: bool | None, location: str | None) -> bool:
        self.type_named(instance_type)
        return any(instance_type in a["availabilities"] for a in self.availability(spot, location))

    # -- keys and scripts -------------------------------------------------------------------
    def add_key(self, body) -> str:
        if not isinstance(body, dict) or not str(body.get("name", "")).strip() or not str(body.get("key", "")).strip():
            raise bad("an SSH key needs a name and a key")
        parts = str(body["key"]).split()
        if len(parts) < 2 or not parts[0].startswith(("ssh-", "ecdsa-", "sk-")):
            raise bad("the key is not an OpenSSH public key")
        kid = str(uuid.uuid4())
        with self.lock:
            self.keys[kid] = {"id": kid, "name": str(body["name"]), "key": str(body["key"]).strip()}
        return kid

    def add_script(self, body) -> str:
        if not isinstance(body, dict) or not str(body.get("name", "")).strip() or not isinstance(body.get("script"), str):
            raise bad("a startup script needs a name and a script")
        sid = str(uuid.uuid4())
        with self.lock:
            self.scripts[sid] = {"id": sid, "name": str(body["name"]), "script": body["script"]}
        return sid

    @staticmethod
    def _one(table: dict, ident: str, what: str) -> dict:
        if ident not in table:
            raise not_found(what, ident)
        return table[ident]

    @staticmethod
    def _delete_from(table: dict, ids, what: str) -> None:
        if isinstance(ids, str):
            ids = [ids]
        if not isinstance(ids, list) or not ids:
            raise bad(f"say which {what}s to delete (a list of ids)")
        missing = [i for i in ids if i not in table]
        if missing:
            raise not_found(what, ", ".join(missing))
        for i in ids:
            del table[i]

    # -- instances --------------------------------------------------------------------------
    def create(self, body) -> str:
        if not isinstance(body, dict):
            raise bad("the instance request needs a JSON body")
        for field in ("instance_type", "image", "hostname"):
            if not isinstance(body.get(field), str) or not body[field].strip():
                raise bad(f"{field} is required")
        itype = self.type_named(body["instance_type"])
        location = body.get("location_code") or "FIN-03"
        if location not in {l["code"] for l in LOCATIONS}:
            raise bad(f"Invalid location code {location!r}")
        spot = bool(body.get("is_spot"))
        key_ids = body.get("ssh_key_ids") or []
        if isinstance(key_ids, str):
            key_ids = [key_ids]
        with self.lock:
            self._tick()
            unknown = [k for k in key_ids if k not in self.keys]
            if unknown:
                raise bad(f"Invalid SSH key id(s): {', '.join(map(str, unknown))}")
            script_id = body.get("startup_script_id")
            if script_id and script_id not in self.scripts:
                raise bad(f"Invalid startup script id {script_id}")
            os_volume = self.volumes.get(body["image"])
            if os_volume is None and body["image"] not in {i[0] for i in IMAGES}:
                raise bad(f"Invalid image {body['image']!r}: neither an image type nor an OS volume id")
            if os_volume is not None and (not os_volume["is_os_volume"] or os_volume["status"] != "detached"):
                raise bad(f"volume {body['image']} is not a detached OS volume")
            existing = body.get("existing_volumes") or []
            for vid in existing:
                vol = self.volumes.get(vid)
                if vol is None or vol["status"] == "deleted":
                    raise bad(f"Invalid volume id {vid}")
                if vol["status"] != "detached":
                    raise bad(f"volume {vid} ({vol['name']}) is attached to instance {vol['instance_id']}")
                if vol["location"] != location:
                    raise bad(f"volume {vid} ({vol['name']}) is in {vol['location']}, not in {location}")
            price = itype["spot_price"] if spot else itype["price_per_hour"]
            if self.balance_amount() < price:
                raise ApiError(400, "insufficient_funds",
                               f"Insufficient funds: the balance does not cover one hour of {itype['instance_type']}")
            if not has_capacity(self.no_capacity, itype["instance_type"], location, spot):
                gpus = itype["gpu"]["number_of_gpus"]
                raise ApiError(503, "service_unavailable",
                               f"Not enough resources to deploy a {gpus} GPU instance type "
                               f"{itype['instance_type']} in {location}")
            now = self.clock()
            iid = str(uuid.uuid4())
            if os_volume is None:
                os_spec = body.get("os_volume") or {}
                os_volume = {"id": str(uuid.uuid4()), "name": str(os_spec.get("name") or f"OS-{body['hostname']}"),
                             "size": int(os_spec.get("size") or 50), "type": "NVMe", "is_os_volume": True,
                             "created_at": iso(now), "location": location, "ssh_key_ids": list(key_ids),
                             "deleted_at": None}
                self.volumes[os_volume["id"]] = os_volume
            os_volume.update(status="attached", instance_id=iid, target="vda")
            for n, vid in enumerate(existing):
                self.volumes[vid].update(status="attached", instance_id=iid, target=f"vd{chr(ord('b') + n)}")
            inst = {
                "id": iid, "instance_type": itype["instance_type"], "price_per_hour": price,
                "hostname": body["hostname"], "description": str(body.get("description") or ""),
                "ip": None, "status": ORDERED, "created_at": iso(now), "ssh_key_ids": list(key_ids),
                "cpu": itype["cpu"], "gpu": itype["gpu"], "memory": itype["memory"], "storage": itype["storage"],
                "gpu_memory": itype["gpu_memory"], "os_volume_id": os_volume["id"], "location": location,
                "image": body["image"], "startup_script_id": script_id or None, "is_spot": spot,
                "contract": "SPOT" if spot else (body.get("contract") or "PAY_AS_YOU_GO"),
                "pricing": body.get("pricing") or "FIXED_PRICE",
            }
            self.instances[iid] = inst
            fail = self.knobs["fail_next_script"] > 0
            if fail:
                self.knobs["fail_next_script"] -= 1
            self.lab[iid] = {"lab_host": None, "address": None, "user": None, "host_present": False,
                             "script_exit": None, "tailscale": None, "cost": 0.0, "detail": ""}
            authorized = "\n".join(self.keys[k]["key"] for k in key_ids)
            script = self.scripts[script_id]["script"] if script_id else None
        self.background(lambda: self._provision(iid, authorized, script, fail))
        return iid

    def _set(self, iid: str, **fields) -> None:
        with self.lock:
            self._tick()
            self.instances[iid].update(fields)

    def _provision(self, iid: str, authorized: str, script: str | None, fail: bool) -> None:
        time.sleep(float(self.knobs["ordered_delay"]))
        self._set(iid, status=PROVISIONING)
        time.sleep(float(self.knobs["provisioning_delay"]))
        if self.provisioner is None:
            self._set(iid, status=RUNNING, ip="192.0.2.1")
            return
        try:
            # named now, not at create: a same-named host still being deleted is waited for
            name = self.provisioner.host_name(self.instances[iid]["hostname"], iid)
            with self.lock:
                self.lab[iid].update(lab_host=name, host_present=True)  # from here on: remove it on delete
            facts = self.provisioner.create(name, authorized_keys=authorized, script=script, fail=fail,
                                            timeout=float(self.knobs["script_timeout"]))
        except ProvisionFailed as exc:
            with self.lock:
                self.lab[iid]["detail"] = str(exc)
                self.lab[iid].update(getattr(exc, "facts", {}) or {})
            self._set(iid, status=ERROR)
            return
        except Exception as exc:  # a lab failure must still end in a status the client can see
            common.log(f"{STANDIN}: provisioning {iid} failed: {exc!r}\n{traceback.format_exc()}")
            with self.lock:
                self.lab[iid]["detail"] = f"lab host failed: {exc}"
            self._set(iid, status=ERROR)
            return
        with self.lock:
            self.lab[iid].update(facts)
        self._set(iid, status=RUNNING, ip=facts.get("address"))

    def instance(self, iid: str) -> dict:
        with self.lock:
            return dict(self._one(self.instances, iid, "Instance"))

    def list_instances(self, status: str | None) -> list[dict]:
        with self.lock:
            return [dict(i) for i in self.instances.values()
                    if i["status"] != DISCONTINUED and (not status or i["status"] == status)]

    def action(self, body) -> None:
        if not isinstance(body, dict):
            raise bad("the action request needs a JSON body")
        ids = body.get("id")
        ids = [ids] if isinstance(ids, str) else ids
        if not isinstance(ids, list) or not ids:
            raise bad("id is required (an instance id or a list of them)")
        action = body.get("action")
        allowed = {"start": (OFFLINE, HIBERNATING), "shutdown": (RUNNING,), "hibernate": (OFFLINE,),
                   "restore": (HIBERNATING,), "delete": DELETABLE}
        if action not in allowed:
            raise bad(f"Invalid action {action!r}; one of {', '.join(allowed)}")
        volume_ids = body.get("volume_ids")
        with self.lock:
            self._tick()
            insts = [self._one(self.instances, i, "Instance") for i in ids]
            for inst in insts:
                if inst["status"] not in allowed[action]:
                    raise bad(f"Cannot {action} instance {inst['id']} ({inst['hostname']}) while it is "
                              f"{inst['status']}; possible when it is {' or '.join(allowed[action])}")
            if action == "delete" and volume_ids is not None:
                if not isinstance(volume_ids, list):
                    raise bad("volume_ids must be a list of volume ids or null")
                mine = {v["id"] for v in self.volumes.values() if v["instance_id"] in ids}
                stray = [v for v in volume_ids if v not in mine]
                if stray:
                    raise bad(f"volume(s) {', '.join(stray)} are not attached to the instance(s) being deleted")
            for inst in insts:
                getattr(self, f"_do_{action}")(inst, volume_ids, bool(body.get("delete_permanently")))

    def _do_shutdown(self, inst, *_):
        inst["status"] = OFFLINE
        self._power(inst, False)

    def _do_start(self, inst, *_):
        inst["status"] = RUNNING
        self._power(inst, True)

    def _do_hibernate(self, inst, *_):
        inst["status"] = HIBERNATING

    def _do_restore(self, inst, *_):
        inst["status"] = OFFLINE

    def _power(self, inst, on: bool) -> None:
        name = self.lab[inst["id"]]["lab_host"]
        if self.provisioner and name:
            self.provisioner.power(name, on)

    def _do_delete(self, inst, volume_ids, permanently: bool) -> None:
        now = self.clock()
        for vol in [v for v in self.volumes.values() if v["instance_id"] == inst["id"]]:
            doomed = vol["is_os_volume"] if volume_ids is None else vol["id"] in volume_ids
            vol.update(status="detached", instance_id=None, target=None)
            if doomed and permanently:
                del self.volumes[vol["id"]]
            elif doomed:
                vol.update(status="deleted", deleted_at=iso(now))
        inst.update(status=DISCONTINUED)
        name = self.lab[inst["id"]]["lab_host"]
        if self.provisioner and name and self.lab[inst["id"]]["host_present"]:
            self.background(lambda: self._remove_host(inst["id"], name))

    def _remove_host(self, iid: str, name: str) -> None:
        try:
            self.provisioner.remove(name)
        except Exception as exc:
            common.log(f"{STANDIN}: removing lab host {name} failed: {exc!r}")
            return
        with self.lock:
            self.lab[iid]["host_present"] = False

    def remove_all(self) -> list[str]:
        """Delete every lab host made here (the stand-in stops); waits for provisioning to end."""
        deadline = time.monotonic() + float(self.knobs["script_timeout"]) + 60
        while time.monotonic() < deadline:
            with self.lock:
                busy = [i for i in self.instances.values() if i["status"] in (ORDERED, PROVISIONING)]
            if not busy:
                break
            time.sleep(0.2)
        with self.lock:
            todo = [(iid, f["lab_host"]) for iid, f in self.lab.items() if f["host_present"] and f["lab_host"]]
        for iid, name in todo:
            self._remove_host(iid, name)
        return [name for _, name in todo]

    # -- volumes ----------------------------------------------------------------------------
    def list_volumes(self, status: str | None) -> list[dict]:
        with self.lock:
            return [dict(v) for v in self.volumes.values()
                    if v["status"] != "deleted" and (not status or v["status"] == status)]

    def trash(self) -> list[dict]:
        with self.lock:
            return [dict(v) for v in self.volumes.values() if v["status"] == "deleted"]

    def lab_view(self) -> list[dict]:
        with self.lock:
            self._tick()
            out = []
            for iid, facts in self.lab.items():
                inst = self.instances[iid]
                if inst["status"] == DISCONTINUED and not facts["host_present"]:
                    continue
                out.append(dict(facts, id=iid, hostname=inst["hostname"], status=inst["status"],
                                cost=round(facts["cost"], 6)))
            return out


def authkey_digest(key: str) -> str:
    """How the accepted Tailscale auth key is handed to the shims: its SHA-256, never the key."""
    return hashlib.sha256(key.encode()).hexdigest()


# ----------------------------------------------------------------------------- HTTP
class Handler(common.StandinHandler):
    standin = STANDIN
    cloud: Cloud = None  # set by make_server
    on_shutdown: Callable[[], None] = staticmethod(lambda: None)
    quiet_paths = ("/__lab/instances",)

    def version_string(self) -> str:
        return SERVER_HEADER

    def do_PUT(self):
        self._dispatch("PUT")

    def send_text(self, status: int, text: str) -> None:
        self.send_bytes(status, text.encode(), "text/plain; charset=utf-8")

    def route(self, method: str, path: str, query: dict) -> None:
        cloud = self.cloud
        if path.startswith("/__lab/"):
            return self._lab(method, path, cloud)
        if not path.startswith(API + "/"):
            raise ApiError(404, "not_found", f"no such endpoint: {method} {path}")
        path = path[len(API):].rstrip("/") or "/"
        if (method, path) == ("POST", "/oauth2/token"):
            return self.send_json(200, cloud.token(self.read_json()))
        cloud.authorize(self.headers.get("Authorization"))
        parts = path.strip("/").split("/")
        head, rest = parts[0], parts[1:]
        spot = truthy(query.get("isSpot", query.get("is_spot")))
        location = query.get("locationCode") or query.get("location_code") or None
        if method == "GET" and path == "/instance-types":
            return self.send_json(200, cloud.types())
        if method == "GET" and head == "instance-availability":
            if rest:
                return self.send_json(200, cloud.is_available(rest[0], spot, location))
            return self.send_json(200, cloud.availability(spot, location))
        if method == "GET" and path == "/locations":
            return self.send_json(200, LOCATIONS)
        if method == "GET" and path == "/images":
            return self.send_json(200, [{"id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"verda-lab-image:{t}")),
                                         "name": n, "image_type": t, "details": ["lab stand-in image"],
                                         "is_default": d, "is_cluster": False, "category": "ubuntu"}
                                        for t, n, d in IMAGES])
        if method == "GET" and path == "/balance":
            return self.send_json(200, {"amount": round(cloud.balance_amount(), 6), "currency": "usd"})
        if head == "instances":
            if method == "GET" and not rest:
                return self.send_json(200, cloud.list_instances(query.get("status") or None))
            if method == "GET" and len(rest) == 1:
                return self.send_json(200, cloud.instance(rest[0]))
            if method == "POST" and not rest:
                return self.send_text(202, cloud.create(self.read_json()))
            if method == "PUT" and not rest:
                cloud.action(self.read_json())
                return self.send_bytes(202, b"", "text/plain")
        if head in ("sshkeys", "scripts"):
            table, what, field = ((cloud.keys, "SSH key", "keys") if head == "sshkeys"
                                  else (cloud.scripts, "Startup script", "scripts"))
            if method == "GET" and not rest:
                with cloud.lock:
                    return self.send_json(200, [dict(v) for v in table.values()])
            if method == "GET" and len(rest) == 1:
                with cloud.lock:
                    return self.send_json(200, [dict(cloud._one(table, rest[0], what))])
            if method == "POST" and not rest:
                add = cloud.add_key if head == "sshkeys" else cloud.add_script
                return self.send_text(201, add(self.read_json()))
            if method == "DELETE":
                body = self.read_json() if not rest else None
                with cloud.lock:
                    cloud._delete_from(table, rest[0] if rest else (body or {}).get(field), what)
                return self.send_bytes(200, b"", "text/plain")
        if head == "volumes" and method == "GET":
            if not rest:
                return self.send_json(200, cloud.list_volumes(query.get("status") or None))
            if rest == ["trash"]:
                return self.send_json(200, cloud.trash())
            if len(rest) == 1:
                with cloud.lock:
                    vol = cloud.volumes.get(rest[0])
                    if vol is None:
                        raise not_found("Volume", rest[0])
                    return self.send_json(200, dict(vol))
        raise ApiError(404, "not_found", f"no such endpoint: {method} {API}{path}")

    def _lab(self, method: str, path: str, cloud: Cloud) -> None:
        if (method, path) == ("GET", "/__lab/instances"):
            return self.send_json(200, cloud.lab_view())
        if (method, path) == ("POST", "/__lab/knobs"):
            return self.send_json(200, cloud.set_knobs(self.read_json() or {}))
        if (method, path) == ("GET", "/__lab/knobs"):
            return self.send_json(200, cloud.knob_view())
        if (method, path) == ("POST", "/__lab/shutdown"):
            removed = cloud.remove_all()
            self.send_json(200, {"removed": removed})
            threading.Thread(target=self.on_shutdown, daemon=True).start()
            return
        raise ApiError(404, "not_found", f"no such lab endpoint: {method} {path}")


def make_server(cloud: Cloud, host: str, port: int):
    from http.server import ThreadingHTTPServer
    handler = type("BoundHandler", (Handler,), {"cloud": cloud})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    handler.on_shutdown = staticmethod(server.shutdown)
    return server


def serve(config: dict, provisioner: Provisioner | None) -> None:
    """Serve until SIGTERM or POST /__lab/shutdown, then delete every lab host made. `config`:
    {"listen", "port", "client_id", "client_secret", "ready_file", "knobs"}; the ready file gets
    {"url", "volume_id", "pid"} once the server listens."""
    import os
    import signal
    from pathlib import Path

    cloud = Cloud(client_id=config["client_id"], client_secret=config["client_secret"], provisioner=provisioner,
                  knobs=config.get("knobs") or {})
    server = make_server(cloud, config.get("listen", "100.64.0.254"), int(config.get("port", 0)))
    host, port = server.server_address[:2]
    print(f"STAND-IN {STANDIN} for Verda's public API (lab only; not Verda's service): "
          f"listening on http://{host}:{port}{API}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    tmp = Path(config["ready_file"] + ".tmp")
    tmp.write_text(json.dumps({"url": f"http://{host}:{port}{API}", "volume_id": cloud.volume_id, "pid": os.getpid()}))
    tmp.replace(config["ready_file"])
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        removed = cloud.remove_all()
        print(f"{STANDIN}: stopped; removed lab hosts: {', '.join(removed) or 'none'}", flush=True)
        server.server_close()
