"""The host layer: everything that touches a host, and the pure pieces it is built from.

- `ssh`: the ONLY module that opens SSH (strict host keys; commands, uploads, tunnels).
- `session`: one connection per host per task, opened in parallel; `each`/`gather` run a function
  per host and key the results by host, failures apart (`GroupResult`).
- `commands`: pure builders of the command lines, every value quoted once (`q`); `ComposeProject`
  carries a host's compose context (workdir, project, files).
- `facts`: one module per subject (docker, compose, nvidia, comfyui, tailscale), each a command
  and the pure parser of its output.
- `state`: a host's state read in one round trip (`read`), and `read_containers`, the one way to
  read a project's containers.
"""
