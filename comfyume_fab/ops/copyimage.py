"""`invoke copy-image`: copy images host to host over the hosts' SSH connections (ops/transfer.py),
skipped when the target already has the same image id.

Entry point: `copy_task(inv, source, target, refs, say)`.
"""
from __future__ import annotations

from typing import Callable

from ..host.session import Session
from ..inventory.model import Inventory
from .transfer import copy_image


def copy_task(inv: Inventory, source: str, target: str, refs: list[str], say: Callable[[str], None]) -> list[str]:
    """The `copy-image` task: copy each of `refs` (default: every image `target` runs that
    `source` has) from `source` to `target`; returns the references really copied."""
    src_host, dst_host = inv.host(source), inv.host(target)
    if not refs:
        refs = [getattr(inv.images, k) for k in inv.image_keys(dst_host)]
    with Session(inv, [src_host, dst_host]) as s:
        s.connect()
        s.require_all()
        return [r for r in refs if copy_image(s, source, target, r, inv.timeouts.pull, say)]
