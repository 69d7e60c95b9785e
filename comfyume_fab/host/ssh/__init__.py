"""The SSH edge: the ONLY package that opens SSH. One connection per host per task, reused for
every command, upload and tunnel; host keys checked strictly against known_hosts.

Fabric's `Connection` resolves ssh_config (aliases, User, Port, IdentityFile, IdentitiesOnly,
ProxyJump); the rest is done here, the way OpenSSH does it, one job per module:

- `hostkeys`: the host-key policy. Fabric's default auto-accepts unknown keys; it is replaced by
  RejectPolicy (or accept-new) before the first connect, for the target AND every ProxyJump hop.
- `auth`: public-key authentication in OpenSSH's order (`OpenSSHKeys`): ssh-agent keys, then the
  identity files; a refusal names every key offered and why it was not accepted.
- `connect`: what a host is (`Target`) and the route to it: the jump hosts built here with the
  target's policy, known_hosts, timeouts and authentication (Fabric would auto-accept them), and
  the one sentence for each way a connect fails (`UnreachableError`, naming the host and step).
- `remote`: `Remote`, one host's open connection, and the channel operations over it: `run`,
  `pipe_to`, `put`, `tunnel`, `stream`, `interactive`. Channel OPENINGS are serialized per
  connection (paramiko keeps one "last error" per transport), so each failure keeps its cause.
- `heldshell`: one shell held open on a connection (`open_shell`), for the watch screen's reads.
"""
