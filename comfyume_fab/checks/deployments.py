"""The provider's container-deployment API (Verda's, as its `verda` SDK calls it): replicas and
scaling of one deployment. REST with the standard library: the SDK is not on this project's
package index, so its calls are reproduced here, not imported:

  POST  <api>/oauth2/token                               client credentials -> Bearer access token
  GET   <api>/container-deployments/<name>/scaling       min/max_replica_count, policies
  PATCH <api>/container-deployments/<name>/scaling       the same, changed
  GET   <api>/container-deployments/<name>/replicas      {"list": [{"id", "status", "started_at"}]}

Credentials are the secrets VERDA_CLIENT_ID and VERDA_CLIENT_SECRET; they go only into the body of
the token request, never into a command line or a message.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from ..errors import UnhealthyError

# The deployment API refused or failed: one sentence (an UnhealthyError, exit code 4).
DeploymentError = UnhealthyError


class DeploymentAPI:
    def __init__(self, base: str, client_id: str, client_secret: str, timeout: float = 15.0):
        self.base, self.timeout = base.rstrip("/"), timeout
        self._credentials = (client_id, client_secret)
        self._token: str | None = None

    def _request(self, method: str, path: str, body: Any = None, auth: bool = True) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if auth:
            req.add_header("Authorization", f"Bearer {self.token()}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            text = exc.read()[:200].decode(errors="replace").strip()
            hint = (" (check VERDA_CLIENT_ID and VERDA_CLIENT_SECRET)" if exc.code == 401 else
                    " (check the tier's deployment name)" if exc.code == 404 else "")
            raise DeploymentError(f"the deployment API answered HTTP {exc.code} to {method} {path}: {text}{hint}") \
                from None
        except (urllib.error.URLError, OSError) as exc:
            raise DeploymentError(f"the deployment API at {self.base} is not reachable: "
                                  f"{getattr(exc, 'reason', None) or exc}") from None
        try:
            return json.loads(raw) if raw.strip() else None
        except ValueError:
            raise DeploymentError(f"the deployment API answered {method} {path} with something that is not JSON") \
                from None

    def token(self) -> str:
        if self._token is None:
            cid, secret = self._credentials
            body = self._request("POST", "/oauth2/token", {"grant_type": "client_credentials", "client_id": cid,
                                                           "client_secret": secret}, auth=False)
            self._token = (body or {}).get("access_token")
            if not self._token:
                raise DeploymentError("the deployment API gave no access token for these client credentials")
        return self._token

    def scaling(self, deployment: str) -> dict:
        return self._request("GET", f"/container-deployments/{deployment}/scaling") or {}

    def set_scaling(self, deployment: str, changes: dict) -> dict:
        return self._request("PATCH", f"/container-deployments/{deployment}/scaling", changes) or {}

    def replicas(self, deployment: str) -> list[dict]:
        return list((self._request("GET", f"/container-deployments/{deployment}/replicas") or {}).get("list") or [])


def api_for(inv) -> DeploymentAPI | None:
    """The deployment API of this inventory, when serverless.api and both credentials are set."""
    sv = inv.serverless
    cid, secret = inv.secrets.get("VERDA_CLIENT_ID"), inv.secrets.get("VERDA_CLIENT_SECRET")
    if not sv.api or not cid or not secret:
        return None
    return DeploymentAPI(sv.api, cid.reveal(), secret.reveal(), timeout=inv.timeouts.connect + 5)


def describe(deployment: str, scaling: dict, replicas: list[dict]) -> tuple[str, dict]:
    """A one-line summary and the --json block of one deployment's replicas and scaling."""
    low, high = scaling.get("min_replica_count"), scaling.get("max_replica_count")
    running = sum(1 for r in replicas if r.get("status") == "running")
    block = {"deployment": deployment, "min_replicas": low, "max_replicas": high, "replicas": len(replicas),
             "running": running, "scale_down_delay_s": (scaling.get("scale_down_policy") or {}).get("delay_seconds")}
    return (f"deployment {deployment}: {len(replicas)} replica(s), {running} running; scaling min {low} max {high}",
            block)
