-- aiaas:destructive
-- Drops the rollup engine state (watermarks, run history, checkpoints, invalidations). The
-- rollups themselves are kept; the next rollup run recomputes everything from raw events.
DROP TABLE analytics_daily_rollup_invalidations;
DROP TABLE analytics_rollup_backfill_checkpoints;
DROP INDEX idx_analytics_rollup_runs_granularity_started_at;
DROP TABLE analytics_rollup_runs;
DROP TABLE analytics_rollup_watermarks;
