-- author: aiaas-db platform schema
-- API keys (hashed secrets only) and the model registry (one row per model revision, with a
-- change history kept by trigger).

CREATE TABLE api_keys (
    api_key_id uuid NOT NULL DEFAULT gen_random_uuid(),
    organization_id uuid NOT NULL,
    key_id text NOT NULL,
    name text NOT NULL,
    hashed_secret text NOT NULL,
    scopes text[] NOT NULL DEFAULT '{}',
    roles text[] NOT NULL DEFAULT '{}',
    status text NOT NULL DEFAULT 'active',
    created_by_user_id uuid NULL,
    expires_at timestamptz NULL,
    last_used_at timestamptz NULL,
    revoked_at timestamptz NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT api_keys_pkey PRIMARY KEY (api_key_id),
    CONSTRAINT fk_api_keys_organization_id FOREIGN KEY (organization_id)
        REFERENCES organizations (organization_id),
    CONSTRAINT fk_api_keys_created_by_user_id FOREIGN KEY (created_by_user_id)
        REFERENCES users (user_id) ON DELETE SET NULL,
    CONSTRAINT uq_api_keys_key_id UNIQUE (key_id),
    CONSTRAINT uq_api_keys_organization_id_name UNIQUE (organization_id, name),
    CONSTRAINT ck_api_keys_key_id CHECK (key_id ~ '^[0-9A-Za-z]{12}$'),
    CONSTRAINT ck_api_keys_name CHECK (char_length(name) BETWEEN 1 AND 200),
    CONSTRAINT ck_api_keys_hashed_secret CHECK (char_length(hashed_secret) > 0),
    CONSTRAINT ck_api_keys_status CHECK (status IN ('active', 'rotating', 'revoked'))
);
COMMENT ON TABLE api_keys IS
    'API keys of organisations. Only a keyed digest of the secret is stored; key_id is the public id inside the token aiaas_<key_id>_<secret><crc>.';
COMMENT ON COLUMN api_keys.api_key_id IS 'Primary key (random uuid).';
COMMENT ON COLUMN api_keys.organization_id IS 'The organisation that owns the key.';
COMMENT ON COLUMN api_keys.key_id IS
    'Public 12-character base62 id from the token; unique; the lookup path when a request presents a key.';
COMMENT ON COLUMN api_keys.name IS 'Name of the key, unique within the organisation.';
COMMENT ON COLUMN api_keys.hashed_secret IS
    'Restricted: ApiKeyVerifier (keyed HMAC) digest of the secret part of the token; never the secret.';
COMMENT ON COLUMN api_keys.scopes IS 'Scopes granted to the key.';
COMMENT ON COLUMN api_keys.roles IS 'Roles granted to the key.';
COMMENT ON COLUMN api_keys.status IS 'active, rotating (old key still accepted during rotation) or revoked.';
COMMENT ON COLUMN api_keys.created_by_user_id IS 'The user who created the key (NULL: created by a service or the user was removed).';
COMMENT ON COLUMN api_keys.expires_at IS 'When the key stops being accepted; NULL: no expiry.';
COMMENT ON COLUMN api_keys.last_used_at IS 'Last time a request authenticated with the key.';
COMMENT ON COLUMN api_keys.revoked_at IS 'When the key was revoked.';
COMMENT ON COLUMN api_keys.created_at IS 'When the row was created (UTC).';
COMMENT ON COLUMN api_keys.updated_at IS 'When the row was last changed (set by trigger).';

CREATE INDEX idx_api_keys_created_by_user_id ON api_keys (created_by_user_id);

CREATE FUNCTION aiaas_api_keys_require_active_org() RETURNS trigger
    LANGUAGE plpgsql AS
