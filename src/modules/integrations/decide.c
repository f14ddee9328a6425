/*
 * decide.c - invocations.approve and invocations.deny.
 *
 * A decision is one compare-and-set in the database: UPDATE ... WHERE
 * id = $1 AND status = 'pending' AND deadline > now(), with the agent
 * session still live, writing its events in the same statement.  Of racing
 * decisions (on any instance) exactly one updates the row; the others find
 * it decided and answer conflict.  An approval moves the row straight to
 * executing, recording who approved, so the winner is also the one run.
 * The same transaction expires the row if its deadline passed (or its
 * agent session was revoked), so a late approval answers expired even
 * before the sweeper came by.  Rows of other orgs are invisible (row-level
 * security): not_found, like ids that do not exist.
 */
#include "integrations.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LIVE_SESSION                                                                       \
	"NOT EXISTS (SELECT 1 FROM agent_sessions s WHERE s.id = agent_session_id AND "    \
	"s.revoked_at IS NOT NULL)"

/* Statement 1 of a decision: expire the row if it is overdue. */
static void add_expire(struct ad_sql *q, const char *const *id)
{
	ad_sql_add(q,
		   "WITH x AS (UPDATE invocations SET status = 'expired', finished_at = now(), "
		   "reason = CASE WHEN deadline <= now() THEN 'approval deadline passed' "
		   "ELSE 'agent session revoked' END WHERE id = $1 AND status = 'pending' AND "
		   "(deadline <= now() OR NOT " LIVE_SESSION ") RETURNING *), "
		   "e AS (INSERT INTO invocation_events (org_id, invocation_id, event, actor, detail) "
		   "SELECT org_id, id, 'expired', 'actiond', jsonb_build_object('reason', reason) "
		   "FROM x) SELECT " IG_COLS " FROM x",
		   1, id);
}

/*
 * What a decision that did not win answers, from statements 1 (expired
 * now) and last (the row as it is).  Returns true if it answered.
 */
static bool lost(struct ad_call *call, const struct ad_sql_result *r, int last)
{
	const char *status;

	if (ad_sql_rows(r, 1) == 1) {
		json_t *row = ig_row_json(r, 1, 0, 0);

		if (row) {
			ig_publish_resolved(ig_row_org(r, 1, 0, 0), ad_sql_int(r, 1, 0, 1), row);
			ig_terminal(json_string_value(json_object_get(row, "invocation_id")),
					row);
			json_decref(row);
		}
		ig_chain_soon();
		ad_call_fail(call, AD_REASON_EXPIRED, "The approval deadline of this invocation passed",
			     json_pack("{s:s}", "status", "expired"));
		return true;
	}
	if (ad_sql_rows(r, last) == 0) {
		ad_call_fail(call, AD_REASON_NOT_FOUND, "No such invocation", NULL);
		return true;
	}
	status = ad_sql_text(r, last, 0, 0, NULL);
	if (!strcmp(status, "expired"))
		ad_call_fail(call, AD_REASON_EXPIRED, "The approval deadline of this invocation passed",
			     json_pack("{s:s}", "status", status));
	else
		ad_call_fail(call, AD_REASON_CONFLICT, "This invocation is not pending any more",
			     json_pack("{s:s}", "status", status));
	return true;
}

/* ---- approve ------------------------------------------------------------------------- */

/*
 * What approve and deny do alike once their compare-and-set has run: the
 * row it moved (NULL with the call answered by lost() when it moved none;
 * last is the statement that reads the row as it is), its events chained
 * and the decision published.
 */
static json_t *decided(struct ad_call *call, const struct ad_sql_result *r, int last)
{
	json_t *row;

	if (ad_sql_rows(r, 0) != 1) {
		lost(call, r, last);
		return NULL;
	}
	if (!(row = ig_row_json(r, 0, 0, 0))) {
		ad_call_fail(call, AD_REASON_UNAVAILABLE, "out of memory", NULL);
		return NULL;
	}
	ig_chain_soon();
	ig_publish_resolved(ad_call_org_id(call), ad_sql_int(r, 0, 0, 1), row);
	return row;
}

