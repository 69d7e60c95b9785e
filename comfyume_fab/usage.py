"""What the user typed on the command line: the command they ran with, the options this tool
offers before the task name, per-task help, and one sentence for a wrong word (with "did you
mean ...?" when a real option or task is close).

Shared by the installed `comfyume-fab` (comfyume_fab.cli, an Invoke Program of ours) and `invoke`
in the checkout (the repository's tasks.py calls `adopt_invoke_program`: Invoke's own Program
reads Invoke's core options before our tasks are even loaded, so there the options that do not
apply are refused once parsed instead of being absent from the help).
"""
from __future__ import annotations

import difflib
import re

from .errors import EXIT_MEANINGS, ExitCode
from .invocation import program

# Invoke's core options that do not apply to this tool's tasks (they run their commands over their
# own SSH connections, never through Invoke's `c.run`): long name -> (short flag, what to use instead).
FOREIGN_CORE = {
    "dry": ("R", "it would not make a task dry: `{prog} {task} --dry-run` (-n) prints the commands and touches "
                 "nothing"),
    "debug": ("d", "-v/--verbose after the task name shows tracebacks and every remote command"),
    "warn-only": ("w", "options go after the task name"),
    "config": ("f", "options go after the task name"),
    "echo": ("e", "-v/--verbose after the task name shows every remote command"),
    "pty": ("p", "`{prog} exec -i HOST SERVICE` opens a pseudo-terminal"),
    "hide": ("", "options go after the task name"),
    "command-timeout": ("T", "the timeouts are hosts.yaml's `timeouts` section"),
    "prompt-for-sudo-password": ("", "this tool never uses sudo passwords"),
    "write-pyc": ("", "it does not apply to this tool"),
}
DRY_RUN_TASKS = ("start-all", "stop-verda", "stop-all")

# The value each option takes, as per-task help names it (Invoke says STRING or INT for all).
PLACEHOLDERS = {"hosts": "PATH", "host": "HOST", "service": "SERVICE", "interval": "SECONDS",
                "probe-every": "SECONDS", "since": "TIME", "tail": "N", "grep": "REGEX", "to": "COMMIT",
                "source": "HOST", "target": "HOST", "image": "REF", "workers": "N", "sshd-only": "N", "users": "N"}

EXAMPLES = (
    ("{prog} plan", "each host's services, environment and commands (no secrets, no connection needed)"),
    ("{prog} start-all --dry-run", "the commands start-all would run, in order; touches nothing"),
    ("{prog} start-all", "bring everything up, then probe inference"),
    ("{prog} status", "every host, service, link, queue and GPU; exit 0 only when all is healthy"),
    ("{prog} status --watch --interval 2", "a live screen; q quits"),
    ("{prog} logs --host verda -f", "follow the worker host's logs"),
    ("{prog} exec mello redis -- redis-cli ping", "run a command in a service's container"),
    ("{prog} stop-verda --down", "stop and remove the GPU worker(s)"),
    ("{prog} lock", "who holds the deploy lock, without taking it"),
)


# ---- the main help of comfyume-fab -------------------------------------------------------------

def _wrapped(head: str, text: str, indent: int) -> str:
    import textwrap
    return textwrap.fill(text, width=100, initial_indent=head, subsequent_indent=" " * indent)


def exit_code_lines() -> list[str]:
    """The exit code table (errors.EXIT_MEANINGS, the same one the README shows)."""
    return [_wrapped(f"  {int(code):>3}  ", strip_markdown(text), 7) for code, text in EXIT_MEANINGS.items()]


def strip_markdown(text: str) -> str:
    return text.replace("`", "")


def example_lines(prog: str) -> list[str]:
    width = max(len(cmd.format(prog=prog)) for cmd, _ in EXAMPLES) + 5
    return [_wrapped(f"  {cmd.format(prog=prog):<{width - 2}}", what, width) for cmd, what in EXAMPLES]