$$
DECLARE
    org_status text;
    org_deleted timestamptz;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        -- Only a key that becomes usable again (or moves to another organisation) is checked.
        IF NEW.status = 'revoked'
           OR (OLD.status <> 'revoked' AND NEW.organization_id = OLD.organization_id) THEN
            RETURN NEW;
        END IF;
    END IF;
    -- FOR SHARE: a concurrent close or soft delete of the organisation waits for this insert.
    SELECT o.status, o.deleted_at INTO org_status, org_deleted
        FROM organizations AS o
        WHERE o.organization_id = NEW.organization_id
        FOR SHARE;
    IF NOT FOUND THEN
        RETURN NEW;  -- fk_api_keys_organization_id reports the missing organisation
    END IF;
    IF org_deleted IS NOT NULL OR org_status = 'closed' THEN
        RAISE EXCEPTION USING
            ERRCODE = 'P0001',
            MESSAGE = format('ORG_INACTIVE: organization %s is %s; it cannot hold usable API keys',
                             NEW.organization_id,
                             CASE WHEN org_deleted IS NOT NULL THEN 'deleted' ELSE 'closed' END),
            HINT = 'Restore or reopen the organisation first.';
    END IF;
    RETURN NEW;
END;
$$;
COMMENT ON FUNCTION aiaas_api_keys_require_active_org() IS
    'BEFORE INSERT/UPDATE trigger function: refuses a usable API key for a closed or soft-deleted organisation (ORG_INACTIVE).';

CREATE TRIGGER trg_api_keys_require_active_org
    BEFORE INSERT OR UPDATE OF status, organization_id ON api_keys
    FOR EACH ROW EXECUTE FUNCTION aiaas_api_keys_require_active_org();
CREATE TRIGGER trg_api_keys_set_updated_at
    BEFORE UPDATE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION aiaas_set_updated_at();

CREATE TABLE model_registry_entries (
    model_registry_entry_id uuid NOT NULL DEFAULT gen_random_uuid(),
    organization_id uuid NULL,
    name text NOT NULL,
    revision text NOT NULL,
    deployment_target text NOT NULL,
    cost_per_1k_tokens_usd numeric(12, 6) NOT NULL,
    metadata jsonb NOT NULL DEFAULT '{}',
    status text NOT NULL DEFAULT 'active',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz NULL,
    CONSTRAINT model_registry_entries_pkey PRIMARY KEY (model_registry_entry_id),
    CONSTRAINT fk_model_registry_entries_organization_id FOREIGN KEY (organization_id)
        REFERENCES organizations (organization_id),
    CONSTRAINT uq_model_registry_entries_organization_id_name_revision
        UNIQUE NULLS NOT DISTINCT (organization_id, name, revision),
    CONSTRAINT ck_model_registry_entries_name CHECK (char_length(name) BETWEEN 1 AND 200),
    CONSTRAINT ck_model_registry_entries_revision CHECK (char_length(revision) BETWEEN 1 AND 200),
    CONSTRAINT ck_model_registry_entries_deployment_target
        CHECK (char_length(deployment_target) BETWEEN 1 AND 200),
    CONSTRAINT ck_model_registry_entries_cost_per_1k_tokens_usd CHECK (cost_per_1k_tokens_usd >= 0),
    CONSTRAINT ck_model_registry_entries_metadata CHECK (jsonb_typeof(metadata) = 'object'),
    CONSTRAINT ck_model_registry_entries_status CHECK (status IN ('active', 'deprecated', 'retired'))
);
COMMENT ON TABLE model_registry_entries IS
    'Registered models, one row per revision. organization_id NULL marks a global model; (organization, name, revision) is unique, global models included.';
COMMENT ON COLUMN model_registry_entries.model_registry_entry_id IS
    'Primary key (random uuid); usage_events.model_id refers to it.';
