"""The rented instance's startup script (Verda runs it once, as root, on first boot): install the
host key generated on the laptop and restart sshd, so the first SSH connection is verified; join
the tailnet with the auth key and the instance's hostname.

Secrets in it (the host's private key, the tailnet auth key) live as briefly as the platform
allows: the script is registered just before the instance is created and deleted from the
provider as soon as the instance runs (or the attempt failed); on the host it unlinks its own
file first (bash keeps the open file readable), and the auth key is on `tailscale up`'s command
line only while that command runs, a few seconds on a fresh machine where only root runs
anything. `tailscale up --auth-key=file:PATH` would avoid even that, but needs a Tailscale recent
enough on every image; an ephemeral, pre-authorized, tagged, single-use key is the advice
(docs/provider.md), so the key is worth little once the node has joined.
"""
from __future__ import annotations

import shlex

HOST_KEY = "/etc/ssh/ssh_host_ed25519_key"


def script(private_key: str, public_line: str, authkey: str, hostname: str) -> str:
    """The whole script; every value quoted once (the keys are base64 and PEM, the hostname a name)."""
    q = shlex.quote
    return f"""#!/bin/bash
# comfyume-fab: installs the SSH host key generated on the operator's machine, joins the tailnet.
{{
set -euo pipefail
case "$0" in */*) rm -f -- "$0" 2>/dev/null || true ;; esac
umask 077
install -d -m 755 /etc/ssh
printf '%s\\n' {q(private_key.strip())} > {HOST_KEY}.new
printf '%s\\n' {q(public_line.strip())} > {HOST_KEY}.pub
chmod 600 {HOST_KEY}.new
mv -f {HOST_KEY}.new {HOST_KEY}
chmod 644 {HOST_KEY}.pub
systemctl restart ssh 2>/dev/null || systemctl restart sshd
if ! command -v tailscale >/dev/null 2>&1; then
  curl -fsSL https://tailscale.com/install.sh | sh
fi
TS_KEY={q(authkey)}
tailscale up --authkey="$TS_KEY" --hostname={q(hostname)}
unset TS_KEY
exit 0
}}
"""
