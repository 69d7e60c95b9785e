"""comfyume-fab tasks for `invoke` run in this checkout (`invoke --list`, `invoke --help TASK`).

The tasks themselves live in comfyume_fab/tasks.py, so that the installed package carries them.
Invoke's own Program reads its core options (`--dry`, `-d`, `-w`, ...) before this module is
loaded, so `invoke --help` still lists them; `adopt_invoke_program` makes `invoke` refuse those
that do not apply to these tasks (exit 2, nothing run) and gives wrong options and task names the
same one-sentence "did you mean ...?" as the installed `comfyume-fab`.
"""
from comfyume_fab.tasks import ns  # noqa: F401 - Invoke looks for `ns` here
from comfyume_fab.usage import adopt_invoke_program

adopt_invoke_program()
