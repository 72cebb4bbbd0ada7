-- author: aiaas-db platform schema
-- aiaas:destructive
-- Drops usage_events with every partition (daily partitions made by `partitions ensure` too).
DROP INDEX idx_usage_events_ingested_at;
DROP INDEX idx_usage_events_status_occurred_at;
DROP INDEX idx_usage_events_model_id_occurred_at;
DROP INDEX idx_usage_events_organization_id_occurred_at;
DROP TABLE usage_events;