COMMENT ON COLUMN model_registry_entries.organization_id IS 'Owning organisation; NULL for a global model.';
COMMENT ON COLUMN model_registry_entries.name IS 'Model name (such as all-MiniLM-L6-v2).';
COMMENT ON COLUMN model_registry_entries.revision IS 'Model revision (weights or build identifier).';
COMMENT ON COLUMN model_registry_entries.deployment_target IS 'Where the revision is served (a service or node pool name).';
COMMENT ON COLUMN model_registry_entries.cost_per_1k_tokens_usd IS 'Price per 1000 tokens in USD (>= 0).';
COMMENT ON COLUMN model_registry_entries.metadata IS 'Free-form JSON object (framework, dimensions, ...).';
COMMENT ON COLUMN model_registry_entries.status IS 'active, deprecated or retired.';
COMMENT ON COLUMN model_registry_entries.created_at IS 'When the row was created (UTC).';
COMMENT ON COLUMN model_registry_entries.updated_at IS 'When the row was last changed (set by trigger).';
COMMENT ON COLUMN model_registry_entries.deleted_at IS 'Soft-delete time; NULL while the revision exists.';

CREATE INDEX idx_model_registry_entries_name ON model_registry_entries (name);
CREATE TRIGGER trg_model_registry_entries_set_updated_at
    BEFORE UPDATE ON model_registry_entries
    FOR EACH ROW EXECUTE FUNCTION aiaas_set_updated_at();

CREATE TABLE model_registry_entry_changes (
    model_registry_entry_change_id bigint GENERATED ALWAYS AS IDENTITY,
    model_registry_entry_id uuid NOT NULL,
    change text NOT NULL,
    old_row jsonb NULL,
    new_row jsonb NULL,
    changed_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT model_registry_entry_changes_pkey PRIMARY KEY (model_registry_entry_change_id),
    CONSTRAINT ck_model_registry_entry_changes_change CHECK (change IN ('insert', 'update', 'delete')),
    CONSTRAINT ck_model_registry_entry_changes_rows CHECK (
        (change = 'insert' AND old_row IS NULL AND new_row IS NOT NULL)
        OR (change = 'update' AND old_row IS NOT NULL AND new_row IS NOT NULL)
        OR (change = 'delete' AND old_row IS NOT NULL AND new_row IS NULL)
    )
);
COMMENT ON TABLE model_registry_entry_changes IS
    'History of model_registry_entries: one row per insert, update or delete, written by trigger. No foreign key, so history outlives a deleted entry.';
COMMENT ON COLUMN model_registry_entry_changes.model_registry_entry_change_id IS 'Primary key (identity).';
COMMENT ON COLUMN model_registry_entry_changes.model_registry_entry_id IS 'The entry that changed.';
COMMENT ON COLUMN model_registry_entry_changes.change IS 'insert, update or delete.';
COMMENT ON COLUMN model_registry_entry_changes.old_row IS 'The row before the change (NULL for insert).';
COMMENT ON COLUMN model_registry_entry_changes.new_row IS 'The row after the change (NULL for delete).';
COMMENT ON COLUMN model_registry_entry_changes.changed_at IS 'When the change happened (transaction time, UTC).';

CREATE INDEX idx_model_registry_entry_changes_entry_id_changed_at
    ON model_registry_entry_changes (model_registry_entry_id, changed_at);

CREATE FUNCTION aiaas_model_registry_entries_record_change() RETURNS trigger
    LANGUAGE plpgsql AS
$$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO model_registry_entry_changes (model_registry_entry_id, change, new_row)
            VALUES (NEW.model_registry_entry_id, 'insert', to_jsonb(NEW));
        RETURN NEW;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO model_registry_entry_changes
                (model_registry_entry_id, change, old_row, new_row)
            VALUES (NEW.model_registry_entry_id, 'update', to_jsonb(OLD), to_jsonb(NEW));
        RETURN NEW;
    END IF;
    INSERT INTO model_registry_entry_changes (model_registry_entry_id, change, old_row)
        VALUES (OLD.model_registry_entry_id, 'delete', to_jsonb(OLD));
    RETURN OLD;
END;
$$;
COMMENT ON FUNCTION aiaas_model_registry_entries_record_change() IS
    'AFTER INSERT/UPDATE/DELETE trigger function: appends the change to model_registry_entry_changes.';

CREATE TRIGGER trg_model_registry_entries_record_change
    AFTER INSERT OR UPDATE OR DELETE ON model_registry_entries
    FOR EACH ROW EXECUTE FUNCTION aiaas_model_registry_entries_record_change();
