-- author: aiaas-db platform schema
-- aiaas:destructive
-- Drops the budget period and the cost budget (budget_limit_tokens stays, without a period).
ALTER TABLE organizations DROP CONSTRAINT ck_organizations_budget_limit_usd;
ALTER TABLE organizations DROP CONSTRAINT ck_organizations_budget_period;
ALTER TABLE organizations DROP COLUMN budget_limit_usd;
ALTER TABLE organizations DROP COLUMN budget_period;
COMMENT ON COLUMN organizations.budget_limit_tokens IS
    'Token budget of the organisation (>= 0; 0 means no tokens granted).';
