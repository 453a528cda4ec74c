#!/usr/bin/env bash
# Makes PostgreSQL available for the warehouse-rollup test (tests/it/rollups.rs), which loads
# `pulse replay --rollups` output with deploy/warehouse/postgres/*.sql into a private,
# throwaway cluster: initdb in a temporary directory, a unix socket only, stopped at the end.
#
# Idempotent: does nothing when initdb (under /usr/lib/postgresql/<version>/bin, where Debian
# puts it) and psql are present. Otherwise installs Debian's `postgresql` package. The
# package's own cluster is never started here (policy-rc.d keeps dpkg from starting it, and
# on systemd hosts its unit is disabled): the test needs only the binaries.
set -euo pipefail

have_postgres() {
    compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null && command -v psql >/dev/null 2>&1
}

if have_postgres; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-postgres: PostgreSQL is not installed and apt-get is unavailable;" \
        "install PostgreSQL (server binaries and psql) to run the rollup load test." >&2
    exit 1
fi

sudo=""
if [[ $(id -u) -ne 0 ]]; then
    sudo="sudo"
fi

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
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql

if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
    $sudo systemctl disable --now postgresql >/dev/null 2>&1 || true
fi

have_postgres || {
    echo "ensure-postgres: the postgresql package installed but initdb or psql is missing" >&2
    exit 1
}
