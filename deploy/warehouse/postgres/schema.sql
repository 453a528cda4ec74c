-- pulse rollups in PostgreSQL (11 or later): one row per key, the newest computed_at wins.
-- Apply once:  psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -f schema.sql
-- Load NDJSON: see load.sql.

CREATE TABLE IF NOT EXISTS pulse_rollups (
    key          text PRIMARY KEY,
    metric       text             NOT NULL,
    "window"     text             NOT NULL,  -- WINDOW is a reserved word: quote it
    dimensions   jsonb            NOT NULL DEFAULT '{}',
    period_start timestamptz      NOT NULL,
    period_end   timestamptz      NOT NULL,
    timezone     text             NOT NULL,
    value        double precision NOT NULL,
    final        boolean          NOT NULL,
    computed_at  timestamptz      NOT NULL,
    -- DataSketches HLL image (rollups.include_sketches = true; 1d distinct-user rows only).
    sketch       bytea
);

-- Dashboards ask "this metric, this window, over these days".
CREATE INDEX IF NOT EXISTS pulse_rollups_metric_period
    ON pulse_rollups (metric, "window", period_start);

COMMENT ON TABLE pulse_rollups IS
    'pulse warehouse rollups (deploy/warehouse/README.md): one KPI value per metric, window, dimensions and calendar day; final = the day can no longer change.';
