"""The host's remote folder: made private, cleared of partial uploads, and its audit log appended to."""
from __future__ import annotations

import shlex

from ..commands import AUDIT_LOG, q, workdir_path


def mkdir(workdir: str) -> str:
    # chmod too: `-m` applies only to a folder mkdir creates, not to one an older run left 0755
    path = workdir_path(workdir)
    return f"{shlex.join(['mkdir', '-p', '-m', '700', path])} && {shlex.join(['chmod', '700', path])}"


def clean_partials(workdir: str) -> str:
    """Remove what an upload cut off mid-transfer left beside the real files (never in use)."""
    base = q(workdir_path(workdir))
    return f"rm -f -- {base}/.*.part-* {base}/*.part-*"


def audit(workdir: str, line: str) -> str:
    path = q(workdir_path(workdir, AUDIT_LOG))
    return f"printf '%s\\n' {q(line)} >> {path} && chmod 600 {path}"
