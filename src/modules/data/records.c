/*
 * records.c - data.mutate, data.mutate_many, data.find_one and
 * data.find_many: the records of an org's entities.
 *
 * A write goes in two steps.  The schemas of the entities it touches come
 * from a cache (or one read of data_entities); each record is validated
 * here, in C.  Then the write joins its org's next batch (group commit,
 * below): data_apply_batch() applies each write's ops through data_apply()
 * (the migrations), which checks in the same transaction that each entity
 * is still at the version validated against, and numbers the change rows
 * the trigger captured, so the answer carries their seq and the feed
 * delivers them as soon as the batch commits.  A
 * redefinition in between makes data_apply() refuse (DA428); the write is
 * then validated again once, from a fresh read.
 */
#include "data.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A write in progress: its ops and the schema versions they satisfy. */
struct wr {
	json_t *ops;      /* [{op, entity, id?, data?, expected_version?}] */
	json_t *versions; /* {entity: version} */
	bool many;
	int attempt;
	int reread;       /* schemas read again after a refusal: 1 asked, 2 done */
	json_t *fresh;    /* {entity: true} for schemas this write read itself */
	struct pend *ticket; /* its place in the org's arrival order, until ready */
	struct schema_read *leads; /* the schema read it makes for others too */
};

static void ticket_drop(struct wr *w);
static void schema_read_end(struct schema_read *sr);

static void wr_free(void *p)
{
	struct wr *w = p;

	if (w->leads)
		schema_read_end(w->leads);
	if (w->ticket)
		ticket_drop(w);
	json_decref(w->ops);
	json_decref(w->versions);
	json_decref(w->fresh);
	free(w);
}

/* The params pointer of op i ("" for data.mutate). */
static void op_ptr(const struct wr *w, size_t i, const char *tail, char *out, size_t cap)
{
	if (w->many)
		snprintf(out, cap, "/ops/%zu%s", i, tail);
	else
		snprintf(out, cap, "%s", tail);
}

/*
 * Reads one op from the params into w->ops; false when it lacks what its
 * operation needs (the call is answered).
 */
static bool op_read(struct ad_call *call, struct wr *w, const json_t *src, size_t i)
{
	const char *op = json_string_value(json_object_get(src, "operation"));
	json_t *o = json_object();
	char ptr[64];
	int64_t ev;

	if (!o) {
		dm_fail_oom(call);
		return false;
	}
	json_object_set_new(o, "op", json_string(op));
	json_object_set(o, "entity", json_object_get(src, "entity"));
	if (json_object_get(src, "id"))
		json_object_set(o, "id", json_object_get(src, "id"));
	else if (strcmp(op, "create")) {
		json_decref(o);
		op_ptr(w, i, "/id", ptr, sizeof(ptr));
		ad_call_fail_params(call, ptr, "required", "update, delete and upsert need an id");
		return false;
	}
	if (strcmp(op, "delete")) {
		if (!json_object_get(src, "data")) {
			json_decref(o);
			op_ptr(w, i, "/data", ptr, sizeof(ptr));
			ad_call_fail_params(call, ptr, "required",
					    "create, update and upsert need data");
			return false;
		}
		json_object_set(o, "data", json_object_get(src, "data"));
	}
	if (ad_json_int(json_object_get(src, "expected_version"), &ev))
		json_object_set_new(o, "expected_version", json_integer(ev));
	if (json_array_append_new(w->ops, o)) {
		dm_fail_oom(call);
		return false;
	}
	return true;
}

static void wr_start(struct ad_call *call, struct wr *w);

/*
 * What became of one write: st is NULL when it committed with records
 * (taken) and seq, the highest seq of its changes (0: none), else the
 * SQLSTATE and message of its failure.  Frees w (or starts it again).
 */
static void apply_outcome(struct ad_call *call, struct wr *w, const char *st, const char *msg,
			  json_t *records, int64_t seq)
{
	long idx = -1;
	char ptr[64];
	json_t *id = NULL;

	if (st && msg && !strncmp(msg, "op ", 3))
		idx = strtol(msg + 3, NULL, 10);
	if (idx >= 0 && (size_t)idx < json_array_size(w->ops))
		id = json_object_get(json_array_get(w->ops, (size_t)idx), "id");
	if (st && !strcmp(st, "DA428") && !w->attempt) {
		/* An entity was redefined since its schema was cached: once more. */
		const char *name;
		json_t *v;

		json_object_foreach(w->versions, name, v)
			dm_schema_forget(ad_call_org_id(call), name);
		json_object_clear(w->versions);
		w->attempt++;
		wr_start(call, w);
		return;
	}
	if (st && (!strcmp(st, "DA404") || !strcmp(st, "DA409") || !strcmp(st, "DA410"))) {
		json_t *data = json_pack("{s:O?}", "id", id);

		if (w->many && data)
			json_object_set_new(data, "op", json_integer(idx));
		op_ptr(w, idx < 0 ? 0 : (size_t)idx, "", ptr, sizeof(ptr));
		wr_free(w);
		if (!strcmp(st, "DA404"))
			ad_call_fail(call, AD_REASON_NOT_FOUND, "No such record", data);
		else if (!strcmp(st, "DA409"))
			ad_call_fail(call, AD_REASON_CONFLICT, "A record with this id exists", data);
		else
			ad_call_fail(call, AD_REASON_CONFLICT,
				     "The record is not at expected_version", data);
		return;
	}
	if (st) {
		wr_free(w);
		if (!strcmp(st, "DA428"))
			ad_call_fail(call, AD_REASON_CONFLICT,
				     "The entity was redefined meanwhile; try again", NULL);
		else
			dm_fail_state(call, st, msg, 0);
		return;
	}
	{
		json_t *s = seq > 0 ? json_integer(seq) : json_null();

		if (w->many)
			ad_call_reply(call, json_pack("{s:o,s:o}", "records", records, "seq", s));
		else {
			ad_call_reply(call, json_pack("{s:O,s:o}", "record",
						      json_array_get(records, 0), "seq", s));
			json_decref(records);
		}
	}
	wr_free(w);
}

