-- author: aiaas-db platform schema
-- Hourly and daily usage rollups per organisation and model (both in the operational database).

CREATE TABLE analytics_hourly_rollups (
    analytics_hourly_rollup_id bigint GENERATED ALWAYS AS IDENTITY,
    bucket_start timestamptz NOT NULL,
    organization_id uuid NOT NULL,
    model_id uuid NULL,
    request_count bigint NOT NULL,
    tokens_total bigint NOT NULL,
    error_count bigint NOT NULL,
    rate_limited_count bigint NOT NULL DEFAULT 0,
    cost_usd numeric(18, 8) NOT NULL,
    latency_ms_sum bigint NOT NULL DEFAULT 0,
    last_reconciled_at timestamptz NOT NULL DEFAULT now(),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT analytics_hourly_rollups_pkey PRIMARY KEY (analytics_hourly_rollup_id),
    CONSTRAINT uq_analytics_hourly_rollups_bucket_start_org_id_model_id
        UNIQUE NULLS NOT DISTINCT (bucket_start, organization_id, model_id),
    CONSTRAINT ck_analytics_hourly_rollups_bucket_start
        CHECK (date_trunc('hour', bucket_start AT TIME ZONE 'UTC') = bucket_start AT TIME ZONE 'UTC'),
    CONSTRAINT ck_analytics_hourly_rollups_request_count CHECK (request_count >= 0),
    CONSTRAINT ck_analytics_hourly_rollups_tokens_total CHECK (tokens_total >= 0),
    CONSTRAINT ck_analytics_hourly_rollups_error_count CHECK (error_count >= 0 AND error_count <= request_count),
    CONSTRAINT ck_analytics_hourly_rollups_rate_limited_count
        CHECK (rate_limited_count >= 0 AND rate_limited_count <= request_count),
    CONSTRAINT ck_analytics_hourly_rollups_cost_usd CHECK (cost_usd >= 0),
    CONSTRAINT ck_analytics_hourly_rollups_latency_ms_sum CHECK (latency_ms_sum >= 0)
);
COMMENT ON TABLE analytics_hourly_rollups IS
    'Usage per hour, organisation and model, computed from usage_events by `aiaas-db rollup`; no personal data.';
COMMENT ON COLUMN analytics_hourly_rollups.analytics_hourly_rollup_id IS 'Primary key (identity).';
COMMENT ON COLUMN analytics_hourly_rollups.bucket_start IS 'Start of the UTC hour the row covers.';
COMMENT ON COLUMN analytics_hourly_rollups.organization_id IS 'The organisation (organizations.organization_id).';
COMMENT ON COLUMN analytics_hourly_rollups.model_id IS 'The model revision (model_registry_entries.model_registry_entry_id); NULL: requests not attributed to a model.';
COMMENT ON COLUMN analytics_hourly_rollups.request_count IS 'Number of usage events in the bucket.';
COMMENT ON COLUMN analytics_hourly_rollups.tokens_total IS 'Sum of tokens_consumed.';
COMMENT ON COLUMN analytics_hourly_rollups.error_count IS 'Events with status error (never more than request_count).';
COMMENT ON COLUMN analytics_hourly_rollups.rate_limited_count IS 'Events with status rate_limited.';
COMMENT ON COLUMN analytics_hourly_rollups.cost_usd IS 'Sum of cost_usd.';
COMMENT ON COLUMN analytics_hourly_rollups.latency_ms_sum IS 'Sum of latency_ms (average latency = latency_ms_sum / request_count).';
COMMENT ON COLUMN analytics_hourly_rollups.last_reconciled_at IS 'When the row was last recomputed from raw events.';
COMMENT ON COLUMN analytics_hourly_rollups.created_at IS 'When the row was created (UTC).';
COMMENT ON COLUMN analytics_hourly_rollups.updated_at IS 'When the row was last recomputed.';

CREATE INDEX idx_analytics_hourly_rollups_organization_id_bucket_start ON analytics_hourly_rollups (organization_id, bucket_start);
CREATE INDEX idx_analytics_hourly_rollups_model_id_bucket_start ON analytics_hourly_rollups (model_id, bucket_start);

