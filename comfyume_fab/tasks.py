"""comfyume-fab's Invoke tasks (`invoke --list`, `invoke --help TASK`): thin wrappers that parse
options, call one operation and print its rendering. The repository's tasks.py re-exports `ns`.

Start, stop and watch a multi-host ComfyuME deployment described by hosts.yaml.
Modules are imported inside the tasks so that `invoke --list` and `plan` stay fast.
"""
import atexit
import gc

from invoke import Collection, Task, task

# At exit, skip the interpreter's last garbage collection over the ~100k objects of the imported
# modules (Fabric, paramiko, redis-py): ~80 ms of every task's wall time on a 2-core host.
# atexit handlers run last-registered-first, so this one runs after every other.
atexit.register(gc.freeze)

HOSTS_HELP = "inventory file (default hosts.yaml; $COMFYUME_HOSTS overrides the default)"
VERBOSE_HELP = "show tracebacks and every remote command's timing"

# One short flag per option name, the same in every task (Invoke's automatic ones differed from
# task to task, and gave --hosts `-h`, which reads as help). Options not named here have none.
SHORT_FLAGS = {"hosts": "H", "dry_run": "n", "verbose": "v", "wait_lock": "w", "json": "j", "down": "d",
               "follow": "f", "interactive": "i"}


class FabTask(Task):
    """A task whose short flags come from SHORT_FLAGS, never from Invoke's first-free-letter rule,
    and which, when it is the first task of a one-shot command (handoff.ONE_SHOT), runs in the
    warm helper process if one runs (comfyume_fab.handoff)."""

    ran_one = False  # a task already ran in this process: the rest of the command line runs here

    def __init__(self, *args, **kwargs):
        kwargs["auto_shortflags"] = False
        super().__init__(*args, **kwargs)

    def __call__(self, *args, **kwargs):
        first, FabTask.ran_one = not FabTask.ran_one, True
        name = self.name.rstrip("_").replace("_", "-")
        from comfyume_fab import handoff
        if first and handoff.one_shot(name, {k for k, v in kwargs.items() if v}):
            code = handoff.run_task(name)
            if code is not None:  # the helper ran the whole command line
                from invoke.exceptions import Exit
                raise Exit(code=code)
        return super().__call__(*args, **kwargs)

    def arg_opts(self, name, default, taken_names):
        opts = super().arg_opts(name, default, taken_names)
        flag = SHORT_FLAGS.get(name)
        if flag and flag not in taken_names:
            opts["names"].append(flag)
        return opts


def _dry_run_plan(hosts):
    """The plan for --dry-run: the inventory validated like the real run's, secrets may be unset."""
    from comfyume_fab import taskrun
    from comfyume_fab.plan.planner import make_plan
    return make_plan(taskrun.load(hosts, need_secrets=False))


def _ui(quiet=False):
    import sys

    from comfyume_fab.progress import Progress
    from comfyume_fab.taskrun import CleanStream
    return Progress(stream=CleanStream(sys.stderr), quiet=quiet)


@task(klass=FabTask, help={"hosts": HOSTS_HELP, "dry_run": "print every host's commands in order and touch nothing",
            "wait_lock": "wait (up to timeouts.lock_wait) instead of failing when another deploy holds the lock",
            "verbose": VERBOSE_HELP})
def start_all(c, hosts=None, dry_run=False, wait_lock=False, verbose=False):
    """Bring up the app host, prove Redis is reachable from the workers, bring up the workers, probe inference."""
    from comfyume_fab import taskrun
    with taskrun.reported(verbose, "start-all"):
        if dry_run:
            from comfyume_fab.plan.steps import render_text
            print(render_text(_dry_run_plan(hosts), "start-all"))
            return
        inv = taskrun.load(hosts)
        from comfyume_fab.ops.start import start_all as run
        from comfyume_fab.report import start_text
        ui = _ui()
        summary = run(inv, ui, ui.warn, wait_lock=inv.timeouts.lock_wait if wait_lock else 0.0)
        print(start_text(summary))


@task(klass=FabTask, help={"hosts": HOSTS_HELP, "host": "stop only this worker host (default: every worker host)",
            "down": "remove the worker containers too (volumes are always kept)",
            "when_idle": "first wait until no job is pending or running (needs the app host's queue)",
            "force": "do not wait for the queue (with --when-idle: stop now)",
            "dry_run": "print the commands and touch nothing",
            "wait_lock": "wait for another deploy's lock instead of failing", "verbose": VERBOSE_HELP})
def stop_verda(c, hosts=None, host=None, down=False, when_idle=False, force=False, dry_run=False, wait_lock=False,
               verbose=False):
    """Stop the GPU worker(s) only, even when the app host is unreachable (a warning says what was not checked)."""
    from comfyume_fab import taskrun
    with taskrun.reported(verbose, "stop-verda"):
        if dry_run:
            from comfyume_fab.plan.steps import render_text
            print(render_text(_dry_run_plan(hosts), "stop-verda", only=host, down=down))
            return
        inv = taskrun.load(hosts)
        from comfyume_fab.ops.stop import stop_workers
        ui = _ui()
        out = stop_workers(inv, ui, only=host, down=down, when_idle=when_idle, idle_timeout=inv.timeouts.lock_wait,
                           wait_lock=inv.timeouts.lock_wait if wait_lock else 0.0, force=force, warn=ui.warn)
        tail = ("app host NOT checked (unreachable)" if out.get("unchecked") else "app host untouched")
        print(f"stop-verda: stopped the worker on {', '.join(out['stopped']) or 'no host'}; {tail}")


