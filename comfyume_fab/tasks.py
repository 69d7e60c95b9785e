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
               "follow": "f", "interactive": "i", "yes": "y"}


class FabTask(Task):
    """A task whose short flags come from SHORT_FLAGS, never from Invoke's first-free-letter rule."""

    def __init__(self, *args, **kwargs):
        kwargs["auto_shortflags"] = False
        super().__init__(*args, **kwargs)

    def arg_opts(self, name, default, taken_names):
        opts = super().arg_opts(name, default, taken_names)
        flag = SHORT_FLAGS.get(name)
        if flag and flag not in taken_names:
            opts["names"].append(flag)
        return opts


def _dry_run_plan(hosts, host_option=False):
    """The plan for --dry-run: the inventory validated like the real run's, secrets may be unset."""
    from comfyume_fab import taskrun
    from comfyume_fab.plan.planner import make_plan
    return make_plan(taskrun.load(hosts, need_secrets=False, host_option=host_option))


def _ui(quiet=False):
    from comfyume_fab.present.progress import stderr_progress
    return stderr_progress(quiet)


@task(klass=FabTask, help={"hosts": HOSTS_HELP, "dry_run": "print every host's commands in order and touch nothing",
            "wait_lock": "wait (up to timeouts.lock_wait) instead of failing when another deploy holds the lock",
            "yes": "change the Redis password when the local one differs from the deployed one (it recreates "
                   "Redis), and rent a missing GPU instance at the price shown, without asking",
            "keep_failed": "keep an instance whose renting failed (for inspection; it bills until "
                           "`stop-verda --delete`)",
            "verbose": VERBOSE_HELP})
def start_all(c, hosts=None, dry_run=False, wait_lock=False, yes=False, keep_failed=False, verbose=False):
    """Bring up the app host, prove Redis is reachable from the workers, bring up the workers, probe inference."""
    from comfyume_fab import taskrun
    with taskrun.reported(verbose, "start-all"):
        if dry_run:
            from comfyume_fab.plan.steps import render_text
            print(render_text(_dry_run_plan(hosts), "start-all"))
            return
        inv = taskrun.load(hosts)
        ui = _ui()
        if inv.engine == "swarm":
            from comfyume_fab.ops.swarm import start_swarm
            from comfyume_fab.present.swarm import start_text as swarm_start_text
            print(swarm_start_text(start_swarm(inv, ui, ui.warn, wait_lock=inv.timeouts.lock_wait if wait_lock else 0.0)))
            return
        from comfyume_fab.ops.start import start_all as run
        from comfyume_fab.present.reports import start_text
        from comfyume_fab.present.confirm import rent_confirmer, secret_confirmer
        summary = run(inv, ui, ui.warn, wait_lock=inv.timeouts.lock_wait if wait_lock else 0.0,
                      confirm=secret_confirmer(yes), confirm_rent=rent_confirmer(yes), keep_failed=keep_failed)
        print(start_text(summary))


@task(klass=FabTask, help={"hosts": HOSTS_HELP, "host": "stop only this worker host (default: every worker host)",
            "down": "remove the worker containers too (volumes are always kept)",
            "when_idle": "first wait until no job is pending or running (needs the app host's queue)",
            "force": "do not wait for the queue (with --when-idle: stop now); with --delete: delete the instance even "
                     "when its worker cannot be reached to stop it first",
            "dry_run": "print the commands and touch nothing",
            "delete": "then delete the rented instance (provider: in hosts.yaml; data volumes are kept): the bill "
                      "stops",
            "wait_lock": "wait for another deploy's lock instead of failing", "verbose": VERBOSE_HELP})
