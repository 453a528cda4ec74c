#!/usr/bin/env bash
# Loads pulse rollup NDJSON into BigQuery: replace the staging table with the files, then
# MERGE it into pulse_rollups (merge.sql). Idempotent: re-running changes nothing.
#   DATASET=my_project:analytics deploy/warehouse/bigquery/load.sh 'gs://bucket/pulse-rollups/rollups-2026-03-10.ndjson'
# Sources may be gs:// URIs (wildcards allowed) or one local file. merge.sql names
# `my_project.analytics`: edit it (or sed it) to match DATASET.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dataset=${DATASET:?set DATASET=project:dataset}
for source in "$@"; do
    # JSON BYTES fields are read as base64, TIMESTAMPs accept RFC 3339 offsets.
    bq load --source_format=NEWLINE_DELIMITED_JSON --replace \
        "$dataset.pulse_rollups_staging" "$source" "$here/staging.schema.json"
    bq query --use_legacy_sql=false < "$here/merge.sql"
    echo "loaded $source" >&2
done
