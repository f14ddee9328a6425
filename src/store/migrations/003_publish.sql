-- Publishes too big for a NOTIFY payload (8000 bytes) on their way to the
-- other instances: the publishing instance inserts the envelope and notifies
-- its id in the same statement; receivers read it by id.  Rows are only
-- needed for the seconds that takes, so every instance deletes those older
-- than a minute, and the table is unlogged: nothing of it needs to survive
-- a crash.
CREATE UNLOGGED TABLE publishes (
  id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  created_at  timestamptz NOT NULL DEFAULT now(),
  body        text NOT NULL
);
CREATE INDEX publishes_created ON publishes (created_at);
