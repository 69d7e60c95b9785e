"""The host's fingerprint salt: 32 random hex digits that the first `start-all` deploying to a host
makes and keeps in its workdir (`fingerprint.salt`, mode 0600), read back with the host's state.

Every hash this tool stores on that host stands for a secret only through
`inventory.fingerprint` (scrypt of the value, salted with this salt and the secret's name). So no
table computed in advance applies to any deployment, and a guess must be tried per host at scrypt's
cost; two machines deploying the same host read the same salt, a fresh host gets a new one. The
salt is never printed, and `plan` (which reads no host) needs none: it prints no hash.

`SALT` is the fact the host-state read brings it back with (`HostState.salt`); `parse_salt`
reads it; `new_salt` makes one; `salt_text` is what `start-all` uploads.
"""
from __future__ import annotations

import re
import secrets

from .. import commands as cmd
from . import Fact, field

SALT_FILE = "fingerprint.salt"
SECTION = "salt"
_SALT_RE = re.compile(r"[0-9a-f]{32}")


def parse_salt(text: str) -> str | None:
    """The salt the file holds; None when there is none or it is not one this tool made (then a
    new one is made, and the next deploy recreates what reads a secret: never a guess)."""
    value = text.strip()
    return value if _SALT_RE.fullmatch(value) else None


def new_salt() -> str:
    return secrets.token_hex(16)


def salt_text(salt: str) -> bytes:
    return (salt + "\n").encode()


def _fill(st, code: int, out: str) -> None:
    st.salt = parse_salt(out) if code == 0 else None


SALT = Fact(SECTION, lambda place: cmd.read_file(place.workdir, SALT_FILE) + " || true", _fill,
            fields=(field("salt", "str | None", repr=False),))
