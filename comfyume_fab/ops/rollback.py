"""`invoke rollback`: redeploy each host's previous deploy (or the one of `--to COMMIT`) from the
images still on the hosts, without building, in start-all's order and with its checks.

Entry point: `rollback_targets(inv, to, say)` -- what each host goes back to, read from its
deployed.json; start-all then deploys exactly those images (`image_tags`).
"""
from __future__ import annotations

import json
from typing import Callable

from ..errors import UnhealthyError
from ..host import commands as cmd
from ..host.facts import images as imgfacts
from ..host.session import Session, gather
from ..inventory.model import Inventory


def rollback_targets(inv: Inventory, to: str | None, say: Callable[[str], None]) -> dict[str, dict]:
    """host -> the deploy to go back to ({refs, branch, commit}), from each host's deployed.json:
    the latest deploy of another commit than the current one, or the one whose commit starts
    with `to`; a host with no earlier commit stays as it is. Every image must still be on its
    host (nothing is built or pulled); ConfigError/UnhealthyError otherwise."""
    from ..errors import ConfigError
    with Session(inv, inv.hosts) as s:
        s.connect()
        s.require_all()
        reads = gather(lambda h: s[h.name].run(
            cmd.sections([("deployed", cmd.read_file(h.workdir, cmd.DEPLOYED)), ("images", imgfacts.LIST_COMMAND)]),
            step="read deploys").stdout, inv.hosts)
        targets: dict[str, dict] = {}
        moving: list[str] = []
        for host in inv.hosts:
            sec = cmd.split_sections(reads[host.name])
            try:
                deployed = json.loads(sec.get("deployed", (1, ""))[1] or "{}")
            except ValueError:
                deployed = {}
            history = (deployed.get("images") or {}).get("history") or []
            current = (deployed.get("images") or {}).get("commit")
            if to:
                pick = next((h for h in history if (h.get("commit") or "").startswith(to)), None)
                if pick is None and current and current.startswith(to):
                    say(f"{host.name}: already at {to}")
                    continue
            else:  # the previous COMMIT: a redeploy of the same one, or a deploy of images not
                # built from the repository (no commit), is not one to go back to
                pick = next((h for h in history if h.get("commit") and h.get("commit") != current), None)
            if pick is None:
                if (deployed.get("images") or {}).get("refs"):  # this host stays as it is
                    targets[host.name] = {k: deployed["images"].get(k) for k in ("refs", "branch", "commit")}
                continue
            moving.append(host.name)
            have = imgfacts.parse_image_list(sec.get("images", (0, ""))[1])
            gone = [r for r in pick["refs"].values() if imgfacts.normalize(r) not in have]
            if gone:
                raise UnhealthyError(f"the images of {(pick.get('commit') or '?')[:12]} are no longer on the host: "
                                     f"{', '.join(gone)}", host=host.name, step="rollback",
                                     hint="only the last images.keep deploys are kept; deploy that commit with "
                                          "start-all instead")
            targets[host.name] = pick
        if not moving:
            known = sorted({(h.get("commit") or "")[:12] for host in inv.hosts
                            for h in ((json.loads(cmd.split_sections(reads[host.name]).get("deployed", (1, "{}"))[1]
                                                  or "{}").get("images") or {}).get("history") or [])})
            what = f"no host has a deploy of commit {to}" if to else "no host has an earlier deploy recorded"
            raise ConfigError(f"rollback: {what} (earlier deploys: {', '.join(k for k in known if k) or 'none'})")
        return targets
