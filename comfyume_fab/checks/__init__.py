"""The checks layer: what is found, never raised for (every failure reported in one pass).

- `result`: `CheckResult`, one named finding with its detail and its --json data.
- `links`: cross-host links from the right vantage point (Redis and HTTP through a connection the
  far host opens) and the one read of the job queue.
- `probe`: the inference probe (a tiny graph really executed by the worker's ComfyUI).
- `preflight`: host facts judged against the inventory, each problem with its fix.
- `worker`: the worker's ComfyUI device; `queue`: the queue's depth and the workers' heartbeats.
- `images`: the images each host needs against where they come from, and status's view of them
  (branch, head, deployed commit).
- `imagecopy`: what a `docker load` changed on copy-image's target (only the image asked for may).
"""
