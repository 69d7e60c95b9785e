"""`invoke rollback`: redeploy each host's previous deploy (or the one of `--to COMMIT`) from the
images still on the hosts, without building, in start-all's order and with its checks.

Entry points: `rollback(inv, to, say, warn, wait_lock)`; `rollback_list(inv)` (`rollback --list`:
what each host can be rolled back to, read only). Which deploy each host goes back to is
plan/rollback.py's choice, from each host's deployed.json; start-all then deploys exactly those
images (`image_tags`). Rollback is start-all with the images given: the one operation built on
another (tests/unit/test_layers.py allows exactly this import).
"""
from __future__ import annotations

import json
from typing import Callable

from ..host import commands as cmd
from ..host.facts import images as imgfacts
from ..host.session import Session, gather
from ..inventory.model import Inventory
from ..plan import rollback as choice
from .start import StartSummary, start_all


def rollback(inv: Inventory, to: str | None, say: Callable[[str], None], warn: Callable[[str], None],
             wait_lock: float = 0.0, confirm=None) -> StartSummary:
    """Check `--to` (before any host is touched), read each host's deploys, and deploy the chosen
    ones with start-all; ConfigError/UnhealthyError before anything changes otherwise."""
    if to is not None:
        to = choice.commit_option(to)
    targets = _targets(inv, to, say)
    for name, t in targets.items():
        say(f"{name}: deploying {', '.join(sorted(t['refs'].values()))}")
    return start_all(inv, say, warn, wait_lock=wait_lock, image_tags=targets, confirm=confirm)


def rollback_list(inv: Inventory) -> dict[str, dict]:
    """`rollback --list`: each host's current deploy and the recorded deploys it can be rolled back
    to (plan/rollback.py's `candidates`); reads only, takes no lock."""
    records, images = _read(inv)
    return choice.candidates(records, images)


def _targets(inv: Inventory, to: str | None, say: Callable[[str], None]) -> dict[str, dict]:
    """host -> the deploy to go back to ({refs, branch, commit}), from each host's deployed.json
    and image list (plan/rollback.py chooses); the lines it has to say go to `say`."""
    records, images = _read(inv)
    targets, notes = choice.choose(to, records, images)
    for line in notes:
        say(line)
    return targets


def _read(inv: Inventory) -> tuple[dict[str, dict | None], dict[str, dict[str, str]]]:
    """Each host's deployed.json (None when absent or not JSON) and image list, in inventory order."""
    with Session(inv, inv.hosts) as s:
        s.connect()
        s.require_all()
        reads = gather(lambda h: s[h.name].run(
            cmd.sections([("deployed", cmd.read_file(h.workdir, cmd.DEPLOYED)), ("images", imgfacts.LIST_COMMAND)]),
            step="read deploys").stdout, inv.hosts)
    records: dict[str, dict | None] = {}
    images: dict[str, dict[str, str]] = {}
    for host in inv.hosts:
        sec = cmd.split_sections(reads[host.name])
        try:
            record = json.loads(sec.get("deployed", (1, ""))[1] or "{}")
        except ValueError:
            record = None
        records[host.name] = record if isinstance(record, dict) else None
        images[host.name] = imgfacts.parse_image_list(sec.get("images", (0, ""))[1])
    return records, images
