"""The JSON schema of `status --json`: docs/status.schema.json in a checkout, shipped in the
installed package as comfyume_fab/docs/status.schema.json (the same file: see setup.py), so that
`comfyume-fab status --schema` prints it wherever the tool was installed."""
from __future__ import annotations

from pathlib import Path

NAME = "status.schema.json"
_PACKAGE = Path(__file__).resolve().parent


def schema_path() -> Path:
    """The schema file: the installed package's copy, else the checkout's docs/."""
    for folder in (_PACKAGE / "docs", _PACKAGE.parent / "docs"):
        if (folder / NAME).is_file():
            return folder / NAME
    return _PACKAGE / "docs" / NAME


def schema_text() -> str:
    return schema_path().read_text(encoding="utf-8")
