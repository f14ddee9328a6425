/*
 * embedded.h - the private PostgreSQL cluster actiond runs when no database
 * URL is configured.
 *
 * The cluster lives in <data_dir>/pg and listens only on a Unix socket in
 * <data_dir>/run (no TCP).  It is created with initdb on first start, run as
 * a child process, restarted if it dies, and stopped when actiond exits.
 * PostgreSQL refuses to run as root, so when actiond is root the server runs
 * as database.run_as (default "postgres"), which then owns both directories.
 */
#ifndef AD_EMBEDDED_H
#define AD_EMBEDDED_H

#include "config.h"

#include <stddef.h>

/*
 * Creates the cluster if needed, starts the server and waits until it
 * accepts connections.  Blocking: call before the event loop runs.  Writes
 * the libpq connection string for it into conninfo.  Returns 0 or -1 (with
 * the reason logged).
 */
int ad_embedded_start(const struct ad_config *cfg, char *conninfo, size_t len);

/* Restarts the server if it died (non-blocking; call from a timer). */
void ad_embedded_check(void);

/* Stops the server (fast shutdown) and waits for it. */
void ad_embedded_stop(void);

#endif
