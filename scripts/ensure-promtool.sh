#!/usr/bin/env bash
# Makes `promtool` and `prometheus` available: pulse-export's exposition test runs
# `promtool check metrics`; tests/it/observability.rs checks and unit-tests the rules in
# deploy/prometheus with promtool and runs a throwaway `prometheus` against `pulse demo`.
#
# Idempotent: does nothing when both are already on PATH. Otherwise installs Debian's
# `prometheus` package, which ships both. The package's service is never started here:
# we only want the binaries (policy-rc.d keeps dpkg from starting it where that matters).
set -euo pipefail

if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
    exit 0
fi

source "$(dirname "${BASH_SOURCE[0]}")/apt-install.sh"
apt_install ensure-promtool prometheus -- prometheus

for tool in promtool prometheus; do
    command -v "$tool" >/dev/null 2>&1 || {
        echo "ensure-promtool: the prometheus package installed but $tool is not on PATH" >&2
        exit 1
    }
done
