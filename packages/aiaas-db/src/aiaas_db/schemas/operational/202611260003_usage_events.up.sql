-- author: aiaas-db platform schema
-- One row per API request, range-partitioned by occurred_at into UTC days
-- (usage_events_pYYYYMMDD, created ahead of time by `aiaas-db partitions ensure`) with a DEFAULT
-- partition, so an event is never refused for lack of a partition. No foreign keys: ingest speed
-- comes first, and the identifiers are checked by the writers.

CREATE TABLE usage_events (
    usage_event_id uuid NOT NULL DEFAULT gen_random_uuid(),
    occurred_at timestamptz NOT NULL,
    ingested_at timestamptz NOT NULL DEFAULT now(),
    organization_id uuid NOT NULL,
    api_key_id uuid NULL,
    model_id uuid NULL,
    request_id text NULL,
    tokens_consumed bigint NOT NULL,
    latency_ms integer NOT NULL,
    status text NOT NULL,
    error_code text NULL,
    region text NOT NULL,
    cost_usd numeric(14, 8) NOT NULL DEFAULT 0,
    CONSTRAINT usage_events_pkey PRIMARY KEY (usage_event_id, occurred_at),
    CONSTRAINT ck_usage_events_tokens_consumed CHECK (tokens_consumed >= 0),
    CONSTRAINT ck_usage_events_latency_ms CHECK (latency_ms >= 0),
    CONSTRAINT ck_usage_events_status CHECK (status IN ('success', 'rate_limited', 'error')),
    CONSTRAINT ck_usage_events_error_code CHECK (status <> 'success' OR error_code IS NULL),
    CONSTRAINT ck_usage_events_region CHECK (char_length(region) BETWEEN 1 AND 64),
    CONSTRAINT ck_usage_events_cost_usd CHECK (cost_usd >= 0)
) PARTITION BY RANGE (occurred_at);
COMMENT ON TABLE usage_events IS
    'Append-only usage events, one per API request; partitioned by UTC day of occurred_at (usage_events_pYYYYMMDD, plus usage_events_default). Kept 730 days: `aiaas-db partitions retain` drops older partitions. No foreign keys (ingest speed).';
COMMENT ON COLUMN usage_events.usage_event_id IS 'Event id (random uuid); unique together with occurred_at.';
COMMENT ON COLUMN usage_events.occurred_at IS 'When the request happened (UTC); the partition key.';
COMMENT ON COLUMN usage_events.ingested_at IS 'When the row was written; the rollup watermark column.';
COMMENT ON COLUMN usage_events.organization_id IS 'The organisation billed (organizations.organization_id; not enforced).';
COMMENT ON COLUMN usage_events.api_key_id IS 'The API key used (api_keys.api_key_id; not enforced), NULL when none.';
COMMENT ON COLUMN usage_events.model_id IS 'The model revision called (model_registry_entries.model_registry_entry_id; not enforced), NULL when the request never reached a model.';
COMMENT ON COLUMN usage_events.request_id IS 'Request correlation id, when known.';
COMMENT ON COLUMN usage_events.tokens_consumed IS 'Tokens consumed by the request (>= 0).';
COMMENT ON COLUMN usage_events.latency_ms IS 'Request latency in milliseconds (>= 0).';
COMMENT ON COLUMN usage_events.status IS 'success, rate_limited or error.';
COMMENT ON COLUMN usage_events.error_code IS 'Machine error code; always NULL for a success.';
COMMENT ON COLUMN usage_events.region IS 'Region that served the request.';
COMMENT ON COLUMN usage_events.cost_usd IS 'Cost of the request in USD (>= 0).';

CREATE TABLE usage_events_default PARTITION OF usage_events DEFAULT;
COMMENT ON TABLE usage_events_default IS
    'DEFAULT partition of usage_events: events outside every daily partition land here; `aiaas-db partitions ensure` moves them into their day partition when it creates it.';

CREATE INDEX idx_usage_events_organization_id_occurred_at
    ON usage_events (organization_id, occurred_at);
CREATE INDEX idx_usage_events_model_id_occurred_at ON usage_events (model_id, occurred_at);
CREATE INDEX idx_usage_events_status_occurred_at ON usage_events (status, occurred_at);
CREATE INDEX idx_usage_events_ingested_at ON usage_events (ingested_at);
