"""The inventory: hosts.yaml read into a validated, frozen model before any host is touched.

- `model`: the dataclasses (Inventory, Host, ...) and the names every layer agrees on (modes,
  roles, GPU modes). A leaf: it imports nothing above it.
- `yamlsrc`: YAML with the line of every key, duplicate keys and size bounds.
- `checker`: typed reads of values that collect every problem as one line each.
- `hosts`, `rules`: the per-host section and the cross-key rules (modes vs roles, ports, secrets).
- `provider`: a worker host's `provider:` (what to rent) and `autostop:` sections.
- `imagesrc`: the `images:` section: each service's image and where it comes from.
- `secrets`: secrets by reference, the `Secret` wrapper that prints as ***.
- `fingerprint`: a secret's fingerprint, what stands for it in every hash stored on hosts.
- `read`: `load_inventory(path)`, which ties them together and raises one ConfigError with every
  problem, each `<path>:<line> <key.path>: <what is wrong> (<hint>)`.
"""
from .model import Host, Inventory
from .read import load_inventory

__all__ = ["Host", "Inventory", "load_inventory"]
