"""`comfyume-fab`: the installed command (`pipx install .` or `pip install .` from a clone).

An Invoke `Program` over the same tasks as `invoke` in the checkout (comfyume_fab.tasks.ns), so it
runs from any folder: `comfyume-fab --list`, `comfyume-fab --help start-all`,
`comfyume-fab plan --hosts ~/comfyume/hosts.yaml`. Invoke's own core options (`--list`,
`--help`, `--version`, ...) come before the task name; the task's options after it.
"""
from __future__ import annotations

import os
import sys

from . import __version__


def _program():
    from invoke import Program
    from invoke.exceptions import Exit, ParseError

    from .errors import ExitCode
    from .tasks import ns

    class FabProgram(Program):
        """Invoke's Program, with a wrong option or task name reported like every other wrong option:
        one sentence and exit 2 (Invoke itself exits 1, the code this tool keeps for bugs)."""

        def _parse(self, step, *args) -> None:
            try:
                step(*args)
            except ParseError as exc:
                raise Exit(f"error: {exc} (`{self.binary} --list` shows the tasks, `{self.binary} --help TASK` "
                           "their options)", code=int(ExitCode.CONFIG)) from None

        def parse_core(self, argv) -> None:
            self._parse(super().parse_core, argv)

        def parse_tasks(self) -> None:
            self._parse(super().parse_tasks)

    return FabProgram(namespace=ns, version=__version__, name="comfyume-fab", binary="comfyume-fab",
                      binary_names=["comfyume-fab"])


def main() -> None:
    """The console-script entry point: every task runs in this process (there is no resident helper)."""
    try:
        _program().run()
    except BrokenPipeError:  # `comfyume-fab --help plan | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
