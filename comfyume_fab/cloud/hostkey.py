"""The rented instance's SSH host key, generated here on the laptop (ed25519), so that the first
connection is checked against a key the tool already knows (never trusted on first use): the
startup script installs it as /etc/ssh/ssh_host_ed25519_key; its public half goes into
`.comfyume-fab/known_hosts` (0600), which the SSH layer reads besides ssh.known_hosts."""
from __future__ import annotations

import os

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .record import write_private


def generate(comment: str) -> tuple[str, str]:
    """(the private key in OpenSSH format, its public line `ssh-ed25519 AAAA... comment`)."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    return private, f"{public} {comment}"


def known_name(address: str, port: int | None) -> str:
    """How known_hosts names a host: `address`, or `[address]:port` off port 22 (as OpenSSH writes it)."""
    return address if not port or int(port) == 22 else f"[{address}]:{port}"


def _lines(known: str) -> list[str]:
    try:
        with open(known, encoding="utf-8") as fh:
            return [ln.rstrip("\n") for ln in fh if ln.strip()]
    except OSError:
        return []


def remember(known: str, address: str, port: int | None, public_line: str) -> None:
    """Record `address`'s key (replacing any older key recorded for that address: a cloud address
    is reused by the next instance)."""
    name = known_name(address, port)
    kept = [ln for ln in _lines(known) if ln.split(" ", 1)[0] != name]
    key_type, key_b64 = public_line.split()[:2]
    write_private(known, "\n".join(kept + [f"{name} {key_type} {key_b64}"]) + "\n")


def forget(known: str, address: str | None, port: int | None) -> bool:
    """Remove `address`'s recorded key; whether there was one."""
    if not address or not os.path.exists(known):
        return False
    name = known_name(address, port)
    lines = _lines(known)
    kept = [ln for ln in lines if ln.split(" ", 1)[0] != name]
    if len(kept) != len(lines):
        write_private(known, "\n".join(kept) + ("\n" if kept else ""))
    return len(kept) != len(lines)
