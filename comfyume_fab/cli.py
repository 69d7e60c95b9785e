"""`comfyume-fab`: the installed command (`pipx install .` or `pip install .` from a clone).

An Invoke `Program` over the same tasks as `invoke` in the checkout (comfyume_fab.tasks.ns), so it
runs from any folder: `comfyume-fab --list`, `comfyume-fab --help start-all`,
`comfyume-fab plan --hosts ~/comfyume/hosts.yaml`. Invoke's own core options (`--list`,
`--help`, `--version`, ...) come before the task name; the task's options after it.
"""
from __future__ import annotations

import os
import sys

from invoke import Program

from . import __version__
from .tasks import ns

program = Program(namespace=ns, version=__version__, name="comfyume-fab", binary="comfyume-fab",
                  binary_names=["comfyume-fab"])


def main() -> None:
    """The console-script entry point."""
    try:
        program.run()
    except BrokenPipeError:  # `comfyume-fab --help plan | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
