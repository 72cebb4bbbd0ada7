-- author: aiaas-db platform schema
-- Budgets per period: organizations.budget_limit_tokens now applies per budget_period (the UTC
-- calendar month by default, or the UTC day), and budget_limit_usd caps the spend in the same
-- period (NULL: no cost budget). Enforced by the API gateway (aiaas_db.BudgetTracker) against
-- the hourly rollups plus the usage events since the last rollup.

ALTER TABLE organizations ADD COLUMN budget_period text NOT NULL DEFAULT 'month';
ALTER TABLE organizations ADD COLUMN budget_limit_usd numeric(14, 4) NULL;
ALTER TABLE organizations ADD CONSTRAINT ck_organizations_budget_period
    CHECK (budget_period IN ('day', 'month'));
ALTER TABLE organizations ADD CONSTRAINT ck_organizations_budget_limit_usd
    CHECK (budget_limit_usd IS NULL OR budget_limit_usd >= 0);
COMMENT ON COLUMN organizations.budget_limit_tokens IS
    'Tokens the organisation may consume per budget_period (>= 0; 0 means no tokens granted).';
COMMENT ON COLUMN organizations.budget_period IS
    'Period the budgets apply to: month (UTC calendar month, the default) or day (UTC day).';
COMMENT ON COLUMN organizations.budget_limit_usd IS
    'Spend (usage_events.cost_usd) the organisation may reach per budget_period, in USD (>= 0); NULL: no cost budget.';