/* The highest seq, in changes (DM_NUMBERED_JSON rows), of the change ids "1,2". */
static int64_t seq_of(const char *ids, const json_t *changes)
{
	int64_t top = 0;

	for (const char *c = ids; c && *c;) {
		char *end;
		long long id = strtoll(c, &end, 10);
		size_t i;
		json_t *row;

		if (end == c)
			break;
		json_array_foreach(changes, i, row)
			if (json_integer_value(json_array_get(row, 0)) == id &&
			    json_integer_value(json_array_get(row, 1)) > top)
				top = json_integer_value(json_array_get(row, 1));
		c = *end == ',' ? end + 1 : end;
	}
	return top;
}

/* ---- group commit ----------------------------------------------------------------
 *
 * Every commit waits for its WAL to reach the disk, and a connection
 * commits one transaction at a time, so a write per transaction on a small
 * pool does a few writes per flush.  Writes of one org are instead applied
 * in batches: while a batch is in the database, the org's next writes
 * queue; when it comes back they all go as the next batch, one statement
 * and one commit (data_apply_batch(): each write in its own
 * subtransaction, so one that fails leaves the others whole).  With one
 * write at a time a batch is that write alone, sent at once.  One batch of
 * an org is in the database at a time: two at a time measured slower
 * (12.7k creates/s against 17.0k, 50 writers): the batches halve, a batch
 * costs about 0.25 ms in the database however small on top of 31 us a
 * record, and two backends side by side wait on each other's WAL flushes
 * (docs/benchmarks.md).
 */

#define BATCH_MAX 64
#define FLIGHT_MAX 1

struct pend {
	struct pend *next;
	struct ad_call *call;
	struct wr *w;
	char *item;          /* [ops, versions, method] as JSON text */
	bool fresh;          /* a data.mutate create naming no id */
	bool ready;          /* validated: item is set */
};

/*
 * An org's writes join its batches in the order they arrived: each takes a
 * place in admit when it starts, and moves to queue once it is validated
 * and every write before it has moved on (or failed).  A write whose
 * schemas are cached is validated at once; one that reads a schema first
 * keeps the writes behind it waiting until the read returns.
 */
struct org_batch {
	struct org_batch *next;
	int64_t org;
	struct pend *admit, **admit_tail; /* arrived, oldest first */
	struct pend *queue, **tail; /* not sent yet, oldest first */
	int flying;                 /* batches in the database */
};

/* A batch in the database. */
struct batch {
	struct org_batch *ob;
	struct pend *list;
	bool fresh;          /* run by the FRESH_* statements */
};

/*
 * A batch of nothing but data.mutate creates naming no id needs none of
 * data_apply_batch()'s care (no id of it can exist or repeat): it runs as
 * three statements of the batch's transaction - the entities' shared
 * locks; the org's feed lock (data_create_batch() takes them in the same
 * order); then one statement that numbers, writes the records and their
 * changes, moves the feed on and answers a row per write (id, seq, time) - at
 * less cost in the database than the same work through PL/pgSQL and a
 * subtransaction.  A value the database refuses fails the statement: the
 * batch then runs again through data_apply_batch(), which tells which.
 */
static const char FRESH_LOCKS[] =
	"SELECT pg_advisory_xact_lock_shared(data_entity_key($1::bigint, e.name)) "
	"FROM jsonb_array_elements_text($2::jsonb) AS e(name)";
static const char FRESH_FEED[] =
	"SELECT set_config('data.split', 'on', true), data_feed_lock($1::bigint)";
static const char FRESH_WRITE[] =
	"WITH input AS ("
	" SELECT x.ord, x.w -> 0 -> 0 -> 'data' AS data, x.w -> 0 -> 0 ->> 'entity' AS entity,"
	"  data_new_id() AS rid,"
	"  (x.w -> 1 ->> (x.w -> 0 -> 0 ->> 'entity'))::bigint AS version"
	" FROM jsonb_array_elements($2::jsonb) WITH ORDINALITY AS x(w, ord)),"
	" checked AS ("
	" SELECT i.*, f.last_seq + count(d.name) OVER (ORDER BY i.ord) AS seq,"
	"  d.name IS NOT NULL AS current FROM input i"
	" LEFT JOIN data_entities d ON d.org_id = $1::bigint AND d.name = i.entity"
	"  AND d.version = i.version"
	" CROSS JOIN data_feed f WHERE f.org_id = $1::bigint),"
	" ins AS ("
	" INSERT INTO data_records (org_id, entity, id, data)"
	" SELECT $1::bigint, c.entity, c.rid, c.data FROM checked c WHERE c.current ORDER BY c.ord),"
	" ch AS ("
	" INSERT INTO data_changes (org_id, seq, entity, op, ids, source, action)"
	" SELECT $1::bigint, c.seq, c.entity, 'create', ARRAY[c.rid], 'data_records', 'data.mutate'"
	" FROM checked c WHERE c.current ORDER BY c.seq),"
	" feed AS ("
	" UPDATE data_feed SET last_seq = (SELECT max(c.seq) FROM checked c WHERE c.current)"
	" WHERE org_id = $1::bigint AND EXISTS (SELECT 1 FROM checked c WHERE c.current))"
	" SELECT c.rid, c.seq, t.at, c.current FROM checked c, (SELECT iso(now()) AS at) t"
	" ORDER BY c.ord";

/*
 * A fresh batch's rows - id, seq, time and whether the entity was current,
 * one per write in order - as data_apply_batch() answers: {writes:
 * [[id, seq, time] | {state, message}], changes: [[-, seq, entity, op,
 * ids, source, action]]}.
 */
