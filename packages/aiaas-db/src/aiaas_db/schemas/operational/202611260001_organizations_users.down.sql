-- author: aiaas-db platform schema
-- aiaas:destructive
-- Drops users and organizations (and their data).
DROP INDEX idx_users_deletion_requested_at;
DROP TRIGGER trg_users_set_updated_at ON users;
DROP TABLE users;
DROP TRIGGER trg_organizations_set_updated_at ON organizations;
DROP TRIGGER trg_organizations_slug_immutable ON organizations;
DROP FUNCTION aiaas_organizations_slug_immutable();
DROP TABLE organizations;
DROP FUNCTION aiaas_set_updated_at();
