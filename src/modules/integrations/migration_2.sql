-- OAuth2 refresh-token credentials: what actiond keeps of each, next to
-- the credential an admin set (integration_secrets).

-- One row per org and integration whose credential is an OAuth2 client
-- with a refresh token.  secret_nonce names the integration_secrets row
-- this state belongs to: when an admin sets the credential again, its
-- nonce changes and everything here is reset before use.  Tokens are
-- sealed (nonce || MAC || ciphertext) under the master key's sealing key.
--
-- version counts what happened to the row (a refresh stored, failed or
-- found the credential broken, a reset); a refresh is claimed by the one
-- process that sets lease_owner and lease_until on the version it saw, and
-- the others wait for the version to change.
CREATE TABLE integration_oauth (
  org_id          bigint NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
  integration     text NOT NULL,
  secret_nonce    bytea NOT NULL,
  version         bigint NOT NULL DEFAULT 0,
  access_sealed   bytea,
  expires_at      timestamptz,
  refresh_sealed  bytea,            -- a refresh token the server rotated to
  status          text NOT NULL DEFAULT 'ok' CHECK (status IN ('ok', 'broken')),
  reason          text CHECK (length(reason) <= 500),
  last_error      text CHECK (length(last_error) <= 500),
  lease_owner     text,
  lease_until     timestamptz,
  refreshed_at    timestamptz,
  refreshes       bigint NOT NULL DEFAULT 0,
  PRIMARY KEY (org_id, integration)
);
SELECT actiond_tenant_table('integration_oauth');
