/*
 * sql_internal.h - what only actiond's own layers may do with the SQL
 * service of actiond/sql.h.
 */
#ifndef AD_SQL_INTERNAL_H
#define AD_SQL_INTERNAL_H

#include "actiond/sql.h"

#include <libpq-fe.h>

/*
 * Runs q in the scope of org_id instead of the caller's (0: no org).  For
 * identity alone, where the org is known only after a lookup: a login
 * records its event in the org it logged into.
 */
void ad_sql_set_org(struct ad_sql *q, int64_t org_id);

/* The libpq result of one statement, for code that predates the accessors. */
const PGresult *ad_sql_pgresult(const struct ad_sql_result *res, int stmt);

#endif