def help_epilogue(prog: str) -> list[str]:
    return ["Every task takes -H/--hosts PATH (the inventory; default hosts.yaml, $COMFYUME_HOSTS overrides it) and",
            "-v/--verbose; its other options come after its name: `" + prog + " --help TASK` lists them.",
            "", "Examples:", "", *example_lines(prog), "", "Exit codes:", "", *exit_code_lines(), ""]


# ---- per-task help ------------------------------------------------------------------------------

def option_tuples(ctx) -> list[tuple[str, str]]:
    """Invoke's (flags, help) pairs for a task, each value named for what it is (`--interval=SECONDS`)."""
    out = []
    for names, text in ctx.help_tuples():
        m = re.search(r"--([\w-]+)", names)
        value = PLACEHOLDERS.get(m.group(1)) if m else None
        arg = ctx.flags.get(f"--{m.group(1)}") if m else None
        if arg is not None and arg.kind is list:  # repeatable: Invoke shows it as if it took no value
            value = value or "VALUE"
            names = re.sub(r"(--[\w-]+)", rf"\1={value}", re.sub(r"(?<![\w-])(-\w)\b", rf"\1 {value}", names))
            text = text if "repeatable" in text else f"{text} (repeatable)"
        elif value:
            names = re.sub(r"\b(STRING|INT)\b", value, names)
        out.append((names, text))
    return out


def print_task_help(prog_obj, name: str) -> None:
    """Per-task help: usage, the task's description (no `Docstring:` heading), its options."""
    import inspect
    ctx = prog_obj.parser.contexts[name]
    tuples = option_tuples(ctx)
    doc = inspect.getdoc(prog_obj.collection[name]) or ""
    positional = " ".join(a.name.upper() for a in ctx.positional_args)
    print(f"Usage: {program()} {name} {'[options]' if tuples else ''} {positional}".rstrip().replace("  ", " "))
    print("")
    for line in doc.splitlines():
        print(f"  {line}" if line.strip() else "")
    if doc:
        print("")
    print("Options:")
    if tuples:
        prog_obj.print_columns(tuples)
    else:
        print("  none")
        print("")


# ---- one sentence for a wrong word ---------------------------------------------------------------

def _task_names(collection) -> list[str]:
    return sorted(collection.task_names)


def _task_in(argv: list[str], tasks: list[str]) -> str:
    return next((a for a in argv if a in tasks), "")


def foreign_sentence(prog: str, name: str, typed: str, task: str, contexts=None) -> str:
    """Why an Invoke core option is refused, and what to use instead."""
    _short, instead = FOREIGN_CORE[name]
    if name == "dry" and task not in DRY_RUN_TASKS:
        instead = ("it would not make a task dry: start-all, stop-verda and stop-all take -n/--dry-run; "
                   "`{prog} plan` shows everything and connects to nothing")
    ctx = (contexts or {}).get(task) if task else None
    if ctx is not None and typed in ctx.flags and name != "dry":
        long = next((n for n in ctx.names_for(typed) if n.startswith("--")), typed)
        instead = f"options go after the task name: `{{prog}} {task} {typed}` is {long}"
    which = "" if typed == f"--{name}" else f"--{name} "
    return (f"{typed} is Invoke's {which}option, which {prog} does not offer: "
            f"{instead.format(prog=prog, task=task or 'start-all')} (nothing was run)")


def _misplaced(prog: str, typed: str, task: str, contexts) -> str | None:
    """A task's own option given before the task's name."""
    ctx = contexts.get(task) if task else None
    if ctx is not None and typed in ctx.flags:
        long = next((n for n in ctx.names_for(typed) if n.startswith("--")), typed)
        return (f"{typed} before the task name is not an option of {prog}; options go after it: "
                f"`{prog} {task} {typed}` ({long}) (nothing was run)")
    return None


