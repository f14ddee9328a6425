-- An account belongs to one org.  The same email may hold an account in
-- several orgs - one person, several memberships - and each is its own row,
-- with its own password, so that creating an account in one org tells that
-- org nothing about the others (a global UNIQUE (email) answered "exists").
ALTER TABLE accounts ADD COLUMN org_id bigint REFERENCES orgs (id) ON DELETE CASCADE;
UPDATE accounts a SET org_id = (SELECT min(m.org_id) FROM memberships m WHERE m.account_id = a.id);
ALTER TABLE accounts ALTER COLUMN org_id SET NOT NULL;
ALTER TABLE accounts DROP CONSTRAINT accounts_email_key;
CREATE UNIQUE INDEX accounts_org_email ON accounts (org_id, email);
CREATE INDEX accounts_email ON accounts (email);
