"""Verda's public cloud API, as its official `verda` SDK calls it (repository
DataCrunch-io/datacrunch-python, package `verda/`), reproduced with the standard library: the SDK
is not on this project's package index. The same paths, bodies and error shape:

  POST /oauth2/token            {grant_type: client_credentials, client_id, client_secret}
                                (or {grant_type: refresh_token, refresh_token}) -> access_token, expires_in
  GET  /instance-types          [{instance_type, price_per_hour, spot_price, ...}]
  GET  /instance-availability   ?isSpot=&locationCode= -> [{location_code, availabilities: [type, ...]}]
  GET  /instance-availability/<type>   ?isSpot=&location_code= -> true | false
  GET  /instances, /instances/<id>     the SDK's Instance fields (id, status, ip, price_per_hour, ...)
  POST /instances               {instance_type, image, ssh_key_ids, startup_script_id, hostname,
                                 description, location_code, os_volume, volumes, existing_volumes,
                                 is_spot, coupon} -> the new id, as text
  PUT  /instances               {id: [ids], action: start|shutdown|delete|hibernate, volume_ids}
  GET/POST /sshkeys             [{id, name, key}] / {name, key} -> id as text
  POST /scripts, DELETE /scripts/<id>   startup scripts {name, script} -> id as text
  GET  /volumes                 [{id, name, instance_id, status, ...}]
  GET  /balance                 {amount, currency}

An error answer is {"code": ..., "message": ...} (the SDK's APIException): `VerdaError` keeps both
and the HTTP status. Credentials go only into the token request's body, never into a URL, a
command line or a message. The base URL is the only thing the lab changes (its stand-in).
"""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

STATUSES = ("ordered", "provisioning", "running", "offline", "starting_hibernation", "hibernating",
            "restoring", "error", "discontinued", "deleting", "notfound")
USER_AGENT = "comfyume-fab (verda SDK calls reproduced)"


