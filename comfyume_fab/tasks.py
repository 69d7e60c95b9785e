"""comfyume-fab's Invoke tasks (`invoke --list`, `invoke --help TASK`): thin wrappers that parse
options, call one operation and print its rendering. The repository's tasks.py re-exports `ns`.

Start, stop and watch a multi-host ComfyuME deployment described by hosts.yaml.
Modules are imported inside the tasks so that `invoke --list` and `plan` stay fast.
"""
import atexit
import gc

from invoke import Collection, task

# At exit, skip the interpreter's last garbage collection over the ~100k objects of the imported
# modules (Fabric, paramiko, redis-py): ~80 ms of every task's wall time on a 2-core host.
# atexit handlers run last-registered-first, so this one runs after every other.
atexit.register(gc.freeze)

HOSTS_HELP = "inventory file (default hosts.yaml; $COMFYUME_HOSTS overrides the default)"
VERBOSE_HELP = "show tracebacks and every remote command's timing"


def _ui(quiet=False):
    from comfyume_fab.progress import Progress
    return Progress(quiet=quiet)


@task(help={"hosts": HOSTS_HELP, "dry_run": "print every host's commands in order and touch nothing",
            "wait_lock": "wait (up to timeouts.lock_wait) instead of failing when another deploy holds the lock",
            "verbose": VERBOSE_HELP})
def start_all(c, hosts=None, dry_run=False, wait_lock=False, verbose=False):
    """Bring up the app host, prove Redis is reachable from the workers, bring up the workers, probe inference."""
    from comfyume_fab import taskrun
    with taskrun.reported(verbose, "start-all"):
        inv = taskrun.load(hosts)
        if dry_run:
            from comfyume_fab.plan.steps import render_text
            from comfyume_fab.plan.planner import make_plan
            print(render_text(make_plan(inv), "start-all"))
            return
        from comfyume_fab.ops.start import start_all as run
        from comfyume_fab.report import start_text
        ui = _ui()
        summary = run(inv, ui, ui.warn, wait_lock=inv.timeouts.lock_wait if wait_lock else 0.0)
        print(start_text(summary))


@task(help={"hosts": HOSTS_HELP, "host": "stop only this worker host (default: every worker host)",
            "down": "remove the worker containers too (volumes are always kept)",
            "when_idle": "first wait until no job is pending or running",
            "dry_run": "print the commands and touch nothing",
            "wait_lock": "wait for another deploy's lock instead of failing", "verbose": VERBOSE_HELP})
def stop_verda(c, hosts=None, host=None, down=False, when_idle=False, dry_run=False, wait_lock=False,
               verbose=False):
    """Stop the GPU worker(s) only; the app host is left untouched (checked)."""
    from comfyume_fab import taskrun
    with taskrun.reported(verbose, "stop-verda"):
        inv = taskrun.load(hosts)
        if dry_run:
            from comfyume_fab.plan.steps import render_text
            from comfyume_fab.plan.planner import make_plan
            print(render_text(make_plan(inv), "stop-verda", only=host, down=down))
            return
        from comfyume_fab.ops.stop import stop_workers
        ui = _ui()
        out = stop_workers(inv, ui, only=host, down=down, when_idle=when_idle, idle_timeout=inv.timeouts.lock_wait,
                           wait_lock=inv.timeouts.lock_wait if wait_lock else 0.0)
        print(f"stop-verda: stopped the worker on {', '.join(out['stopped']) or 'no host'}; app host untouched")


@task(help={"hosts": HOSTS_HELP, "down": "remove containers too (volumes, so Redis data, are kept)",
            "dry_run": "print the commands and touch nothing",
            "wait_lock": "wait for another deploy's lock instead of failing", "verbose": VERBOSE_HELP})
def stop_all(c, hosts=None, down=False, dry_run=False, wait_lock=False, verbose=False):
    """Stop the workers first, then the app host."""
    from comfyume_fab import taskrun
    with taskrun.reported(verbose, "stop-all"):
        inv = taskrun.load(hosts)
        if dry_run:
            from comfyume_fab.plan.steps import render_text
            from comfyume_fab.plan.planner import make_plan
            print(render_text(make_plan(inv), "stop-all", down=down))
            return
        from comfyume_fab.ops.stop import stop_all as run
        out = run(inv, _ui(), down=down, wait_lock=inv.timeouts.lock_wait if wait_lock else 0.0)
        print(f"stop-all: stopped {', '.join(out['stopped'])}")


@task(help={"hosts": HOSTS_HELP, "json": "machine-readable output for scripts",
            "no_probe": "skip the inference probe",
            "fetch": "fetch each building host's branch first (else: as of the last fetch)", "verbose": VERBOSE_HELP})
