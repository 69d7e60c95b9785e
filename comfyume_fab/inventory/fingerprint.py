"""A secret's fingerprint: what stands for it in every hash this tool stores on hosts (the env
hash, each service's label, deploy records). It is slow (scrypt) and salted with the secret's name
and the host's own random salt (host/facts/salt.py), so a stored hash is no cheap way to test
guesses of the secret and no table computed in advance applies to it. Nothing derived from a
secret is ever printed (plan, --dry-run and --json mask the hashes).

Being slow, it is remembered: in the process (by value and salt), and for a value read from the
secrets file, on disk under the user's cache folder, keyed by that FILE's identity (path, inode,
size, mtime and ctime: any edit changes it), the secret's name and the salt, never by anything
computed from the value. So the cache holds only the fingerprints the hosts already show, and a
rerun with the same secrets file pays nothing. `COMFYUME_FAB_NO_CACHE=1` turns the disk cache off."""
from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Mapping

from .secrets import Secret

SCRYPT = {"n": 2 ** 14, "r": 8, "p": 1, "dklen": 16}
CACHE_NAME = "secret-fingerprints.json"
CACHE_KEEP = 32  # entries: a few secrets files, a few edits each
NO_CACHE_ENV = "COMFYUME_FAB_NO_CACHE"

_memo: dict[tuple[str, str, str], str] = {}


def slow_fingerprint(name: str, value: str, salt: str) -> str:
    """scrypt(value), salted with the host's salt and the variable's name (so two secrets with one
    value differ, and so do two hosts)."""
    if not salt:
        raise ValueError("a secret's fingerprint needs the host's salt")
    return hashlib.scrypt(value.encode(), salt=f"comfyume-fab:{salt}:{name}".encode(), **SCRYPT).hex()


def fingerprint(name: str, secret: Secret, salt: str) -> str:
    """The fingerprint of `secret` as the value of variable `name` on the host salted `salt`
    (cached, see the module)."""
    value = secret.reveal()
    found = _memo.get((name, value, salt))
    if found is not None:
        return found
    origin = getattr(secret, "origin", None)
    key = _disk_key(name, origin, salt) if origin else None
    found = _disk_get(key) if key else None
    if found is None:
        found = slow_fingerprint(name, value, salt)
        if key:
            _disk_put(key, found)
    _memo[(name, value, salt)] = found
    return found


def warm(secrets: Mapping[str, Secret], salt: str | None) -> None:
    """Compute (or recall) every secret's fingerprint for a host salted `salt`, so that the plan
    made later finds them remembered (callers run this beside their other work, per host)."""
    if not salt:
        return
    for name, secret in secrets.items():
        try:
            fingerprint(name, secret, salt)
        except Exception:  # noqa: BLE001 - an unset secret: the real plan reports it, in its place
            pass


def cache_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "comfyume-fab" / CACHE_NAME


def _disk_key(name: str, origin: str, salt: str) -> str:
    return hashlib.sha256(f"{name}\0{origin}\0{salt}".encode()).hexdigest()


def _enabled() -> bool:
    return os.environ.get(NO_CACHE_ENV, "") in ("", "0")


def _read() -> dict[str, str]:
    """The cache's entries; {} when it is missing, unreadable, not this user's own private file,
    or not what this module writes (a cache is never a reason to fail)."""
    path = cache_path()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError:
        return {}
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077 \
                or st.st_size > 64 * 1024:
            return {}
        data = json.loads(os.read(fd, 64 * 1024).decode())
    except (OSError, ValueError):
        return {}
    finally:
        os.close(fd)
    entries = data.get("entries") if isinstance(data, dict) else None
    if not isinstance(entries, dict):
        return {}
    return {k: v for k, v in entries.items() if isinstance(k, str) and isinstance(v, str)}


def _disk_get(key: str) -> str | None:
    if not _enabled():
        return None
    return _read().get(key)


def _disk_put(key: str, value: str) -> None:
    """Add one entry (the oldest go beyond CACHE_KEEP): folder 0700, file 0600, replaced atomically."""
    if not _enabled():
        return
    path = cache_path()
    entries = _read()
    entries.pop(key, None)
    entries[key] = value
    entries = dict(list(entries.items())[-CACHE_KEEP:])
    tmp = path.with_name(f".{CACHE_NAME}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, json.dumps({"about": "comfyume-fab: scrypt fingerprints of secrets, keyed by the "
                                              "secrets file's identity; safe to delete",
                                     "entries": entries}).encode())
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
