#!/usr/bin/env bash
# Loads pulse rollup NDJSON files into ClickHouse's pulse_rollups (schema.sql):
#   deploy/warehouse/clickhouse/load.sh pulse-rollups/rollups-2026-03-10.ndjson ...
# Pass connection flags through CLICKHOUSE_ARGS, e.g. CLICKHOUSE_ARGS="--host ch1 --secure".
# Idempotent: ReplacingMergeTree(computed_at) keeps the newest version of each key.
set -euo pipefail
for file in "$@"; do
    # best_effort parses RFC 3339 with any offset ("2026-03-10T00:00:00+01:00").
    # shellcheck disable=SC2086
    clickhouse-client ${CLICKHOUSE_ARGS:-} \
        --date_time_input_format=best_effort \
        --query "INSERT INTO pulse_rollups FORMAT JSONEachRow" < "$file"
    echo "loaded $file" >&2
done
