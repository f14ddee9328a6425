/*
 * sweeper.c - background work on a one-second tick, across every org:
 *
 *  - this process's runner row is refreshed (integration_runners), so the
 *    others can tell it is alive;
 *  - pending invocations past their deadline, or whose agent session was
 *    revoked, become expired (published, waiters answered);
 *  - invocations left executing by a process not seen for RUNNER_STALE
 *    seconds (one that died, this one's predecessor after a restart) become
 *    failed with reason interrupted - never run again, since nobody knows
 *    whether the upstream saw the request;
 *  - once a minute, idempotency keys older than 24 h are forgotten;
 *  - then the events written meanwhile are linked into their chains.
 */
#include "integrations.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TICK_MS 1000
#define RUNNER_STALE "5 seconds"
#define BATCH "200"

static struct ad_timer tick_timer;
static unsigned ticks;

static void tick(struct ad_timer *t);

static void next_tick(void *arg)
{
	(void)arg;
	ad_timer_start(&tick_timer, TICK_MS, tick);
}

static void swept(void *arg, const struct ad_sql_result *r)
{
	(void)arg;
	if (ad_sql_error(r, NULL)) {
		/* The database is away, or another instance holds the rows. */
		ad_log(AD_LOG_DEBUG, "integrations: sweep: %s", ad_sql_error_message(r));
		next_tick(NULL);
		return;
	}
	for (int i = 0; i < ad_sql_rows(r, 1); i++) {
		json_t *row = ig_row_json(r, 1, i, 0);

		if (!row)
			continue;
		ig_publish_resolved(ig_row_org(r, 1, i, 0), ad_sql_int(r, 1, i, 1), row);
		ig_terminal(json_string_value(json_object_get(row, "invocation_id")), row);
		json_decref(row);
	}
	for (int i = 0; i < ad_sql_rows(r, 2); i++) {
		json_t *row = ig_row_json(r, 2, i, 0);

		if (!row)
			continue;
		ad_log(AD_LOG_WARN, "integrations: invocation %s was interrupted (failed, not re-run)",
		       json_string_value(json_object_get(row, "invocation_id")));
		ig_publish(ig_row_org(r, 2, i, 0), ad_sql_int(r, 2, i, 1), "invocation_completed",
			   row);
		ig_terminal(json_string_value(json_object_get(row, "invocation_id")), row);
		json_decref(row);
	}
	ig_chain_run(next_tick, NULL);
}

static void tick(struct ad_timer *t)
{
	struct ad_sql *q = ad_sql_new_background(AD_SQL_SEE_ERRORS);
	const char *me[1] = { ig_runner_id() };

	(void)t;
	if (!q) {
		next_tick(NULL);
		return;
	}
	ad_sql_add(q,
		   "INSERT INTO integration_runners (id, seen_at) VALUES ($1, now()) "
		   "ON CONFLICT (id) DO UPDATE SET seen_at = now()",
		   1, me);
	ad_sql_add(q,
		   "WITH x AS (UPDATE invocations i SET status = 'expired', finished_at = now(), "
		   "reason = CASE WHEN deadline <= now() THEN 'approval deadline passed' "
		   "ELSE 'agent session revoked' END WHERE id IN (SELECT id FROM invocations j "
		   "WHERE j.status = 'pending' AND (j.deadline <= now() OR EXISTS (SELECT 1 FROM "
		   "agent_sessions s WHERE s.id = j.agent_session_id AND s.revoked_at IS NOT NULL)) "
		   "LIMIT " BATCH " FOR UPDATE SKIP LOCKED) AND status = 'pending' RETURNING *), "
		   "e AS (INSERT INTO invocation_events (org_id, invocation_id, event, actor, detail) "
		   "SELECT org_id, id, 'expired', 'actiond', jsonb_build_object('reason', reason) "
		   "FROM x) SELECT " IG_COLS " FROM x",
		   0, NULL);
	ad_sql_add(q,
		   "WITH x AS (UPDATE invocations SET status = 'failed', finished_at = now(), "
		   "error = 'interrupted: the process running it stopped before it finished' "
		   "WHERE id IN (SELECT id FROM invocations j WHERE j.status IN ('approved', "
		   "'executing') AND j.runner IS DISTINCT FROM $1 AND NOT EXISTS (SELECT 1 FROM "
		   "integration_runners r WHERE r.id = j.runner AND r.seen_at > now() - interval '"
		   RUNNER_STALE "') LIMIT " BATCH " FOR UPDATE SKIP LOCKED) "
		   "AND status IN ('approved', 'executing') RETURNING *), "
		   "e AS (INSERT INTO invocation_events (org_id, invocation_id, event, actor, detail) "
		   "SELECT org_id, id, 'failed', 'actiond', jsonb_build_object('reason', "
		   "'interrupted') FROM x) SELECT " IG_COLS " FROM x",
		   1, me);
	if (ticks++ % 60 == 0) {
		ad_sql_add(q,
			   "UPDATE invocations SET idempotency_key = NULL WHERE id IN (SELECT id FROM "
			   "invocations WHERE idempotency_key IS NOT NULL AND created_at < now() - "
			   "interval '24 hours' AND status IN ('completed', 'failed', 'denied', "
			   "'expired') LIMIT 1000)",
			   0, NULL);
		ad_sql_add(q,
			   "DELETE FROM integration_runners WHERE seen_at < now() - interval '1 day'",
			   0, NULL);
	}
	ad_sql_run_background(q, swept, NULL);
}

void ig_sweeper_start(bool database)
{
	if (database)
		ad_timer_start(&tick_timer, 0, tick);
}
