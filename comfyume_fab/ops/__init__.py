"""The operations: one module per task, each with one documented entry point, built on the layers
below (checks, plan, host, inventory). An operation never imports another operation.

- `start`: `start_all` (invoke start-all)
- `stop`: `stop_workers` (invoke stop-verda) and `stop_all` (invoke stop-all)
- `status`: `status` (invoke status)
- `lock`: the deploy lock, `read_lock` (the lock task) and `break_lock` (lock-break)

Their helpers: `health` (bounded waits until services are healthy) and `audit` (who did what).
"""
