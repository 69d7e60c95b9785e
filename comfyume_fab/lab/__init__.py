"""The lab: simulated hosts on this one Linux machine (a network namespace each, with its own sshd
and Docker engine), for the tests and the demo. Needs root; never used by the tool's tasks.

- `layout`: where the lab keeps things, and what each simulated host is called.
- `network`: the lab's tailnet: a bridge and one network namespace per host.
- `hostsvc`: each simulated host's login user, SSH server and Docker engine.
- `dynhost`: hosts added to a lab that is up and removed again (rented instances, extra workers).
- `verda`: `running()`: the Verda API STAND-IN as a child process (tests, docs), cleaned up on exit.
- `verda_hosts`: the lab host behind each stand-in Verda instance: startup script, shims, sshd.
- `images`: the images for the lab's engines, built here (no registry is reachable).
- `real`: the profile on the team's REAL services: images built from ../shared/comfyume-real and
  ComfyUI 0.8.0 (venvs made here, real code and commands unchanged, every shim listed there).
- `venvs`: the python3.11 venvs those images carry, made on this machine from the real requirements.
- `gitserver`: the lab's git server, shaped like the team's repository.
- `registry`: the lab's container registry.
- `files`: the files a lab user points the tool at (inventory, known_hosts, secrets, ssh_config).
- `manager`: `lab.up` and `lab.down`.
- `faults`: reversible faults for tests and rehearsals.
- `procs`: every process the lab started, found again.
- `system`: commands run on this machine for the lab, with one-line errors.
- `cli`: thin task bodies for `invoke lab.up` / `lab.down` / `lab.real`.
- `standins`: STAND-INs for the team's services (lab only), speaking their real contracts.
"""
