"""`comfyume-fab`: the installed command (`pipx install .` or `pip install .` from a clone).

An Invoke `Program` over the same tasks as `invoke` in the checkout (comfyume_fab.tasks.ns), so it
runs from any folder: `comfyume-fab --list`, `comfyume-fab --help start-all`,
`comfyume-fab plan --hosts ~/comfyume/hosts.yaml`. Before the task name it takes only its own
options (`--help`, `--list`, `--version` and shell completion): Invoke's other core options (dry,
debug, warn-only, config, ...: usage.FOREIGN_CORE) do not apply to tasks that run their commands
over their own SSH connections, and some shared letters with the tasks' options (-d, -w, -f), so
they are not offered and a command that names one is refused before anything runs (exit 2).
"""
from __future__ import annotations

import os
import sys

from . import __version__


def _program():
    from invoke import Program
    from invoke.exceptions import Exit, ParseError
    from invoke.parser import Argument

    from . import usage
    from .errors import ExitCode
    from .tasks import ns

    class FabProgram(Program):
        """Invoke's Program with this tool's own options only, per-task help that names each value,
        and a wrong option or task reported like every other wrong option: one sentence (with "did you
        mean ...?" when something real is close) and exit 2 (Invoke itself exits 1, the code this tool
        keeps for bugs)."""

        def core_args(self):
            return [
                Argument(names=("help", "h"), optional=True, help="Show this help, or a task's (`--help TASK`)."),
                Argument(names=("list", "l"), optional=True, help="List the tasks."),
                Argument(names=("list-format",), default="flat",
                         help="How --list lists them: flat (default), nested or json."),
                Argument(names=("list-depth",), kind=int, default=0, help="--list: only the first INT levels."),
                Argument(names=("version", "V"), kind=bool, default=False, help="Show the version and exit."),
                Argument(names=("complete",), kind=bool, default=False,
                         help="Print tab-completion candidates for the words given."),
                Argument(names=("print-completion-script",), kind=str, default="",
                         help="Print the tab-completion script for bash, zsh or fish."),
            ]

        def _parse(self, step, *args) -> None:
            try:
                step(*args)
            except ParseError as exc:
                contexts = self._make_parser().contexts
                raise Exit("error: " + usage.parse_error_sentence(self.binary, exc, list(self.argv[1:]), contexts,
                                                                  self.collection if hasattr(self, "collection")
                                                                  else self.namespace),
                           code=int(ExitCode.CONFIG)) from None
            except ValueError as exc:  # a whole-number option given something else
                raise Exit("error: " + usage.value_error_sentence(self.binary, exc), code=int(ExitCode.CONFIG)) from None

        def parse_core(self, argv) -> None:
            self.normalize_argv(argv)
            self._parse(self.parse_core_args)
            sys.dont_write_bytecode = True  # as Invoke does without its --write-pyc
            if self.args.version.value:
                self.print_version()
                raise Exit
            if self.args["print-completion-script"].value:
                from invoke.completion.complete import print_completion_script
                print_completion_script(shell=self.args["print-completion-script"].value, names=self.binary_names)
                raise Exit

        def parse_tasks(self) -> None:
            self._parse(super().parse_tasks)

        def parse_cleanup(self) -> None:
            self._parse(super().parse_cleanup)

        def update_config(self, merge: bool = True) -> None:
            # no flag of Invoke's run() configuration exists here (see core_args)
            if merge:
                self.config.merge()

        def print_help(self) -> None:
            print(f"Usage: {self.binary} [--help|--list|--version] TASK [TASK OPTIONS]")
            print("")
            print(f"{self.name}: start, stop and watch a multi-host ComfyuME deployment over SSH.")
            print("")
            print("Options before the task name:")
            print("")
            self.print_columns(self.initial_context.help_tuples())
            self.list_tasks()
            for line in usage.help_epilogue(self.binary):
                print(line)

        def print_task_help(self, name: str) -> None:
            usage.print_task_help(self, name)

    return FabProgram(namespace=ns, version=__version__, name="comfyume-fab", binary="comfyume-fab",
                      binary_names=["comfyume-fab"])


def main() -> None:
    """The console-script entry point: every task runs in this process (there is no resident helper)."""
    try:
        _program().run()
    except BrokenPipeError:  # `comfyume-fab --help plan | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