def parse_error_sentence(prog: str, exc, argv: list[str], contexts, collection) -> str:
    """Invoke's ParseError as one sentence naming what was wrong and the closest real thing."""
    text = str(exc)
    tasks = _task_names(collection)
    hint = f"`{prog} --list` shows the tasks, `{prog} --help TASK` their options"
    m = re.match(r"No idea what '(.*)' is!$", text)
    if m:
        token = m.group(1)
        ctx = getattr(exc, "context", None)
        task = ctx.name if ctx is not None and getattr(ctx, "name", None) else ""
        if token.startswith("-"):
            flag = token.split("=", 1)[0]
            if not task:  # before any task name: an Invoke core option, or a task's option misplaced
                after = _task_in(argv, tasks)
                for name, (short, _instead) in FOREIGN_CORE.items():
                    if flag in (f"--{name}", f"-{short}" if short else None):
                        return foreign_sentence(prog, name, flag, after, contexts)
                misplaced = _misplaced(prog, flag, after, contexts)
                if misplaced:
                    return misplaced
                longs = ["--help", "--list", "--version"]
                where = f"{prog} itself"
            else:
                longs = sorted(f for f in ctx.flags if f.startswith("--"))
                where = f"`{prog} {task}`"
            close = difflib.get_close_matches(flag, longs, n=1, cutoff=0.6)
            mean = f": did you mean {close[0]}?" if close else ""
            return f"{flag} is not an option of {where}{mean} ({hint})"
        close = difflib.get_close_matches(token, tasks, n=1, cutoff=0.6)
        mean = f": did you mean `{prog} {close[0]}`?" if close else ""
        return f"'{token}' is not a task of {prog}{mean} ({hint})"
    m = re.match(r"Flag <Argument: ([\w-]+)[^>]*> needed value and was not given one!$", text)
    if m:
        name = m.group(1).replace("_", "-")
        return f"--{name} needs a value ({hint})"
    return f"{text} ({hint})"


def value_error_sentence(prog: str, exc: ValueError) -> str:
    """Invoke casting a whole-number option's value (`lab.up --workers x`) raises a bare ValueError."""
    m = re.search(r"invalid literal for int\(\) with base 10: (.*)$", str(exc))
    got = m.group(1) if m else repr(str(exc))
    return (f"an option's value must be a whole number (got {got}) (`{prog} --help TASK` lists each option "
            "and its value)")


def given_foreign(args, argv: list[str]) -> tuple[str, str] | None:
    """`invoke`: the first Invoke core option given that does not apply (name, as typed), if any."""
    for name, (short, _instead) in FOREIGN_CORE.items():
        if name in args and args[name].got_value and args[name].value not in (None, False, "", 0):
            spellings = [f"--{name}"] + ([f"-{short}"] if short else [])
            typed = next((a.split("=", 1)[0] for a in argv if a.split("=", 1)[0] in spellings), spellings[0])
            return name, typed
    return None


def adopt_invoke_program() -> None:
    """Give `invoke` in the checkout what comfyume-fab has, as far as Invoke lets a tasks module:
    a wrong option or task is one sentence with "did you mean", exit 2; an Invoke core option that
    does not apply (dry, debug, warn-only, ...) is refused before any task runs; per-task help names
    each value (`--interval=SECONDS`) and has no `Docstring:` heading. Invoke's own `--help` (printed
    before this module is loaded) still lists Invoke's options."""
    from invoke.exceptions import Exit, ParseError
    from invoke.program import Program

    if getattr(Program, "_comfyume_adopted", False):
        return
    parse_tasks = Program.parse_tasks

    def checked_parse_tasks(self) -> None:
        prog = program()
        try:
            parse_tasks(self)
        except ParseError as exc:
            raise Exit("error: " + parse_error_sentence(prog, exc, list(self.argv[1:]), self.parser.contexts,
                                                         self.collection),
                       code=int(ExitCode.CONFIG)) from None
        except ValueError as exc:
            raise Exit("error: " + value_error_sentence(prog, exc), code=int(ExitCode.CONFIG)) from None
        foreign = given_foreign(self.args, list(self.argv[1:]))
        if foreign:
            name, typed = foreign
            task = self.tasks[0].name if self.tasks else ""
            raise Exit("error: " + foreign_sentence(prog, name, typed, task, self.parser.contexts),
                       code=int(ExitCode.CONFIG))

    def task_help(self, name: str) -> None:
        print_task_help(self, name)

    Program.parse_tasks = checked_parse_tasks
    Program.print_task_help = task_help
    Program._comfyume_adopted = True
