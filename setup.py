"""The packages of comfyume-fab (the metadata is in pyproject.toml).

The repository's top-level compose/ folder IS the package data: setuptools ships it in the wheel
as comfyume_fab/compose/*.yml, where comfyume_fab.plan.compose reads it in an installed copy (in a
checkout it reads compose/ itself). Likewise docs/status.schema.json ships as
comfyume_fab/docs/status.schema.json (only that file of docs/), which `status --schema` prints.
One set of files, no copy to keep in step; tests/unit/test_install.py checks that a wheel built
from the repository holds them.
"""
from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["comfyume_fab", "comfyume_fab.*"]) + ["comfyume_fab.compose", "comfyume_fab.docs"],
    package_dir={"comfyume_fab.compose": "compose", "comfyume_fab.docs": "docs"},
    package_data={"comfyume_fab.compose": ["*.yml"], "comfyume_fab.docs": ["status.schema.json"]},
)