static json_t *fresh_out(const struct ad_sql_result *res, const struct pend *list)
{
	json_t *writes = json_array(), *changes = json_array();
	int n = ad_sql_rows(res, 2);

	for (int i = 0; i < n && list && writes && changes; i++, list = list->next) {
		const json_t *entity = json_object_get(json_array_get(list->w->ops, 0), "entity");
		json_int_t seq = ad_sql_int(res, 2, i, 1);
		json_t *id;

		if (!ad_sql_bool(res, 2, i, 3)) {
			json_array_append_new(writes, json_pack("{s:s,s:s}", "state", "DA428",
								"message", "entity changed"));
			continue;
		}
		id = ad_sql_string(res, 2, i, 0);
		json_array_append_new(writes, json_pack("[O,I,o]", id, seq,
							ad_sql_string(res, 2, i, 2)));
		json_array_append_new(changes, json_pack("[i,I,O,s,[o],s,s]", 0, seq, entity,
							 "create", id, "data_records", "data.mutate"));
	}
	return json_pack("{s:o,s:o}", "writes", writes, "changes", changes);
}

/* Whether the database refused a value of a fresh batch, not the batch:
 * what data_apply_batch() runs one by one. */
static bool refused_value(const char *state)
{
	return !strncmp(state, "22", 2) || !strcmp(state, "23505");
}

static struct org_batch *batches;

static void batch_send(struct org_batch *ob);
static void admit_ready(struct org_batch *ob);
static void ob_gc(struct org_batch *ob);
static void batch_requeue(struct org_batch *ob, struct pend *list);

static void pend_free(struct pend *p)
{
	free(p->item);
	free(p);
}

/* Takes p out of the list at *head (whose last next pointer is *tail);
 * false when it is not there. */
static bool pend_unlink(struct pend **head, struct pend ***tail, const struct pend *p)
{
	for (struct pend **pp = head; *pp; pp = &(*pp)->next)
		if (*pp == p) {
			if (!(*pp = p->next))
				*tail = pp;
			return true;
		}
	return false;
}

/* Cancelled or timed out: a write waiting for its batch (or, validated,
 * for the writes before it) is dropped; one in the database is answered
 * with what became of it (it may well commit). */
static void pend_cancelled(struct ad_call *call, void *arg)
{
	struct pend *p = arg;

	for (struct org_batch *ob = batches; ob; ob = ob->next)
		if (pend_unlink(&ob->queue, &ob->tail, p) ||
		    pend_unlink(&ob->admit, &ob->admit_tail, p)) {
			wr_free(p->w);
			pend_free(p);
			ad_call_fail(call, AD_REASON_CANCELLED, "cancelled", NULL);
			admit_ready(ob);
			ob_gc(ob);
			return;
		}
}

/* A create the batch answered [id, seq, time]: its record is the data the
 * write sent, as version 1 made and updated at that time. */
static json_t *made_record(const struct wr *w, const json_t *made)
{
	json_t *at = json_array_get(made, 2);

	return json_pack("[{s:O,s:O?,s:i,s:O,s:O}]", "id", json_array_get(made, 0), "data",
			 json_object_get(json_array_get(w->ops, 0), "data"), "version", 1,
			 "created_at", at, "updated_at", at);
}

/* Frees an org's state once nothing of it waits or flies. */
static void ob_gc(struct org_batch *ob)
{
	if (ob->admit || ob->queue || ob->flying)
		return;
	for (struct org_batch **bp = &batches; *bp; bp = &(*bp)->next)
		if (*bp == ob) {
			*bp = ob->next;
			free(ob);
			return;
		}
}

/* The org's state, made if it has none; NULL when out of memory. */
static struct org_batch *org_of(int64_t org)
{
	struct org_batch *ob;

	for (ob = batches; ob && ob->org != org; ob = ob->next)
		;
	if (!ob && (ob = calloc(1, sizeof(*ob)))) {
		ob->org = org;
		ob->tail = &ob->queue;
		ob->admit_tail = &ob->admit;
		ob->next = batches;
		batches = ob;
	}
	return ob;
}

/* Sends the org's queue as its next batch if none of its batches is in
 * the database; whether it did. */
static bool batch_next(struct org_batch *ob)
{
	if (!ob->queue || ob->flying >= FLIGHT_MAX)
		return false;
	batch_send(ob);
	return true;
}

/* Moves the validated writes at the head of the arrival order to the
 * queue, and sends the queue if it may go. */
static void admit_ready(struct org_batch *ob)
{
	while (ob->admit && ob->admit->ready) {
		struct pend *p = ob->admit;

		if (!(ob->admit = p->next))
			ob->admit_tail = &ob->admit;
		p->next = NULL;
		*ob->tail = p;
		ob->tail = &p->next;
	}
	(void)batch_next(ob);
}

/* Gives a starting write its place in its org's arrival order (none when
 * out of memory: it then joins the queue when it is validated). */
static void ticket_take(struct ad_call *call, struct wr *w)
{
	struct org_batch *ob = org_of(ad_call_org_id(call));
	struct pend *p = ob ? calloc(1, sizeof(*p)) : NULL;

	if (!p)
		return;
	p->call = call;
	*ob->admit_tail = p;
	ob->admit_tail = &p->next;
	w->ticket = p;
}

/* A write that failed (or was cancelled) before it was validated gives up
 * its place; the writes behind it may move on. */
static void ticket_drop(struct wr *w)
{
	struct pend *p = w->ticket;

	w->ticket = NULL;
	for (struct org_batch *ob = batches; ob; ob = ob->next)
		if (pend_unlink(&ob->admit, &ob->admit_tail, p)) {
			free(p);
			admit_ready(ob);
			ob_gc(ob);
			return;
		}
}

