"""Two start-alls of one inventory never both rent: the check-and-rent step holds a lock on the
records, and the second run waits (saying why) until the first has recorded its instance."""
from __future__ import annotations

import threading
import types

from comfyume_fab.ops.provision import _renting_lock


def test_a_second_renter_waits_for_the_first(tmp_path):
    inv = types.SimpleNamespace(state_dir=str(tmp_path / ".comfyume-fab"))
    said: list[str] = []
    entered = threading.Event()

    def second():
        with _renting_lock(inv, said.append):
            entered.set()

    with _renting_lock(inv, lambda _: None):
        t = threading.Thread(target=second)
        t.start()
        assert not entered.wait(0.5)  # held: the second one is kept out
        assert said == ["waiting for another start-all of this inventory, which is renting its workers"]
    t.join(5)
    assert entered.is_set()