CREATE TABLE analytics_daily_rollups (
    analytics_daily_rollup_id bigint GENERATED ALWAYS AS IDENTITY,
    bucket_start timestamptz NOT NULL,
    organization_id uuid NOT NULL,
    model_id uuid NULL,
    request_count bigint NOT NULL,
    tokens_total bigint NOT NULL,
    error_count bigint NOT NULL,
    rate_limited_count bigint NOT NULL DEFAULT 0,
    cost_usd numeric(18, 8) NOT NULL,
    latency_ms_sum bigint NOT NULL DEFAULT 0,
    last_reconciled_at timestamptz NOT NULL DEFAULT now(),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT analytics_daily_rollups_pkey PRIMARY KEY (analytics_daily_rollup_id),
    CONSTRAINT uq_analytics_daily_rollups_bucket_start_org_id_model_id
        UNIQUE NULLS NOT DISTINCT (bucket_start, organization_id, model_id),
    CONSTRAINT ck_analytics_daily_rollups_bucket_start
        CHECK (date_trunc('day', bucket_start AT TIME ZONE 'UTC') = bucket_start AT TIME ZONE 'UTC'),
    CONSTRAINT ck_analytics_daily_rollups_request_count CHECK (request_count >= 0),
    CONSTRAINT ck_analytics_daily_rollups_tokens_total CHECK (tokens_total >= 0),
    CONSTRAINT ck_analytics_daily_rollups_error_count CHECK (error_count >= 0 AND error_count <= request_count),
    CONSTRAINT ck_analytics_daily_rollups_rate_limited_count
        CHECK (rate_limited_count >= 0 AND rate_limited_count <= request_count),
    CONSTRAINT ck_analytics_daily_rollups_cost_usd CHECK (cost_usd >= 0),
    CONSTRAINT ck_analytics_daily_rollups_latency_ms_sum CHECK (latency_ms_sum >= 0)
);
COMMENT ON TABLE analytics_daily_rollups IS
    'Usage per day, organisation and model, computed from usage_events by `aiaas-db rollup`; no personal data.';
COMMENT ON COLUMN analytics_daily_rollups.analytics_daily_rollup_id IS 'Primary key (identity).';
COMMENT ON COLUMN analytics_daily_rollups.bucket_start IS 'Start of the UTC day the row covers.';
COMMENT ON COLUMN analytics_daily_rollups.organization_id IS 'The organisation (organizations.organization_id).';
COMMENT ON COLUMN analytics_daily_rollups.model_id IS 'The model revision (model_registry_entries.model_registry_entry_id); NULL: requests not attributed to a model.';
COMMENT ON COLUMN analytics_daily_rollups.request_count IS 'Number of usage events in the bucket.';
COMMENT ON COLUMN analytics_daily_rollups.tokens_total IS 'Sum of tokens_consumed.';
COMMENT ON COLUMN analytics_daily_rollups.error_count IS 'Events with status error (never more than request_count).';
COMMENT ON COLUMN analytics_daily_rollups.rate_limited_count IS 'Events with status rate_limited.';
COMMENT ON COLUMN analytics_daily_rollups.cost_usd IS 'Sum of cost_usd.';
COMMENT ON COLUMN analytics_daily_rollups.latency_ms_sum IS 'Sum of latency_ms (average latency = latency_ms_sum / request_count).';
COMMENT ON COLUMN analytics_daily_rollups.last_reconciled_at IS 'When the row was last recomputed from raw events.';
COMMENT ON COLUMN analytics_daily_rollups.created_at IS 'When the row was created (UTC).';
COMMENT ON COLUMN analytics_daily_rollups.updated_at IS 'When the row was last recomputed.';

CREATE INDEX idx_analytics_daily_rollups_organization_id_bucket_start ON analytics_daily_rollups (organization_id, bucket_start);
CREATE INDEX idx_analytics_daily_rollups_model_id_bucket_start ON analytics_daily_rollups (model_id, bucket_start);
