"""Actions: the commands that CHANGE a host, one module per subject, apart from the facts that
read it (`host.facts`). Pure builders of command lines, like the facts: nothing here runs anything.

- `workdir`: make the host's remote folder private (`mkdir`), clear partial uploads
  (`clean_partials`), append to its audit log (`audit`).
- `compose`: start (`up`) and stop or remove (`stop`) a host's compose services.
- `lock`: take, release and break the deploy lock (`facts.lock` reads it).
- `containers`: stop and remove containers by id (`remove_containers`), run a detached job (`run_job`).
- `git`: clone or fetch a branch into the host's bare checkout (`fetch_command`).
- `images`: build an image from the checkout (`build_command`), log in to a registry (`login_command`).
- `swarm`: init the manager, join a worker (token on stdin, never argv), label and remove
  nodes, deploy the stack (`--resolve-image never`), scale a service.
- `daemonjson`: a GPU worker host's daemon.json and NVIDIA runtime config (backup kept, atomic)
  and the engine restart (`engine: swarm`; `plan.swarmgpu` decides their content).
- `stopped`: write and clear the "stopped on purpose" record (`facts.stopped` reads it).
- `autostop`: a rented worker's autostop service on the app host: folders made, started, removed.
"""
