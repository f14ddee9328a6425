/*
 * audit_cmd.c - `actiond audit verify [--org SLUG]`: checks the invocation
 * event chain of every org (or one) straight from the database, without a
 * running server, so that an operator can check a copy or a backup, or a
 * database whose actiond is down.
 *
 * It runs before the event loop (blocking libpq is fine here), as the
 * database owner, with app.org set to '*' so that row-level security shows
 * every org's events.  The link rule is the integrations module's own
 * (chain.h), the one audit.verify applies.
 */
#include "audit_cmd.h"
#include "integrations/chain.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PAGE "5000"

static PGresult *query(PGconn *c, const char *sql, int n, const char *const *params)
{
	PGresult *r = PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);

	if (PQresultStatus(r) != PGRES_TUPLES_OK && PQresultStatus(r) != PGRES_COMMAND_OK) {
		fprintf(stderr, "actiond audit verify: %s", PQerrorMessage(c));
		PQclear(r);
		return NULL;
	}
	return r;
}

/*
 * Walks one org's chain.  Returns 0 (prints ok), 1 (prints the first broken
 * link) or -1 (a database error, printed).
 */
static int verify_org(PGconn *c, const char *org_id, const char *slug)
{
	struct ig_chain_walk w;
	char after[24];
	long long unlinked = 0;
	PGresult *r;

	ig_chain_walk_init(&w);
	if (!(r = query(c, "SELECT count(*) FROM invocation_events WHERE org_id = $1::bigint "
			   "AND seq IS NULL", 1, &org_id)))
		return -1;
	unlinked = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
	PQclear(r);
	for (;;) {
		const char *p[2] = { org_id, after };
		int rows;

		snprintf(after, sizeof(after), "%lld", (long long)w.seq);
		/* A fresh statement per page: a long walk holds no snapshot open. */
		if (!(r = query(c,
				"SELECT seq, invocation_id, iso(at), event, actor, detail::text, "
				"prev_hash, hash FROM invocation_events WHERE org_id = $1::bigint "
				"AND seq > $2::bigint ORDER BY seq LIMIT " PAGE,
				2, p)))
			return -1;
		rows = PQntuples(r);
		for (int i = 0; i < rows; i++) {
			int64_t bad;
			const char *why = ig_chain_walk_step(
				&w, strtoll(PQgetvalue(r, i, 0), NULL, 10), PQgetvalue(r, i, 1),
				PQgetvalue(r, i, 2), PQgetvalue(r, i, 3), PQgetvalue(r, i, 4),
				PQgetvalue(r, i, 5), PQgetvalue(r, i, 6), PQgetvalue(r, i, 7), &bad);

			if (why) {
				printf("%s: broken at seq %lld: %s (%lld events linked before it)\n",
				       slug, (long long)bad, why, (long long)w.seq);
				PQclear(r);
				return 1;
			}
		}
		PQclear(r);
		if (rows < atoi(PAGE))
			break;
	}
	printf("%s: ok (%lld events, head %s, %lld not linked yet)\n", slug, (long long)w.seq,
	       w.seq ? w.prev : "none", unlinked);
	return 0;
}

int ad_audit_verify_cmd(const char *conninfo, const char *org)
{
	PGconn *c = PQconnectdb(conninfo);
	PGresult *r = NULL;
	int status = 2, broken = 0, rows;

	if (PQstatus(c) != CONNECTION_OK) {
		fprintf(stderr, "actiond audit verify: cannot connect: %s", PQerrorMessage(c));
		goto out;
	}
	/* Every org's rows, whatever role the connection has. */
	if (!(r = query(c, "SELECT set_config('app.org', '*', false)", 0, NULL)))
		goto out;
	PQclear(r);
	if (!(r = query(c,
			"SELECT id, slug FROM orgs WHERE $1::text IS NULL OR slug = $1 ORDER BY slug",
			1, &org)))
		goto out;
	rows = PQntuples(r);
	if (org && rows == 0) {
		fprintf(stderr, "actiond audit verify: no org %s\n", org);
		goto out;
	}
	for (int i = 0; i < rows; i++) {
		int v = verify_org(c, PQgetvalue(r, i, 0), PQgetvalue(r, i, 1));

		if (v < 0)
			goto out;
		broken += v;
	}
	printf("%d org%s checked, %d broken\n", rows, rows == 1 ? "" : "s", broken);
	status = broken ? 1 : 0;
out:
	PQclear(r);
	PQfinish(c);
	fflush(stdout);
	return status;
}
