-- Loads pulse rollup NDJSON from standard input into pulse_rollups (schema.sql):
--
--   psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -f load.sql < rollups-2026-03-10.ndjson
--   cat pulse-rollups/*.ndjson | psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -f load.sql
--
-- Idempotent: a record replaces the row of its key only when its computed_at is newer, so
-- loading a file twice, loading files in any order, or loading overlapping files all give
-- the same table. Everything runs in one transaction: a bad line loads nothing.

\set ON_ERROR_STOP on
BEGIN;

CREATE TEMP TABLE pulse_rollups_staging (doc jsonb NOT NULL) ON COMMIT DROP;

-- CSV with a quote and a delimiter that cannot occur in JSON text (control characters are
-- always escaped inside JSON strings): each line arrives whole, backslashes untouched.
\copy pulse_rollups_staging (doc) FROM pstdin WITH (FORMAT csv, QUOTE E'\x01', DELIMITER E'\x02')

INSERT INTO pulse_rollups AS t
    (key, metric, "window", dimensions, period_start, period_end, timezone, value, final,
     computed_at, sketch)
SELECT DISTINCT ON (doc->>'key')
       doc->>'key',
       doc->>'metric',
       doc->>'window',
       COALESCE(doc->'dimensions', '{}'::jsonb),
       (doc->>'period_start')::timestamptz,
       (doc->>'period_end')::timestamptz,
       doc->>'timezone',
       (doc->>'value')::double precision,
       (doc->>'final')::boolean,
       (doc->>'computed_at')::timestamptz,
       decode(doc->>'sketch', 'base64')
FROM pulse_rollups_staging
-- A file holds a key once per emission that changed it: keep the newest.
ORDER BY doc->>'key', (doc->>'computed_at')::timestamptz DESC
ON CONFLICT (key) DO UPDATE SET
    metric       = EXCLUDED.metric,
    "window"     = EXCLUDED."window",
    dimensions   = EXCLUDED.dimensions,
    period_start = EXCLUDED.period_start,
    period_end   = EXCLUDED.period_end,
    timezone     = EXCLUDED.timezone,
    value        = EXCLUDED.value,
    final        = EXCLUDED.final,
    computed_at  = EXCLUDED.computed_at,
    sketch       = EXCLUDED.sketch
WHERE t.computed_at < EXCLUDED.computed_at;

COMMIT;
