"""After `docker stack deploy`, a service whose task template changed counts as running only once
none of its tasks from before the deploy runs: right after the deploy the old task still runs (and
Replicas says 1/1), and a check made then meets it, or the gap when it stops (seen in the lab: the
job probe found the queue manager's port closed)."""
from __future__ import annotations

import json

from comfyume_fab.host.facts import swarm as sf
from comfyume_fab.ops.swarm import _old_still_running

TEMPLATE = {"ContainerSpec": {"Image": "comfyume-queue-manager:v0.11.0", "Env": ["WORKERS=2"]}}


def _line(name, template, previous):
    return f"{name}\t{json.dumps(template)}\t{json.dumps(previous)}"


def test_only_a_changed_task_template_replaces_tasks():
    changed = dict(TEMPLATE, ContainerSpec={**TEMPLATE["ContainerSpec"], "Env": ["WORKERS=1"]})
    out = "\n".join([
        _line("s_queue-manager", changed, {"Name": "s_queue-manager", "TaskTemplate": TEMPLATE}),
        _line("s_worker", TEMPLATE, {"Name": "s_worker", "TaskTemplate": TEMPLATE,
                                     "Mode": {"Replicated": {"Replicas": 2}}}),  # scaled only
        _line("s_admin", TEMPLATE, None),  # created by this deploy
    ])
    assert sf.parse_replaced(out) == {"s_queue-manager", "s_admin"}


def test_an_old_task_still_running_holds_the_wait():
    services = (sf.Service("abc", "s_queue-manager", 1, 1, "img", ""),)
    old = sf.Task("t-old", "abc", 1, "n1", "running", "shutdown", "", "")
    new = sf.Task("t-new", "abc", 1, "n1", "running", "running", "", "")
    assert _old_still_running(services, (old, new), {"s_queue-manager": frozenset({"t-old"})}) == ["s_queue-manager"]
    gone = sf.Task("t-old", "abc", 1, "n1", "shutdown", "shutdown", "", "")
    assert _old_still_running(services, (gone, new), {"s_queue-manager": frozenset({"t-old"})}) == []
    assert _old_still_running(services, (old, new), {}) == []  # not being replaced: nothing to wait for


def test_a_template_swarm_does_not_replace_is_let_go_after_the_grace():
    """The API's JSON of the template changed (a field spelled out) but Swarm replaces nothing: the
    old task stays wanted and no new one comes; waited for only until REPLACE_GRACE_S."""
    services = (sf.Service("abc", "s_worker", 1, 1, "img", ""),)
    kept = sf.Task("t-old", "abc", 1, "n1", "running", "running", "", "")
    replacing = {"s_worker": frozenset({"t-old"})}
    assert _old_still_running(services, (kept,), replacing, settled=False) == ["s_worker"]
    assert _old_still_running(services, (kept,), replacing, settled=True) == []
    coming = sf.Task("t-new", "abc", 1, "n1", "preparing", "running", "", "")
    assert _old_still_running(services, (kept, coming), replacing, settled=True) == ["s_worker"]