def status(c, hosts=None, json=False, no_probe=False, fetch=False, verbose=False):
    """Every host, service, cross-host link, queue and GPU; exit 0 only when all is healthy."""
    from comfyume_fab import taskrun
    with taskrun.reported(verbose, "status"):
        inv = taskrun.load(hosts)
        from comfyume_fab.ops.status import status as run
        rep = run(inv, probe=not no_probe, fetch=fetch)
        if json:
            print(rep.to_json())
        else:
            from comfyume_fab.report import status_text
            print(status_text(rep))
        if rep.code:
            from invoke.exceptions import Exit
            raise Exit(code=int(rep.code))


@task(help={"hosts": HOSTS_HELP, "to": "the commit (or its first digits) to go back to; default: each host's "
                                         "previous deploy",
            "wait_lock": "wait for another deploy's lock instead of failing", "verbose": VERBOSE_HELP})
def rollback(c, hosts=None, to=None, wait_lock=False, verbose=False):
    """Redeploy the previous (or --to) commit's images, already on the hosts, without building; start-all's order and checks."""
    from comfyume_fab import taskrun
    with taskrun.reported(verbose, "rollback"):
        inv = taskrun.load(hosts)
        from comfyume_fab.ops.images import rollback_targets
        from comfyume_fab.ops.start import start_all as run
        from comfyume_fab.report import start_text
        ui = _ui()
        targets = rollback_targets(inv, to, ui)
        for name, t in targets.items():
            ui(f"{name}: deploying {', '.join(sorted(t['refs'].values()))}")
        summary = run(inv, ui, ui.warn, wait_lock=inv.timeouts.lock_wait if wait_lock else 0.0, image_tags=targets)
        print(start_text(summary).replace("start-all", "rollback", 1))


@task(name="copy-image", help={"hosts": HOSTS_HELP, "source": "the host that has the image(s)",
                               "target": "the host to copy them to",
                               "image": "an image reference; repeatable (default: every image the target runs)",
                               "verbose": VERBOSE_HELP}, iterable=["image"])
def copy_image(c, source, target, image=None, hosts=None, verbose=False):
    """Copy images host to host over the hosts' SSH connections (compressed); skipped when the target has the same image id."""
    from comfyume_fab import taskrun
    with taskrun.reported(verbose, "copy-image"):
        inv = taskrun.load(hosts)
        from comfyume_fab.ops.images import copy_task
        copied = copy_task(inv, source, target, list(image or []), _ui())
        print(f"copy-image: {len(copied)} image(s) copied from {source} to {target}"
              + (f": {', '.join(copied)}" if copied else " (the target already had them)"))


@task(name="plan", help={"hosts": HOSTS_HELP, "json": "machine-readable output", "verbose": VERBOSE_HELP})
def plan_(c, hosts=None, json=False, verbose=False):
    """Show per host the services, the environment (secrets masked) and the commands start-all would run."""
    from comfyume_fab import taskrun
    with taskrun.reported(verbose, "plan"):
        from comfyume_fab.plan.steps import render_json, render_text
        from comfyume_fab.plan.planner import make_plan
        p = make_plan(taskrun.load(hosts))
        print(render_json(p) if json else render_text(p))


@task(help={"hosts": HOSTS_HELP, "verbose": VERBOSE_HELP})
def lock_break(c, hosts=None, verbose=False):
    """Remove a stale deploy lock left by a run that died (says who held it)."""
    from comfyume_fab import taskrun
    with taskrun.reported(verbose, "lock-break"):
        from comfyume_fab.ops.lock import break_lock
        print(break_lock(taskrun.load(hosts)))


@task(help={"workers": "number of worker hosts (verda, verda-2, ...)",
            "sshd_only": "extra hosts with sshd but no Docker engine (scale benchmarks)",
            "users": "num_users in the lab inventory"})
def lab_up(c, workers=1, sshd_only=0, users=3):
    """Create the lab: hosts as network namespaces with their own sshd and Docker engine."""
    from comfyume_fab.lab.cli import up
    up(int(workers), int(sshd_only), int(users))


@task
def lab_down(c):
    """Remove everything the lab made (processes, namespaces, bridge, users, folders)."""
    from comfyume_fab.lab.cli import down
    down()


lab = Collection("lab")
lab.add_task(lab_up, name="up")
lab.add_task(lab_down, name="down")
ns = Collection(start_all, stop_verda, stop_all, status, plan_, lock_break, rollback, copy_image, lab)