static void batch_done(void *arg, const struct ad_sql_result *res)
{
	struct batch *bt = arg;
	struct org_batch *ob = bt->ob;
	struct pend *p = bt->list;
	const char *st = ad_sql_error(res, NULL);
	json_t *out = st ? NULL : bt->fresh ? fresh_out(res, p) : ad_sql_json(res, 0, 0, 0);
	json_t *writes = json_object_get(out, "writes"), *changes = json_object_get(out, "changes");
	size_t i = 0;

	ob->flying--;
	if (st && bt->fresh && refused_value(st)) {
		free(bt);
		batch_requeue(ob, p);
		(void)batch_next(ob);
		return;
	}
	free(bt);
	/* The next batch first: the database works on it while this one's
	 * writes are answered. */
	if (batch_next(ob))
		ad_sql_send_now();
	/* Delivered first: a subscriber on the writer's socket sees the change
	 * before the answer. */
	if (changes)
		dm_feed_numbered(ob->org, changes);
	while (p) {
		struct pend *next = p->next;
		json_t *r = json_array_get(writes, i++);
		const char *state = json_string_value(json_object_get(r, "state"));

		ad_call_on_cancel(p->call, NULL, NULL);
		if (st || !r)
			apply_outcome(p->call, p->w, st ? st : "XX000",
				      st ? ad_sql_error_message(res) : "no outcome", NULL, 0);
		else if (state)
			apply_outcome(p->call, p->w, state,
				      json_string_value(json_object_get(r, "message")), NULL, 0);
		else if (json_is_array(r))
			apply_outcome(p->call, p->w, NULL, NULL, made_record(p->w, r),
				      json_integer_value(json_array_get(r, 1)));
		else
			apply_outcome(p->call, p->w, NULL, NULL,
				      json_incref(json_object_get(r, "records")),
				      json_object_get(r, "seq")
					      ? json_integer_value(json_object_get(r, "seq"))
					      : seq_of(json_string_value(json_object_get(r, "changes")),
						       changes));
		pend_free(p);
		p = next;
	}
	json_decref(out);
	/* A write answered above may have queued again (its entity changed). */
	(void)batch_next(ob);
	ob_gc(ob);
}

/* Whether an earlier write of list has p's entity. */
static bool name_listed(const struct pend *list, const struct pend *p)
{
	const json_t *e = json_object_get(json_array_get(p->w->ops, 0), "entity");

	for (; list; list = list->next)
		if (json_equal(json_object_get(json_array_get(list->w->ops, 0), "entity"), e))
			return true;
	return false;
}

/* The writes of a fresh batch the database refused go first in the queue,
 * to run through data_apply_batch(). */
static void batch_requeue(struct org_batch *ob, struct pend *list)
{
	struct pend **tail = &list;

	while (*tail) {
		(*tail)->fresh = false;
		tail = &(*tail)->next;
	}
	if (!(*tail = ob->queue))
		ob->tail = tail;
	ob->queue = list;
}

/* Sends up to BATCH_MAX queued writes of the org as one transaction. */
static void batch_send(struct org_batch *ob)
{
	struct dm_buf items = { 0 }, names = { 0 };
	struct dm_num org = dm_num(ob->org);
	struct batch *bt = calloc(1, sizeof(*bt));
	struct pend *list = NULL, **tail = &list;
	struct ad_sql *q;
	int64_t last_ms = 0;
	bool fresh = true;
	int n = 0;

	dm_buf_put(&items, "[");
	dm_buf_put(&names, "[");
	while (ob->queue && n < BATCH_MAX) {
		struct pend *p = ob->queue;
		const char *entity = json_string_value(
			json_object_get(json_array_get(p->w->ops, 0), "entity"));

		if (!(ob->queue = p->next))
			ob->tail = &ob->queue;
		p->next = NULL;
		if (ad_call_time_left_ms(p->call) > last_ms)
			last_ms = ad_call_time_left_ms(p->call);
		dm_buf_printf(&items, "%s%s", n++ ? "," : "", p->item);
		fresh = fresh && p->fresh;
		/* Entity names are [a-z][a-z0-9_]*: no escaping; each once. */
		if (fresh && entity && !name_listed(list, p))
			dm_buf_printf(&names, "%s\"%s\"", names.len > 1 ? "," : "", entity);
		*tail = p;
		tail = &p->next;
	}
	dm_buf_put(&items, "]");
	dm_buf_put(&names, "]");
	if (bt && !items.oom && !names.oom && (q = ad_sql_new_background(AD_SQL_SEE_ERRORS))) {
		const char *p[2] = { org.v, items.data }, *l[2] = { org.v, names.data };

		/* In the org's scope, bounded by the latest deadline of the batch. */
		ad_sql_in_org(q, ob->org);
		ad_sql_timeout(q, (uint32_t)(last_ms < 100 ? 100 : last_ms));
		if (fresh) {
			ad_sql_add(q, FRESH_LOCKS, 2, l);
			ad_sql_add(q, FRESH_FEED, 1, p);
			ad_sql_add(q, FRESH_WRITE, 2, p);
		} else {
			ad_sql_add(q, "SELECT data_apply_batch($1::bigint, $2::jsonb)", 2, p);
		}
		dm_buf_free(&items);
		dm_buf_free(&names);
		bt->ob = ob;
		bt->list = list;
		bt->fresh = fresh;
		ob->flying++;
		ad_sql_run_background(q, batch_done, bt);
		return;
	}
	dm_buf_free(&items);
	dm_buf_free(&names);
	free(bt);
	/* Out of memory: every write of this batch fails. */
	for (struct pend *p = list, *next; p; p = next) {
		next = p->next;
		ad_call_on_cancel(p->call, NULL, NULL);
		wr_free(p->w);
		dm_fail_oom(p->call);
		pend_free(p);
	}
}

/* A validated write joins its org's next batch, in the order writes
 * arrived (or is sent now). */
static void batch_add(struct ad_call *call, struct wr *w, char *item)
{
	struct org_batch *ob = org_of(ad_call_org_id(call));
	struct pend *p = w->ticket;
	const json_t *op = json_array_get(w->ops, 0);
	const char *kind = json_string_value(json_object_get(op, "op"));

	if (!p)
		p = calloc(1, sizeof(*p));
	if (!p || !ob) {
		if (p != w->ticket)
			free(p);
		free(item);
		wr_free(w);
		dm_fail_oom(call);
		return;
	}
	p->call = call;
	p->w = w;
	p->item = item;
	p->fresh = !w->many && json_array_size(w->ops) == 1 &&
		   !strcmp(ad_call_method(call), "data.mutate") && kind && !strcmp(kind, "create") &&
		   !json_object_get(op, "id");
	p->ready = true;
	ad_call_on_cancel(call, pend_cancelled, p);
	if (p == w->ticket) {
		w->ticket = NULL; /* the arrival order holds it now */
	} else {
		*ob->admit_tail = p;
		ob->admit_tail = &p->next;
	}
	admit_ready(ob);
}