def stop_verda(c, hosts=None, host=None, down=False, when_idle=False, force=False, dry_run=False, wait_lock=False,
               delete=False, verbose=False):
    """Stop the GPU worker(s) only, even when the app host is unreachable (a warning says what was not checked)."""
    from comfyume_fab import taskrun
    with taskrun.reported(verbose, "stop-verda"):
        if dry_run:
            from comfyume_fab.plan.steps import render_text
            print(render_text(_dry_run_plan(hosts, host_option=True), "stop-verda", only=host, down=down))
            return
        inv = taskrun.load(hosts, host_option=True)
        ui = _ui()
        if inv.engine == "swarm":
            from comfyume_fab.ops.swarm import stop_swarm_workers
            from comfyume_fab.present.swarm import stop_text
            _swarm_refuses("stop-verda", host=host, down=down, when_idle=when_idle)
            print(stop_text(stop_swarm_workers(inv, ui, wait_lock=inv.timeouts.lock_wait if wait_lock else 0.0)))
            return
        from comfyume_fab.ops.stop import stop_workers
        out = stop_workers(inv, ui, only=host, down=down, when_idle=when_idle, idle_timeout=inv.timeouts.lock_wait,
                           wait_lock=inv.timeouts.lock_wait if wait_lock else 0.0, force=force, warn=ui.warn,
                           delete=delete)
        from comfyume_fab.present.reports import stop_workers_text
        print(stop_workers_text(out))


def _swarm_refuses(task: str, engine: bool = False, **given) -> None:
    """With engine: swarm, the options that only make sense per compose host are refused in one sentence."""
    from comfyume_fab.errors import ConfigError
    if engine:
        raise ConfigError(f"{task} is not built for engine: swarm yet: `stop-verda` scales the worker service to 0; "
                          f"`docker stack rm PROJECT` on the app host removes the whole stack (docs/swarm.md)")
    used = [f"--{k.replace('_', '-')}" for k, v in given.items() if v]
    if used:
        raise ConfigError(f"{task} with engine: swarm does not take {', '.join(used)} (Swarm places the tasks; "
                          f"see docs/swarm.md)")


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
        if inv.engine == "swarm":
            _swarm_refuses("stop-all", engine=True)
        from comfyume_fab.ops.stop import stop_all as run
        from comfyume_fab.present.reports import stop_all_text
        out = run(inv, _ui(), down=down, wait_lock=inv.timeouts.lock_wait if wait_lock else 0.0)
        print(stop_all_text(out))


@task(klass=FabTask, help={"hosts": HOSTS_HELP, "json": "machine-readable output for scripts (its JSON schema: "
                                                          "status --schema)",
            "schema": "print the JSON schema of --json's output (shipped in the package) and exit",
            "no_probe": "skip the inference probe",
            "watch": "a live screen refreshed in place over held SSH connections (q or Ctrl-C quits)",
            "interval": "--watch: seconds between refreshes (default 2)",
            "probe_every": "--watch: seconds between inference probes (default 30)",
            "fetch": "fetch each building host's branch first (else: as of the last fetch)", "verbose": VERBOSE_HELP})
def status(c, hosts=None, json=False, no_probe=False, watch=False, interval="2", probe_every="30", fetch=False,
           schema=False, verbose=False):
    """Every host, service, cross-host link, queue and GPU; exit 0 only when all is healthy."""
    from comfyume_fab import taskrun
    with taskrun.reported(verbose, "status"):
        if schema:
            from comfyume_fab.statusschema import schema_text
            print(schema_text(), end="")
            return
        inv = taskrun.load(hosts)
        if inv.engine == "swarm":
            _swarm_refuses("status", watch=watch, fetch=fetch)
            from comfyume_fab.ops.swarm import status_swarm
            from comfyume_fab.present import swarm as swarm_text
            from comfyume_fab.present.progress import StatusLine
            line = StatusLine()
            try:
                data, checks, code = status_swarm(inv, probe=not no_probe, say=line)
            finally:
                line.clear()
            if json:
                print(swarm_text.status_json(data, checks))
            else:
                import sys
                from comfyume_fab.present.style import use_colour
                print(swarm_text.status_text(data, checks, code, colour=use_colour(sys.stdout)))
            if code:
                from invoke.exceptions import Exit
                raise Exit(code=int(code))
            return
        if watch:
            from comfyume_fab.ops.watch import watch as run_watch
            from comfyume_fab.present.watch import watch_screen
            code = run_watch(inv, watch_screen, interval=taskrun.float_option("--interval", interval),
                             probe_every=0 if no_probe else taskrun.float_option("--probe-every", probe_every))
            if code:
                from invoke.exceptions import Exit
                raise Exit(code=int(code))
            return
        from comfyume_fab.ops.status import status as run
        from comfyume_fab.present.progress import StatusLine
        line = StatusLine()
        try:
            rep = run(inv, probe=not no_probe, say=line, fetch=fetch)
        finally:
            line.clear()
        if json:
            print(rep.to_json())
        else:
            import sys
            from comfyume_fab.present.reports import status_text
            from comfyume_fab.present.style import use_colour
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
        import sys

        from comfyume_fab.ops.logs import logs as run
        from comfyume_fab.present.logs import LogLines
        from comfyume_fab.present.style import use_colour
        code = run(taskrun.load(hosts, host_option=True), hosts=host or (), services=service or (), follow=follow,
                   since=since, tail=None if tail is None else taskrun.int_option("--tail", tail), grep=grep,
                   render=LogLines(colour=use_colour(sys.stdout)))
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
            "list": "only list each host's deploys that can be rolled back to (commit, branch, when); changes nothing",
            "wait_lock": "wait for another deploy's lock instead of failing",
            "yes": "change the Redis password if it differs from the deployed one, without asking",
            "verbose": VERBOSE_HELP})
