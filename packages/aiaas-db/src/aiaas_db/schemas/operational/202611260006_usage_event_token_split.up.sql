-- author: aiaas-db platform schema
-- Prompt and completion tokens per usage event: text generation bills the prompt (input) and the
-- completion (output) tokens apart. Both are NULL for events that do not split their tokens
-- (embeddings, events written before this change set); when both are set they add up to
-- tokens_consumed, which stays the one figure budgets and rollups count.

ALTER TABLE usage_events ADD COLUMN prompt_tokens bigint NULL;
ALTER TABLE usage_events ADD COLUMN completion_tokens bigint NULL;
ALTER TABLE usage_events ADD CONSTRAINT ck_usage_events_prompt_tokens
    CHECK (prompt_tokens IS NULL OR prompt_tokens >= 0);
ALTER TABLE usage_events ADD CONSTRAINT ck_usage_events_completion_tokens
    CHECK (completion_tokens IS NULL OR completion_tokens >= 0);
ALTER TABLE usage_events ADD CONSTRAINT ck_usage_events_token_split
    CHECK (
        prompt_tokens IS NULL
        OR completion_tokens IS NULL
        OR prompt_tokens + completion_tokens = tokens_consumed
    );
COMMENT ON COLUMN usage_events.prompt_tokens IS
    'Prompt (input) tokens of a generation request (>= 0); NULL when the event does not split its tokens.';
COMMENT ON COLUMN usage_events.completion_tokens IS
    'Completion (output) tokens of a generation request (>= 0); with prompt_tokens they add up to tokens_consumed.';
