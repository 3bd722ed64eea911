#!/usr/bin/env bash
# Debian packages the test suite uses: a real single-node SLURM (slurmctld, slurmd, munge) for the
# sweep tests and headless Chromium for the report test. Idempotent; quiet.
set -euo pipefail
packages=(slurmctld slurmd slurm-client munge chromium)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
