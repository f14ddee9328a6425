-- Functions run for each table that actiond_tenant_table() makes a tenant
-- table for the first time, after its policy is made: how a module acts on
-- the tenant tables other modules declare after it (the data module's
-- change capture does).  A hook takes the table (regclass).
CREATE TABLE actiond_tenant_hooks (
  fn regproc PRIMARY KEY
);

CREATE OR REPLACE FUNCTION actiond_tenant_table(t regclass) RETURNS void LANGUAGE plpgsql AS
$$
DECLARE
  fresh boolean := NOT EXISTS (SELECT 1 FROM pg_policy
                               WHERE polrelid = t AND polname = 'tenant_scope');
  h record;
BEGIN
  EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', t);
  EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', t);
  EXECUTE format('DROP POLICY IF EXISTS tenant_scope ON %s', t);
  EXECUTE format('CREATE POLICY tenant_scope ON %s '
                 'USING (org_id = actiond_org() OR actiond_all_orgs()) '
                 'WITH CHECK (org_id = actiond_org() OR actiond_all_orgs())', t);
  EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %s TO actiond_app', t);
  IF fresh THEN
    FOR h IN SELECT fn FROM actiond_tenant_hooks ORDER BY fn::text LOOP
      EXECUTE format('SELECT %s($1)', h.fn) USING t;
    END LOOP;
  END IF;
END
$$;