def rollback(c, hosts=None, to=None, list=False, wait_lock=False, yes=False, verbose=False):  # noqa: A002 - the option's name
    """Redeploy the previous (or --to) commit's images, already on the hosts, without building; start-all's order and checks."""
    from comfyume_fab import taskrun
    with taskrun.reported(verbose, "rollback"):
        if list:  # reads only: the secrets need not be set
            from comfyume_fab.ops.rollback import rollback_list
            from comfyume_fab.present.reports import rollback_list_text
            print(rollback_list_text(rollback_list(taskrun.load(hosts, need_secrets=False))))
            return
        inv = taskrun.load(hosts)
        from comfyume_fab.ops.rollback import rollback as run
        from comfyume_fab.present.reports import start_text
        ui = _ui()
        from comfyume_fab.present.confirm import secret_confirmer
        summary = run(inv, to, ui, ui.warn, wait_lock=inv.timeouts.lock_wait if wait_lock else 0.0,
                      confirm=secret_confirmer(yes))
        print(start_text(summary, task="rollback"))


@task(klass=FabTask, name="copy-image", help={"hosts": HOSTS_HELP, "source": "the host that has the image(s)",
                               "target": "the host to copy them to",
                               "image": "an image reference; repeatable (default: every image the target runs)",
                               "verbose": VERBOSE_HELP}, iterable=["image"])
def copy_image(c, source, target, image=None, hosts=None, verbose=False):
    """Copy images host to host over the hosts' SSH connections (compressed); skipped when the target has the same image id."""
    from comfyume_fab import taskrun
    with taskrun.reported(verbose, "copy-image"):
        inv = taskrun.load(hosts)
        from comfyume_fab.ops.copyimage import copy_task
        from comfyume_fab.present.reports import copy_text
        copied = copy_task(inv, source, target, list(image or []), _ui())
        print(copy_text(copied, source, target))


@task(klass=FabTask, name="switch-gpu", positional=["tier"],
      help={"hosts": HOSTS_HELP, "tier": "the serverless tier to make active (a name in serverless.endpoints)",
            "force": "switch even when the new tier's endpoint does not answer the probe",
            "wait_lock": "wait for another deploy's lock instead of failing", "verbose": VERBOSE_HELP})
def switch_gpu(c, tier, hosts=None, force=False, wait_lock=False, verbose=False):
    """Make another serverless GPU tier active: probe it from the app host, recreate only the queue manager, verify."""
    from comfyume_fab import taskrun
    with taskrun.reported(verbose, "switch-gpu"):
        inv = taskrun.load(hosts)
        from comfyume_fab.ops.switch import switch_gpu as run
        ui = _ui()
        out = run(inv, tier, ui, ui.warn, force=force, wait_lock=inv.timeouts.lock_wait if wait_lock else 0.0)
        print(f"switch-gpu: {out['old']} ({out['old_gpu'] or '?'}, {out['old_price']}) -> {out['new']} "
              f"({out['new_gpu'] or '?'}, {out['new_price']}); the queue manager reports {out['reported']}; "
              f"recreated {', '.join(out['recreated'])}, kept {len(out['kept'])} other container(s); {out['saved']}")