static void approved(struct ad_call *call, void *arg, const struct ad_sql_result *r)
{
	json_t *row;

	(void)arg;
	if (!(row = decided(call, r, 3)))
		return;
	ig_run_start(call, ad_call_org_id(call), ad_sql_int(r, 0, 0, 1), row,
		     ad_sql_text(r, 0, 0, IG_NCOLS, NULL), ad_sql_text(r, 0, 0, IG_NCOLS + 1, NULL),
		     ad_sql_rows(r, 2) == 1 ? ad_sql_text(r, 2, 0, 0, NULL) : NULL);
	json_decref(row);
}

/* A comment or reason param as a C string; NULL (answered) if it holds U+0000. */
static bool text_param(struct ad_call *call, const char *key, const char **ret)
{
	size_t len;
	const char *s = ad_param_str(call, key, &len);

	if (s && strlen(s) != len) {
		char ptr[32];

		snprintf(ptr, sizeof(ptr), "/%s", key);
		ad_call_fail_params(call, ptr, "pattern", "must not contain U+0000");
		return false;
	}
	*ret = s;
	return true;
}

void ig_invocations_approve(struct ad_call *call)
{
	const char *p[4], *comment = NULL;
	struct ad_sql *q;

	if (!text_param(call, "comment", &comment))
		return;
	if (!(q = ad_sql_new(call, 0))) {
		ad_call_fail(call, AD_REASON_UNAVAILABLE, "out of memory", NULL);
		return;
	}
	p[0] = ad_param_str(call, "invocation_id", NULL);
	p[1] = ad_call_credential_id(call);
	p[2] = comment;
	p[3] = ig_runner_id();
	ad_sql_add(q,
		   "WITH u AS (UPDATE invocations SET status = 'executing', decided_by = $2, "
		   "decided_at = now(), comment = $3, started_at = now(), runner = $4 "
		   "WHERE id = $1 AND status = 'pending' AND deadline > now() AND " LIVE_SESSION
		   " RETURNING *), "
		   "e AS (INSERT INTO invocation_events (org_id, invocation_id, event, actor, detail) "
		   "SELECT org_id, id, 'approved', $2, jsonb_strip_nulls(jsonb_build_object("
		   "'comment', comment)) FROM u UNION ALL "
		   "SELECT org_id, id, 'executing', $2, '{}'::jsonb FROM u) "
		   "SELECT " IG_COLS ", params::text, params_hash FROM u",
		   4, p);
	add_expire(q, p);
	ad_sql_add(q,
		   "SELECT encode(s.nonce || s.sealed, 'hex') FROM integration_secrets s "
		   "JOIN invocations i ON i.integration = s.integration WHERE i.id = $1",
		   1, p);
	ad_sql_add(q, "SELECT status FROM invocations WHERE id = $1", 1, p);
	ad_sql_run(q, approved, NULL, NULL);
}

/* ---- deny ------------------------------------------------------------------------------ */

static void denied(struct ad_call *call, void *arg, const struct ad_sql_result *r)
{
	json_t *row;

	(void)arg;
	if (!(row = decided(call, r, 2)))
		return;
	ig_terminal(json_string_value(json_object_get(row, "invocation_id")), row);
	ad_call_reply(call, row);
}

void ig_invocations_deny(struct ad_call *call)
{
	const char *p[3], *reason = NULL;
	struct ad_sql *q;

	if (!text_param(call, "reason", &reason))
		return;
	if (!(q = ad_sql_new(call, 0))) {
		ad_call_fail(call, AD_REASON_UNAVAILABLE, "out of memory", NULL);
		return;
	}
	p[0] = ad_param_str(call, "invocation_id", NULL);
	p[1] = ad_call_credential_id(call);
	p[2] = reason;
	ad_sql_add(q,
		   "WITH u AS (UPDATE invocations SET status = 'denied', decided_by = $2, "
		   "decided_at = now(), reason = $3, finished_at = now() "
		   "WHERE id = $1 AND status = 'pending' AND deadline > now() AND " LIVE_SESSION
		   " RETURNING *), "
		   "e AS (INSERT INTO invocation_events (org_id, invocation_id, event, actor, detail) "
		   "SELECT org_id, id, 'denied', $2, jsonb_build_object('reason', reason) FROM u) "
		   "SELECT " IG_COLS " FROM u",
		   3, p);
	add_expire(q, p);
	ad_sql_add(q, "SELECT status FROM invocations WHERE id = $1", 1, p);
	ad_sql_run(q, denied, NULL, NULL);
}
