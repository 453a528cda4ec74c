#!/usr/bin/env bash
# Usage: report-skips.sh [LOG]    (the last step of `make test`; LOG defaults to
# target/skipped-checks.txt)
# Prints how many checks the tests skipped and which, from the log that
# tests/src/skip.rs appends one `SKIPPED: <test>: <why>` line to per skip. A skipped test
# shows as `ok` in cargo's own summary; this line is where it shows as skipped. `make test`
# empties the log before the tests run, so the count is this run's.
#
# Always exits 0: a skip that must not happen (a missing tool under CI=true) has already
# failed its test.
set -euo pipefail

log=${1:-target/skipped-checks.txt}
count=0
if [[ -s $log ]]; then
    count=$(grep -c '^SKIPPED: ' "$log" || true)
fi
if [[ $count -eq 0 ]]; then
    echo "0 checks skipped"
    exit 0
fi
noun=checks
[[ $count -eq 1 ]] && noun=check
echo "$count $noun skipped:"
grep '^SKIPPED: ' "$log" | sed 's/^SKIPPED: /  /'