/*
 * False when a string in v holds U+0000, which jsonb cannot store; ptr
 * (holding v's pointer) then points at it.  Keys are strings too.
 */
static bool nul_free(const json_t *v, char *ptr, size_t cap)
{
	size_t len = strlen(ptr), i;
	const char *key;
	json_t *x;

	if (json_is_string(v))
		return !memchr(json_string_value(v), '\0', json_string_length(v));
	if (json_is_array(v)) {
		json_array_foreach(v, i, x) {
			snprintf(ptr + len, cap - len, "/%zu", i);
			if (!nul_free(x, ptr, cap))
				return false;
		}
	} else if (json_is_object(v)) {
		json_object_foreach((json_t *)v, key, x) {
			snprintf(ptr + len, cap - len, "/%s", key);
			if (!nul_free(x, ptr, cap))
				return false;
		}
	}
	ptr[len] = '\0';
	return true;
}

/* Validates every op against its entity's cached schema, then applies them. */
static void wr_apply(struct ad_call *call, struct wr *w)
{
	int64_t org = ad_call_org_id(call), version;
	const struct ad_json_schema *s;
	char ptr[64], *text;
	size_t i;
	json_t *o, *item;

	json_array_foreach(w->ops, i, o) {
		const char *entity = json_string_value(json_object_get(o, "entity"));
		const json_t *data = json_object_get(o, "data");

		s = dm_schema_get(org, entity, &version);
		if (!s) {
			/* Evicted by the others of this write: read them again. */
			wr_start(call, w);
			return;
		}
		json_object_set_new(w->versions, entity, json_integer(version));
		op_ptr(w, i, "/data", ptr, sizeof(ptr));
		if (data && !w->reread && !json_object_get(w->fresh, entity)) {
			/*
			 * The cached schema may be older than the entity (another
			 * instance redefined it): refused once, the write reads
			 * its schemas again before it is answered.  (A write that
			 * passes a stale schema is caught by the database: DA428.)
			 */
			if (!ad_json_schema_valid(s, data)) {
				json_object_clear(w->versions);
				w->reread = 1;
				wr_start(call, w);
				return;
			}
		} else if (data && !ad_call_check_value(call, s, data, ptr)) {
			wr_free(w);
			return;
		}
		if (data && !nul_free(data, ptr, sizeof(ptr))) {
			wr_free(w);
			ad_call_fail_params(call, ptr, "pattern",
					    "PostgreSQL cannot store U+0000 in a JSON string");
			return;
		}
	}
	item = json_pack("[O,O,s]", w->ops, w->versions, ad_call_method(call));
	text = item ? dm_json_text(item) : NULL;
	json_decref(item);
	if (!text) {
		wr_free(w);
		dm_fail_oom(call);
		return;
	}
	batch_add(call, w, text);
}

/*
 * Schema reads in flight, one per org and set of entity names.  A first
 * attempt of a write that lacks the same schemas meanwhile waits for that
 * read instead of making its own, so that after a start or a redefinition
 * a burst of writes reads each schema once.  When the read ends, however it
 * ends, the writes waiting start again on the next turn of the loop and
 * find the schemas cached (or, if the read failed, read them themselves).
 */
struct schema_read {
	struct ad_timer wake;     /* first: the timer's callback finds the read */
	struct schema_read *next;
	int64_t org;
	char *names;              /* the names read, as JSON text */
	struct parked *waiting;
	bool ended;
};

/* A write waiting for another's schema read. */
struct parked {
	struct parked *next;
	struct ad_call *call;
	struct wr *w;
	struct schema_read *sr;
};

static struct schema_read *schema_reads; /* in flight, then ended until woken */

static void schema_read_free(struct schema_read *sr)
{
	for (struct schema_read **pp = &schema_reads; *pp; pp = &(*pp)->next)
		if (*pp == sr) {
			*pp = sr->next;
			break;
		}
	free(sr->names);
	free(sr);
}

static void schema_read_wake(struct ad_timer *t)
{
	struct schema_read *sr = (struct schema_read *)t;
	struct parked *list = sr->waiting;

	sr->waiting = NULL;
	schema_read_free(sr);
	while (list) {
		struct parked *k = list;

		list = k->next;
		ad_call_on_cancel(k->call, NULL, NULL);
		wr_start(k->call, k->w);
		free(k);
	}
}

static void schema_read_end(struct schema_read *sr)
{
	sr->ended = true;
	if (sr->waiting)
		ad_timer_start(&sr->wake, 0, schema_read_wake);
	else
		schema_read_free(sr);
}

static void parked_cancelled(struct ad_call *call, void *arg)
{
	struct parked *k = arg;

	for (struct parked **pp = &k->sr->waiting; *pp; pp = &(*pp)->next)
		if (*pp == k) {
			*pp = k->next;
			break;
		}
	wr_free(k->w);
	free(k);
	ad_call_fail(call, AD_REASON_CANCELLED, "cancelled", NULL);
}

/*
 * A first attempt that needs the schemas of names (JSON text) of org: true
 * when it now waits for a read in flight; otherwise w leads a new one (if
 * memory allows) and reads them itself.
 */
static bool schema_read_join(struct ad_call *call, struct wr *w, int64_t org, const char *names)
{
	struct schema_read *sr;
	struct parked *k;

	if (w->attempt || w->reread)
		return false;
	for (sr = schema_reads; sr; sr = sr->next)
		if (!sr->ended && sr->org == org && !strcmp(sr->names, names))
			break;
	if (!sr) {
		if ((sr = calloc(1, sizeof(*sr))) && (sr->names = strdup(names))) {
			sr->org = org;
			sr->next = schema_reads;
			schema_reads = sr;
			w->leads = sr;
		} else {
			free(sr);
		}
		return false;
	}
	if (!(k = calloc(1, sizeof(*k))))
		return false;
	k->call = call;
	k->w = w;
	k->sr = sr;
	k->next = sr->waiting;
	sr->waiting = k;
	ad_call_on_cancel(call, parked_cancelled, k);
	return true;
}