@task(klass=FabTask, positional=["tier"],
      help={"hosts": HOSTS_HELP, "tier": "the serverless tier whose deployment to keep warm",
            "replicas": "minimum replicas to keep running until --until",
            "until": "local time of day (HH:MM or HH:MM:SS) when a job on the app host lowers them again",
            "verbose": VERBOSE_HELP})
def warm(c, tier, replicas="1", until=None, hosts=None, verbose=False):
    """Keep a serverless tier warm (min replicas) until a time; a job on the app host lowers them, laptop closed or not."""
    from comfyume_fab import taskrun
    with taskrun.reported(verbose, "warm"):
        if not until:
            from comfyume_fab.errors import ConfigError
            raise ConfigError("warm needs --until HH:MM: when the replicas go back down (the GPUs bill until then)")
        inv = taskrun.load(hosts)
        from comfyume_fab.ops.warm import warm as run
        out = run(inv, tier, taskrun.int_option("--replicas", replicas), until, _ui())
        print(f"warm: {out['deployment']} ({out['tier']}) min replicas {out['min_before']} -> {out['min_now']} "
              f"(max {out['max_now']}); the job {out['job']} on {out['host']} sets it back to {out['min_before']} "
              f"at {out['lower_at']}")


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
        from comfyume_fab.present.reports import diff_json, diff_text
        from comfyume_fab.plan.diff import secret_sentence
        secrets = []
        diffs = run(inv, secrets)
        for change in secrets:  # which secret differs from the deployed one, and where it comes from
            _ui().warn(secret_sentence(change))
        print(diff_json(diffs) if json else diff_text(diffs))


@task(klass=FabTask, help={"hosts": HOSTS_HELP, "verbose": VERBOSE_HELP})
def lock_break(c, hosts=None, verbose=False):
    """Remove a stale deploy lock left by a run that died (says who held it)."""
    from comfyume_fab import taskrun
    with taskrun.reported(verbose, "lock-break"):
        from comfyume_fab.ops.lock import break_lock
        print(break_lock(taskrun.load(hosts, need_secrets=False)))


@task(klass=FabTask, help={"hosts": HOSTS_HELP, "verbose": VERBOSE_HELP})
def lock(c, hosts=None, verbose=False):
    """Show who holds the deploy lock (which command, since when, live or stale) without trying to take it."""
    from comfyume_fab import taskrun
    with taskrun.reported(verbose, "lock"):
        from comfyume_fab.ops.lock import read_lock
        from comfyume_fab.present.reports import lock_text
        from comfyume_fab.invocation import program
        inv = taskrun.load(hosts, need_secrets=False)
        host, seen = read_lock(inv)
        print(lock_text(host, seen, inv.timeouts.lock_wait, program()))


TAKEOVER_HELP = ("remove a lab that another checkout made (default: refuse, naming that checkout; "
                 "$COMFYUME_LAB_TAKEOVER=1 does the same)")


@task(klass=FabTask, help={"workers": "number of worker hosts (verda, verda-2, ...)",
                           "sshd_only": "extra hosts with sshd but no Docker engine (scale benchmarks)",
                           "users": "num_users in the lab inventory", "takeover": TAKEOVER_HELP})
def lab_up(c, workers=1, sshd_only=0, users=3, takeover=False):
    """Rehearsal lab (this tool's own tests and demos; root): hosts as network namespaces on this machine."""
    from comfyume_fab.lab.cli import up
    up(int(workers), int(sshd_only), int(users), takeover=takeover)


@task(klass=FabTask, help={"takeover": TAKEOVER_HELP})
def lab_down(c, takeover=False):
    """Rehearsal lab (this tool's own tests and demos; root): remove everything lab.up made."""
    from comfyume_fab.lab.cli import down
    down(takeover=takeover)


@task(klass=FabTask)
def lab_real(c):
    """Rehearsal lab (this tool's own tests; root): build (once, cached) and load images of the team's real services, write .lab/hosts-real.yaml."""
    from comfyume_fab.lab.cli import real
    real()


lab = Collection("lab")
lab.add_task(lab_up, name="up")
lab.add_task(lab_down, name="down")
lab.add_task(lab_real, name="real")
ns = Collection(start_all, stop_verda, stop_all, status, logs, exec_, plan_, diff, lock, lock_break, rollback,
                copy_image, switch_gpu, warm, lab)
