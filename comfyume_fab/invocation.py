"""The command the user ran this tool with, for messages that tell them what to run next:
`comfyume-fab` (the installed command) or `invoke` (in the checkout)."""
from __future__ import annotations

import os
import sys


def program() -> str:
    """`comfyume-fab`, or `invoke` (`inv`, `fab`) when that is what started this process."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if name in ("invoke", "inv", "fab"):
        return name
    return "comfyume-fab"


def command(task: str) -> str:
    """`task` as the user would type it with the command they ran with, e.g. `comfyume-fab lock-break`."""
    return f"{program()} {task}"
