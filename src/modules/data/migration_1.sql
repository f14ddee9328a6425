-- The data module: entities an org defines, their records, and the change
-- feed (PRODUCT.md 4.3).  Every table here is a tenant table.

-- An entity: its name, the JSON Schema its records must satisfy, and the
-- fields it asked indexes for.  version grows with each redefinition, so a
-- write validated against one version cannot commit under another.
CREATE TABLE data_entities (
  org_id bigint NOT NULL,
  name text NOT NULL,
  schema jsonb NOT NULL,
  indexes text[] NOT NULL DEFAULT '{}',
  version bigint NOT NULL DEFAULT 1,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (org_id, name)
);
SELECT actiond_tenant_table('data_entities');

CREATE TABLE data_records (
  org_id bigint NOT NULL,
  entity text NOT NULL,
  id text NOT NULL,
  data jsonb NOT NULL,
  version bigint NOT NULL DEFAULT 1,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (org_id, entity, id),
  FOREIGN KEY (org_id, entity) REFERENCES data_entities (org_id, name)
);
SELECT actiond_tenant_table('data_records');

-- The change feed.  data_feed holds one row per org: the last seq handed
-- out, the highest seq the retention sweep removed, and an epoch that
-- changes when the org's history is lost.  The trigger below updates the
-- org's row in the writing transaction, so the row lock serialises the
-- writers of one org until they commit: seq N + 1 never commits before N,
-- and a rolled-back write leaves neither a seq nor a change behind.
CREATE TABLE data_feed (
  org_id bigint PRIMARY KEY,
  last_seq bigint NOT NULL DEFAULT 0,
  pruned_seq bigint NOT NULL DEFAULT 0,
  epoch text NOT NULL DEFAULT md5(gen_random_uuid()::text)
);
SELECT actiond_tenant_table('data_feed');

CREATE TABLE data_changes (
  org_id bigint NOT NULL,
  seq bigint NOT NULL,
  entity text NOT NULL,
  op text NOT NULL,
  ids text[] NOT NULL,
  tx xid8 NOT NULL DEFAULT pg_current_xact_id(),
  at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (org_id, seq)
);
CREATE INDEX data_changes_tx ON data_changes (tx);
CREATE INDEX data_changes_at ON data_changes (at);
SELECT actiond_tenant_table('data_changes');

-- One change row per (org, entity) a statement on data_records wrote,
-- computed from the rows it really wrote (the transition tables).
CREATE FUNCTION data_record_changes() RETURNS trigger LANGUAGE plpgsql AS
$$
DECLARE
  r record;
  s bigint;
  o text := CASE TG_OP WHEN 'INSERT' THEN 'create' WHEN 'UPDATE' THEN 'update'
                       ELSE 'delete' END;
BEGIN
  IF TG_OP = 'DELETE' THEN
    FOR r IN SELECT org_id, entity, array_agg(id ORDER BY id) AS ids FROM old_rows
             GROUP BY org_id, entity ORDER BY org_id, entity LOOP
      INSERT INTO data_feed AS f (org_id, last_seq) VALUES (r.org_id, 1)
        ON CONFLICT (org_id) DO UPDATE SET last_seq = f.last_seq + 1
        RETURNING last_seq INTO s;
      INSERT INTO data_changes (org_id, seq, entity, op, ids)
        VALUES (r.org_id, s, r.entity, o, r.ids);
    END LOOP;
  ELSE
    FOR r IN SELECT org_id, entity, array_agg(id ORDER BY id) AS ids FROM new_rows
             GROUP BY org_id, entity ORDER BY org_id, entity LOOP
      INSERT INTO data_feed AS f (org_id, last_seq) VALUES (r.org_id, 1)
        ON CONFLICT (org_id) DO UPDATE SET last_seq = f.last_seq + 1
        RETURNING last_seq INTO s;
      INSERT INTO data_changes (org_id, seq, entity, op, ids)
        VALUES (r.org_id, s, r.entity, o, r.ids);
    END LOOP;
  END IF;
  RETURN NULL;
END
$$;

CREATE TRIGGER data_records_created AFTER INSERT ON data_records
  REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
  EXECUTE FUNCTION data_record_changes();
CREATE TRIGGER data_records_updated AFTER UPDATE ON data_records
  REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
  EXECUTE FUNCTION data_record_changes();
CREATE TRIGGER data_records_deleted AFTER DELETE ON data_records
  REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT
  EXECUTE FUNCTION data_record_changes();

-- A record as the actions answer it.
CREATE FUNCTION data_record_json(r data_records) RETURNS jsonb LANGUAGE sql STABLE AS
$$ SELECT jsonb_build_object('id', r.id, 'data', r.data, 'version', r.version,
                             'created_at', iso(r.created_at),
                             'updated_at', iso(r.updated_at)) $$;

