-- Migration 4 of the data module: a batch of single creates is one change
-- per entity, not one per record.
--
-- The writes of a batch commit together in one transaction, so they are
-- one event for the feed, as a statement's writes are for the capture
-- trigger: one change row per entity the batch created records of, its ids
-- in the order of the writes, and each write answers the seq of its
-- entity's change.  A change row costs four index and heap writes (id, seq,
-- time): per record they were about half of a create's WAL.

SELECT set_config('app.org', '*', true);

CREATE OR REPLACE FUNCTION data_create_batch(org bigint, writes jsonb) RETURNS jsonb LANGUAGE plpgsql AS
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
    -- numbers, writes the records and their changes, and answers each
    -- write [id, seq, time]: the caller has the data it sent, the version
    -- is 1 and both times are now().  The feed lock comes first.
    base := data_feed_lock(org);
    WITH input AS (
      SELECT x.ord, x.w -> 0 -> 0 -> 'data' AS data, x.w -> 0 -> 0 ->> 'entity' AS entity,
             gen_random_uuid()::text AS rid,
             (x.w -> 1 ->> (x.w -> 0 -> 0 ->> 'entity'))::bigint AS version
      FROM jsonb_array_elements(writes) WITH ORDINALITY AS x(w, ord)),
    cur AS (
      SELECT d.name, d.version FROM data_entities d
      WHERE d.org_id = org AND d.name IN (SELECT DISTINCT i.entity FROM input i)),
    checked AS (
      SELECT i.*, c.name IS NOT NULL AS current
      FROM input i LEFT JOIN cur c ON c.name = i.entity AND c.version = i.version),
    ents AS (
      SELECT k.entity, base + row_number() OVER (ORDER BY k.entity) AS seq
      FROM (SELECT DISTINCT c.entity FROM checked c WHERE c.current) k),
    ins AS (
      INSERT INTO data_records (org_id, entity, id, data)
      SELECT org, c.entity, c.rid, c.data FROM checked c WHERE c.current ORDER BY c.ord),
    ch AS (
      INSERT INTO data_changes (org_id, seq, entity, op, ids, source, action)
      SELECT org, s.seq, s.entity, 'create', array_agg(c.rid ORDER BY c.ord), 'data_records',
             'data.mutate'
      FROM checked c JOIN ents s ON s.entity = c.entity
      GROUP BY s.seq, s.entity ORDER BY s.seq
      RETURNING id, seq, entity, ids)
    SELECT jsonb_agg(CASE WHEN c.current THEN jsonb_build_array(c.rid, s.seq, t.at)
             ELSE jsonb_build_object('state', 'DA428', 'message', 'entity changed') END
             ORDER BY c.ord),
           (SELECT max(s2.seq) FROM ents s2),
           (SELECT coalesce(jsonb_agg(jsonb_build_array(h.id, h.seq, h.entity, 'create',
                                                        to_jsonb(h.ids), 'data_records',
                                                        'data.mutate') ORDER BY h.seq), '[]')
            FROM ch h)
    INTO answer, made, numbered
    FROM checked c LEFT JOIN ents s ON s.entity = c.entity, (SELECT iso(now()) AS at) t;
    PERFORM set_config('data.split', '', true);
    IF made IS NOT NULL THEN
      UPDATE data_feed SET last_seq = made WHERE org_id = org;
    END IF;
    RETURN jsonb_build_object('writes', answer, 'changes', numbered);
  END IF;
  -- Some writes name their ids: one statement inserts the records (a write
  -- whose id exists or repeats an earlier one of the batch is refused
  -- alone), a second, under the org's feed lock, their changes.  The lock
  -- comes after the records: batches of an org from two instances write
  -- their records at the same time and wait for each other only to
  -- number.
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
  WITH kept AS (
    SELECT u.e, u.i, u.o FROM unnest(ents, rids, oks) AS u(e, i, o)),
  seqs AS (
    SELECT k.e, base + row_number() OVER (ORDER BY k.e) AS seq
    FROM (SELECT DISTINCT m.e FROM kept m) k),
  ch AS (
    INSERT INTO data_changes (org_id, seq, entity, op, ids, source, action)
    SELECT org, s.seq, s.e, 'create', array_agg(m.i ORDER BY m.o), 'data_records', 'data.mutate'
    FROM kept m JOIN seqs s ON s.e = m.e
    GROUP BY s.seq, s.e ORDER BY s.seq
    RETURNING id, seq, entity, ids)
  SELECT (SELECT jsonb_agg(CASE WHEN m.o IS NULL THEN x.a
                                ELSE x.a || jsonb_build_object('seq', s.seq) END
                           ORDER BY x.o)
          FROM jsonb_array_elements(answer) WITH ORDINALITY AS x(a, o)
          LEFT JOIN kept m ON m.o = x.o
          LEFT JOIN seqs s ON s.e = m.e),
         (SELECT jsonb_agg(jsonb_build_array(h.id, h.seq, h.entity, 'create', to_jsonb(h.ids),
                                             'data_records', 'data.mutate') ORDER BY h.seq)
          FROM ch h),
         (SELECT max(s.seq) FROM seqs s)
  INTO answer, numbered, made;
  UPDATE data_feed SET last_seq = made WHERE org_id = org;
  RETURN jsonb_build_object('writes', answer, 'changes', numbered);
END
$$;
