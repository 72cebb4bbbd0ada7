-- Rollup engine state (aiaas-db rollup): ingest watermarks, run history, backfill checkpoints
-- and the days whose daily rollup must be recomputed from hourly rollups.

CREATE TABLE analytics_rollup_watermarks (
    analytics_rollup_watermark_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    granularity text NOT NULL,
    watermark timestamptz NULL,
    last_run_id uuid NULL,
    last_run_at timestamptz NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT uq_analytics_rollup_watermarks_granularity UNIQUE (granularity),
    CONSTRAINT ck_analytics_rollup_watermarks_granularity CHECK (granularity IN ('hour', 'day'))
);
COMMENT ON TABLE analytics_rollup_watermarks IS
    'Per granularity: the usage_events.ingested_at high-water mark of the last successful incremental rollup run.';
COMMENT ON COLUMN analytics_rollup_watermarks.analytics_rollup_watermark_id IS 'Primary key (identity).';
COMMENT ON COLUMN analytics_rollup_watermarks.granularity IS 'hour or day.';
COMMENT ON COLUMN analytics_rollup_watermarks.watermark IS 'usage_events.ingested_at up to which events are rolled up (hour); NULL for day (days use analytics_daily_rollup_invalidations).';
COMMENT ON COLUMN analytics_rollup_watermarks.last_run_id IS 'The analytics_rollup_runs row that last moved the watermark.';
COMMENT ON COLUMN analytics_rollup_watermarks.last_run_at IS 'When the watermark last moved (UTC).';
COMMENT ON COLUMN analytics_rollup_watermarks.created_at IS 'When the row was created (UTC).';
COMMENT ON COLUMN analytics_rollup_watermarks.updated_at IS 'When the row was last updated (UTC).';

CREATE TABLE analytics_rollup_runs (
    analytics_rollup_run_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    target text NOT NULL,
    granularity text NOT NULL,
    mode text NOT NULL,
    status text NOT NULL DEFAULT 'running',
    window_start timestamptz NULL,
    window_end timestamptz NULL,
    watermark_before timestamptz NULL,
    watermark_after timestamptz NULL,
    windows bigint NOT NULL DEFAULT 0,
    buckets_recomputed bigint NOT NULL DEFAULT 0,
    source_events bigint NOT NULL DEFAULT 0,
    rows_inserted bigint NOT NULL DEFAULT 0,
    rows_updated bigint NOT NULL DEFAULT 0,
    rows_deleted bigint NOT NULL DEFAULT 0,
    error_code text NULL,
    error_message text NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ck_analytics_rollup_runs_granularity CHECK (granularity IN ('hour', 'day')),
    CONSTRAINT ck_analytics_rollup_runs_mode CHECK (mode IN ('incremental', 'window', 'backfill')),
    CONSTRAINT ck_analytics_rollup_runs_status CHECK (status IN ('running', 'succeeded', 'failed')),
    CONSTRAINT ck_analytics_rollup_runs_window CHECK (window_end IS NULL OR window_start IS NULL OR window_end > window_start),
    CONSTRAINT ck_analytics_rollup_runs_counts CHECK (windows >= 0 AND buckets_recomputed >= 0 AND source_events >= 0 AND rows_inserted >= 0 AND rows_updated >= 0 AND rows_deleted >= 0)
);
CREATE INDEX idx_analytics_rollup_runs_granularity_started_at
    ON analytics_rollup_runs (granularity, started_at);
COMMENT ON TABLE analytics_rollup_runs IS 'History of rollup runs (one row per run, kept).';
COMMENT ON COLUMN analytics_rollup_runs.analytics_rollup_run_id IS 'Run id (random uuid), reported by `aiaas-db rollup` and the rollup trigger API.';
COMMENT ON COLUMN analytics_rollup_runs.target IS 'Name of the rollup target (targets file).';
COMMENT ON COLUMN analytics_rollup_runs.granularity IS 'hour or day.';
COMMENT ON COLUMN analytics_rollup_runs.mode IS 'incremental (what changed since the last run), window (explicit --from/--to) or backfill.';
COMMENT ON COLUMN analytics_rollup_runs.status IS 'running, succeeded or failed.';
COMMENT ON COLUMN analytics_rollup_runs.window_start IS 'Start of the event time the run covered (UTC, inclusive).';
COMMENT ON COLUMN analytics_rollup_runs.window_end IS 'End of the event time the run covered (UTC, exclusive).';
COMMENT ON COLUMN analytics_rollup_runs.watermark_before IS 'Watermark when the run started (incremental hourly runs).';
COMMENT ON COLUMN analytics_rollup_runs.watermark_after IS 'Watermark the run moved to (incremental hourly runs that succeeded).';
COMMENT ON COLUMN analytics_rollup_runs.windows IS 'Windows committed (each in its own transaction).';
COMMENT ON COLUMN analytics_rollup_runs.buckets_recomputed IS 'Hour or day buckets recomputed.';
COMMENT ON COLUMN analytics_rollup_runs.source_events IS 'Raw events the recomputed buckets hold.';
COMMENT ON COLUMN analytics_rollup_runs.rows_inserted IS 'Rollup rows inserted.';
COMMENT ON COLUMN analytics_rollup_runs.rows_updated IS 'Rollup rows whose measures changed.';
COMMENT ON COLUMN analytics_rollup_runs.rows_deleted IS 'Rollup rows deleted (their raw events were deleted).';
COMMENT ON COLUMN analytics_rollup_runs.error_code IS 'Machine error code of a failed run.';
COMMENT ON COLUMN analytics_rollup_runs.error_message IS 'Client-safe one-line error of a failed run (no secrets).';
COMMENT ON COLUMN analytics_rollup_runs.started_at IS 'When the run started (database clock, UTC).';
COMMENT ON COLUMN analytics_rollup_runs.finished_at IS 'When the run finished; NULL while running.';
COMMENT ON COLUMN analytics_rollup_runs.created_at IS 'When the row was created (UTC).';

