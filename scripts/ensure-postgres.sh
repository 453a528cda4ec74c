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

source "$(dirname "${BASH_SOURCE[0]}")/apt-install.sh"
apt_install ensure-postgres postgresql -- postgresql

have_postgres || {
    echo "ensure-postgres: the postgresql package installed but initdb or psql is missing" >&2
    exit 1
}
