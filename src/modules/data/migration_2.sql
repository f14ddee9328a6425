-- Migration 2 of the data module: indexes that serve reads under row-level
-- security, a change feed whose writers never wait for each other, and the
-- capture of the tenant tables other modules declare.

-- Reads and writes here see every org (the migration's own statements).
SELECT set_config('app.org', '*', true);

-- ---- Indexes under row-level security ---------------------------------------
-- A filter on a record field is `data -> 'f' <op> value`.  Under a policy,
-- PostgreSQL evaluates a condition ahead of the policy's own (as an index
-- condition) only when all its functions are LEAKPROOF, and jsonb's field
-- access and comparisons are not marked so, though they raise no error that
-- depends on their arguments.  Marking them is a superuser's act and holds
-- for this database only; without it declared indexes are made but reads
-- cannot use them, and actiond says so at start (docs/data.md).
DO $$
BEGIN
  IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
    ALTER FUNCTION pg_catalog.jsonb_object_field(jsonb, text) LEAKPROOF;
    ALTER FUNCTION pg_catalog.jsonb_eq(jsonb, jsonb) LEAKPROOF;
    ALTER FUNCTION pg_catalog.jsonb_ne(jsonb, jsonb) LEAKPROOF;
    ALTER FUNCTION pg_catalog.jsonb_lt(jsonb, jsonb) LEAKPROOF;
    ALTER FUNCTION pg_catalog.jsonb_le(jsonb, jsonb) LEAKPROOF;
    ALTER FUNCTION pg_catalog.jsonb_gt(jsonb, jsonb) LEAKPROOF;
    ALTER FUNCTION pg_catalog.jsonb_ge(jsonb, jsonb) LEAKPROOF;
  END IF;
END
$$;

-- One index per (entity name, field), shared by the orgs that declare it:
-- the org leads (every read names it), the field's value follows, and the
-- id last, so equality on the field reads in id order without sorting.
CREATE FUNCTION data_make_index(entity text, field text) RETURNS void
LANGUAGE plpgsql SET search_path = public, pg_temp AS
$$
BEGIN
  IF entity !~ '^[a-z][a-z0-9_]{0,62}$' OR field !~ '^[A-Za-z][A-Za-z0-9_]{0,62}$' THEN
    RAISE EXCEPTION 'bad index' USING ERRCODE = 'DA400';
  END IF;
  EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON data_records (org_id, (data -> %L), id) '
                 'WHERE entity = %L',
                 'data_ix_' || left(md5(entity || '.' || field), 24), field, entity);
