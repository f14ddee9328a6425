-- Background work of no call (a module's sweeper, say) runs with app.org
-- set to '*' and may see every org's tenant rows; a call's transaction
-- always sets app.org to its org's id, or to nothing.  The tenant policies
-- are remade to say so.
CREATE OR REPLACE FUNCTION actiond_org() RETURNS bigint LANGUAGE sql STABLE AS
$$ SELECT CASE WHEN s ~ '^[0-9]{1,18}$' THEN s::bigint END
   FROM (SELECT current_setting('app.org', true) AS s) x $$;

CREATE FUNCTION actiond_all_orgs() RETURNS boolean LANGUAGE sql STABLE AS
$$ SELECT coalesce(current_setting('app.org', true) = '*', false) $$;

CREATE OR REPLACE FUNCTION actiond_tenant_table(t regclass) RETURNS void LANGUAGE plpgsql AS
$$
BEGIN
  EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', t);
  EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', t);
  EXECUTE format('DROP POLICY IF EXISTS tenant_scope ON %s', t);
  EXECUTE format('CREATE POLICY tenant_scope ON %s '
                 'USING (org_id = actiond_org() OR actiond_all_orgs()) '
                 'WITH CHECK (org_id = actiond_org() OR actiond_all_orgs())', t);
  EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %s TO actiond_app', t);
END
$$;

SELECT actiond_tenant_table('identity_events');
SELECT actiond_tenant_table('integration_secrets');
