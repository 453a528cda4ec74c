#!/usr/bin/env bash
# Makes a compose validator available for tests/it/deploy.rs, which runs
# `docker compose config -q` (or `docker-compose config -q`) on deploy/docker/compose.yml.
#
# Idempotent: does nothing when the compose plugin (`docker compose`) or `docker-compose`
# already works. Otherwise installs Debian's `docker-compose` package (Compose v1, Python):
# the v2 plugin is not in Debian bookworm, and v1's `config` needs no Docker engine. Without
# either, the test still checks the file's structure and reports the validator as a skipped
# check (a failure under CI=true).
set -euo pipefail

if docker compose version >/dev/null 2>&1 || docker-compose version >/dev/null 2>&1; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-compose: no docker compose and no apt-get; install Docker Compose to" \
        "validate deploy/docker/compose.yml (the tests check its structure without it)." >&2
    exit 0
fi
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/apt-install.sh"
apt_install ensure-compose docker-compose

docker-compose version >/dev/null 2>&1 || {
    echo "ensure-compose: docker-compose installed but does not run" >&2
    exit 1
}