CREATE TABLE analytics_rollup_backfill_checkpoints (
    analytics_rollup_backfill_checkpoint_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    granularity text NOT NULL,
    range_start timestamptz NOT NULL,
    range_end timestamptz NOT NULL,
    next_start timestamptz NOT NULL,
    windows_done bigint NOT NULL DEFAULT 0,
    status text NOT NULL DEFAULT 'running',
    last_run_id uuid NULL,
    completed_at timestamptz NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT uq_analytics_rollup_backfill_checkpoints_granularity_range
        UNIQUE (granularity, range_start, range_end),
    CONSTRAINT ck_analytics_rollup_backfill_checkpoints_granularity CHECK (granularity IN ('hour', 'day')),
    CONSTRAINT ck_analytics_rollup_backfill_checkpoints_status CHECK (status IN ('running', 'completed')),
    CONSTRAINT ck_analytics_rollup_backfill_checkpoints_range CHECK (range_end > range_start AND next_start >= range_start AND next_start <= range_end),
    CONSTRAINT ck_analytics_rollup_backfill_checkpoints_windows_done CHECK (windows_done >= 0)
);
COMMENT ON TABLE analytics_rollup_backfill_checkpoints IS
    'Resume points of rollup backfills: windows before next_start are committed.';
COMMENT ON COLUMN analytics_rollup_backfill_checkpoints.analytics_rollup_backfill_checkpoint_id IS 'Primary key (identity).';
COMMENT ON COLUMN analytics_rollup_backfill_checkpoints.granularity IS 'hour or day.';
COMMENT ON COLUMN analytics_rollup_backfill_checkpoints.range_start IS 'Start of the backfill range (UTC, inclusive).';
COMMENT ON COLUMN analytics_rollup_backfill_checkpoints.range_end IS 'End of the backfill range (UTC, exclusive).';
COMMENT ON COLUMN analytics_rollup_backfill_checkpoints.next_start IS 'Resume point: every window before it is committed.';
COMMENT ON COLUMN analytics_rollup_backfill_checkpoints.windows_done IS 'Windows committed so far (all runs of this backfill).';
COMMENT ON COLUMN analytics_rollup_backfill_checkpoints.status IS 'running or completed.';
COMMENT ON COLUMN analytics_rollup_backfill_checkpoints.last_run_id IS 'The analytics_rollup_runs row that last advanced the checkpoint.';
COMMENT ON COLUMN analytics_rollup_backfill_checkpoints.completed_at IS 'When the whole range was committed; NULL until then.';
COMMENT ON COLUMN analytics_rollup_backfill_checkpoints.created_at IS 'When the backfill was first started (UTC).';
COMMENT ON COLUMN analytics_rollup_backfill_checkpoints.updated_at IS 'When the checkpoint last moved (UTC).';

CREATE TABLE analytics_daily_rollup_invalidations (
    analytics_daily_rollup_invalidation_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    bucket_start timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT uq_analytics_daily_rollup_invalidations_bucket_start UNIQUE (bucket_start)
);
COMMENT ON TABLE analytics_daily_rollup_invalidations IS
    'UTC days whose hourly rollups changed since their daily rollup was last computed.';
COMMENT ON COLUMN analytics_daily_rollup_invalidations.analytics_daily_rollup_invalidation_id IS 'Primary key (identity).';
COMMENT ON COLUMN analytics_daily_rollup_invalidations.bucket_start IS 'The UTC day whose daily rollup must be recomputed from hourly rollups.';
COMMENT ON COLUMN analytics_daily_rollup_invalidations.created_at IS 'When an hourly run changed that day (UTC).';
