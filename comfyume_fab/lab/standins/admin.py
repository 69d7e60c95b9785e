"""STAND-IN for the comfyume admin dashboard (lab only; not the real service).

Follows the real admin contract (docs/comfyume-system.md): `GET /health` answers
{"status": "healthy"} without auth; everything else needs HTTP Basic auth with ADMIN_USERNAME
(default admin) / ADMIN_PASSWORD, compared in constant time, else 401 with WWW-Authenticate.
An unset ADMIN_PASSWORD refuses every login (never an open dashboard).
Authenticated requests get a small HTML page.

Env: ADMIN_LISTEN_PORT (8080), ADMIN_USERNAME (admin), ADMIN_PASSWORD.
"""
from __future__ import annotations

import base64
import hmac
import html
import os

try:
    from . import common
except ImportError:  # run as a script inside the stand-in container
    import common

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>ComfyuME admin (stand-in)</title></head>
<body><h1>ComfyuME admin</h1>
<p>STAND-IN admin dashboard for the lab; not the real service.</p>
<p>Signed in as <b>{user}</b>.</p></body></html>
"""


def authorized(header: str | None) -> str | None:
    """The user name when the Basic credentials match, else None."""
    password = os.environ.get("ADMIN_PASSWORD", "")
    if not header or not header.startswith("Basic ") or not password:
        return None
    try:
        user, _, given = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8").partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    expected_user = common.env_str("ADMIN_USERNAME", "admin")
    user_ok = hmac.compare_digest(user.encode(), expected_user.encode())
    password_ok = hmac.compare_digest(given.encode(), password.encode())
    return user if user_ok and password_ok else None


class Handler(common.StandinHandler):
    standin = "admin"

    def route(self, method, path, query):
        if method == "GET" and path == "/health":
            return self.send_json(200, {"status": "healthy"})
        user = authorized(self.headers.get("Authorization"))
        if user is None:
            raise common.HTTPError(401, {"detail": "Not authenticated"},
                                   {"WWW-Authenticate": 'Basic realm="ComfyuME admin"'})
        if method != "GET":
            raise common.HTTPError(405, {"detail": "Method Not Allowed"})
        self.send_bytes(200, PAGE.format(user=html.escape(user)).encode(), "text/html; charset=utf-8")


def main() -> None:
    common.banner("admin", "admin dashboard")
    if not os.environ.get("ADMIN_PASSWORD"):
        common.log("admin: ADMIN_PASSWORD is not set; every login will be refused")
    common.serve(Handler, common.env_int("ADMIN_LISTEN_PORT", 8080))


if __name__ == "__main__":
    main()