END
$$;
REVOKE ALL ON FUNCTION data_make_index(text, text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION data_ensure_index(entity text, field text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS
$$
DECLARE
  org bigint := actiond_org();
BEGIN
  IF org IS NULL THEN
    RAISE EXCEPTION 'bad index' USING ERRCODE = 'DA400';
  END IF;
  IF EXISTS (SELECT 1 FROM data_entities WHERE org_id = org AND name = entity) THEN
    PERFORM data_make_index(entity, field);
  END IF;
END
$$;

-- The indexes of migration 1 were per org and partial on it: remade.
DO $$
DECLARE
  r record;
BEGIN
  FOR r IN SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
           WHERE i.indrelid = 'data_records'::regclass AND c.relname LIKE 'data\_ix\_%' LOOP
    EXECUTE format('DROP INDEX %I', r.relname);
  END LOOP;
  FOR r IN SELECT DISTINCT e.name, f FROM data_entities e, unnest(e.indexes) f LOOP
    PERFORM data_make_index(r.name, r.f);
  END LOOP;
END
$$;

-- Records no longer reference their entity by a foreign key: entities are
-- never deleted, data_apply() checks each write's entity and its version,
-- and the key's check locked the entity's row FOR KEY SHARE on every
-- insert, which concurrent writers of one entity paid for in multixacts.
DO $$
DECLARE
  r record;
BEGIN
  FOR r IN SELECT conname FROM pg_constraint
           WHERE conrelid = 'data_records'::regclass AND contype = 'f' LOOP
    EXECUTE format('ALTER TABLE data_records DROP CONSTRAINT %I', r.conname);
  END LOOP;
END
$$;

-- A writer holds its entities' keys shared until it commits; a
-- redefinition takes them exclusively, so no write validated against the
-- old schema commits after the new one.
CREATE FUNCTION data_entity_key(org bigint, entity text) RETURNS bigint
LANGUAGE sql IMMUTABLE AS
$$ SELECT hashtextextended('data.entity.' || org || '.' || entity, 0) $$;

-- ---- The change feed ---------------------------------------------------------
-- Writers capture their changes with no seq (id orders them);
-- data_sequence() numbers them per org under the org's feed row lock, so
-- seqs commit in order and without holes: numberings of an org run one
-- after another, each after the last one's highest seq.  The data
-- module's batches number their own at the end of their transaction;
-- other modules' writes are numbered after they commit, so their writers
-- never wait for each other.
ALTER TABLE data_changes DROP CONSTRAINT data_changes_pkey;
ALTER TABLE data_changes ALTER COLUMN seq DROP NOT NULL;
ALTER TABLE data_changes ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY;
ALTER TABLE data_changes ADD COLUMN source text NOT NULL DEFAULT 'data_records';
ALTER TABLE data_changes ADD COLUMN action text;
ALTER TABLE data_changes ADD PRIMARY KEY (id);
CREATE UNIQUE INDEX data_changes_seq ON data_changes (org_id, seq);
CREATE INDEX data_changes_pending ON data_changes (org_id, id) WHERE seq IS NULL;
DROP INDEX data_changes_tx;

-- The ids of the change rows this transaction captured, kept in a
-- transaction-local setting for the write to read back after its
-- statements (data.changes: comma-separated).
CREATE FUNCTION data_note_changes(made bigint[]) RETURNS void LANGUAGE sql AS
$$ SELECT set_config('data.changes',
                     concat_ws(',', nullif(current_setting('data.changes', true), ''),
                               array_to_string(made, ',')), true) $$;

CREATE OR REPLACE FUNCTION data_record_changes() RETURNS trigger LANGUAGE plpgsql AS
$$
DECLARE
  o text := CASE TG_OP WHEN 'INSERT' THEN 'create' WHEN 'UPDATE' THEN 'update'
                       ELSE 'delete' END;
  a text := nullif(current_setting('app.action', true), '');
  made bigint[];
  split jsonb;
BEGIN
  IF TG_OP = 'INSERT' AND current_setting('data.split', true) = 'on' THEN
    -- A batch of single creates (data_create_batch): a change per record,
    -- and which change each record got, as {"entity/id": change id}.
    WITH c AS (INSERT INTO data_changes (org_id, entity, op, ids, source, action)
               SELECT org_id, entity, o, ARRAY[id], 'data_records', a
               FROM new_rows ORDER BY org_id, entity, id
               RETURNING id, entity, ids[1] AS rid)
    SELECT coalesce(jsonb_object_agg(entity || '/' || rid, id), '{}') INTO split FROM c;
    PERFORM set_config('data.split_map', split::text, true);
    RETURN NULL;
  END IF;
  IF TG_OP = 'DELETE' THEN
    WITH c AS (INSERT INTO data_changes (org_id, entity, op, ids, source, action)
               SELECT org_id, entity, o, array_agg(id ORDER BY id), 'data_records', a
               FROM old_rows GROUP BY org_id, entity ORDER BY org_id, entity
               RETURNING id)
    SELECT array_agg(id) INTO made FROM c;
  ELSE
    WITH c AS (INSERT INTO data_changes (org_id, entity, op, ids, source, action)
               SELECT org_id, entity, o, array_agg(id ORDER BY id), 'data_records', a
               FROM new_rows GROUP BY org_id, entity ORDER BY org_id, entity
               RETURNING id)
    SELECT array_agg(id) INTO made FROM c;
  END IF;
  PERFORM data_note_changes(made);
  RETURN NULL;
END
$$;

-- The capture of another module's tenant table: its changes are entity
-- `<table>`, ids from its `id` column (when it has one).  Each org written
-- is announced to every instance's data module (a module message through
-- NOTIFY, sent if and when the transaction commits), which numbers the
-- org's changes.
CREATE FUNCTION data_table_changes() RETURNS trigger LANGUAGE plpgsql AS
$$
DECLARE
  o text := CASE TG_OP WHEN 'INSERT' THEN 'create' WHEN 'UPDATE' THEN 'update'
                       ELSE 'delete' END;
  a text := nullif(current_setting('app.action', true), '');
  made bigint[];
  orgs bigint[];
BEGIN
  IF TG_OP = 'DELETE' THEN
    WITH c AS (INSERT INTO data_changes (org_id, entity, op, ids, source, action)
               SELECT (r ->> 'org_id')::bigint, TG_TABLE_NAME, o,
                      coalesce(array_agg(r ->> 'id' ORDER BY r ->> 'id')
                               FILTER (WHERE r ? 'id'), '{}'), TG_TABLE_NAME, a
               FROM (SELECT to_jsonb(x) AS r FROM old_rows x) s
               GROUP BY 1 ORDER BY 1
               RETURNING id, org_id)
    SELECT array_agg(id), array_agg(DISTINCT org_id) INTO made, orgs FROM c;
  ELSE
    WITH c AS (INSERT INTO data_changes (org_id, entity, op, ids, source, action)
               SELECT (r ->> 'org_id')::bigint, TG_TABLE_NAME, o,
                      coalesce(array_agg(r ->> 'id' ORDER BY r ->> 'id')
                               FILTER (WHERE r ? 'id'), '{}'), TG_TABLE_NAME, a
               FROM (SELECT to_jsonb(x) AS r FROM new_rows x) s
               GROUP BY 1 ORDER BY 1
               RETURNING id, org_id)
    SELECT array_agg(id), array_agg(DISTINCT org_id) INTO made, orgs FROM c;
  END IF;
  PERFORM data_note_changes(made);
  PERFORM pg_notify('actiond', json_build_object(
            'op', 'module', 'from', 'db', 'module', 'data',
            'msg', json_build_object('org', w, 'captured', true))::text)
    FROM unnest(orgs) w;
  RETURN NULL;
END
$$;

-- The hook actiond_tenant_table() runs on each new tenant table: tables
-- with an org_id (and not the data module's own) get the capture.
CREATE FUNCTION data_capture(t regclass) RETURNS void LANGUAGE plpgsql AS
$$
DECLARE
  name text := (SELECT relname FROM pg_class WHERE oid = t);
BEGIN
  IF name LIKE 'data\_%' OR NOT EXISTS (
       SELECT 1 FROM pg_attribute WHERE attrelid = t AND attname = 'org_id'
       AND NOT attisdropped) THEN
    RETURN;
  END IF;
  EXECUTE format('CREATE TRIGGER data_capture_insert AFTER INSERT ON %s '
                 'REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT '
                 'EXECUTE FUNCTION data_table_changes()', t);
  EXECUTE format('CREATE TRIGGER data_capture_update AFTER UPDATE ON %s '
                 'REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT '
                 'EXECUTE FUNCTION data_table_changes()', t);
  EXECUTE format('CREATE TRIGGER data_capture_delete AFTER DELETE ON %s '
                 'REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT '
                 'EXECUTE FUNCTION data_table_changes()', t);
END
$$;
INSERT INTO actiond_tenant_hooks (fn) VALUES ('data_capture');

-- Numbers the org's changes that have no seq yet (committed, and this
-- transaction's own), in capture order, and answers them.  Runs at the end
-- of a data batch's transaction, or in a short one of its own after other
-- modules' writes commit.
CREATE FUNCTION data_sequence(o bigint)
RETURNS TABLE (id bigint, seq bigint, entity text, op text, ids jsonb, source text,
               action text)
LANGUAGE plpgsql AS
$$
DECLARE
  s bigint;
BEGIN
  -- Most commits a module tells of captured nothing: no lock for them.
  IF NOT EXISTS (SELECT 1 FROM data_changes c WHERE c.org_id = o AND c.seq IS NULL) THEN
    RETURN;
  END IF;
  SELECT f.last_seq INTO s FROM data_feed f WHERE f.org_id = o FOR UPDATE;
  IF NOT FOUND THEN
    INSERT INTO data_feed (org_id) VALUES (o) ON CONFLICT (org_id) DO NOTHING;
    SELECT f.last_seq INTO s FROM data_feed f WHERE f.org_id = o FOR UPDATE;
  END IF;
  -- A statement after the lock: its snapshot sees the last numbering's work.
  RETURN QUERY
    WITH p AS (SELECT c.id AS pid, s + row_number() OVER (ORDER BY c.id) AS n
               FROM data_changes c WHERE c.org_id = o AND c.seq IS NULL
               ORDER BY c.id LIMIT 5000),
         u AS (UPDATE data_changes c SET seq = p.n FROM p WHERE c.id = p.pid
               RETURNING c.id, c.seq, c.entity, c.op, to_jsonb(c.ids), c.source, c.action)
    SELECT * FROM u;
  UPDATE data_feed f SET last_seq = m.top
  FROM (SELECT max(c.seq) AS top FROM data_changes c WHERE c.org_id = o AND c.seq > s) m
  WHERE f.org_id = o AND m.top IS NOT NULL;
END
$$;

-- Numbers what no writer numbered (its instance stopped between commit and
-- sequencing): every org with changes older than a second and no seq.
-- Answers how many it numbered.
CREATE FUNCTION data_sequence_stale() RETURNS bigint LANGUAGE plpgsql AS
$$
DECLARE
  r record;
  n bigint := 0;
BEGIN
  FOR r IN SELECT DISTINCT org_id FROM data_changes
           WHERE seq IS NULL AND at < now() - interval '1 second' LOOP
    n := n + (SELECT count(*) FROM data_sequence(r.org_id));
  END LOOP;
  RETURN n;
END
$$;

-- data_apply() of migration 1, with the entity check under advisory locks
-- (no row lock on data_entities: concurrent share locks of one row cost a
-- multixact each).
CREATE OR REPLACE FUNCTION data_apply(ops jsonb, versions jsonb) RETURNS jsonb LANGUAGE plpgsql AS
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
  FOR e IN SELECT key FROM jsonb_each(versions) ORDER BY key LOOP
    PERFORM pg_advisory_xact_lock_shared(data_entity_key(org, e.key));
  END LOOP;
  FOR e IN SELECT key, value FROM jsonb_each(versions) ORDER BY key LOOP
    PERFORM 1 FROM data_entities
      WHERE org_id = org AND name = e.key AND version = (e.value #>> '{}')::bigint;
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

-- Applies the writes of one org's calls in one transaction (records.c,
-- group commit): writes is [[ops, versions, method]], each applied by
-- data_apply() in its own subtransaction, in the org's scope, so a write
-- that fails leaves the others whole; then numbers the changes they
-- captured (data_sequence(), in this transaction: the seqs commit with
-- the writes).  The answer: {writes: [{records, changes} or {state,
-- message}, ...], changes: [[id, seq, entity, op, ids, source, action]]},
-- changes of a write being the ids of its change rows ("1,2").
CREATE FUNCTION data_apply_batch(org bigint, writes jsonb) RETURNS jsonb LANGUAGE plpgsql AS
$$
DECLARE
  w jsonb;
  r jsonb;
  answer jsonb;
BEGIN
  -- The caller scoped the transaction to this org (app.org).
  IF org IS NULL OR org IS DISTINCT FROM actiond_org() THEN
    RAISE EXCEPTION 'not in the org''s scope' USING ERRCODE = 'DA400';
  END IF;
  IF NOT EXISTS (SELECT 1 FROM jsonb_array_elements(writes) AS x(v)
                 WHERE jsonb_array_length(x.v -> 0) <> 1 OR x.v -> 0 -> 0 ->> 'op' <> 'create'
                    OR x.v ->> 2 <> 'data.mutate') THEN
    BEGIN
      answer := data_create_batch(org, writes);
    EXCEPTION WHEN data_exception THEN
      answer := NULL; -- a value the database refused: one by one, to tell which
    END;
  END IF;
  IF answer IS NULL THEN
    answer := '[]';
    FOR w IN SELECT value FROM jsonb_array_elements(writes) LOOP
      BEGIN
        PERFORM set_config('app.action', w ->> 2, true);
        PERFORM set_config('data.changes', '', true);
        r := jsonb_build_object('records', data_apply(w -> 0, w -> 1),
                                'changes', nullif(current_setting('data.changes', true), ''));
      EXCEPTION WHEN OTHERS THEN
        r := jsonb_build_object('state', SQLSTATE, 'message', SQLERRM);
      END;
      answer := answer || jsonb_build_array(r);
    END LOOP;
    PERFORM set_config('app.action', '', true);
  END IF;
  RETURN jsonb_build_object('writes', answer, 'changes', (
    SELECT coalesce(jsonb_agg(jsonb_build_array(id, seq, entity, op, ids, source, action)
                              ORDER BY seq), '[]')
    FROM data_sequence(org)));
END
$$;

-- data_apply_batch() when every write is a single create (data.mutate
-- create): one INSERT for all, so one trigger run and one index pass.
-- Each write is refused alone when its entity moved on (DA428) or its id
-- exists or repeats an earlier one of the batch (DA409); the others are
-- written.  Each record gets its own change (data.split).
CREATE FUNCTION data_create_batch(org bigint, writes jsonb) RETURNS jsonb LANGUAGE plpgsql AS
$$
DECLARE
  e record;
  answer jsonb;
  m jsonb;
BEGIN
  FOR e IN SELECT DISTINCT x.v -> 0 -> 0 ->> 'entity' AS name
           FROM jsonb_array_elements(writes) AS x(v) ORDER BY 1 LOOP
    PERFORM pg_advisory_xact_lock_shared(data_entity_key(org, e.name));
  END LOOP;
  PERFORM set_config('app.action', 'data.mutate', true);
  PERFORM set_config('data.split', 'on', true);
  PERFORM set_config('data.split_map', '{}', true);
  WITH input AS (
    SELECT x.ord, x.w -> 0 -> 0 AS o, x.w -> 0 -> 0 ->> 'entity' AS entity,
           coalesce(x.w -> 0 -> 0 ->> 'id', gen_random_uuid()::text) AS rid,
           (x.w -> 1 ->> (x.w -> 0 -> 0 ->> 'entity'))::bigint AS version
    FROM jsonb_array_elements(writes) WITH ORDINALITY AS x(w, ord)),
  checked AS (
    SELECT i.*, EXISTS (SELECT 1 FROM data_entities d WHERE d.org_id = org
                        AND d.name = i.entity AND d.version = i.version) AS current,
           row_number() OVER (PARTITION BY i.entity, i.rid ORDER BY i.ord) AS nth
    FROM input i),
  ins AS (
    INSERT INTO data_records (org_id, entity, id, data)
    SELECT org, c.entity, c.rid, c.o -> 'data' FROM checked c
    WHERE c.current AND c.nth = 1 ORDER BY c.ord
    ON CONFLICT (org_id, entity, id) DO NOTHING
    RETURNING *)
  SELECT jsonb_agg(CASE
           WHEN NOT c.current THEN jsonb_build_object('state', 'DA428', 'message', 'entity changed')
           WHEN r.id IS NULL THEN jsonb_build_object('state', 'DA409', 'message', 'op 0')
           ELSE jsonb_build_object('records', jsonb_build_array(data_record_json(r)),
                                   'key', c.entity || '/' || c.rid) END ORDER BY c.ord)
  INTO answer
  FROM checked c LEFT JOIN ins r ON c.nth = 1 AND r.entity = c.entity AND r.id = c.rid;
  -- The trigger ran at the end of that statement: its map is complete.
  m := current_setting('data.split_map', true)::jsonb;
  PERFORM set_config('data.split', '', true);
  PERFORM set_config('app.action', '', true);
  RETURN (SELECT jsonb_agg(CASE WHEN a ? 'key'
                                THEN (a - 'key') || jsonb_build_object('changes', m ->> (a ->> 'key'))
                                ELSE a END ORDER BY n)
          FROM jsonb_array_elements(answer) WITH ORDINALITY AS y(a, n));
END
$$;
