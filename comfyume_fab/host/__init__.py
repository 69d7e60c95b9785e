"""The host layer: everything that touches a host, and the pure pieces it is built from.

- `ssh`: the ONLY package that opens SSH (strict host keys; commands, uploads, tunnels).
- `session`: one connection per host per task, opened in parallel; `each`/`gather` run a function
  per host and key the results by host, failures apart (`GroupResult`).
- `commands`: the pure building blocks of command lines: every value quoted once (`q`), the remote
  folder's paths and file names, the sectioned script (one round trip for many reads), and
  `ComposeProject`, a host's compose context (workdir, project, files).
- `facts`: what a host says, one module per subject: each fact's command, parser, section name
  and `HostState` fields together (`Fact`).
- `actions`: the commands that change a host, one module per subject (reads apart from writes).
- `agents`: programs installed on a host to run there by themselves (stdlib only), e.g. `autostop`.
- `state`: the registered facts assembled: a host's state read in one round trip (`read`) into
  `HostState`, and `read_containers`, the one way to read a project's containers.
"""
