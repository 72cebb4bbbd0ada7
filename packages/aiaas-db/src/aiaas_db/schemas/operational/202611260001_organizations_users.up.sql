-- author: aiaas-db platform schema
-- Tenants (organizations) and their members (users). E-mail addresses are never stored in the
-- clear: users.email_digest is a keyed HMAC-SHA256 digest, users.email_ciphertext an AES-256-GCM
-- copy for the cases where the address must be recovered.

CREATE FUNCTION aiaas_set_updated_at() RETURNS trigger
    LANGUAGE plpgsql AS
$$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;
COMMENT ON FUNCTION aiaas_set_updated_at() IS
    'BEFORE UPDATE row trigger function: sets updated_at to the transaction time.';

CREATE TABLE organizations (
    organization_id uuid NOT NULL DEFAULT gen_random_uuid(),
    slug text NOT NULL,
    display_name text NOT NULL,
    status text NOT NULL DEFAULT 'active',
    plan_tier text NOT NULL,
    budget_limit_tokens bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz NULL,
    CONSTRAINT organizations_pkey PRIMARY KEY (organization_id),
    CONSTRAINT uq_organizations_slug UNIQUE (slug),
    CONSTRAINT ck_organizations_slug CHECK (slug ~ '^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$'),
    CONSTRAINT ck_organizations_display_name CHECK (char_length(display_name) BETWEEN 1 AND 200),
    CONSTRAINT ck_organizations_status CHECK (status IN ('active', 'suspended', 'closed')),
    CONSTRAINT ck_organizations_plan_tier
        CHECK (plan_tier IN ('free', 'starter', 'pro', 'enterprise')),
    CONSTRAINT ck_organizations_budget_limit_tokens CHECK (budget_limit_tokens >= 0)
);
COMMENT ON TABLE organizations IS
    'Tenants of the platform. Soft-deleted (deleted_at); the slug never changes once created.';
COMMENT ON COLUMN organizations.organization_id IS 'Primary key (random uuid).';
COMMENT ON COLUMN organizations.slug IS
    'URL-safe unique name: lowercase letters, digits and inner hyphens, 1 to 63 characters; immutable (a trigger refuses updates).';
COMMENT ON COLUMN organizations.display_name IS 'Human-readable name, 1 to 200 characters.';
COMMENT ON COLUMN organizations.status IS 'active, suspended or closed.';
COMMENT ON COLUMN organizations.plan_tier IS 'Billing plan: free, starter, pro or enterprise.';
COMMENT ON COLUMN organizations.budget_limit_tokens IS
    'Token budget of the organisation (>= 0; 0 means no tokens granted).';
COMMENT ON COLUMN organizations.created_at IS 'When the row was created (UTC).';
COMMENT ON COLUMN organizations.updated_at IS 'When the row was last changed (set by trigger).';
COMMENT ON COLUMN organizations.deleted_at IS 'Soft-delete time; NULL while the organisation exists.';

CREATE FUNCTION aiaas_organizations_slug_immutable() RETURNS trigger
    LANGUAGE plpgsql AS
$$
BEGIN
    IF NEW.slug IS DISTINCT FROM OLD.slug THEN
        RAISE EXCEPTION USING
            ERRCODE = 'P0001',
            MESSAGE = format('SLUG_IMMUTABLE: the slug of organization %s cannot change (%L)',
                             OLD.organization_id, OLD.slug),
            HINT = 'Create a new organisation to use another slug; display_name can change.';
    END IF;
    RETURN NEW;
END;
$$;
COMMENT ON FUNCTION aiaas_organizations_slug_immutable() IS
    'BEFORE UPDATE trigger function: refuses any change of organizations.slug (SLUG_IMMUTABLE).';

CREATE TRIGGER trg_organizations_slug_immutable
    BEFORE UPDATE OF slug ON organizations
    FOR EACH ROW EXECUTE FUNCTION aiaas_organizations_slug_immutable();
CREATE TRIGGER trg_organizations_set_updated_at
    BEFORE UPDATE ON organizations
    FOR EACH ROW EXECUTE FUNCTION aiaas_set_updated_at();

CREATE TABLE users (
    user_id uuid NOT NULL DEFAULT gen_random_uuid(),
    organization_id uuid NOT NULL,
    email_digest text NOT NULL,
    email_ciphertext bytea NULL,
    email_key_version text NULL,
    role text NOT NULL,
    status text NOT NULL DEFAULT 'active',
    deletion_requested_at timestamptz NULL,
    anonymized_at timestamptz NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz NULL,
    CONSTRAINT users_pkey PRIMARY KEY (user_id),
    CONSTRAINT fk_users_organization_id FOREIGN KEY (organization_id)
        REFERENCES organizations (organization_id),
    CONSTRAINT uq_users_organization_id_email_digest UNIQUE (organization_id, email_digest),
    CONSTRAINT ck_users_email_digest CHECK (
        email_digest ~ '^hmac-sha256\$[a-z0-9]{1,16}\$[A-Za-z0-9_-]{43}$'
        OR email_digest = 'anonymized$' || user_id::text
    ),
    CONSTRAINT ck_users_email_ciphertext CHECK (
        (email_ciphertext IS NULL AND email_key_version IS NULL)
        OR (email_ciphertext IS NOT NULL AND email_key_version IS NOT NULL
            AND octet_length(email_ciphertext) >= 28)
    ),
    CONSTRAINT ck_users_role CHECK (role IN ('owner', 'admin', 'developer', 'billing')),
    CONSTRAINT ck_users_status CHECK (status IN ('active', 'disabled'))
);
COMMENT ON TABLE users IS
    'Members of an organisation. The e-mail address is kept only as a keyed digest (lookups, uniqueness) and an encrypted copy; purge anonymizes the row.';
COMMENT ON COLUMN users.user_id IS 'Primary key (random uuid).';
COMMENT ON COLUMN users.organization_id IS 'The organisation the user belongs to.';
COMMENT ON COLUMN users.email_digest IS
    'Restricted: hmac-sha256$<key version>$<base64url> digest of the normalised e-mail under AIAAS_DB_PII_HASH_KEY, or anonymized$<user_id> after purge. Unique per organisation.';
COMMENT ON COLUMN users.email_ciphertext IS
    'Restricted: AES-256-GCM of the e-mail address (12-byte nonce || ciphertext || tag, AAD = user_id bytes) under AIAAS_DB_PII_ENCRYPTION_KEY; NULL after purge.';
COMMENT ON COLUMN users.email_key_version IS 'Version of the encryption key of email_ciphertext.';
COMMENT ON COLUMN users.role IS 'owner, admin, developer or billing.';
COMMENT ON COLUMN users.status IS 'active or disabled.';
COMMENT ON COLUMN users.deletion_requested_at IS
    'When erasure was requested; the purge job anonymizes the user within 30 days.';
COMMENT ON COLUMN users.anonymized_at IS 'When the personal data of the user was purged.';
COMMENT ON COLUMN users.created_at IS 'When the row was created (UTC).';
COMMENT ON COLUMN users.updated_at IS 'When the row was last changed (set by trigger).';
COMMENT ON COLUMN users.deleted_at IS 'Soft-delete time; NULL while the user exists.';

CREATE TRIGGER trg_users_set_updated_at
    BEFORE UPDATE ON users
    FOR EACH ROW EXECUTE FUNCTION aiaas_set_updated_at();
CREATE INDEX idx_users_deletion_requested_at ON users (deletion_requested_at)
    WHERE deletion_requested_at IS NOT NULL AND anonymized_at IS NULL;
