-- author: aiaas-db platform schema
-- aiaas:destructive
-- Drops the audit log with its entries.
DROP TRIGGER trg_audit_log_entries_no_truncate ON audit_log_entries;
DROP TRIGGER trg_audit_log_entries_append_only ON audit_log_entries;
DROP FUNCTION aiaas_audit_log_entries_append_only();
DROP INDEX idx_audit_log_entries_action_occurred_at;
DROP INDEX idx_audit_log_entries_actor_id_occurred_at;
DROP INDEX idx_audit_log_entries_occurred_at;
DROP TABLE audit_log_entries;
