-- author: aiaas-db platform schema
-- aiaas:destructive
-- Drops the model registry (with its history) and the API keys.
DROP TRIGGER trg_model_registry_entries_record_change ON model_registry_entries;
DROP FUNCTION aiaas_model_registry_entries_record_change();
DROP INDEX idx_model_registry_entry_changes_entry_id_changed_at;
DROP TABLE model_registry_entry_changes;
DROP TRIGGER trg_model_registry_entries_set_updated_at ON model_registry_entries;
DROP INDEX idx_model_registry_entries_name;
DROP TABLE model_registry_entries;
DROP TRIGGER trg_api_keys_set_updated_at ON api_keys;
DROP TRIGGER trg_api_keys_require_active_org ON api_keys;
DROP FUNCTION aiaas_api_keys_require_active_org();
DROP INDEX idx_api_keys_created_by_user_id;
DROP TABLE api_keys;
