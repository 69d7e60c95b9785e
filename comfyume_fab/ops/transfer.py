"""One image host to host: `docker save | gzip` over one SSH connection, `gunzip | docker load`
over the other (no registry, no rebuild), the target's tags checked before and after the load
(checks/imagecopy.py: exactly the image asked for may change). Used by the copy-image task and by
start-all's image step (images.copy_from)."""
from __future__ import annotations

import time
from typing import Callable

from ..checks.imagecopy import foreign_changes, loaded_refs, refusal, repair_command
from ..errors import UnhealthyError
from ..host import commands as cmd
from ..host.facts import images as imgfacts
from ..host.session import Session, gather


def save_command(ref: str) -> str:
    """The source's side of a copy: the image as a compressed archive on stdout."""
    return f"docker save {cmd.q(ref)} | gzip -1"


def copy_image(s: Session, source: str, target: str, ref: str, timeout: float, say: Callable[[str], None]) -> bool:
    """Copy image `ref` from host `source` to host `target` (docker save | gzip over one SSH
    connection, gunzip | docker load over the other); False when the target already has the same
    image id (skipped)."""
    src, dst = s[source], s[target]
    ids = gather(lambda r: imgfacts.parse_image_list(r.run(imgfacts.LIST_COMMAND, step="images").stdout), [src, dst],
                 hint="nothing was copied")
    want = ids[source].get(imgfacts.normalize(ref))
    if want is None:
        raise UnhealthyError(f"host {source} has no image {ref} to copy", host=source, step="copy",
                             hint="copy from a host that has it (docker image ls there)")
    if ids[target].get(imgfacts.normalize(ref)) == want:
        say(f"{target}: {ref} is already there with the same image id ({want[7:19]}); copy skipped")
        return False
    say(f"{source} -> {target}: copying {ref} ({want[7:19]}), compressed, over the SSH connections")
    t0 = time.monotonic()
    out, into = src.pipe_to(save_command(ref), dst, "gunzip | docker load -q",
                            timeout=timeout, step="copy")
    # every tag the load set, checked even when the copy failed half-way (a partial archive loads too)
    after = imgfacts.parse_image_list(dst.run(imgfacts.LIST_COMMAND, step="images").stdout)
    loaded = loaded_refs(into.stdout)
    foreign = foreign_changes(ids[target], after, loaded, ref)
    if foreign:  # the archive carried other tags too: put them back, and refuse
        fix = dst.run(repair_command(foreign), step="copy")
        raise refusal(ref, source, target, foreign, repaired=fix.ok, failure=fix.tail(200))
    if not out.ok or not into.ok:
        bad = out if not out.ok else into
        raise UnhealthyError(f"copying {ref} failed: {bad.tail()}", host=source if bad is out else target,
                             step="copy", hint="the target's other images were left as they were")
    got = after.get(imgfacts.normalize(ref))
    if imgfacts.normalize(ref) not in loaded:
        raise UnhealthyError(f"loading the archive of {ref} from {source} did not tag {ref} (docker load said: "
                             f"{into.stdout.strip()[-200:] or 'nothing'})", host=target, step="copy")
    if got != want:
        raise UnhealthyError(f"after the copy, {ref} on {target} has id {got} instead of {want}", host=target,
                             step="copy")
    say(f"{target}: {ref} loaded in {time.monotonic() - t0:.1f} s")
    return True
