/*
 * migrate.c - applies the compiled-in migrations at start.
 */
#include "migrate.h"
#include "log.h"
#include "spec.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern const struct ad_embedded_file ad_migration_files[];
extern const size_t ad_migration_files_count;

static bool ok(PGconn *c, PGresult *r, const char *what)
{
	ExecStatusType st = PQresultStatus(r);

	if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
		return true;
	ad_log_error("migration: %s: %s", what, PQerrorMessage(c));
	return false;
}

static bool exec(PGconn *c, const char *sql, const char *what)
{
	PGresult *r = PQexec(c, sql);
	bool good = ok(c, r, what);

	PQclear(r);
	return good;
}

int ad_migrate(const char *conninfo)
{
	PGconn *c = PQconnectdb(conninfo);
	PGresult *r = NULL;
	int applied = 0, ret = -1;

	if (PQstatus(c) != CONNECTION_OK) {
		ad_log_error("database: %s", PQerrorMessage(c));
		goto out;
	}
	if (!exec(c, "SET client_min_messages = warning", "settings") ||
	    !exec(c, "BEGIN", "begin") ||
	    /* One migrator at a time across every instance. */
	    !exec(c, "SELECT pg_advisory_xact_lock(7243006100)", "lock") ||
	    !exec(c, "CREATE TABLE IF NOT EXISTS schema_migrations ("
		     " version integer PRIMARY KEY,"
		     " name text NOT NULL,"
		     " applied_at timestamptz NOT NULL DEFAULT now())",
		  "schema_migrations"))
		goto out;
	for (size_t i = 0; i < ad_migration_files_count; i++) {
		const struct ad_embedded_file *f = &ad_migration_files[i];
		int version = atoi(f->name);
		char vtext[16];
		const char *params[2] = { vtext, f->name };
		char *sql;
		bool done;

		snprintf(vtext, sizeof(vtext), "%d", version);
		r = PQexecParams(c, "SELECT 1 FROM schema_migrations WHERE version = $1",
				 1, NULL, params, NULL, NULL, 0);
		if (!ok(c, r, f->name))
			goto out;
		done = PQntuples(r) > 0;
		PQclear(r);
		r = NULL;
		if (done)
			continue;
		/* The embedded text is not NUL-terminated where PQexec wants it. */
		if (!(sql = strndup(f->data, f->len)))
			goto out;
		ad_log_info("applying migration %s", f->name);
		r = PQexec(c, sql);
		free(sql);
		if (!ok(c, r, f->name))
			goto out;
		PQclear(r);
		r = PQexecParams(c, "INSERT INTO schema_migrations (version, name) "
				    "VALUES ($1, $2)", 2, NULL, params, NULL, NULL, 0);
		if (!ok(c, r, f->name))
			goto out;
		PQclear(r);
		r = NULL;
		applied++;
	}
	if (!exec(c, "COMMIT", "commit"))
		goto out;
	ret = applied;
out:
	PQclear(r);
	PQfinish(c); /* an open transaction is rolled back */
	return ret;
}
