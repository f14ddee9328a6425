-- Tenant isolation enforced by PostgreSQL itself.
--
-- Pooled sessions run as actiond_app: no superuser, no BYPASSRLS, not the
-- owner of any table.  Tenant tables have FORCE ROW LEVEL SECURITY and a
-- policy keyed on app.org, which every job run for a call sets (SET LOCAL)
-- to the caller's org id; when it is unset or empty the policy matches
-- nothing, so a statement run outside an org scope sees no tenant rows.
-- Migrations run as the owner.

DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'actiond_app') THEN
    CREATE ROLE actiond_app NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
  END IF;
END
$$;
-- The owner's sessions switch to it with SET ROLE.
GRANT actiond_app TO CURRENT_USER;

GRANT USAGE ON SCHEMA public TO actiond_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO actiond_app;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO actiond_app;
ALTER DEFAULT PRIVILEGES IN SCHEMA public
  GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO actiond_app;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO actiond_app;
-- Migration bookkeeping is the owner's alone.
REVOKE ALL ON schema_migrations, module_migrations FROM actiond_app;

-- The org of the current transaction, NULL when none is set.
CREATE FUNCTION actiond_org() RETURNS bigint LANGUAGE sql STABLE AS
$$ SELECT nullif(current_setting('app.org', true), '')::bigint $$;

-- Makes a table (with an org_id column) a tenant table: its rows are seen
-- and written only inside their org's scope, whoever the role.
CREATE FUNCTION actiond_tenant_table(t regclass) RETURNS void LANGUAGE plpgsql AS
$$
BEGIN
  EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', t);
  EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', t);
  EXECUTE format('CREATE POLICY tenant_scope ON %s USING (org_id = actiond_org()) '
                 'WITH CHECK (org_id = actiond_org())', t);
  EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %s TO actiond_app', t);
END
$$;

SELECT actiond_tenant_table('identity_events');
SELECT actiond_tenant_table('integration_secrets');

-- The one way identity events are written (from C: ad_audit()).
CREATE FUNCTION actiond_audit(org bigint, actor text, action text, target text)
RETURNS void LANGUAGE sql AS
$$ INSERT INTO identity_events (org_id, actor, action, target) VALUES (org, actor, action, target) $$;
