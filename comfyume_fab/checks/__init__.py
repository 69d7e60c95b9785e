"""The checks layer: what is found, never raised for (every failure reported in one pass).

- `result`: `CheckResult`, one named finding with its detail and its --json data.
- `preflight`: host facts judged against the inventory, each problem with its fix.
- `images`: the images each host needs against where they come from, and status's view of them
  (branch, head, deployed commit).
- `imagecopy`: what a `docker load` changed on copy-image's target (only the image asked for may).
- `links`: cross-host links from the right vantage point (Redis and HTTP through a connection the
  far host opens) and the one read of the job queue.
- `queue`: the job queue and the workers' heartbeats, read from Redis on the app host.
- `worker`: what the worker's own ComfyUI says about its device (GPU or CPU).
- `probe`: the inference probe (a tiny graph really executed by the worker's ComfyUI).
- `jobprobe`: a user's path proved: a probe job submitted through the queue manager, followed until a
  worker completed it with output, withdrawn when giving up.
- `qmhealth`: the queue manager's health by its `/health` body, and what that means for the other
  checks (heartbeats it could not record, busy workers, links jobs do not go through).
- `serverless`: a serverless tier's endpoint proved from the app host (key refused without it, a graph executed).
- `deployments`: the provider's container-deployment API (replicas and scaling of one deployment).
- `autostop`: a rented worker's autostop as status reports it (watching, deleted, error, not running).
"""
