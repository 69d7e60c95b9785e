"""The deployed record start-all leaves in a host's workdir (`deployed.json`: what it deployed,
from which revision); read back as `HostState.deployed` (None when absent or not JSON)."""
from __future__ import annotations

import json

from .. import commands as cmd
from . import Fact, field


def _fill(st, code: int, out: str) -> None:
    if code == 0 and out.strip():
        try:
            st.deployed = json.loads(out)
        except ValueError:
            st.deployed = None


RECORD = Fact("deployed", lambda place: cmd.read_file(place.workdir, cmd.DEPLOYED), _fill,
              fields=(field("deployed", "dict | None"),))