/* At exit, after every call finished (their cancel hooks emptied the lists). */
void dm_records_fini(void)
{
	while (schema_reads) {
		struct schema_read *sr = schema_reads;

		while (sr->waiting) {
			struct parked *k = sr->waiting;

			sr->waiting = k->next;
			free(k);
		}
		schema_reads = sr->next;
		free(sr->names);
		free(sr);
	}
}

static void schemas_done(struct ad_call *call, void *arg, const struct ad_sql_result *res)
{
	struct wr *w = arg;
	int64_t org = ad_call_org_id(call), version;
	char err[200], ptr[64];
	size_t i;
	json_t *o;

	for (int r = 0; r < ad_sql_rows(res, 0); r++) {
		json_t *schema = ad_sql_json(res, 0, r, 2);

		if (!w->fresh)
			w->fresh = json_object();
		json_object_set_new(w->fresh, ad_sql_text(res, 0, r, 0, NULL), json_true());
		if (!dm_schema_put(org, ad_sql_text(res, 0, r, 0, NULL), ad_sql_int(res, 0, r, 1),
				   schema, err, sizeof(err)))
			ad_call_log(call, AD_LOG_WARN, "entity %s: its schema does not compile: %s",
				    ad_sql_text(res, 0, r, 0, NULL), err);
		json_decref(schema);
	}
	if (w->leads) {
		schema_read_end(w->leads);
		w->leads = NULL;
	}
	json_array_foreach(w->ops, i, o)
		if (!dm_schema_get(org, json_string_value(json_object_get(o, "entity")), &version)) {
			op_ptr(w, i, "/entity", ptr, sizeof(ptr));
			wr_free(w);
			ad_call_fail(call, AD_REASON_NOT_FOUND, "No such entity",
				     json_pack("{s:s}", "pointer", ptr));
			return;
		}
	wr_apply(call, w);
}

/* Reads the schemas the cache lacks, or applies at once when it has them all. */
static void wr_start(struct ad_call *call, struct wr *w)
{
	int64_t org = ad_call_org_id(call), version;
	json_t *names = json_array(), *o;
	struct ad_sql *q;
	char *text;
	size_t i;

	if (!w->ticket && !w->attempt && !w->reread)
		ticket_take(call, w);

	if (!names) {
		wr_free(w);
		dm_fail_oom(call);
		return;
	}
	json_array_foreach(w->ops, i, o) {
		json_t *e = json_object_get(o, "entity");

		if (w->reread == 1 || !dm_schema_get(org, json_string_value(e), &version))
			json_array_append(names, e);
	}
	if (w->reread == 1)
		w->reread = 2;
	if (!json_array_size(names)) {
		json_decref(names);
		wr_apply(call, w);
		return;
	}
	if (w->attempt > 1) {
		json_decref(names);
		wr_free(w);
		ad_call_fail(call, AD_REASON_CONFLICT, "The entities changed meanwhile; try again",
			     NULL);
		return;
	}
	text = json_dumps(names, JSON_COMPACT);
	json_decref(names);
	if (text && schema_read_join(call, w, org, text)) {
		free(text);
		return;
	}
	w->attempt++;
	if (!text || !(q = ad_sql_new(call, 0))) {
		free(text);
		wr_free(w);
		dm_fail_oom(call);
		return;
	}
	ad_sql_add(q, "SELECT name, version, schema FROM data_entities "
		      "WHERE name = ANY (ARRAY(SELECT jsonb_array_elements_text($1::jsonb)))",
		   1, (const char *const *)&text);
	free(text);
	ad_sql_run(q, schemas_done, w, wr_free);
}

static struct wr *wr_new(struct ad_call *call, bool many)
{
	struct wr *w = calloc(1, sizeof(*w));

	if (w && (!(w->ops = json_array()) || !(w->versions = json_object()))) {
		wr_free(w);
		w = NULL;
	}
	if (!w)
		dm_fail_oom(call);
	else
		w->many = many;
	return w;
}

void dm_mutate(struct ad_call *call)
{
	struct wr *w = wr_new(call, false);

	if (!w)
		return;
	if (!op_read(call, w, ad_call_params(call), 0)) {
		wr_free(w);
		return;
	}
	wr_start(call, w);
}

void dm_mutate_many(struct ad_call *call)
{
	const json_t *ops = json_object_get(ad_call_params(call), "ops");
	struct wr *w = wr_new(call, true);
	size_t i;
	json_t *o;

	if (!w)
		return;
	json_array_foreach(ops, i, o)
		if (!op_read(call, w, o, i)) {
			wr_free(w);
			return;
		}
	wr_start(call, w);
}

/* ---- reading ------------------------------------------------------------------ */

static void find_one_done(struct ad_call *call, void *arg, const struct ad_sql_result *res)
{
	struct dm_buf b = { 0 };

	(void)arg;
	if (!ad_sql_rows(res, 0)) {
		ad_call_fail(call, AD_REASON_NOT_FOUND, "No such record", NULL);
		return;
	}
	dm_buf_put(&b, "{\"record\":");
	dm_record_put(&b, res, 0, 0);
	dm_buf_put(&b, "}");
	dm_reply_buf(call, &b);
}

/*
 * Compiles params/filter into " AND (...)" on b with its values as the
 * parameter vp; false when the filter is bad (the call is answered).
 */
static bool where_filter(struct ad_call *call, struct dm_buf *b, json_t *vals, int vp)
{
	const json_t *filter = json_object_get(ad_call_params(call), "filter");
	struct dm_node *tree;
	struct dm_error e;
	bool ok;

	e.position = -1;
	if (!dm_filter_parse(filter, "/filter", &tree, &e)) {
		dm_fail_error(call, &e);
		return false;
	}
	if (!tree)
		return true;
	dm_buf_put(b, " AND ");
	ok = dm_filter_sql(tree, b, vals, vp, "/filter", &e);
	dm_node_free(tree);
	if (!ok)
		dm_fail_error(call, &e);
	return ok;
}

/* Appends the FROM and the org and entity conditions; false when answered. */
static bool from_sql(struct ad_call *call, struct dm_buf *b, const char *entity)
{
	if (entity && dm_from_sql(b, entity))
		return true;
	ad_call_fail_params(call, "/entity", "pattern", "Not an entity name");
	return false;
}

