"""The operations: one module per task, each with one documented entry point, built on the layers
below (checks, plan, host, inventory). An operation never imports another operation.

- `start`: `start_all` (invoke start-all)
- `stop`: `stop_workers` (invoke stop-verda) and `stop_all` (invoke stop-all)
- `status`: `status` (invoke status)
- `watch`: the live screen of `invoke status --watch`
- `diff`: what start-all would change (invoke diff)
- `logs`: the services' logs of every host, streamed (invoke logs)
- `exec`: a command in a service's container (invoke exec)
- `lock`: the deploy lock, `read_lock` (invoke lock) and `break_lock` (invoke lock-break)
- `images`: the images from their sources (start-all's image step, rollback, copy-image)
- `switch`: `switch_gpu` (invoke switch-gpu): another serverless tier made the active one, safely
- `warm`: `warm` (invoke warm): a serverless tier's minimum replicas raised now, lowered later on the app host
- `serverless`: status's view of mode serverless (tier, GPU, price, the endpoint proved, replicas)
- `health`: bounded waits until services are healthy
- `audit`: who did what (the audit line and the deployed record)
"""
