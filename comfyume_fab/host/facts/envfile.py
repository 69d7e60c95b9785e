"""The `.env` start-all uploads to a host: the fingerprints it carries (`CFAB_ENV_HASH`, the
fingerprint of the whole file; `CFAB_HASH_<SERVICE>`, each service's own, which its container's
label repeats) and, on request only, the Redis password as the worker sees it (into memory, never
printed). The names of those entries are defined here, once."""
from __future__ import annotations

from ...inventory.secrets import Secret
from .. import commands as cmd
from . import Fact, Place, field

ENV_HASH_KEY = "CFAB_ENV_HASH"
SERVICE_HASH_PREFIX = "CFAB_HASH_"  # + the service's name: its own fingerprint, the label's value
REDIS_PASSWORD_KEY = "REDIS_PASSWORD"


def _grep(place: Place, pattern: str) -> str:
    return f"grep {cmd.q(pattern)} {cmd.q(cmd.workdir_path(place.workdir, cmd.ENV_FILE))}"


def env_value(line: str) -> str:
    """`NAME=value` (quotes around the value removed) -> value."""
    value = line.strip().split("=", 1)[1]
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1]
    return value


def _fill_hashes(st, code: int, out: str) -> None:
    for line in out.splitlines() if code == 0 else ():
        if line.startswith(f"{ENV_HASH_KEY}="):
            st.env_hash = env_value(line)
        elif line.startswith(SERVICE_HASH_PREFIX) and "=" in line:
            st.service_hashes[line.split("=", 1)[0]] = env_value(line)


def _fill_redis_password(st, code: int, out: str) -> None:
    if code == 0 and "=" in out:
        st.env_redis_password = Secret(env_value(out))


HASHES = Fact("envhash", lambda place: _grep(place, "^CFAB_"), _fill_hashes,
              fields=(field("env_hash", "str | None"),  # ENV_HASH_KEY of the .env uploaded to the host
                      field("service_hashes", dict, factory=dict)))  # CFAB_HASH_<SERVICE> -> value
# Read into memory only (for the Redis check as the worker sees it); never printed.
REDIS_PASSWORD = Fact("envpw", lambda place: _grep(place, f"^{REDIS_PASSWORD_KEY}="), _fill_redis_password,
                      on_request=True, fields=(field("env_redis_password", "Secret | None", repr=False),))