-- Applies a list of writes of the caller's org, in order, all or nothing:
-- ops is [{op, entity, id?, data?, expected_version?}], versions is
-- {entity: version} of the schemas the records were validated against.
-- Failures raise, naming the op's index in the message:
--   DA428  an entity is gone or was redefined since (validate again)
--   DA404  update or delete of a record that does not exist
--   DA409  a create whose id exists
--   DA410  expected_version does not match the record's
-- The answer is the written records, in op order (deletes: the record as
-- it was).
CREATE FUNCTION data_apply(ops jsonb, versions jsonb) RETURNS jsonb LANGUAGE plpgsql AS
$$
DECLARE
  org bigint := actiond_org();
  e record;
  o jsonb;
  i integer := 0;
  ev bigint;
  rec data_records;
  answer jsonb := '[]';
BEGIN
  IF org IS NULL THEN
    RAISE EXCEPTION 'no org in scope' USING ERRCODE = 'DA428';
  END IF;
  FOR e IN SELECT key, value FROM jsonb_each(versions) ORDER BY key LOOP
    PERFORM 1 FROM data_entities
      WHERE org_id = org AND name = e.key AND version = (e.value #>> '{}')::bigint
      FOR SHARE;
    IF NOT FOUND THEN
      RAISE EXCEPTION 'entity changed' USING ERRCODE = 'DA428';
    END IF;
  END LOOP;
  FOR o IN SELECT value FROM jsonb_array_elements(ops) LOOP
    ev := (o->>'expected_version')::bigint;
    CASE o->>'op'
    WHEN 'create' THEN
      INSERT INTO data_records (org_id, entity, id, data)
        VALUES (org, o->>'entity', coalesce(o->>'id', gen_random_uuid()::text), o->'data')
        ON CONFLICT (org_id, entity, id) DO NOTHING
        RETURNING * INTO rec;
      IF NOT FOUND THEN
        RAISE EXCEPTION 'op %', i USING ERRCODE = 'DA409';
      END IF;
    WHEN 'upsert' THEN
      INSERT INTO data_records AS d (org_id, entity, id, data)
        VALUES (org, o->>'entity', o->>'id', o->'data')
        ON CONFLICT (org_id, entity, id) DO UPDATE
          SET data = excluded.data, version = d.version + 1, updated_at = now()
          WHERE ev IS NULL OR d.version = ev
        RETURNING * INTO rec;
      IF NOT FOUND THEN
        RAISE EXCEPTION 'op %', i USING ERRCODE = 'DA410';
      END IF;
    WHEN 'update' THEN
      UPDATE data_records SET data = o->'data', version = version + 1, updated_at = now()
        WHERE org_id = org AND entity = o->>'entity' AND id = o->>'id'
          AND (ev IS NULL OR version = ev)
        RETURNING * INTO rec;
    WHEN 'delete' THEN
      DELETE FROM data_records
        WHERE org_id = org AND entity = o->>'entity' AND id = o->>'id'
          AND (ev IS NULL OR version = ev)
        RETURNING * INTO rec;
    ELSE
      RAISE EXCEPTION 'op %', i USING ERRCODE = 'DA400';
    END CASE;
    IF NOT FOUND THEN
      IF EXISTS (SELECT 1 FROM data_records
                 WHERE org_id = org AND entity = o->>'entity' AND id = o->>'id') THEN
        RAISE EXCEPTION 'op %', i USING ERRCODE = 'DA410';
      END IF;
      RAISE EXCEPTION 'op %', i USING ERRCODE = 'DA404';
    END IF;
    answer := answer || jsonb_build_array(data_record_json(rec));
    i := i + 1;
  END LOOP;
  RETURN answer;
END
$$;

-- Makes the index an entity declared on one field: an expression index on
-- the field's JSON value over this org's records of that entity.  Runs as
-- the owner (an index is DDL), for the caller's org only; the entity and
-- field names are checked here again, and quoted as literals.
CREATE FUNCTION data_ensure_index(entity text, field text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS
$$
DECLARE
  org bigint := actiond_org();
BEGIN
  IF org IS NULL OR entity !~ '^[a-z][a-z0-9_]{0,62}$'
     OR field !~ '^[A-Za-z][A-Za-z0-9_]{0,62}$' THEN
    RAISE EXCEPTION 'bad index' USING ERRCODE = 'DA400';
  END IF;
  IF NOT EXISTS (SELECT 1 FROM data_entities WHERE org_id = org AND name = entity) THEN
    RETURN;
  END IF;
  EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON data_records ((data -> %L)) '
                 'WHERE org_id = %s AND entity = %L',
                 'data_ix_' || org || '_' || left(md5(entity || '.' || field), 16),
                 field, org, entity);
END
$$;
REVOKE ALL ON FUNCTION data_ensure_index(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION data_ensure_index(text, text) TO actiond_app;
