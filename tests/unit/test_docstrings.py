"""Package docstrings stay true to the tree: each package's docstring lists its modules and
sub-packages as bullets, one convention everywhere:

    - `name`: what it does
    - `name` and `other`: ...   /   - `one`, `two`: ...

Every name so listed must be a module or sub-package of that package, and every module and
sub-package must be listed."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "comfyume_fab"
# Being retired by issue 18 (the warm helper): not documented anew, not required to be.
BULLET = re.compile(r"^- ((?:`[A-Za-z_][A-Za-z0-9_]*`(?:, | and )?)+):", re.MULTILINE)


def packages() -> list[Path]:
    return sorted(p.parent for p in PKG.rglob("__init__.py") if "__pycache__" not in p.parts)


def members(package: Path) -> set[str]:
    """The modules and sub-packages of `package` (a folder with an __init__.py)."""
    out = set()
    for child in package.iterdir():
        if child.suffix == ".py" and child.name != "__init__.py":
            out.add(child.stem)
        elif child.is_dir() and (child / "__init__.py").exists():
            out.add(child.name)
    return out


def listed(package: Path) -> set[str]:
    doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text())) or ""
    return {name for match in BULLET.finditer(doc) for name in re.findall(r"`([^`]+)`", match.group(1))}


@pytest.mark.parametrize("package", packages(), ids=lambda p: str(p.relative_to(PKG.parent)))
def test_a_package_docstring_lists_exactly_its_modules(package):
    have, said = members(package), listed(package)
    assert not said - have, f"{package.relative_to(PKG.parent)}/__init__.py lists what does not exist: {sorted(said - have)}"
    assert not have - said, f"{package.relative_to(PKG.parent)}/__init__.py does not list: {sorted(have - said)}"


def test_the_check_reads_the_bullets():
    assert listed(PKG / "host") >= {"ssh", "facts", "actions", "state"}
    assert {"plan", "checks"} <= listed(PKG)  # `plan` and `checks`: ...
