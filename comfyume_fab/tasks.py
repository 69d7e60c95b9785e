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


@task(help={"hosts": HOSTS_HELP, "json": "machine-readable output for scripts (docs/status.schema.json)",
            "no_probe": "skip the inference probe",
            "watch": "a live screen refreshed in place over held SSH connections (q or Ctrl-C quits)",
            "interval": "--watch: seconds between refreshes (default 2)",
            "probe_every": "--watch: seconds between inference probes (default 30)", "verbose": VERBOSE_HELP})
def status(c, hosts=None, json=False, no_probe=False, watch=False, interval="2", probe_every="30", verbose=False):
    """Every host, service, cross-host link, queue and GPU; exit 0 only when all is healthy."""
    from comfyume_fab import taskrun
    with taskrun.reported(verbose, "status"):
        inv = taskrun.load(hosts)
        if watch:
            from comfyume_fab.ops.watch import watch as run_watch
            from comfyume_fab.report import watch_screen
            code = run_watch(inv, watch_screen, interval=taskrun.float_option("--interval", interval),
                             probe_every=0 if no_probe else taskrun.float_option("--probe-every", probe_every))
            if code:
                from invoke.exceptions import Exit
                raise Exit(code=int(code))
            return
        from comfyume_fab.ops.status import status as run
        from comfyume_fab.report import StatusLine
        line = StatusLine()
        try:
            rep = run(inv, probe=not no_probe, say=line)
        finally:
            line.clear()
        if json:
            print(rep.to_json())
        else:
            import sys
            from comfyume_fab.ops.logs import use_colour
            from comfyume_fab.report import status_text
            print(status_text(rep, colour=use_colour(sys.stdout)))
        if rep.code:
            from invoke.exceptions import Exit
            raise Exit(code=int(rep.code))


@task(iterable=["host", "service"],
      help={"hosts": HOSTS_HELP, "host": "only this host (repeatable; default: every host)",
            "service": "only this service (repeatable; `users` = every frontend; default: all)",
            "follow": "keep streaming new lines until Ctrl-C",
            "since": "only lines since this time (Compose's --since: 10m, 2h, 2026-11-30T12:00:00)",
            "tail": "only the last N lines of each service", "grep": "only lines matching this regular expression",
            "verbose": VERBOSE_HELP})
def logs(c, hosts=None, host=None, service=None, follow=False, since=None, tail=None, grep=None, verbose=False):
    """Logs of every host's services, each line prefixed host/service; secrets shown as ***."""
    from comfyume_fab import taskrun
    with taskrun.reported(verbose, "logs"):
        from comfyume_fab.ops.logs import logs as run
        code = run(taskrun.load(hosts), hosts=host or (), services=service or (), follow=follow, since=since,
                   tail=None if tail is None else taskrun.int_option("--tail", tail), grep=grep)
        if code:
            from invoke.exceptions import Exit
            raise Exit(code=int(code))


@task(name="exec", positional=["host", "service"],
      help={"hosts": HOSTS_HELP, "host": "the host (a name in hosts.yaml)", "service": "the compose service",
            "interactive": "an interactive shell (or the command) on a pseudo-terminal",
            "verbose": VERBOSE_HELP})
def exec_(c, host, service, hosts=None, interactive=False, verbose=False):
    """Run `-- COMMAND...` in a service's container (argv unchanged, exit code passed through)."""
    from comfyume_fab import taskrun
    with taskrun.reported(verbose, "exec"):
        from comfyume_fab.ops.exec import run_exec
        code = run_exec(taskrun.load(hosts), host, service, taskrun.remainder_argv(), interactive=interactive)
    if code:
        from invoke.exceptions import Exit
        raise Exit(code=int(code))


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
ns = Collection(start_all, stop_verda, stop_all, status, logs, exec_, plan_, lock_break, lab)
