"""The operations: one module per task, each with one documented entry point, built on the layers
below (checks, plan, host, inventory). An operation returns data and takes `say`/`render`
callables: every text it shows is made in present/. An operation never imports another
operation (but rollback, start-all with the images given).

- `start`: `start_all` (invoke start-all)
- `stop`: `stop_workers` (invoke stop-verda) and `stop_all` (invoke stop-all)
- `status`: `status` (invoke status)
- `lock`: the deploy lock, `read_lock` (invoke lock) and `break_lock` (invoke lock-break)
- `rollback`: `rollback` (invoke rollback: start-all with the images of an earlier deploy, the one
  operation built on another)
- `copyimage`: `copy_task` (invoke copy-image)
- `switch`: `switch_gpu` (invoke switch-gpu): another serverless tier made the active one, safely
- `warm`: `warm` (invoke warm): a serverless tier's minimum replicas raised now, lowered later on the app host
- `logs`: `logs` (invoke logs)
- `exec`: `run_exec` (invoke exec)
- `diff`: `diff` (invoke diff)
- `watch`: `watch` (invoke status --watch)
- `swarm`: `start_swarm`, `stop_swarm_workers`, `status_swarm`: start-all, stop-verda and status
  with `engine: swarm` (the tasks choose it by the inventory's engine)

Their helpers:

- `health`: bounded waits until services are healthy
- `audit`: who did what (the audit line and the deployed record)
- `imagestep`: start-all's image step (fetch, build, pull under the lock)
- `transfer`: one image host to host
- `serverless`: status's view of mode serverless (tier, GPU, price, the endpoint proved, replicas)
- `provision`: renting a worker host (start-all's first step) and deleting it (stop-verda --delete)
- `bill`: status's view of what is rented: price, hours, cost so far, balance and runway
- `autostop`: a rented worker's autostop installed on (`install`) and removed from (`remove`) the app
  host, for start-all and stop-verda --delete
"""