@task(klass=FabTask, help={"hosts": HOSTS_HELP, "down": "remove containers too (volumes, so Redis data, are kept)",
            "dry_run": "print the commands and touch nothing",
            "wait_lock": "wait for another deploy's lock instead of failing", "verbose": VERBOSE_HELP})
def stop_all(c, hosts=None, down=False, dry_run=False, wait_lock=False, verbose=False):
    """Stop the workers first, then the app host."""
    from comfyume_fab import taskrun
    with taskrun.reported(verbose, "stop-all"):
        if dry_run:
            from comfyume_fab.plan.steps import render_text
            print(render_text(_dry_run_plan(hosts), "stop-all", down=down))
            return
        inv = taskrun.load(hosts)
        from comfyume_fab.ops.stop import stop_all as run
        out = run(inv, _ui(), down=down, wait_lock=inv.timeouts.lock_wait if wait_lock else 0.0)
        print(f"stop-all: stopped {', '.join(out['stopped'])}")


@task(klass=FabTask, help={"hosts": HOSTS_HELP, "json": "machine-readable output for scripts (docs/status.schema.json)",
            "no_probe": "skip the inference probe",
            "watch": "a live screen refreshed in place over held SSH connections (q or Ctrl-C quits)",
            "interval": "--watch: seconds between refreshes (default 2)",
            "probe_every": "--watch: seconds between inference probes (default 30)",
            "fetch": "fetch each building host's branch first (else: as of the last fetch)", "verbose": VERBOSE_HELP})
def status(c, hosts=None, json=False, no_probe=False, watch=False, interval="2", probe_every="30", fetch=False,
           verbose=False):
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
            rep = run(inv, probe=not no_probe, say=line, fetch=fetch)
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


@task(klass=FabTask, iterable=["host", "service"],
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


@task(klass=FabTask, name="exec", positional=["host", "service"],
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


@task(klass=FabTask, help={"hosts": HOSTS_HELP, "to": "the commit (or its first digits) to go back to; default: each host's "
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


@task(klass=FabTask, name="copy-image", help={"hosts": HOSTS_HELP, "source": "the host that has the image(s)",
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


@task(klass=FabTask, name="plan", help={"hosts": HOSTS_HELP, "json": "machine-readable output", "verbose": VERBOSE_HELP})
def plan_(c, hosts=None, json=False, verbose=False):
    """Show per host the services, the environment (secrets masked) and the commands start-all would run."""
    from comfyume_fab import taskrun
    with taskrun.reported(verbose, "plan"):
        from comfyume_fab.plan.steps import render_json, render_text
        from comfyume_fab.plan.planner import make_plan
        p = make_plan(taskrun.load(hosts, need_secrets=False))
        print(render_json(p) if json else render_text(p))


@task(klass=FabTask, help={"hosts": HOSTS_HELP, "json": "machine-readable output", "verbose": VERBOSE_HELP})
def diff(c, hosts=None, json=False, verbose=False):
    """Read the hosts (touching nothing) and list per service what start-all would create, recreate (and why), remove."""
    from comfyume_fab import taskrun
    with taskrun.reported(verbose, "diff"):
        inv = taskrun.load(hosts)
        from comfyume_fab.ops.diff import diff as run
        from comfyume_fab.report import diff_json, diff_text
        diffs = run(inv)
        print(diff_json(diffs) if json else diff_text(diffs))


@task(klass=FabTask, help={"hosts": HOSTS_HELP, "verbose": VERBOSE_HELP})
def lock_break(c, hosts=None, verbose=False):
    """Remove a stale deploy lock left by a run that died (says who held it)."""
    from comfyume_fab import taskrun
    with taskrun.reported(verbose, "lock-break"):
        from comfyume_fab.ops.lock import break_lock
        print(break_lock(taskrun.load(hosts, need_secrets=False)))


@task(klass=FabTask, help={"stop": "end it now (the next one-shot task starts a new one)"})
def helper(c, stop=False):
    """The warm helper that runs one-shot tasks (comfyume_fab/handoff.py): is one running? --stop ends it."""
    from comfyume_fab import handoff
    print(handoff.describe(stop))


TAKEOVER_HELP = ("remove a lab that another checkout made (default: refuse, naming that checkout; "
                 "$COMFYUME_LAB_TAKEOVER=1 does the same)")


@task(klass=FabTask, help={"workers": "number of worker hosts (verda, verda-2, ...)",
                           "sshd_only": "extra hosts with sshd but no Docker engine (scale benchmarks)",
                           "users": "num_users in the lab inventory", "takeover": TAKEOVER_HELP})
def lab_up(c, workers=1, sshd_only=0, users=3, takeover=False):
    """Create the lab: hosts as network namespaces with their own sshd and Docker engine."""
    from comfyume_fab.lab.cli import up
    up(int(workers), int(sshd_only), int(users), takeover=takeover)


@task(klass=FabTask, help={"takeover": TAKEOVER_HELP})
def lab_down(c, takeover=False):
    """Remove everything the lab made (processes, namespaces, bridge, users, folders)."""
    from comfyume_fab.lab.cli import down
    down(takeover=takeover)


@task(klass=FabTask)
def lab_real(c):
    """Lab on the team's real services: build (once, cached) and load their images, write .lab/hosts-real.yaml."""
    from comfyume_fab.lab.cli import real
    real()


lab = Collection("lab")
lab.add_task(lab_up, name="up")
lab.add_task(lab_down, name="down")
lab.add_task(lab_real, name="real")
ns = Collection(start_all, stop_verda, stop_all, status, logs, exec_, plan_, diff, lock_break, rollback, copy_image,
                helper, lab)
