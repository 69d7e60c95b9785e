"""Agents: small programs this tool installs on a host to run there by themselves, with nobody
connected (the laptop may be closed). Each is STANDARD LIBRARY ONLY and imports nothing from
comfyume_fab: its source file is uploaded as it is and run by the python3 of an image already on the
host (the queue manager's). Their pure parts are unit-tested here like any module.

- `autostop`: deletes an idle rented worker instance (the queue manager's view of the queue, the
  Verda API), keeping a state file that `status` reads (`host.facts.autostop`).
"""
