"""What a `docker load` changed on the target of copy-image (pure): the archive must load exactly
the image asked for. An archive also carrying other tags (e.g. `redis:7`, from a source host that
was tampered with) would silently replace the target's images of that name; every such tag is
found from `docker load`'s output and from the target's tags read before and after the load, put
back as it was, and the copy refused."""
from __future__ import annotations

import re
import shlex
from typing import Mapping

from ..errors import UnhealthyError
from ..host.facts import images as imgfacts

_LOADED = re.compile(r"^Loaded image: (\S+)\s*$", re.M)


def loaded_refs(output: str) -> set[str]:
    """`docker load` output -> the repository:tag references it set (normalized as `image ls`)."""
    return {imgfacts.normalize(m) for m in _LOADED.findall(output)}


def foreign_changes(before: Mapping[str, str], after: Mapping[str, str], loaded: set[str],
                    wanted: str) -> dict[str, str | None]:
    """tag -> its image id before the load (None: it is new) for every tag the load set besides
    `wanted`: the ones `docker load` names, and the ones whose id changed to an image the load
    brought (a tag changed meanwhile by something else, e.g. a build, points elsewhere: left alone)."""
    wanted = imgfacts.normalize(wanted)
    brought = {after[t] for t in loaded | {wanted} if t in after}
    changed = {t for t, i in after.items() if before.get(t) != i and i in brought}
    return {t: before.get(t) for t in sorted((changed | loaded) - {wanted})}


def repair_command(changes: Mapping[str, str | None]) -> str:
    """Shell line putting each tag back: retagged to its previous image, or removed when it is new."""
    parts = [shlex.join(["docker", "tag", old, tag]) if old else shlex.join(["docker", "rmi", tag])
             for tag, old in sorted(changes.items())]
    return " ; ".join(parts)


def refusal(ref: str, source: str, target: str, changes: Mapping[str, str | None], repaired: bool,
            failure: str = "") -> UnhealthyError:
    """The one sentence saying which tags the archive also loaded and what was done about them."""
    tags = ", ".join(sorted(changes))
    if repaired:
        how = ", ".join([f"{t} to its previous image" for t, old in changes.items() if old]
                        + [f"{t} removed" for t, old in changes.items() if not old])
        hint = f"put back as they were: {how}; check the images on {source}"
    else:
        hint = f"putting them back failed ({failure}); check them with docker image ls on {target}"
    return UnhealthyError(f"the archive of {ref} from {source} also loaded {tags}, which were not asked for",
                          host=target, step="copy", hint=hint)