void dm_find_one(struct ad_call *call)
{
	const json_t *params = ad_call_params(call);
	const char *entity = json_string_value(json_object_get(params, "entity"));
	const char *id = json_string_value(json_object_get(params, "id"));
	struct dm_buf b = { 0 };
	json_t *vals = json_array();
	struct ad_sql *q = NULL;
	char *vtext = NULL;
	struct dm_num org = dm_num(ad_call_org_id(call));

	if (!id && !json_object_get(params, "filter")) {
		json_decref(vals);
		ad_call_fail_params(call, "/id", "required", "find_one needs an id or a filter");
		return;
	}
	dm_buf_put(&b, "SELECT " DM_RECORD_COLS);
	if (!from_sql(call, &b, entity))
		goto out;
	if (id)
		dm_buf_put(&b, " AND r.id = $2");
	else if (!vals || !where_filter(call, &b, vals, 2))
		goto out;
	dm_buf_put(&b, " ORDER BY r.id LIMIT 1");
	if (!vals || b.oom || !(vtext = dm_json_text(vals)) ||
	    !(q = ad_sql_new(call, 0))) {
		dm_fail_oom(call);
		goto out;
	}
	{
		const char *p[2] = { org.v, id ? id : vtext };

		ad_sql_add(q, b.data, id || json_array_size(vals) ? 2 : 1, p);
	}
	ad_sql_run(q, find_one_done, NULL, NULL);
out:
	free(vtext);
	json_decref(vals);
	dm_buf_free(&b);
}

/* ---- find_many and its cursor -------------------------------------------------- */

static const char b64url[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static char *b64_encode(const char *in, size_t n)
{
	char *out = malloc(n / 3 * 4 + 5), *o = out;
	size_t i;

	if (!out)
		return NULL;
	for (i = 0; i + 2 < n; i += 3) {
		uint32_t v = (uint32_t)(unsigned char)in[i] << 16 |
			     (uint32_t)(unsigned char)in[i + 1] << 8 | (unsigned char)in[i + 2];

		*o++ = b64url[v >> 18];
		*o++ = b64url[(v >> 12) & 63];
		*o++ = b64url[(v >> 6) & 63];
		*o++ = b64url[v & 63];
	}
	if (i < n) {
		uint32_t v = (uint32_t)(unsigned char)in[i] << 16 |
			     (i + 1 < n ? (uint32_t)(unsigned char)in[i + 1] << 8 : 0);

		*o++ = b64url[v >> 18];
		*o++ = b64url[(v >> 12) & 63];
		if (i + 1 < n)
			*o++ = b64url[(v >> 6) & 63];
	}
	*o = '\0';
	return out;
}

/* Decodes base64url without padding; NULL when s is not that. */
static char *b64_decode(const char *s, size_t *ret_len)
{
	size_t n = strlen(s), o = 0;
	char *out = malloc(n / 4 * 3 + 3);
	uint32_t acc = 0;
	int bits = 0;

	if (!out || n % 4 == 1) {
		free(out);
		return NULL;
	}
	for (size_t i = 0; i < n; i++) {
		const char *p = strchr(b64url, s[i]);

		if (!p || !s[i]) {
			free(out);
			return NULL;
		}
		acc = acc << 6 | (uint32_t)(p - b64url);
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (char)((acc >> bits) & 0xff);
		}
	}
	*ret_len = o;
	return out;
}

struct page {
	struct dm_field field;
	bool desc;
	int64_t limit;
};

static void page_free(void *p)
{
	free(p);
}

/*
 * The answer is written as text around the records' columns, data as
 * PostgreSQL sent it, not parsed and printed again.
 */
static void find_many_done(struct ad_call *call, void *arg, const struct ad_sql_result *res)
{
	struct page *pg = arg;
	int rows = ad_sql_rows(res, 0);
	struct dm_buf b = { 0 };
	char *enc = NULL;

	if (ad_sql_error(res, NULL)) {
		/* A cursor whose value the database cannot read is class 22. */
		free(pg);
		dm_fail_sql(call, res);
		return;
	}
	if (rows > pg->limit) {
		int last = (int)pg->limit - 1;
		json_t *c = json_pack("[s,s,o,s]", pg->field.name, pg->desc ? "desc" : "asc",
				      ad_sql_string(res, 0, last, DM_RECORD_NCOLS),
				      ad_sql_text(res, 0, last, 0, NULL));
		char *text = c ? dm_json_text(c) : NULL;

		enc = text ? b64_encode(text, strlen(text)) : NULL;
		free(text);
		json_decref(c);
	}
	dm_buf_put(&b, "{\"records\":[");
	for (int r = 0; r < rows && r < pg->limit; r++) {
		if (r)
			dm_buf_put(&b, ",");
		dm_record_put(&b, res, r, 0);
	}
	/* The cursor is base64url: nothing in it needs escaping. */
	dm_buf_put(&b, "],\"next_cursor\":");
	if (enc) {
		dm_buf_put(&b, "\"");
		dm_buf_put(&b, enc);
		dm_buf_put(&b, "\"}");
	} else {
		dm_buf_put(&b, "null}");
	}
	if (rows > pg->limit && !enc)
		b.oom = true; /* the cursor could not be made */
	dm_reply_buf(call, &b);
	free(enc);
	free(pg);
}

/*
 * The keyset conditions of the rows after a cursor: its order value ($p,
 * unless null_key: the last row had no such field) and id ($p + 1, or $p).
 * A data field's records without it (SQL NULL) come first ascending and
 * last descending, so the rows after a cursor may be two ranges of the
 * index: descending, the values after it and then every record without
 * the field; ascending after a record without it, the rest of those and
 * then every value.  Each range is then read on its own (two queries under
 * the same order, each limited, merged), not the whole order filtered by
 * an OR, which reads the index from its start.  Writes one condition, or
 * two into c[0] and c[1]; answers how many.
 */