class VerdaError(Exception):
    """The API refused or could not be reached: `status` (HTTP, 0 = no answer), `code` (the SDK's
    error code: invalid_request, unauthorized_request, insufficient_funds, forbidden_action,
    not_found, server_error, service_unavailable) and `message` (the API's own words)."""

    def __init__(self, status: int, code: str | None, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    @property
    def unauthorized(self) -> bool:
        return self.status in (401, 403) or self.code == "unauthorized_request"

    def __str__(self) -> str:
        return f"{self.message} ({self.code or f'HTTP {self.status}'})"


class VerdaClient:
    """One client per run: a token from the client credentials, refreshed when it expires."""

    def __init__(self, base_url: str, client_id: str, client_secret: str, timeout: float = 20.0):
        self.base = base_url.rstrip("/")
        self.timeout = timeout
        self._credentials = (client_id, client_secret)
        self._token: str | None = None
        self._refresh: str | None = None
        self._expires = 0.0

    # --- transport ------------------------------------------------------------------------------
    def _call(self, method: str, path: str, body: Any = None, params: dict | None = None,
              auth: bool = True) -> tuple[int, bytes]:
        query = {k: v for k, v in (params or {}).items() if v is not None}
        url = self.base + path + ("?" + urllib.parse.urlencode(query) if query else "")
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        req.add_header("User-Agent", USER_AGENT)
        if auth:
            req.add_header("Authorization", f"Bearer {self.token()}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            raw = exc.read()[:2000]
            try:
                err = json.loads(raw)
            except ValueError:
                err = None
            if isinstance(err, dict):
                raise VerdaError(exc.code, err.get("code"), str(err.get("message") or exc.reason)) from None
            raise VerdaError(exc.code, None, raw.decode(errors="replace").strip()[:200] or str(exc.reason)) from None
        except (urllib.error.URLError, OSError) as exc:
            raise VerdaError(0, None, f"the API at {self.base} is not reachable: "
                             f"{getattr(exc, 'reason', None) or exc}") from None

    def _json(self, method: str, path: str, body: Any = None, params: dict | None = None) -> Any:
        _, raw = self._call(method, path, body, params)
        try:
            return json.loads(raw) if raw.strip() else None
        except ValueError:
            raise VerdaError(200, None, f"the API answered {method} {path} with something that is not JSON") from None

    def _text(self, method: str, path: str, body: Any = None) -> str:
        _, raw = self._call(method, path, body)
        text = raw.decode(errors="replace").strip()
        return text.strip('"')  # an id as text (the SDK's `.text`); tolerate a JSON string

    # --- authentication (the SDK's AuthenticationService) ---------------------------------------
    def token(self) -> str:
        if self._token and time.time() < self._expires:
            return self._token
        body = None
        if self._refresh:
            try:
                body = self._token_request({"grant_type": "refresh_token", "refresh_token": self._refresh})
            except VerdaError:
                body = None  # as the SDK: a refused refresh falls back to the client credentials
        if body is None:
            cid, secret = self._credentials
            body = self._token_request({"grant_type": "client_credentials", "client_id": cid, "client_secret": secret})
        token = body.get("access_token") if isinstance(body, dict) else None
        if not token:
            raise VerdaError(401, "unauthorized_request", "the API gave no access token for these client credentials")
        self._token, self._refresh = token, body.get("refresh_token")
        self._expires = time.time() + max(0.0, float(body.get("expires_in") or 3600) - 30)
        return token

    def _token_request(self, payload: dict) -> Any:
        _, raw = self._call("POST", "/oauth2/token", payload, auth=False)
        try:
            return json.loads(raw)
        except ValueError:
            raise VerdaError(200, None, "the token endpoint answered something that is not JSON") from None

    # --- the services ---------------------------------------------------------------------------
    def instance_types(self) -> list[dict]:
        return list(self._json("GET", "/instance-types") or [])

    def price(self, instance_type: str, spot: bool) -> float | None:
        """The price per hour of `instance_type` (spot or on demand), None when the type is unknown."""
        for t in self.instance_types():
            if t.get("instance_type") == instance_type:
                value = t.get("spot_price" if spot else "price_per_hour")
                return float(value) if value is not None else None
        return None

    def is_available(self, instance_type: str, spot: bool, location: str | None) -> bool:
        return bool(self._json("GET", f"/instance-availability/{urllib.parse.quote(instance_type)}",
                               params={"isSpot": str(spot).lower(), "location_code": location}))

    def availabilities(self, spot: bool | None = None, location: str | None = None) -> list[dict]:
        """[{location_code, availabilities: [instance type, ...]}, ...]"""
        return list(self._json("GET", "/instance-availability",
                               params={"isSpot": None if spot is None else str(spot).lower(),
                                       "locationCode": location}) or [])

    def instances(self, status: str | None = None) -> list[dict]:
        return list(self._json("GET", "/instances", params={"status": status}) or [])

    def instance(self, instance_id: str) -> dict:
        return self._json("GET", f"/instances/{urllib.parse.quote(instance_id)}") or {}

    def create_instance(self, *, instance_type: str, image: str, hostname: str, description: str,
                        ssh_key_ids: list[str], location: str, startup_script_id: str | None,
                        existing_volumes: list[str], is_spot: bool, os_volume: dict | None = None) -> str:
        """POST /instances; the new instance's id. (The SDK then polls until it leaves `ordered`;
        the caller here polls until `running`.)"""
        payload = {"instance_type": instance_type, "image": image, "ssh_key_ids": ssh_key_ids,
                   "startup_script_id": startup_script_id, "hostname": hostname, "description": description,
                   "location_code": location, "os_volume": os_volume, "volumes": None,
                   "existing_volumes": existing_volumes or None, "is_spot": is_spot, "coupon": None}
        return self._text("POST", "/instances", payload)

    def action(self, instance_id: str, action: str, volume_ids: list[str] | None = None) -> None:
        """PUT /instances. `delete` with `volume_ids` None deletes no volume: data volumes are kept."""
        self._call("PUT", "/instances", {"id": [instance_id], "action": action, "volume_ids": volume_ids})

    def ssh_keys(self) -> list[dict]:
        return list(self._json("GET", "/sshkeys") or [])

    def add_ssh_key(self, name: str, public_key: str) -> str:
        return self._text("POST", "/sshkeys", {"name": name, "key": public_key})

    def add_startup_script(self, name: str, script: str) -> str:
        return self._text("POST", "/scripts", {"name": name, "script": script})

    def delete_startup_script(self, script_id: str) -> None:
        self._call("DELETE", f"/scripts/{urllib.parse.quote(script_id)}")

    def volumes(self) -> list[dict]:
        return list(self._json("GET", "/volumes") or [])

    def balance(self) -> dict:
        return self._json("GET", "/balance") or {}
