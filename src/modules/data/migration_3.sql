-- Migration 3 of the data module: a batch of single creates numbers its
-- own changes as it writes them.
--
-- Before, data_create_batch() inserted the records, the capture trigger
-- inserted a change row per record with no seq (and handed their ids back
-- through a setting as a JSON map), and data_sequence() then updated every
-- one of those rows with its seq: three writes of the change table per
-- record, and two passes over JSON.  Now the batch inserts its records,
-- then, under its org's feed lock, their changes with their seqs: one
-- write of the change table per record.  The trigger stands aside for the
-- records' statement (data.split): the function captures them itself.

SELECT set_config('app.org', '*', true);

-- ---- Indexes that serve the order too ---------------------------------------
--
-- Reads order a data field as the index holds it, records without the
-- field first (NULLS FIRST): an order_by on a declared field then reads
-- the index in order, instead of sorting every record of the entity, and
-- filters on the field use it as before.
CREATE OR REPLACE FUNCTION data_make_index(entity text, field text) RETURNS void
LANGUAGE plpgsql SET search_path = public, pg_temp AS
$$
BEGIN
  IF entity !~ '^[a-z][a-z0-9_]{0,62}$' OR field !~ '^[A-Za-z][A-Za-z0-9_]{0,62}$' THEN
    RAISE EXCEPTION 'bad index' USING ERRCODE = 'DA400';
  END IF;
  EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON data_records '
                 '(org_id, (data -> %L) NULLS FIRST, id) WHERE entity = %L',
                 'data_ix2_' || left(md5(entity || '.' || field), 24), field, entity);
END
$$;
REVOKE ALL ON FUNCTION data_make_index(text, text) FROM PUBLIC;

DO $$
DECLARE
  r record;
BEGIN
  FOR r IN SELECT DISTINCT e.name, f FROM data_entities e, unnest(e.indexes) f LOOP
    PERFORM data_make_index(r.name, r.f);
  END LOOP;
  FOR r IN SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
           WHERE i.indrelid = 'data_records'::regclass AND c.relname LIKE 'data\_ix\_%' LOOP
    EXECUTE format('DROP INDEX %I', r.relname);
  END LOOP;
END
$$;

-- Locks the org's feed row to the end of the transaction and answers its
-- last seq (making the row if the org has none yet).
CREATE FUNCTION data_feed_lock(o bigint) RETURNS bigint LANGUAGE plpgsql AS
$$
DECLARE
  s bigint;
BEGIN
  SELECT f.last_seq INTO s FROM data_feed f WHERE f.org_id = o FOR UPDATE;
  IF NOT FOUND THEN
    INSERT INTO data_feed (org_id) VALUES (o) ON CONFLICT (org_id) DO NOTHING;
    SELECT f.last_seq INTO s FROM data_feed f WHERE f.org_id = o FOR UPDATE;
  END IF;
  RETURN s;
END
$$;

CREATE OR REPLACE FUNCTION data_record_changes() RETURNS trigger LANGUAGE plpgsql AS
$$
DECLARE
  o text := CASE TG_OP WHEN 'INSERT' THEN 'create' WHEN 'UPDATE' THEN 'update'
                       ELSE 'delete' END;
  a text := nullif(current_setting('app.action', true), '');
  made bigint[];
BEGIN
  IF TG_OP = 'INSERT' AND current_setting('data.split', true) = 'on' THEN
    RETURN NULL; -- data_create_batch(): the statement captured its records
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

-- data_apply_batch() when every write is a single create (data.mutate
-- create).  When the writes name no ids, see below; else one statement
-- inserts every record, a second, under the org's feed lock, their
-- numbered changes (one per record, in the order of the
-- writes).  The lock comes after the records: batches of an org from two
-- instances write their records at the same time and wait for each other
-- only to number.
-- Each write is refused alone when its entity moved on (DA428) or its id
-- exists or repeats an earlier one of the batch (DA409); the others are
-- written.  Answers {writes, changes} as data_apply_batch() does.
DROP FUNCTION data_create_batch(bigint, jsonb);
CREATE FUNCTION data_create_batch(org bigint, writes jsonb) RETURNS jsonb LANGUAGE plpgsql AS
$$
DECLARE
  e record;
  base bigint;
  answer jsonb;
  numbered jsonb;
  made bigint;
  ents text[];
  rids text[];
  oks bigint[];
