#!/usr/bin/env bash
# Debian packages that building pulse needs beyond a Rust toolchain: librdkafka (built from
# source by rdkafka-sys) wants a C compiler, make, pkg-config, and the OpenSSL and zlib
# headers; the tansu and moto installs use pip (moto in a venv); GNU time reports a child
# pulse's peak resident memory to tests/it/memory.rs. Idempotent: installs only what is missing.
set -euo pipefail

packages=(build-essential pkg-config libssl-dev zlib1g-dev python3-pip python3-venv time)
missing=()
for package in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$package")
    fi
done
if [[ ${#missing[@]} -eq 0 ]]; then
    exit 0
fi
source "$(dirname "${BASH_SOURCE[0]}")/apt-install.sh"
apt_install ensure-build-deps "${missing[@]}"
