"""After `docker stack deploy`, a service whose stack definition changed counts as running only once
none of its tasks from before the deploy runs: right after the deploy the old task still runs (and
Replicas says 1/1), and a check made then meets it, or the gap when it stops (seen in the lab: the
job probe found the queue manager's port closed)."""
from __future__ import annotations

from comfyume_fab.host.facts import swarm as sf
from comfyume_fab.ops.swarm import _old_still_running
from comfyume_fab.plan.stack import replaced_services

BEFORE = """
services:
  queue-manager:
    image: comfyume-queue-manager:v0.11.0
    environment: {NUM_WORKERS: '2'}
  worker:
    image: comfyume-worker:v0.11.0
    deploy: {mode: replicated, replicas: 2, placement: {constraints: [node.labels.comfyume.role == worker]}}
  admin:
    image: comfyume-admin:v0.11.0
"""


def test_the_services_a_deploy_replaces_are_those_whose_definition_changed():
    after = BEFORE.replace("NUM_WORKERS: '2'", "NUM_WORKERS: '1'").replace("replicas: 2", "replicas: 1")
    # the worker only scaled (Swarm keeps its tasks); the queue manager's environment changed
    assert replaced_services(BEFORE, after, "s") == {"s_queue-manager"}
    assert replaced_services(BEFORE, BEFORE, "s") == frozenset()
    moved = BEFORE.replace("role == worker", "host == w1")
    assert replaced_services(BEFORE, moved, "s") == {"s_worker"}  # placement is part of the task
    assert replaced_services(None, BEFORE, "s") == frozenset()  # a first deploy: every task is new


def test_an_old_task_still_running_holds_the_wait():
    services = (sf.Service("abc", "s_queue-manager", 1, 1, "img", ""),)
    old = sf.Task("t-old", "abc", 1, "n1", "running", "shutdown", "", "")
    new = sf.Task("t-new", "abc", 1, "n1", "running", "running", "", "")
    assert _old_still_running(services, (old, new), {"s_queue-manager": frozenset({"t-old"})}) == ["s_queue-manager"]
    gone = sf.Task("t-old", "abc", 1, "n1", "shutdown", "shutdown", "", "")
    assert _old_still_running(services, (gone, new), {"s_queue-manager": frozenset({"t-old"})}) == []
    assert _old_still_running(services, (old, new), {}) == []  # not being replaced: nothing to wait for


def test_a_template_swarm_does_not_replace_is_let_go_after_the_grace():
    """The stack's definition changed in a way Swarm applies in place: the old task stays wanted and no
    new one comes; waited for only until REPLACE_GRACE_S."""
    services = (sf.Service("abc", "s_worker", 1, 1, "img", ""),)
    kept = sf.Task("t-old", "abc", 1, "n1", "running", "running", "", "")
    replacing = {"s_worker": frozenset({"t-old"})}
    assert _old_still_running(services, (kept,), replacing, settled=False) == ["s_worker"]
    assert _old_still_running(services, (kept,), replacing, settled=True) == []
    coming = sf.Task("t-new", "abc", 1, "n1", "preparing", "running", "", "")
    assert _old_still_running(services, (kept, coming), replacing, settled=True) == ["s_worker"]
