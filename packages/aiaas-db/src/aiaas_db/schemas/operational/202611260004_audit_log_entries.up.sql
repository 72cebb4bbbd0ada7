-- author: aiaas-db platform schema
-- The audit log: append-only, enforced in the database (UPDATE, DELETE and TRUNCATE raise
-- AUDIT_APPEND_ONLY). Written only through aiaas_db._audit.write_audit: the actor is stored as a
-- keyed digest (and an encrypted copy), never in the clear.

CREATE TABLE audit_log_entries (
    audit_log_entry_id bigint GENERATED ALWAYS AS IDENTITY,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    actor_type text NOT NULL,
    actor_id text NOT NULL,
    actor_ciphertext bytea NULL,
    actor_key_version text NULL,
    action text NOT NULL,
    target text NOT NULL,
    metadata jsonb NOT NULL DEFAULT '{}',
    request_id text NULL,
    CONSTRAINT audit_log_entries_pkey PRIMARY KEY (audit_log_entry_id),
    CONSTRAINT ck_audit_log_entries_actor_type CHECK (actor_type IN ('user', 'service', 'migration')),
    CONSTRAINT ck_audit_log_entries_actor_id
        CHECK (actor_id ~ '^hmac-sha256\$[a-z0-9]{1,16}\$[A-Za-z0-9_-]{43}$'),
    CONSTRAINT ck_audit_log_entries_actor_ciphertext CHECK (
        (actor_ciphertext IS NULL AND actor_key_version IS NULL)
        OR (actor_ciphertext IS NOT NULL AND actor_key_version IS NOT NULL
            AND octet_length(actor_ciphertext) >= 28)
    ),
    CONSTRAINT ck_audit_log_entries_action CHECK (char_length(action) BETWEEN 1 AND 200),
    CONSTRAINT ck_audit_log_entries_target CHECK (char_length(target) BETWEEN 1 AND 1000),
    CONSTRAINT ck_audit_log_entries_metadata CHECK (jsonb_typeof(metadata) = 'object')
);
COMMENT ON TABLE audit_log_entries IS
    'Append-only audit trail (who did what to what, when; migrations record the script checksum in metadata). UPDATE, DELETE and TRUNCATE are refused by triggers. Kept 1825 days.';
COMMENT ON COLUMN audit_log_entries.audit_log_entry_id IS 'Primary key (identity, increasing).';
COMMENT ON COLUMN audit_log_entries.occurred_at IS 'When the audited action happened (UTC).';
COMMENT ON COLUMN audit_log_entries.actor_type IS 'user, service or migration.';
COMMENT ON COLUMN audit_log_entries.actor_id IS
    'Restricted: hmac-sha256$<key version>$<base64url> digest of the actor identity under AIAAS_DB_PII_HASH_KEY; never the raw identity.';
COMMENT ON COLUMN audit_log_entries.actor_ciphertext IS
    'Restricted: AES-256-GCM of the actor identity (12-byte nonce || ciphertext || tag, AAD = the UTF-8 bytes of actor_id) under AIAAS_DB_PII_ENCRYPTION_KEY.';
COMMENT ON COLUMN audit_log_entries.actor_key_version IS 'Version of the encryption key of actor_ciphertext.';
COMMENT ON COLUMN audit_log_entries.action IS 'What was done (such as migration.apply, partitions.ensure).';
COMMENT ON COLUMN audit_log_entries.target IS 'What it was done to (such as a change set or a table).';
COMMENT ON COLUMN audit_log_entries.metadata IS 'Confidential: details as a JSON object (migrations: the script checksum).';
COMMENT ON COLUMN audit_log_entries.request_id IS 'Request correlation id, when the action came from an API request.';

CREATE INDEX idx_audit_log_entries_occurred_at ON audit_log_entries (occurred_at);
CREATE INDEX idx_audit_log_entries_actor_id_occurred_at ON audit_log_entries (actor_id, occurred_at);
CREATE INDEX idx_audit_log_entries_action_occurred_at ON audit_log_entries (action, occurred_at);

CREATE FUNCTION aiaas_audit_log_entries_append_only() RETURNS trigger
    LANGUAGE plpgsql AS
$$
BEGIN
    RAISE EXCEPTION USING
        ERRCODE = 'P0001',
        MESSAGE = format('AUDIT_APPEND_ONLY: %s on audit_log_entries is not allowed; the audit log is append-only',
                         TG_OP),
        HINT = 'Insert a new entry instead; entries are never changed or removed.';
END;
$$;
COMMENT ON FUNCTION aiaas_audit_log_entries_append_only() IS
    'Trigger function: refuses UPDATE, DELETE and TRUNCATE of audit_log_entries (AUDIT_APPEND_ONLY).';

CREATE TRIGGER trg_audit_log_entries_append_only
    BEFORE UPDATE OR DELETE ON audit_log_entries
    FOR EACH ROW EXECUTE FUNCTION aiaas_audit_log_entries_append_only();
CREATE TRIGGER trg_audit_log_entries_no_truncate
    BEFORE TRUNCATE ON audit_log_entries
    FOR EACH STATEMENT EXECUTE FUNCTION aiaas_audit_log_entries_append_only();
