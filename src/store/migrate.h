/*
 * migrate.h - versioned schema migrations, applied at start.
 *
 * Migrations are the SQL files of src/migrations/ (NNN_name.sql), compiled
 * into the binary.  At start every file whose version is not yet recorded in
 * schema_migrations is applied, in order, all in one transaction under an
 * advisory lock, so concurrent instances never race and a failed migration
 * leaves nothing behind.  A second start applies nothing.
 */
#ifndef AD_MIGRATE_H
#define AD_MIGRATE_H

/*
 * Connects (blocking: call before the event loop runs) and migrates.
 * Returns the number of migrations applied, or -1 (reason logged).
 */
int ad_migrate(const char *conninfo);

#endif
