"""The plan layer: pure, no host touched.

- `planner`: `make_plan(inventory, gpu_present)` -> per host the services, compose files, the
  .env (secrets wrapped) and the fingerprints; `Plan.redis_address` says where each host reaches
  Redis from its own vantage point.
- `compose`: the compose files shipped in compose/ and the generated frontends.yml.
- `steps`: the ordered commands a task would run, for `invoke plan` and `--dry-run`.
- `diff`: what start-all would create, recreate (and why) or remove, per service.
- `stack`: the Swarm stack file (`engine: swarm`) from the same plan: placement by node label,
  Swarm secrets through a shim, host-mode ports, the overlay's MTU, the GPU generic resource.
- `cluster`: the swarm set-up still to run (init, joins, labels, node removals) or a refusal.
- `rollback`: which earlier deploy each host goes back to (`rollback --to` checked there).
- `autostop`: a rented worker's autostop files for the app host (program, config, env file, service).
- `swarmgpu`: GPUs as a Swarm generic resource: daemon.json's `node-generic-resources` and
  default runtime from `nvidia-smi -L`, the NVIDIA runtime's `swarm-resource` line, the worker's
  `generic_resources` reservation, and the lines `plan` shows for them.
"""
