#!/bin/bash
# pulse-healthcheck [PATH]: GET PATH (default /healthz) from the pulse in this container and
# exit 0 only on HTTP 200. The image's HEALTHCHECK and compose.yml run it.
#
# Why a script and not curl or wget: the runtime image carries only what pulse links against
# (ca-certificates, libssl3, zlib1g). bash and coreutils are already in debian:bookworm-slim,
# and bash's /dev/tcp is all a plain-HTTP GET on loopback needs.
#
# The address is PULSE_HEALTHCHECK_ADDR, else PULSE_HTTP__LISTEN (the same override pulse
# reads), else 127.0.0.1:9464; a wildcard host (0.0.0.0, ::) is asked on loopback. If you
# move the port in the config file instead of the environment, set PULSE_HEALTHCHECK_ADDR.
set -euo pipefail

path=${1:-/healthz}
addr=${PULSE_HEALTHCHECK_ADDR:-${PULSE_HTTP__LISTEN:-127.0.0.1:9464}}
host=${addr%:*}
port=${addr##*:}
host=${host#[}
host=${host%]}
case $host in
"" | 0.0.0.0) host=127.0.0.1 ;;
:: | "::0") host=::1 ;;
esac

exec 3<>"/dev/tcp/$host/$port"
printf 'GET %s HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\n\r\n' "$path" >&3
# Status line: HTTP/1.x 200 OK
read -r -t 5 _version status _reason <&3
exec 3<&-
if [[ $status != 200 ]]; then
    echo "pulse-healthcheck: GET $path on $host:$port answered $status" >&2
    exit 1
fi
