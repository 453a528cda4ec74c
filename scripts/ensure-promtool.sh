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

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-promtool: promtool or prometheus is not on PATH and apt-get is unavailable;" \
        "install Prometheus (https://prometheus.io/download/) and put both on PATH." >&2
    exit 1
fi

sudo=""
if [[ $(id -u) -ne 0 ]]; then
    sudo="sudo"
fi

# In containers without an init system dpkg may still try to start the service; a
# policy-rc.d that answers 101 ("action forbidden") stops it. Only add one if none exists,
# and remove ours afterwards.
policy=/usr/sbin/policy-rc.d
own_policy=false
if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod +x "$policy"
    own_policy=true
fi
cleanup() {
    if [[ $own_policy == true ]]; then
        $sudo rm -f "$policy"
    fi
}
trap cleanup EXIT

$sudo apt-get update
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus

# Belt and braces for hosts with systemd: the package enables its unit on install.
if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
    $sudo systemctl disable --now prometheus >/dev/null 2>&1 || true
fi

for tool in promtool prometheus; do
    command -v "$tool" >/dev/null 2>&1 || {
        echo "ensure-promtool: the prometheus package installed but $tool is not on PATH" >&2
        exit 1
    }
done
