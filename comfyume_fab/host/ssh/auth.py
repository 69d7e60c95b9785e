"""Public-key authentication the way OpenSSH does it (`OpenSSHKeys`): keys held by ssh-agent, then
the identity files (the inventory's identity_file, else ssh_config IdentityFile, else ~/.ssh/id_*);
a passphrase-protected file is used through the agent; `IdentitiesOnly yes` limits the agent to
those files. No password prompt: the tool runs unattended. A refusal names every key offered and
why it was not accepted (`explain`), and the likely fix (`hint`)."""
from __future__ import annotations

import base64
import os

import paramiko
from paramiko.auth_strategy import AuthResult, AuthStrategy, InMemoryPrivateKey

DEFAULT_IDENTITIES = ("~/.ssh/id_rsa", "~/.ssh/id_ecdsa", "~/.ssh/id_ed25519")


def identity_files(explicit: list[str], from_config: list[str], extra: list[str]) -> list[str]:
    """The files OpenSSH would try: the inventory's identity_file and ssh_config IdentityFile
    (in that order), then `extra` (a jump hop also tries the target's identity_file); the
    default ~/.ssh/id_* when none is named."""
    out: list[str] = []
    for path in [*explicit, *from_config, *extra]:
        if path and path not in out:
            out.append(path)
    if not out:
        out = [p for p in DEFAULT_IDENTITIES if os.path.exists(os.path.expanduser(p))]
    return out


def _public_blob(path: str) -> bytes | None:
    """The public key of a private key file from its `.pub` beside it (readable without a passphrase)."""
    try:
        with open(path + ".pub") as fh:
            fields = fh.read(65536).split()
        return base64.b64decode(fields[1]) if len(fields) >= 2 else None
    except (OSError, ValueError, IndexError):
        return None


def _why_unusable(exc: Exception) -> str:
    text = str(exc)
    if isinstance(exc, paramiko.PasswordRequiredException) or "encrypted" in text.lower() \
            or "password" in text.lower() or "passphrase" in text.lower():
        return "protected by a passphrase and not loaded in ssh-agent"
    if isinstance(exc, PermissionError):
        return "not readable by this user"
    if isinstance(exc, FileNotFoundError):
        return "does not exist"
    return "not a private key this tool can read (a .pub file, or another file?)"


class _Key(InMemoryPrivateKey):
    """A key offered to the server, with how to name it in a message."""

    def __init__(self, username: str, pkey: paramiko.PKey, label: str):
        super().__init__(username=username, pkey=pkey)
        self.label = label


class OpenSSHKeys(AuthStrategy):
    """Public-key authentication in OpenSSH's order: agent keys that match an identity file,
    the other agent keys (not with IdentitiesOnly), then identity files the agent does not hold.
    No password prompt: the tool runs unattended. `notes` keeps the keys that could not be offered."""

    def __init__(self, username: str, files: list[str], explicit: list[str], identities_only: bool,
                 use_agent: bool = True):
        super().__init__(ssh_config=None)
        self.username = username
        self.files = files
        self.explicit = explicit
        self.identities_only = identities_only
        self.use_agent = use_agent
        self.notes: list[str] = []
        self.agent_count = 0
        self.agent = None

    def get_sources(self):
        on_disk = []  # (path, pkey or None, public blob or None, why unusable)
        for path in self.files:
            full = os.path.expanduser(path)
            pub = _public_blob(full)
            try:
                pkey, why = paramiko.PKey.from_path(full), ""
                pub = pub or pkey.asbytes()
            except Exception as exc:  # noqa: BLE001 - any unreadable key is reported, not raised
                pkey, why = None, _why_unusable(exc)
            on_disk.append((path, pkey, pub, why))
        agent_keys: list = []
        if self.use_agent and os.environ.get("SSH_AUTH_SOCK"):
            try:
                self.agent = paramiko.Agent()
                agent_keys = list(self.agent.get_keys())
            except paramiko.SSHException as exc:
                self.notes.append(f"ssh-agent at $SSH_AUTH_SOCK did not answer ({exc})")
        self.agent_count = len(agent_keys)
        wanted = [pub for _, _, pub, _ in on_disk if pub]
        matching = [k for k in agent_keys if k.asbytes() in wanted]
        others = [k for k in agent_keys if k.asbytes() not in wanted]
        if self.identities_only and others:
            self.notes.append(f"{len(others)} other ssh-agent key(s) not offered (IdentitiesOnly yes)")
        for key in matching + ([] if self.identities_only else others):
            comment = f" ({key.comment})" if getattr(key, "comment", "") else ""
            yield _Key(self.username, key, f"ssh-agent key {key.get_name()} {key.fingerprint}{comment}")
        in_agent = {k.asbytes() for k in matching}
        for path, pkey, pub, why in on_disk:
            if pub is not None and pub in in_agent:
                continue  # offered through the agent already
            if pkey is None:
                self.notes.append(f"{path}: {why}")
                continue
            yield _Key(self.username, pkey, f"{path} ({pkey.get_name()} {pkey.fingerprint})")

    def authenticate(self, transport):
        try:
            return super().authenticate(transport)
        finally:
            if self.agent is not None:
                self.agent.close()

    def explain(self, result: AuthResult) -> str:
        """One clause: each key offered and the server's answer, then the keys not offered and why."""
        parts = []
        for source, outcome in result:
            parts.append(f"{getattr(source, 'label', source)}: {_refusal(outcome)}")
        offered = ("offered " + "; ".join(parts)) if parts else "no key was offered"
        if not parts and not self.use_agent:
            offered += " (IdentityAgent none)"
        elif not parts and not os.environ.get("SSH_AUTH_SOCK"):
            offered += " (no ssh-agent: SSH_AUTH_SOCK is not set"
            offered += ", and no identity file was found)" if not self.files else ")"
        elif not parts and self.agent_count == 0 and self.use_agent:
            offered += " (ssh-agent holds no keys)"
        if self.notes:
            offered += "; not offered: " + "; ".join(self.notes)
        return offered

    def hint(self, user: str | None, label: str) -> str:
        if any("not a private key" in n for n in self.notes):
            return ("identity_file in hosts.yaml (or IdentityFile in ssh_config) must be a private key file "
                    "(e.g. ~/.ssh/id_ed25519), not a .pub or another file")
        if any("passphrase" in n for n in self.notes):
            return "load the key into ssh-agent with `ssh-add KEYFILE` (its passphrase is asked once there)"
        return (f"add the matching public key to ~{user or ''}/.ssh/authorized_keys on {label}, or name the "
                "right key with identity_file in hosts.yaml / IdentityFile in ssh_config, or `ssh-add` it")


def _refusal(outcome) -> str:
    if isinstance(outcome, paramiko.BadAuthenticationType):
        return f"the server does not take public keys (it allows: {', '.join(outcome.allowed_types)})"
    if isinstance(outcome, paramiko.AuthenticationException):
        return "refused by the server"
    if isinstance(outcome, Exception):
        return f"{type(outcome).__name__}: {outcome}" if str(outcome) else type(outcome).__name__
    return "accepted"


def for_connection(conn, explicit: list[str] = (), extra: list[str] = ()) -> OpenSSHKeys:
    """The strategy for `conn` as its ssh_config reads (IdentityFile, IdentitiesOnly, IdentityAgent)."""
    files = identity_files(list(explicit), conn.ssh_config.get("identityfile", []), list(extra))
    return OpenSSHKeys(conn.user, files, explicit=list(explicit),
                       identities_only=conn.ssh_config.get("identitiesonly", "no").lower() == "yes",
                       use_agent=conn.ssh_config.get("identityagent", "").lower() != "none")
