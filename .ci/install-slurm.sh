#!/usr/bin/env bash
# Install a single-node SLURM (controller, node daemon, client tools) and munge, for the SLURM tests.
# Idempotent: does nothing when every package is already installed. Needs root (or sudo) and apt.
set -euo pipefail

packages=(slurmctld slurmd slurm-client munge)

missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "install-slurm: already installed: ${packages[*]}"
    exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "install-slurm: need root or sudo to install ${missing[*]}" >&2; exit 1; }
    sudo="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
echo "install-slurm: installing ${missing[*]}"
$sudo apt-get update -qq
# --no-install-recommends keeps out mail servers and docs; the daemons are not started here (no systemd in CI),
# the test fixture starts them with its own slurm.conf.
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-slurm: done (slurm $(dpkg-query -W -f='${Version}' slurmctld))"
