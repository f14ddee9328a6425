/*
 * bootstrap.c - `actiond bootstrap`: the first org and its owner, without a
 * running admin.
 *
 * Creates (in one transaction) the org, an owner account with the given or a
 * generated password, an API token for that owner and an agent session with
 * its token, and prints them: enough to try every action at once.  A server
 * already running on the same database learns the new credentials through
 * the same NOTIFY a server-side creation sends.
 */
#include "bootstrap.h"
#include "embedded.h"
#include "keys.h"
#include "log.h"
#include "migrate.h"

#include <libpq-fe.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool exec_ok(PGconn *c, PGresult *r, const char *what)
{
	ExecStatusType st = PQresultStatus(r);

	if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
		return true;
	fprintf(stderr, "actiond bootstrap: %s: %s", what, PQerrorMessage(c));
	return false;
}

/* Runs a statement that returns one id; copies it into idbuf. */
static bool insert_id(PGconn *c, const char *sql, int n, const char *const *params,
		      const char *what, char idbuf[32])
{
	PGresult *r = PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);
	bool ok = exec_ok(c, r, what) && PQntuples(r) == 1;

	if (ok)
		snprintf(idbuf, 32, "%s", PQgetvalue(r, 0, 0));
	PQclear(r);
	return ok;
}

/* Inserts a credential (announced to running servers); its id in idbuf. */
static bool add_credential(PGconn *c, const char *kind, const char *org_id,
			   const char *account_id, const char *agent_id,
			   const char *name, const struct ad_token *t, char idbuf[32])
{
	const char *p[6] = { kind, org_id, account_id, agent_id, t->hex, name };

	return insert_id(c,
			 "WITH ins AS (INSERT INTO credentials (kind, org_id, account_id, "
			 "agent_session_id, token_hash, name) VALUES ($1, $2, "
			 "nullif($3, '')::bigint, nullif($4, '')::bigint, decode($5, 'hex'), $6) "
			 "RETURNING id) SELECT id, pg_notify('actiond', json_build_object("
			 "'op', 'cred', 'id', id, 'from', 'bootstrap')::text) FROM ins",
			 6, p, kind, idbuf);
}

int ad_bootstrap(const char *conninfo, const struct ad_bootstrap_opts *o)
{
	char password[64], pwhash[crypto_pwhash_STRBYTES];
	struct ad_token api_token, agent_token;
	char org_id[32], account_id[32], agent_id[32], cred_id[32];
	const char *pw = o->password;
	PGconn *c;
	PGresult *r;
	int ret = 1;

	if (!pw) {
		unsigned char raw[12];

		randombytes_buf(raw, sizeof(raw));
		sodium_bin2base64(password, sizeof(password), raw, sizeof(raw),
				  sodium_base64_VARIANT_URLSAFE_NO_PADDING);
		pw = password;
	}
	if (strlen(pw) < 8) {
		fprintf(stderr, "actiond bootstrap: the password needs 8 characters or more\n");
		return 2;
	}
	if (crypto_pwhash_str(pwhash, pw, strlen(pw), crypto_pwhash_OPSLIMIT_INTERACTIVE,
			      crypto_pwhash_MEMLIMIT_INTERACTIVE)) {
		fprintf(stderr, "actiond bootstrap: out of memory hashing the password\n");
		return 1;
	}
	/* The same issuing path as account.token_create and agent sessions. */
	ad_token_new("adt_", &api_token);
	ad_token_new("ada_", &agent_token);

	c = PQconnectdb(conninfo);
	if (PQstatus(c) != CONNECTION_OK) {
		fprintf(stderr, "actiond bootstrap: %s", PQerrorMessage(c));
		goto out;
	}
	PQclear(PQexec(c, "BEGIN"));
	{
		const char *org_p[2] = { o->org, o->org_name ? o->org_name : o->org };
		const char *acct_p[3] = { o->email, pwhash, org_id };
		const char *agent_p[2] = { org_id, account_id };

		if (!insert_id(c, "INSERT INTO orgs (slug, name) VALUES ($1, $2) RETURNING id",
			       2, org_p, "org (does it exist already?)", org_id) ||
		    !insert_id(c,
			       "WITH a AS (INSERT INTO accounts (org_id, email, password_hash) "
			       "VALUES ($3::bigint, lower($1), $2) RETURNING id), "
			       "m AS (INSERT INTO memberships (org_id, account_id, role) "
			       "SELECT $3, id, 'owner' FROM a) SELECT id FROM a",
			       3, acct_p, "owner account",
			       account_id) ||
		    !insert_id(c,
			       "INSERT INTO agent_sessions (org_id, name, integrations, created_by) "
			       "VALUES ($1, 'demo agent', '{sentry,linear}', $2) RETURNING id",
			       2, agent_p, "agent session", agent_id))
			goto out;
	}
	if (!add_credential(c, "api_token", org_id, account_id, "", "bootstrap", &api_token,
			    cred_id) ||
	    !add_credential(c, "agent_token", org_id, "", agent_id, "demo agent",
			    &agent_token, cred_id))
		goto out;
	r = PQexec(c, "COMMIT");
	if (!exec_ok(c, r, "commit")) {
		PQclear(r);
		goto out;
	}
	PQclear(r);
	printf("org=%s\nemail=%s\npassword=%s\napi_token=%s\nagent_token=%s\n"
	       "agent_session_id=%s\n",
	       o->org, o->email, pw, api_token.text, agent_token.text, agent_id);
	ret = 0;
out:
	sodium_memzero(password, sizeof(password));
	ad_token_wipe(&api_token);
	ad_token_wipe(&agent_token);
	PQfinish(c);
	return ret;
}
