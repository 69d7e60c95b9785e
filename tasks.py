"""comfyume-fab tasks for `invoke` run in this checkout (`invoke --list`, `invoke --help TASK`).

The tasks themselves live in comfyume_fab/tasks.py, so that the installed package carries them.
"""
from comfyume_fab.tasks import ns  # noqa: F401 - Invoke looks for `ns` here
