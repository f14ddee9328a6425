/*
 * migrate.h - versioned schema migrations, applied at start.
 *
 * actiond's own migrations are the SQL files of src/store/migrations/
 * (NNN_name.sql), compiled into the binary and recorded in
 * schema_migrations; each module's are recorded per module in
 * module_migrations.  At start every migration not yet recorded is applied,
 * in version order, in one transaction per set under an advisory lock, so
 * concurrent instances never race and a failed migration leaves nothing
 * behind.  A second start applies nothing.  They run as the connection's
 * role (the database owner), never as the runtime role.
 */
#ifndef AD_MIGRATE_H
#define AD_MIGRATE_H

#include <stddef.h>
#include <stdint.h>

/* One migration of a set: version (> 0, increasing), a name, its SQL. */
struct ad_migration {
	uint32_t version;
	const char *name;
	const char *sql;
	size_t len;
};

/*
 * Connects (blocking: call before the event loop runs) and applies actiond's
 * own migrations.  Returns the number applied, or -1 (reason logged).
 */
int ad_migrate(const char *conninfo);

/*
 * Applies a module's migrations (sorted by version) the same way; run after
 * ad_migrate().  Returns the number applied, or -1 (reason logged).
 */
int ad_migrate_module(const char *conninfo, const char *module,
		      const struct ad_migration *m, size_t n);

#endif
