"""Renting GPU hosts: the provider's API and what this tool records about what it rented. No SSH
here (that is host/); the operations that rent and delete are ops/provision.py.

- `verda`: Verda's public API as its `verda` SDK calls it (REST with the standard library).
- `record`: `.comfyume-fab/instances/<host>.json`, what the next run finds; `resolve` gives a
  rented host its recorded addresses.
- `hostkey`: the instance's SSH host key, generated locally, and `.comfyume-fab/known_hosts`.
- `startup`: the startup script that installs that key and joins the tailnet.
"""
