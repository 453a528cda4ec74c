-- pulse rollups in ClickHouse: ReplacingMergeTree keeps, per key, the row with the newest
-- computed_at, so loading a file twice (or overlapping files) is harmless.
--   clickhouse-client --multiquery < schema.sql
-- Load: see load.sh. Query through pulse_rollups_latest (or add FINAL), since merges that
-- drop replaced rows run in the background.

CREATE TABLE IF NOT EXISTS pulse_rollups
(
    key          String,
    metric       LowCardinality(String),
    `window`     LowCardinality(String),
    dimensions   Map(String, String),
    period_start DateTime64(3, 'UTC'),
    period_end   DateTime64(3, 'UTC'),
    timezone     LowCardinality(String),
    value        Float64,
    `final`      Bool,
    computed_at  DateTime64(3, 'UTC'),
    -- base64 DataSketches HLL image (rollups.include_sketches = true; 1d distinct-user rows).
    sketch       Nullable(String) CODEC(ZSTD(3))
)
ENGINE = ReplacingMergeTree(computed_at)
PARTITION BY toYYYYMM(period_start)
-- The key determines metric, window and period_start, so rows with the same key always
-- share this sorting key (and partition) and replace one another.
ORDER BY (metric, `window`, period_start, key);

CREATE VIEW IF NOT EXISTS pulse_rollups_latest AS
SELECT * FROM pulse_rollups FINAL;
