-- Orgs, accounts, and every credential that can authenticate a caller.
--
-- Tokens are never stored: token_hash is a keyed BLAKE2b-256 of the token
-- (key derived from the master key, which never enters the database).

-- Timestamps leave the database as ISO 8601 UTC text, the wire format.
CREATE FUNCTION iso(t timestamptz) RETURNS text LANGUAGE sql STABLE AS
$$ SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') $$;

CREATE TABLE orgs (
  id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  slug        text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
  name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
  created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE accounts (
  id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  email         text NOT NULL UNIQUE CHECK (email = lower(email) AND length(email) BETWEEN 3 AND 254),
  password_hash text NOT NULL,           -- Argon2id, libsodium's crypto_pwhash_str
  disabled_at   timestamptz,
  created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE memberships (
  org_id      bigint NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
  account_id  bigint NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
  role        text NOT NULL CHECK (role IN ('member', 'admin', 'owner')),
  created_at  timestamptz NOT NULL DEFAULT now(),
  disabled_at timestamptz,               -- admin.account_disable: org-scoped
  PRIMARY KEY (org_id, account_id)
);

CREATE TABLE agent_sessions (
  id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  org_id        bigint NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
  name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
  integrations  text[] NOT NULL DEFAULT '{}',
  created_by    bigint REFERENCES accounts (id),
  created_at    timestamptz NOT NULL DEFAULT now(),
  revoked_at    timestamptz
);
CREATE INDEX agent_sessions_org ON agent_sessions (org_id, id);

-- Sessions (browser logins), API tokens and agent tokens: one row each,
-- revocable one by one.
CREATE TABLE credentials (
  id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  kind             text NOT NULL CHECK (kind IN ('session', 'api_token', 'agent_token')),
  org_id           bigint NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
  account_id       bigint REFERENCES accounts (id) ON DELETE CASCADE,
  agent_session_id bigint REFERENCES agent_sessions (id) ON DELETE CASCADE,
  token_hash       bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),
  name             text,
  created_at       timestamptz NOT NULL DEFAULT now(),
  expires_at       timestamptz,
  revoked_at       timestamptz,
  CHECK ((kind = 'agent_token') = (agent_session_id IS NOT NULL)),
  CHECK (kind = 'agent_token' OR account_id IS NOT NULL)
);
CREATE INDEX credentials_account ON credentials (account_id) WHERE revoked_at IS NULL;
CREATE INDEX credentials_org ON credentials (org_id, kind, id);

-- Integration secrets, sealed with libsodium secretbox under a key derived
-- from the master key.
CREATE TABLE integration_secrets (
  org_id       bigint NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
  integration  text NOT NULL CHECK (integration ~ '^[a-z][a-z0-9_]{0,62}$'),
  nonce        bytea NOT NULL CHECK (length(nonce) = 24),
  sealed       bytea NOT NULL,
  updated_by   bigint REFERENCES accounts (id),
  updated_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (org_id, integration)
);

-- Who did what to identity: logins, token and session changes, revocations.
CREATE TABLE identity_events (
  id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  org_id      bigint REFERENCES orgs (id) ON DELETE CASCADE,
  at          timestamptz NOT NULL DEFAULT now(),
  actor       text NOT NULL,            -- a credential id such as "api_token:12"
  action      text NOT NULL,
  target      text,
  detail      jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX identity_events_org ON identity_events (org_id, id);

-- Every running actiond instance, so that a revocation can wait until all
-- of them have closed the sockets it covers.
CREATE TABLE instances (
  id          text PRIMARY KEY,
  started_at  timestamptz NOT NULL DEFAULT now(),
  seen_at     timestamptz NOT NULL DEFAULT now()
);
