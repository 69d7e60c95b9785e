"""STAND-INs for the ComfyuME services (lab only; never the real services), speaking the real HTTP
contracts (docs/comfyume-system.md) so the orchestrator can be tested without GPUs or the team's
private images.

- `common`: what the stand-ins share.
- `queue_manager`: the queue manager.
- `worker`: the inference worker (ComfyUI's HTTP API; really executes the probe graph).
- `frontend`: a user frontend (ComfyUI's UI).
- `admin`: the admin dashboard.
- `gateway`: Verda's serverless container gateway (Bearer key, cold start, sync/async, deployment API).
- `verda_api`: Verda's public cloud API (OAuth, instance types, availability, instances that are real
  lab hosts, SSH keys, startup scripts, volumes, balance); runs on this machine, not in an image.
"""
