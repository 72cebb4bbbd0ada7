-- author: aiaas-db platform schema
-- aiaas:destructive
-- Drops the rollup tables (they can be recomputed from usage_events).
DROP INDEX idx_analytics_daily_rollups_model_id_bucket_start;
DROP INDEX idx_analytics_daily_rollups_organization_id_bucket_start;
DROP TABLE analytics_daily_rollups;
DROP INDEX idx_analytics_hourly_rollups_model_id_bucket_start;
DROP INDEX idx_analytics_hourly_rollups_organization_id_bucket_start;
DROP TABLE analytics_hourly_rollups;
