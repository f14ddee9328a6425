/*
 * migrate.c - applies actiond's compiled-in migrations and the modules'
 * migrations at start.
 */
#include "migrate.h"
#include "actiond/module.h"
#include "log.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern const struct ad_module_text ad_migration_files[];
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

/*
 * Applies the set m[0..n) in one transaction.  module NULL means actiond's
 * own set (schema_migrations), else the module's rows of module_migrations.
 */
static int apply_set(const char *conninfo, const char *module,
		     const struct ad_migration *m, size_t n)
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
		  "schema_migrations") ||
	    !exec(c, "CREATE TABLE IF NOT EXISTS module_migrations ("
		     " module text NOT NULL,"
		     " version integer NOT NULL,"
		     " name text NOT NULL,"
		     " applied_at timestamptz NOT NULL DEFAULT now(),"
		     " PRIMARY KEY (module, version))",
		  "module_migrations"))
		goto out;
	for (size_t i = 0; i < n; i++) {
		char vtext[16], what[160];
		const char *params[3] = { vtext, m[i].name, module };
		static const Oid name_text[3] = { 0, 25 /* text */, 0 };
		char *sql;
		bool done;

		snprintf(vtext, sizeof(vtext), "%u", m[i].version);
		snprintf(what, sizeof(what), "%s%s%s", module ? module : "",
			 module ? " " : "", m[i].name);
		/* $2 (the name) is unused here: its type must be given. */
		r = module ? PQexecParams(c, "SELECT 1 FROM module_migrations "
					     "WHERE module = $3 AND version = $1",
					  3, name_text, params, NULL, NULL, 0)
			   : PQexecParams(c, "SELECT 1 FROM schema_migrations "
					     "WHERE version = $1",
					  1, NULL, params, NULL, NULL, 0);
		if (!ok(c, r, what))
			goto out;
		done = PQntuples(r) > 0;
		PQclear(r);
		r = NULL;
		if (done)
			continue;
		/* Embedded texts are not NUL-terminated where PQexec wants it. */
		if (!(sql = strndup(m[i].sql, m[i].len)))
			goto out;
		ad_log_info("applying migration %s", what);
		r = PQexec(c, sql);
		free(sql);
		if (!ok(c, r, what))
			goto out;
		PQclear(r);
		r = module ? PQexecParams(c, "INSERT INTO module_migrations "
					     "(version, name, module) VALUES ($1, $2, $3)",
					  3, NULL, params, NULL, NULL, 0)
			   : PQexecParams(c, "INSERT INTO schema_migrations "
					     "(version, name) VALUES ($1, $2)",
					  2, NULL, params, NULL, NULL, 0);
		if (!ok(c, r, what))
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

int ad_migrate(const char *conninfo)
{
	struct ad_migration m[64];
	size_t n = 0;

	for (size_t i = 0; i < ad_migration_files_count && n < 64; i++, n++)
		m[n] = (struct ad_migration){ (uint32_t)atoi(ad_migration_files[i].name),
					      ad_migration_files[i].name,
					      ad_migration_files[i].data,
					      ad_migration_files[i].len };
	return apply_set(conninfo, NULL, m, n);
}

int ad_migrate_module(const char *conninfo, const char *module,
		      const struct ad_migration *m, size_t n)
{
	return apply_set(conninfo, module, m, n);
}
