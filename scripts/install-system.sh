#!/usr/bin/env bash
# Install the system packages the lab needs on Debian 12 (run as root):
# Docker Engine (docker.io), OpenSSH server, Redis 7 (client + server), debootstrap,
# iptables, iproute2, git (the lab's git server and the hosts' builds), Debian's python3.11 with venv
# (the venvs of the lab's real-service images, `invoke lab.real`), and Compose v2 taken from Debian 13's
# docker-compose package.
# Idempotent: a second run installs nothing.
set -euo pipefail

need=()
for cmd in dockerd:docker.io sshd:openssh-server redis-server:redis-server redis-cli:redis-tools \
           debootstrap:debootstrap iptables:iptables ip:iproute2 nsenter:util-linux curl:curl \
           ssh-keygen:openssh-client git:git git-shell:git docker-registry:docker-registry; do
  bin=${cmd%%:*}; pkg=${cmd#*:}
  PATH="$PATH:/usr/sbin:/sbin" command -v "$bin" >/dev/null 2>&1 || need+=("$pkg")
done
if ((${#need[@]})); then
  echo "install-system: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  # policy-rc.d keeps the packages from starting their system-wide daemons: the lab runs its own.
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  apt-get install -y -q --no-install-recommends "${need[@]}" ca-certificates
fi

plugin=/usr/libexec/docker/cli-plugins/docker-compose
if ! docker compose version >/dev/null 2>&1; then
  echo "install-system: Compose v2 is not in Debian 12; taking the plugin from Debian 13's docker-compose package"
  uri=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  [ -n "$uri" ] || uri=$(awk '$1=="deb"{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  [ -n "$uri" ] || { echo "install-system: cannot find the Debian archive URI in the apt sources" >&2; exit 1; }
  work=$(mktemp -d); trap 'rm -rf "$work"; rm -f /usr/sbin/policy-rc.d' EXIT
  mkdir -p "$work/lists/partial" "$work/archives/partial"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri trixie main" >"$work/trixie.list"
  opts=(-o Dir::Etc::SourceList="$work/trixie.list" -o Dir::Etc::SourceParts=/dev/null
        -o Dir::State::Lists="$work/lists" -o Dir::Cache::Archives="$work/archives")
  apt-get "${opts[@]}" update -q
  (cd "$work" && apt-get "${opts[@]}" download docker-compose)
  dpkg -x "$work"/docker-compose_*.deb "$work/x"
  install -D -m 0755 "$work/x/usr/libexec/docker/cli-plugins/docker-compose" "$plugin"
  # The client on PATH may look in other plugin dirs; make the plugin visible to them too.
  install -D -m 0755 "$plugin" /usr/local/lib/docker/cli-plugins/docker-compose
fi
# lab.real makes its venvs with Debian's /usr/bin/python3.11 (the lab base image's own Python):
# it needs the venv module and its bundled pip.
if ! /usr/bin/python3.11 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  echo "install-system: installing python3.11-venv (the lab's real-service venvs)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends python3.11-venv
fi
docker compose version
