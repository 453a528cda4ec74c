-- pulse rollups in BigQuery. Replace `my_project.analytics` with your dataset.
--   bq query --use_legacy_sql=false < schema.sql
-- Load: bq load NDJSON into the staging table, then MERGE (load.sh, merge.sql).

CREATE TABLE IF NOT EXISTS `my_project.analytics.pulse_rollups` (
  key          STRING    NOT NULL OPTIONS (description = 'metric|window|dimensions|period_start: the upsert key'),
  metric       STRING    NOT NULL,
  `window`     STRING    NOT NULL,  -- WINDOW is reserved: always backquote it
  dimensions   JSON,
  period_start TIMESTAMP NOT NULL,
  period_end   TIMESTAMP NOT NULL,
  timezone     STRING    NOT NULL,
  value        FLOAT64   NOT NULL,
  final        BOOL      NOT NULL,
  computed_at  TIMESTAMP NOT NULL,
  sketch       BYTES     -- DataSketches HLL image (rollups.include_sketches = true)
)
PARTITION BY DATE(period_start)
CLUSTER BY metric, key
OPTIONS (description = 'pulse warehouse rollups; one row per key, newest computed_at wins');

-- Filled by `bq load --replace` before each MERGE; same columns, same order.
CREATE TABLE IF NOT EXISTS `my_project.analytics.pulse_rollups_staging`
LIKE `my_project.analytics.pulse_rollups`;
