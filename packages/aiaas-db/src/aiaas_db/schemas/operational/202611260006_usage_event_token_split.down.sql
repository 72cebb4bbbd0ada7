-- author: aiaas-db platform schema
-- aiaas:destructive
-- Drops the prompt/completion split (tokens_consumed keeps each event's total).
ALTER TABLE usage_events DROP CONSTRAINT ck_usage_events_token_split;
ALTER TABLE usage_events DROP CONSTRAINT ck_usage_events_completion_tokens;
ALTER TABLE usage_events DROP CONSTRAINT ck_usage_events_prompt_tokens;
ALTER TABLE usage_events DROP COLUMN completion_tokens;
ALTER TABLE usage_events DROP COLUMN prompt_tokens;
