#!/usr/bin/env bash
# Makes Debian's `redis-server` available for the HyperLogLog comparison (bench-hll).
# Idempotent: does nothing when it is on PATH. The package's service is never started
# (the harness runs a private, persistence-free instance on a free loopback port).
set -euo pipefail

if command -v redis-server >/dev/null 2>&1; then
    exit 0
fi
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/apt-install.sh"
apt_install ensure-redis redis-server -- redis-server
command -v redis-server >/dev/null 2>&1 || {
    echo "ensure-redis: redis-server installed but not on PATH" >&2
    exit 1
}
