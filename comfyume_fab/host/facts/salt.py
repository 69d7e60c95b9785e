"""The host's fingerprint salt: 32 random hex digits that the first `start-all` deploying to a host
makes and keeps in its workdir (`fingerprint.salt`, mode 0600), read back with the host's state.

Every hash this tool stores on that host stands for a secret only through
`inventory.fingerprint` (scrypt of the value, salted with this salt and the secret's name). So no
table computed in advance applies to any deployment, and a guess must be tried per host at scrypt's
cost; two machines deploying the same host read the same salt, a fresh host gets a new one. The
salt is never printed, and `plan` (which reads no host) needs none: it prints no hash.

`read_part(workdir)` is the state section that brings it back; `parse_salt` reads it;
`new_salt` makes one; `salt_text` is what `start-all` uploads.
"""
from __future__ import annotations

import re
import secrets

from .. import commands as cmd

SALT_FILE = "fingerprint.salt"
SECTION = "salt"
_SALT_RE = re.compile(r"[0-9a-f]{32}")


def read_part(workdir: str) -> tuple[str, str]:
    """The extra section of a host-state read that prints the salt (nothing when there is none)."""
    return SECTION, cmd.read_file(workdir, SALT_FILE) + " || true"


def parse_salt(text: str) -> str | None:
    """The salt the file holds; None when there is none or it is not one this tool made (then a
    new one is made, and the next deploy recreates what reads a secret: never a guess)."""
    value = text.strip()
    return value if _SALT_RE.fullmatch(value) else None


def salt_of(state) -> str | None:
    """The salt a host state read with `read_part` brought back."""
    code, text = state.extra.get(SECTION, (1, ""))
    return parse_salt(text) if code == 0 else None


def new_salt() -> str:
    return secrets.token_hex(16)


def salt_text(salt: str) -> bytes:
    return (salt + "\n").encode()