BEGIN
  FOR e IN SELECT DISTINCT x.v -> 0 -> 0 ->> 'entity' AS name
           FROM jsonb_array_elements(writes) AS x(v) ORDER BY 1 LOOP
    PERFORM pg_advisory_xact_lock_shared(data_entity_key(org, e.name));
  END LOOP;
  PERFORM set_config('data.split', 'on', true);
  IF NOT EXISTS (SELECT 1 FROM jsonb_array_elements(writes) AS x(v) WHERE x.v -> 0 -> 0 ? 'id') THEN
    -- Every id is made here, so none exists or repeats: one statement
    -- numbers, writes the records and their changes, and answers from
    -- what it wrote (the defaults: version 1, both times now()), with no
    -- join between them.  The feed lock comes first.
    base := data_feed_lock(org);
    WITH input AS (
      SELECT x.ord, x.w -> 0 -> 0 -> 'data' AS data, x.w -> 0 -> 0 ->> 'entity' AS entity,
             gen_random_uuid()::text AS rid,
             (x.w -> 1 ->> (x.w -> 0 -> 0 ->> 'entity'))::bigint AS version
      FROM jsonb_array_elements(writes) WITH ORDINALITY AS x(w, ord)),
    cur AS (
      SELECT d.name, d.version FROM data_entities d
      WHERE d.org_id = org AND d.name IN (SELECT DISTINCT i.entity FROM input i)),
    numbered AS (
      SELECT i.*, c.name IS NOT NULL AS current,
             CASE WHEN c.name IS NOT NULL
                  THEN base + count(c.name) OVER (ORDER BY i.ord) END AS seq
      FROM input i LEFT JOIN cur c ON c.name = i.entity AND c.version = i.version),
    ins AS (
      INSERT INTO data_records (org_id, entity, id, data)
      SELECT org, n.entity, n.rid, n.data FROM numbered n WHERE n.current ORDER BY n.ord),
    ch AS (
      INSERT INTO data_changes (org_id, seq, entity, op, ids, source, action)
      SELECT org, n.seq, n.entity, 'create', ARRAY[n.rid], 'data_records', 'data.mutate'
      FROM numbered n WHERE n.current ORDER BY n.seq
      RETURNING id, seq, entity, ids)
    SELECT jsonb_agg(CASE WHEN n.current
             THEN jsonb_build_object('records', jsonb_build_array(jsonb_build_object(
                    'id', n.rid, 'data', n.data, 'version', 1,
                    'created_at', t.at, 'updated_at', t.at)), 'seq', n.seq)
             ELSE jsonb_build_object('state', 'DA428', 'message', 'entity changed') END
             ORDER BY n.ord),
           max(n.seq),
           (SELECT coalesce(jsonb_agg(jsonb_build_array(h.id, h.seq, h.entity, 'create',
                                                        to_jsonb(h.ids), 'data_records',
                                                        'data.mutate') ORDER BY h.seq), '[]')
            FROM ch h)
    INTO answer, made, numbered
    FROM numbered n, (SELECT iso(now()) AS at) t;
    PERFORM set_config('data.split', '', true);
    IF made IS NOT NULL THEN
      UPDATE data_feed SET last_seq = made WHERE org_id = org;
    END IF;
    RETURN jsonb_build_object('writes', answer, 'changes', numbered);
  END IF;
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
           ELSE jsonb_build_object('records', jsonb_build_array(data_record_json(r))) END
           ORDER BY c.ord),
         array_agg(r.entity ORDER BY c.ord) FILTER (WHERE r.id IS NOT NULL),
         array_agg(r.id ORDER BY c.ord) FILTER (WHERE r.id IS NOT NULL),
         array_agg(c.ord ORDER BY c.ord) FILTER (WHERE r.id IS NOT NULL)
  INTO answer, ents, rids, oks
  FROM checked c LEFT JOIN ins r ON c.nth = 1 AND r.entity = c.entity AND r.id = c.rid;
  PERFORM set_config('data.split', '', true);
  IF oks IS NULL THEN
    RETURN jsonb_build_object('writes', answer, 'changes', '[]'::jsonb);
  END IF;
  base := data_feed_lock(org);
  WITH ch AS (
    INSERT INTO data_changes (org_id, seq, entity, op, ids, source, action)
    SELECT org, base + u.n, u.e, 'create', ARRAY[u.i], 'data_records', 'data.mutate'
    FROM unnest(ents, rids) WITH ORDINALITY AS u(e, i, n) ORDER BY u.n
    RETURNING id, seq, entity, ids)
  SELECT (SELECT jsonb_agg(CASE WHEN h.id IS NULL THEN x.a
                                ELSE x.a || jsonb_build_object('changes', h.id::text) END
                           ORDER BY x.o)
          FROM jsonb_array_elements(answer) WITH ORDINALITY AS x(a, o)
          LEFT JOIN unnest(oks) WITH ORDINALITY AS k(ord, n) ON k.ord = x.o
          LEFT JOIN ch h ON h.seq = base + k.n),
         (SELECT jsonb_agg(jsonb_build_array(h.id, h.seq, h.entity, 'create', to_jsonb(h.ids),
                                             'data_records', 'data.mutate') ORDER BY h.seq)
          FROM ch h),
         (SELECT max(h.seq) FROM ch h)
  INTO answer, numbered, made;
  UPDATE data_feed SET last_seq = made WHERE org_id = org;
  RETURN jsonb_build_object('writes', answer, 'changes', numbered);
END
$$;

-- As migration 2's, with data_create_batch() answering its own numbered
-- changes; data_sequence() still numbers what else the org has pending.
CREATE OR REPLACE FUNCTION data_apply_batch(org bigint, writes jsonb) RETURNS jsonb LANGUAGE plpgsql AS
$$
DECLARE
  w jsonb;
  r jsonb;
  answer jsonb;
  numbered jsonb := '[]';
BEGIN
  -- The caller scoped the transaction to this org (app.org).
  IF org IS NULL OR org IS DISTINCT FROM actiond_org() THEN
    RAISE EXCEPTION 'not in the org''s scope' USING ERRCODE = 'DA400';
  END IF;
  IF NOT EXISTS (SELECT 1 FROM jsonb_array_elements(writes) AS x(v)
                 WHERE jsonb_array_length(x.v -> 0) <> 1 OR x.v -> 0 -> 0 ->> 'op' <> 'create'
                    OR x.v ->> 2 <> 'data.mutate') THEN
    BEGIN
      r := data_create_batch(org, writes);
      answer := r -> 'writes';
      numbered := r -> 'changes';
    EXCEPTION WHEN data_exception OR unique_violation THEN
      -- A value the database refused (or a made id that exists): one by
      -- one, to tell which.
      answer := NULL;
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
  RETURN jsonb_build_object('writes', answer, 'changes', numbered || (
    SELECT coalesce(jsonb_agg(jsonb_build_array(id, seq, entity, op, ids, source, action)
                              ORDER BY seq), '[]')
    FROM data_sequence(org)));
END
$$;
