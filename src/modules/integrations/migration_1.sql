-- Integration invocations and their tamper-evident event chain.

-- One row per call of an integration action, whatever became of it.
-- Ids are 128 random bits in hex: nothing about other rows can be read
-- from one.  params are kept as proposed (they run after an approval);
-- every read path shows them redacted.
CREATE TABLE invocations (
  seq               bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
  id                text PRIMARY KEY CHECK (id ~ '^[0-9a-f]{32}$'),
  org_id            bigint NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
  agent_session_id  bigint NOT NULL REFERENCES agent_sessions (id) ON DELETE CASCADE,
  integration       text NOT NULL,
  action            text NOT NULL,
  risk              text NOT NULL CHECK (risk IN ('read', 'write', 'danger')),
  status            text NOT NULL CHECK (status IN ('pending', 'approved', 'executing',
                      'completed', 'failed', 'denied', 'expired')),
  params            jsonb NOT NULL,
  params_hash       text NOT NULL CHECK (params_hash ~ '^[0-9a-f]{64}$'),
  deadline          timestamptz,
  decided_by        text,
  decided_at        timestamptz,
  reason            text,
  comment           text,
  result            jsonb,
  error             text,
  upstream_status   int,
  created_at        timestamptz NOT NULL DEFAULT now(),
  started_at        timestamptz,
  finished_at       timestamptz,
  idempotency_key   text CHECK (length(idempotency_key) <= 255),
  runner            text        -- the process running it (executing)
);
CREATE INDEX invocations_session_status ON invocations (agent_session_id, status);
CREATE INDEX invocations_org_created ON invocations (org_id, created_at);
CREATE INDEX invocations_org_seq ON invocations (org_id, seq);
CREATE INDEX invocations_status_deadline ON invocations (status, deadline)
  WHERE status IN ('pending', 'approved', 'executing');
CREATE UNIQUE INDEX invocations_idempotency ON invocations (agent_session_id, idempotency_key)
  WHERE idempotency_key IS NOT NULL;
SELECT actiond_tenant_table('invocations');

-- Append-only: rows are inserted in the transaction that made the change
-- they record, then linked into their org's chain (seq, prev_hash, hash)
-- once, by the module's chainer: hash = BLAKE2b-256(prev_hash || the
-- canonical row).  The runtime role may update the link columns of an
-- unlinked row and nothing else, and may delete nothing.
CREATE TABLE invocation_events (
  id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  org_id         bigint NOT NULL REFERENCES orgs (id),
  invocation_id  text NOT NULL,
  at             timestamptz NOT NULL DEFAULT now(),
  event          text NOT NULL,
  actor          text NOT NULL,
  detail         jsonb NOT NULL DEFAULT '{}',
  seq            bigint,
  prev_hash      text,
  hash           text,
  UNIQUE (org_id, seq)
);
CREATE INDEX invocation_events_unlinked ON invocation_events (id) WHERE seq IS NULL;
SELECT actiond_tenant_table('invocation_events');
REVOKE UPDATE, DELETE ON invocation_events FROM actiond_app;
GRANT UPDATE (seq, prev_hash, hash) ON invocation_events TO actiond_app;

CREATE FUNCTION invocation_events_link_once() RETURNS trigger LANGUAGE plpgsql AS
$$
BEGIN
  IF OLD.seq IS NOT NULL THEN
    RAISE EXCEPTION 'invocation events are append-only';
  END IF;
  RETURN NEW;
END
$$;
CREATE TRIGGER invocation_events_link_once BEFORE UPDATE ON invocation_events
  FOR EACH ROW EXECUTE FUNCTION invocation_events_link_once();

-- The processes running invocations, so that an invocation left executing
-- by one that is gone can be failed (never re-run).
CREATE TABLE integration_runners (
  id       text PRIMARY KEY,
  seen_at  timestamptz NOT NULL DEFAULT now()
);
GRANT SELECT, INSERT, UPDATE, DELETE ON integration_runners TO actiond_app;
