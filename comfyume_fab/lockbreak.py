"""Break a stale deploy lock explicitly (never automatically)."""
from __future__ import annotations

from . import commands as cmd
from .errors import UnhealthyError
from .inventory import Inventory
from .session import Session


def break_lock(inv: Inventory) -> str:
    app = inv.app_host
    with Session(inv, [app]) as s:
        s.connect()
        s.require_all()
        holder = s[app.name].run(cmd.lock_read(app.workdir), step="lock-break").stdout.strip()
        if not holder:
            return f"{app.name}: no deploy lock held"
        res = s[app.name].run(cmd.lock_release(app.workdir), step="lock-break")
        if not res.ok:
            raise UnhealthyError(f"could not remove the deploy lock: {res.tail()}", host=app.name, step="lock-break",
                                 hint="remove the .deploy-lock folder in the remote folder by hand")
        return f"{app.name}: removed the deploy lock held by {holder}"
