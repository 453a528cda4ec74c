-- Upserts the staging table (loaded from NDJSON by load.sh) into pulse_rollups: a record
-- replaces the row of its key only when its computed_at is newer, so re-running a load, or
-- loading files in any order, leaves the same table.
MERGE `my_project.analytics.pulse_rollups` AS t
USING (
  SELECT *
  FROM `my_project.analytics.pulse_rollups_staging`
  WHERE TRUE  -- QUALIFY needs a WHERE, GROUP BY or HAVING
  -- A file holds a key once per emission that changed it: keep the newest.
  QUALIFY ROW_NUMBER() OVER (PARTITION BY key ORDER BY computed_at DESC) = 1
) AS s
ON t.key = s.key
WHEN MATCHED AND s.computed_at > t.computed_at THEN UPDATE SET
  metric = s.metric,
  `window` = s.`window`,
  dimensions = s.dimensions,
  period_start = s.period_start,
  period_end = s.period_end,
  timezone = s.timezone,
  value = s.value,
  final = s.final,
  computed_at = s.computed_at,
  sketch = s.sketch
WHEN NOT MATCHED THEN
  INSERT ROW;