static int after_sql(struct dm_buf c[2], const struct dm_field *f, bool desc, bool null_key,
		     int p)
{
	const char *cmp = desc ? "<" : ">";

	if (null_key) {
		dm_order_sql(f, &c[0]);
		dm_buf_printf(&c[0], " IS NULL AND r.id %s $%d", cmp, p);
		if (desc)
			return 1;
		dm_order_sql(f, &c[1]);
		dm_buf_put(&c[1], " IS NOT NULL");
		return 2;
	}
	/* A row comparison is never true for a NULL. */
	dm_buf_put(&c[0], "(");
	dm_order_sql(f, &c[0]);
	dm_buf_printf(&c[0], ", r.id) %s ($%d::%s, $%d)", cmp, p, dm_order_type(f), p + 1);
	if (!desc || f->meta != DM_DATA)
		return 1;
	dm_order_sql(f, &c[1]);
	dm_buf_put(&c[1], " IS NULL");
	return 2;
}

/* " ORDER BY <the order> LIMIT $limit", over r or (outer) u. */
static void order_sql(struct dm_buf *b, const struct page *pg, bool outer, int limit)
{
	const char *dir = pg->desc ? "DESC" : "ASC";

	dm_buf_put(b, " ORDER BY ");
	if (outer)
		dm_buf_put(b, "u.o");
	else
		dm_order_sql(&pg->field, b);
	dm_buf_put(b, " ");
	dm_buf_put(b, dir);
	dm_buf_put(b, dm_order_nulls(&pg->field, pg->desc));
	dm_buf_put(b, outer ? ", u.id " : ", r.id ");
	dm_buf_put(b, dir);
	dm_buf_put(b, " LIMIT $");
	dm_buf_int(b, limit);
	dm_buf_put(b, "::bigint");
}

void dm_find_many(struct ad_call *call)
{
	const json_t *params = ad_call_params(call);
	const json_t *ob = json_object_get(params, "order_by");
	const char *cursor = json_string_value(json_object_get(params, "cursor"));
	const char *p[5];
	int np = 0, ranges = 1;
	struct dm_buf b = { 0 }, head = { 0 }, c[2] = { { 0 }, { 0 } };
	json_t *vals = json_array(), *cur = NULL, *k = NULL, *id = NULL;
	struct ad_sql *q = NULL;
	char *vtext = NULL, *raw = NULL;
	struct page *pg = calloc(1, sizeof(*pg));
	struct dm_num fetch, org = dm_num(ad_call_org_id(call));

	if (!pg || !vals) {
		dm_fail_oom(call);
		goto out;
	}
	pg->limit = 50;
	(void)ad_param_int(call, "limit", &pg->limit);
	fetch = dm_num(pg->limit + 1);
	pg->field = (struct dm_field){ DM_ID, "_id" };
	if (ob) {
		const char *f = json_string_value(json_object_get(ob, "field"));

		(void)dm_field_parse(f, strlen(f), &pg->field); /* the spec checked it */
		pg->desc = !strcmp(json_string_value(json_object_get(ob, "direction")) ?
				   json_string_value(json_object_get(ob, "direction")) : "asc",
				   "desc");
	}
	if (cursor) {
		size_t len;
		json_t *f, *d;

		raw = b64_decode(cursor, &len);
		cur = raw ? json_loadb(raw, len, 0, NULL) : NULL;
		if (!cur || json_array_size(cur) != 4 || !(f = json_array_get(cur, 0)) ||
		    !(d = json_array_get(cur, 1)) || !(k = json_array_get(cur, 2)) ||
		    !(id = json_array_get(cur, 3)) || !json_is_string(id) ||
		    !(json_is_string(k) || (json_is_null(k) && pg->field.meta == DM_DATA)) ||
		    !json_is_string(f) || strcmp(json_string_value(f), pg->field.name) ||
		    !json_is_string(d) || strcmp(json_string_value(d), pg->desc ? "desc" : "asc")) {
			ad_call_fail_params(call, "/cursor", "cursor",
					    "Not a cursor of this order (pass next_cursor back "
					    "with the same order_by)");
			goto out;
		}
	}
	p[np++] = org.v;
	if (!from_sql(call, &head, json_string_value(json_object_get(params, "entity"))) ||
	    !where_filter(call, &head, vals, 2))
		goto out;
	if (!dm_vals_param(call, vals, &vtext, p, &np))
		goto out;
	if (cursor) {
		ranges = after_sql(c, &pg->field, pg->desc, json_is_null(k), np + 1);
		if (!json_is_null(k))
			p[np++] = json_string_value(k);
		p[np++] = json_string_value(id);
	}
	p[np++] = fetch.v;
	if (ranges == 2)
		dm_buf_put(&b, "SELECT u.id, u.d, u.v, u.c, u.u, u.k FROM (");
	for (int i = 0; i < ranges; i++) {
		dm_buf_put(&b, i ? ") UNION ALL (SELECT " : ranges == 2 ? "(SELECT " : "SELECT ");
		dm_buf_put(&b, DM_RECORD_COLS ", (");
		dm_order_sql(&pg->field, &b);
		dm_buf_put(&b, ")::text");
		if (ranges == 2) {
			dm_buf_put(&b, ", ");
			dm_order_sql(&pg->field, &b);
		}
		dm_buf_put(&b, head.data);
		if (cursor)
			dm_buf_printf(&b, " AND (%s)", c[i].data);
		order_sql(&b, pg, false, np);
	}
	if (ranges == 2) {
		dm_buf_put(&b, ")) u(id, d, v, c, u, k, o)");
		order_sql(&b, pg, true, np);
	}
	if (b.oom || head.oom || c[0].oom || c[1].oom ||
	    !(q = ad_sql_new(call, AD_SQL_SEE_ERRORS | AD_SQL_MERGE))) {
		dm_fail_oom(call);
		goto out;
	}
	ad_sql_add(q, b.data, np, p);
	ad_sql_run(q, find_many_done, pg, page_free);
	pg = NULL;
out:
	free(pg);
	free(raw);
	free(vtext);
	json_decref(cur);
	json_decref(vals);
	dm_buf_free(&b);
	dm_buf_free(&head);
	dm_buf_free(&c[0]);
	dm_buf_free(&c[1]);
}
