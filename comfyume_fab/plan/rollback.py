"""Which deploy each host goes back to on `rollback` (pure: from each host's deployed.json and
image list, read by ops/rollback.py).

A host's deployed.json records the images it runs (`refs`), the branch and commit they were built
from, and the earlier deploys (`history`, newest first). Without `--to`, each host goes back to
its own previous commit. With `--to COMMIT` (7 to 40 hex digits), the prefix must name exactly one
recorded commit; every host that deploys that commit's branch goes back to it, and if one of them
has no deploy of it recorded, nothing is done (rolling back part of a branch's hosts would leave
them on different commits). A host on another branch, or whose images are not built from the
repository, stays as it is, and a line says so.

Only deploys of commit-tagged images can be gone back to: images built from the repository
(`images.<name>.source: build`) or pulled with commit tags record a commit; images used as they
are (`present`, or a fixed tag) do not. `candidates` lists, per host, the recorded deploys that can
be (`rollback --list`).
"""
from __future__ import annotations

import re
from typing import Mapping

from ..errors import ConfigError, UnhealthyError
from ..host.facts import images as imgfacts

_COMMIT = re.compile(r"[0-9a-fA-F]{7,40}")


def commit_option(to: str) -> str:
    """`--to` as lower-case hex digits, or a ConfigError sentence (exit 2)."""
    if not isinstance(to, str) or not _COMMIT.fullmatch(to):
        raise ConfigError(f"rollback --to: '{to}' is not a commit; give 7 to 40 of its hex digits (status shows "
                          f"each host's deployed commit and earlier deploys)")
    return to.lower()


# Said whenever nothing can be rolled back to: what can be, and how to see it.
ONLY_COMMIT_TAGGED = ("only deploys of commit-tagged images can be rolled back to (images built from the "
                      "repository, `source: build`, or pulled with commit tags); images used as they are record "
                      "no commit. `rollback --list` lists each host's deploys that can be rolled back to")


def candidates(records: Mapping[str, Mapping | None],
               images: Mapping[str, Mapping[str, str]]) -> dict[str, dict]:
    """host -> {"current": {commit, branch, at} or None, "earlier": [{commit, branch, at, present}]}:
    each host's recorded deploys of another commit, newest first, one per commit; `present` is
    whether all of that deploy's images are still on the host (a deploy without them cannot be
    rolled back to without rebuilding). Pure; in inventory order."""
    out: dict[str, dict] = {}
    for host, record in records.items():
        imgs = _images(record)
        current = ({"commit": imgs.get("commit"), "branch": imgs.get("branch"), "at": (record or {}).get("at")}
                   if imgs.get("refs") else None)
        seen = {imgs.get("commit")}
        have = images.get(host) or {}
        earlier = []
        for h in imgs.get("history") or []:
            commit = h.get("commit")
            if not commit or commit in seen:
                continue
            seen.add(commit)
            earlier.append({"commit": commit, "branch": h.get("branch"), "at": h.get("at"),
                            "present": all(imgfacts.normalize(r) in have for r in (h.get("refs") or {}).values())})
        out[host] = {"current": current, "earlier": earlier}
    return out


def _images(record: Mapping | None) -> dict:
    return dict((record or {}).get("images") or {})


def _current(imgs: Mapping) -> dict:
    return {k: imgs.get(k) for k in ("refs", "branch", "commit")}


def choose(to: str | None, records: Mapping[str, Mapping | None],
           images: Mapping[str, Mapping[str, str]]) -> tuple[dict[str, dict], list[str]]:
    """(host -> the deploy it runs after the rollback ({refs, branch, commit}), lines to say).

    `records`: host -> its deployed.json (None when it has none), in inventory order; `images`:
    host -> {repository:tag: id} on its engine. Refuses (ConfigError, exit 2) a `--to` that is not
    7 to 40 hex digits, names no recorded commit or several, or is missing on a host of its
    branch; UnhealthyError (exit 4) when a picked deploy's images are no longer on its host."""
    targets: dict[str, dict] = {}
    notes: list[str] = []
    moving: list[str] = []
    found: dict[str, set[str]] = {}  # with --to: every recorded commit that starts with it -> its branches
    if to is None:
        for host, record in records.items():
            imgs = _images(record)
            # the previous COMMIT: a redeploy of the same one, or a deploy of images not built from
            # the repository (no commit), is not one to go back to
            pick = next((h for h in imgs.get("history") or []
                         if h.get("commit") and h.get("commit") != imgs.get("commit")), None)
            if pick is None:
                if imgs.get("refs"):
                    targets[host] = _current(imgs)
                    notes.append(f"{host}: stays as it is (no earlier commit recorded)")
                continue
            targets[host] = pick
            moving.append(host)
    else:
        to = commit_option(to)
        for record in records.values():
            imgs = _images(record)
            for entry in [imgs] + list(imgs.get("history") or []):
                commit = entry.get("commit") or ""
                if commit.startswith(to):
                    found.setdefault(commit, set()).add(entry.get("branch") or "?")
        if len(found) > 1:
            listed = ", ".join(f"{c[:12]} ({', '.join(sorted(b))})" for c, b in sorted(found.items()))
            raise ConfigError(f"rollback --to {to}: ambiguous, {len(found)} recorded commits start with it: {listed}; "
                              f"give more digits")
        if found:
            commit, branches = next(iter(found.items()))
            missing = []
            for host, record in records.items():
                imgs = _images(record)
                pick = next((h for h in imgs.get("history") or [] if h.get("commit") == commit), None)
                if imgs.get("commit") == commit:
                    notes.append(f"{host}: already at {commit[:12]}")
                elif pick is not None:
                    targets[host] = pick
                    moving.append(host)
                    continue
                elif imgs.get("branch") in branches:
                    missing.append(host)
                elif imgs.get("refs"):
                    what = (f"at {imgs['commit'][:12]} of {imgs.get('branch')}" if imgs.get("commit")
                            else "with images not built from the repository")
                    notes.append(f"{host}: stays as it is ({what}; {commit[:12]} is of {', '.join(sorted(branches))})")
                if imgs.get("refs"):
                    targets[host] = _current(imgs)
            if missing:
                raise ConfigError(
                    f"rollback --to {to}: commit {commit[:12]} of {', '.join(sorted(branches))} has no deploy "
                    f"recorded on {', '.join(missing)}, which deploy{'s' if len(missing) == 1 else ''} that branch "
                    f"too; nothing was changed (deploy that commit with start-all, which builds it where missing)")
    if not moving:
        known = sorted({(h.get("commit") or "")[:12] for record in records.values()
                        for h in _images(record).get("history") or []} - {""})
        if to is None:
            what = "no host has an earlier deploy recorded"
        elif found:
            what = f"every host that deploys commit {to} is already at it"
        else:
            what = f"no host has a deploy of commit {to}"
        raise ConfigError(f"rollback: {what} (earlier deploys: {', '.join(known) or 'none'}); {ONLY_COMMIT_TAGGED}")
    for host in moving:
        pick = targets[host]
        have = images.get(host) or {}
        gone = [r for r in (pick.get("refs") or {}).values() if imgfacts.normalize(r) not in have]
        if gone:
            raise UnhealthyError(f"the images of {(pick.get('commit') or '?')[:12]} are no longer on the host: "
                                 f"{', '.join(gone)}", host=host, step="rollback",
                                 hint="only the last images.keep deploys are kept; deploy that commit with "
                                      "start-all instead")
    return targets, notes
