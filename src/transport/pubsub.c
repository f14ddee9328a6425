/*
 * pubsub.c - publish/subscribe: actiond/publish.h on this instance and
 * across the instances that share the database.
 *
 * The index.  Every open WebSocket sits on two lists: its org's list for its
 * class (member, admin, owner, agent, API key) and the list of its account
 * or of its agent session; each topic it subscribed to adds one small record
 * on that topic's list.  The lists hang off groups in one hash table keyed
 * by (kind, org, id or topic); a group exists while it has members.  So a
 * publish walks only the list that its audience's most specific field
 * names, and filters on the rest; an idle connection costs two list nodes.
 *
 * Local delivery serialises the notification once into a refcounted frame
 * (outq.h) and queues that same frame on every recipient.
 *
 * Other instances.  Each publish is also put on a send queue that becomes
 * pg_notify() statements on the "actiond" channel.  One job is in flight at
 * a time and carries everything queued meanwhile, so NOTIFYs commit in the
 * order of the publishes (each envelope has a sequence number, because
 * PostgreSQL folds identical payloads of one transaction into one).  An
 * envelope that would not fit NOTIFY's 8000 bytes is inserted into the
 * unlogged table "publishes" by the same statement that notifies its row id;
 * receivers fetch the row through the pool.  Received publishes wait in one
 * FIFO until their row (if any) is back, so they are delivered in the order
 * they were notified; rows older than a minute are deleted by a timer.
 *
 * Everything is bounded: the send queue (items and bytes), the receive
 * queue, and the row fetches in flight.  What does not fit is dropped and
 * counted: delivery is at most once.
 */
#include "pubsub.h"
#include "actiond/publish.h"
#include "cluster.h"
#include "dispatch.h"
#include "json.h"
#include "log.h"
#include "outq.h"
#include "pg.h"
#include "server.h"
#include "ws.h"

#include <stdlib.h>
#include <string.h>

/* NOTIFY payloads must be shorter than 8000 bytes. */
#define NOTIFY_MAX 7999
#define TX_MAX_ITEMS 4096
#define TX_MAX_BYTES (64u << 20)
#define TX_PER_JOB 32
#define RX_MAX_ITEMS 4096
#define RX_MAX_FETCHES 16
#define CLEANUP_MS 10000

enum group_kind { G_ORG = 1, G_ACCOUNT, G_AGENT, G_TOPIC };
enum conn_class { CLS_MEMBER, CLS_ADMIN, CLS_OWNER, CLS_AGENT, CLS_KEY, NCLS };

struct ps_group {
	struct ps_group *next;  /* hash chain */
	uint32_t hash;
	uint8_t kind;
	uint8_t topic_len;
	uint32_t count;         /* members, plus walks in progress */
	int64_t org_id;
	int64_t id;
	/* One list (NCLS for an org), then the topic bytes for a topic. */
	struct ad_list lists[];
};

struct ps_sub {
	struct ad_list node;    /* on the topic group's list */
	struct ps_sub *next;    /* the connection's next topic */
	struct ps_group *grp;
	struct ad_conn *conn;
};

/* An audience as used inside: the public one plus the topic's length. */
struct aud {
	int64_t org_id;
	uint32_t roles;
	int64_t account_id;
	int64_t agent_session_id;
	const char *topic;
	size_t topic_len;
};

static struct ps_group **tab;
static size_t tab_cap, tab_used;

static struct {
	uint64_t publishes, deliveries, remote_notify, remote_table;
	uint64_t dropped_send, dropped_receive, fetch_failed;
} st;

/* ---- the index -------------------------------------------------------------- */

static uint32_t key_hash(int kind, int64_t org, int64_t id, const char *t, size_t tl)
{
	uint64_t h = 1469598103934665603ull;
	uint64_t words[3] = { (uint64_t)kind, (uint64_t)org, (uint64_t)id };
	const unsigned char *p = (const unsigned char *)words;

	for (size_t i = 0; i < sizeof(words); i++)
		h = (h ^ p[i]) * 1099511628211ull;
	for (size_t i = 0; i < tl; i++)
		h = (h ^ (unsigned char)t[i]) * 1099511628211ull;
	return (uint32_t)(h ^ (h >> 32));
}

static char *group_topic(struct ps_group *g)
{
	return (char *)&g->lists[1];
}

static bool tab_grow(void)
{
	size_t ncap = tab_cap ? tab_cap * 2 : 64;
	struct ps_group **t = calloc(ncap, sizeof(*t));

	if (!t)
		return false;
	for (size_t i = 0; i < tab_cap; i++)
		while (tab[i]) {
			struct ps_group *g = tab[i];

			tab[i] = g->next;
			g->next = t[g->hash & (ncap - 1)];
			t[g->hash & (ncap - 1)] = g;
		}
	free(tab);
	tab = t;
	tab_cap = ncap;
	return true;
}

/*
 * The group of a key, or NULL.  With create, a missing group is made (NULL
 * only when out of memory); its count is the caller's to raise.
 */
static struct ps_group *group_get(int kind, int64_t org, int64_t id, const char *topic,
				  size_t tl, bool create)
{
	uint32_t h = key_hash(kind, org, id, topic, tl);
	struct ps_group *g;
	int nlists = kind == G_ORG ? NCLS : 1;

	for (g = tab_cap ? tab[h & (tab_cap - 1)] : NULL; g; g = g->next)
		if (g->hash == h && g->kind == kind && g->org_id == org && g->id == id &&
		    g->topic_len == tl && (!tl || !memcmp(group_topic(g), topic, tl)))
			return g;
	if (!create || (tab_used >= tab_cap && !tab_grow()))
		return NULL;
	g = malloc(sizeof(*g) + (size_t)nlists * sizeof(struct ad_list) + tl);
	if (!g)
		return NULL;
	g->hash = h;
	g->kind = (uint8_t)kind;
	g->topic_len = (uint8_t)tl;
	g->count = 0;
	g->org_id = org;
	g->id = id;
	for (int i = 0; i < nlists; i++)
		ad_list_init(&g->lists[i]);
	if (tl)
		memcpy(group_topic(g), topic, tl);
	g->next = tab[h & (tab_cap - 1)];
	tab[h & (tab_cap - 1)] = g;
	tab_used++;
	return g;
}

/* Drops one count of g, freeing it at zero. */
static void group_put(struct ps_group *g)
{
	struct ps_group **pp;

	if (--g->count)
		return;
	for (pp = &tab[g->hash & (tab_cap - 1)]; *pp != g; pp = &(*pp)->next)
		;
	*pp = g->next;
	tab_used--;
	free(g);
}

static int conn_class(const struct ad_cred *cr)
{
	if (cr->kind == AD_CRED_AGENT)
		return CLS_AGENT;
	if (cr->kind == AD_CRED_API_KEY)
		return CLS_KEY;
	switch (cr->role) {
	case AD_ROLE_OWNER: return CLS_OWNER;
	case AD_ROLE_ADMIN: return CLS_ADMIN;
	default: return CLS_MEMBER;
	}
}

/* The AD_AUDIENCE_* bit of a class: MEMBER is bit 1, KEYS bit 5. */
static uint32_t class_bit(int cls)
{
	return 1u << (cls + 1);
}

/* The account or agent-session group key of a credential; false if none. */
static bool who_key(const struct ad_cred *cr, int *kind, int64_t *id)
{
	if (cr->account_id) {
		*kind = G_ACCOUNT;
		*id = cr->account_id;
	} else if (cr->agent_session_id) {
		*kind = G_AGENT;
		*id = cr->agent_session_id;
	} else {
		return false;
	}
	return true;
}

bool ad_pubsub_join(struct ad_conn *c)
{
	const struct ad_cred *cr = c->req.cred;
	struct ps_group *g;
	int64_t id;
	int kind;

	if (c->ps.enrolled || !cr || cr->org_id <= 0)
		return true;
	if (!(g = group_get(G_ORG, cr->org_id, 0, NULL, 0, true)))
		return false;
	g->count++;
	ad_list_add_tail(&g->lists[conn_class(cr)], &c->ps.org_node);
	c->ps.enrolled = true;
	if (who_key(cr, &kind, &id)) {
		if (!(g = group_get(kind, cr->org_id, id, NULL, 0, true))) {
			ad_pubsub_leave(c);
			return false;
		}
		g->count++;
		ad_list_add_tail(&g->lists[0], &c->ps.who_node);
	}
	return true;
}

void ad_pubsub_leave(struct ad_conn *c)
{
	const struct ad_cred *cr = c->req.cred;
	struct ps_group *g;
	int64_t id;
	int kind;

	if (!c->ps.enrolled)
		return;
	c->ps.enrolled = false;
	while (c->ps.subs) {
		struct ps_sub *s = c->ps.subs;

		c->ps.subs = s->next;
		ad_list_del(&s->node);
		group_put(s->grp);
		free(s);
	}
	c->ps.nsubs = 0;
	if (ad_list_linked(&c->ps.who_node)) {
		ad_list_del(&c->ps.who_node);
		if (who_key(cr, &kind, &id) &&
		    (g = group_get(kind, cr->org_id, id, NULL, 0, false)))
			group_put(g);
	}
	ad_list_del(&c->ps.org_node);
	if ((g = group_get(G_ORG, cr->org_id, 0, NULL, 0, false)))
		group_put(g);
}

/* The caller's WebSocket, if the call came over one that is still open. */
static struct ad_conn *call_conn(struct ad_call *call)
{
	struct ad_requester *r = ad_call_requester(call);
	struct ad_conn *c = r ? ad_ws_conn_of(r) : NULL;

	return c && c->ps.enrolled && !c->close_code ? c : NULL;
}

static struct ps_sub **sub_find(struct ad_conn *c, const char *topic, size_t tl)
{
	struct ps_sub **pp;

	for (pp = &c->ps.subs; *pp; pp = &(*pp)->next)
		if ((*pp)->grp->topic_len == tl && !memcmp(group_topic((*pp)->grp), topic, tl))
			return pp;
	return NULL;
}

int ad_call_subscribe(struct ad_call *call, const char *topic)
{
	struct ad_conn *c = call_conn(call);
	size_t tl = topic ? strlen(topic) : 0;
	struct ps_group *g;
	struct ps_sub *s;

	if (!c || !tl || tl > AD_TOPIC_MAX)
		return -1;
	if (sub_find(c, topic, tl))
		return 0;
	if (c->ps.nsubs >= AD_TOPICS_PER_CONN)
		return -1;
	if (!(s = malloc(sizeof(*s))))
		return -1;
	if (!(g = group_get(G_TOPIC, c->req.cred->org_id, 0, topic, tl, true))) {
		free(s);
		return -1;
	}
	g->count++;
	s->grp = g;
	s->conn = c;
	s->next = c->ps.subs;
	ad_list_add_tail(&g->lists[0], &s->node);
	c->ps.subs = s;
	c->ps.nsubs++;
	return 0;
}

int ad_call_unsubscribe(struct ad_call *call, const char *topic)
{
	struct ad_conn *c = call_conn(call);
	size_t tl = topic ? strlen(topic) : 0;
	struct ps_sub **pp, *s;

	if (!c || !tl || tl > AD_TOPIC_MAX)
		return -1;
	if ((pp = sub_find(c, topic, tl))) {
		s = *pp;
		*pp = s->next;
		ad_list_del(&s->node);
		group_put(s->grp);
		free(s);
		c->ps.nsubs--;
	}
	return 0;
}

/* ---- local delivery ----------------------------------------------------------- */

static bool matches(const struct ad_conn *c, const struct aud *a)
{
	const struct ad_cred *cr = c->req.cred;

	if (c->close_code)
		return false;
	if (a->roles && !(a->roles & class_bit(conn_class(cr))))
		return false;
	if (a->account_id && cr->account_id != a->account_id)
		return false;
	if (a->agent_session_id && cr->agent_session_id != a->agent_session_id)
		return false;
	return true;
}

/*
 * Queues m on every connection of this instance in the audience; returns
 * how many.  The group walked is held (its count raised) so that nothing a
 * send does can free it under the walk.
 */
static size_t deliver(const struct aud *a, struct ad_msg *m)
{
	struct ad_list *pos, *tmp;
	struct ps_group *g;
	size_t n = 0;

	if (a->topic_len)
		g = group_get(G_TOPIC, a->org_id, 0, a->topic, a->topic_len, false);
	else if (a->account_id)
		g = group_get(G_ACCOUNT, a->org_id, a->account_id, NULL, 0, false);
	else if (a->agent_session_id)
		g = group_get(G_AGENT, a->org_id, a->agent_session_id, NULL, 0, false);
	else
		g = group_get(G_ORG, a->org_id, 0, NULL, 0, false);
	if (!g)
		return 0;
	g->count++;
	if (g->kind == G_TOPIC) {
		ad_list_foreach_safe(pos, tmp, &g->lists[0]) {
			struct ps_sub *s = ad_container_of(pos, struct ps_sub, node);

			if (matches(s->conn, a)) {
				ad_ws_send(s->conn, m);
				n++;
			}
		}
	} else if (g->kind == G_ORG) {
		for (int cls = 0; cls < NCLS; cls++) {
			if (a->roles && !(a->roles & class_bit(cls)))
				continue;
			ad_list_foreach_safe(pos, tmp, &g->lists[cls]) {
				struct ad_conn *c = ad_container_of(pos, struct ad_conn,
								    ps.org_node);

				if (!c->close_code) {
					ad_ws_send(c, m);
					n++;
				}
			}
		}
	} else {
		ad_list_foreach_safe(pos, tmp, &g->lists[0]) {
			struct ad_conn *c = ad_container_of(pos, struct ad_conn, ps.who_node);

			if (matches(c, a)) {
				ad_ws_send(c, m);
				n++;
			}
		}
	}
	group_put(g);
	st.deliveries += n;
	return n;
}

/* ---- sending to the other instances ------------------------------------------- */

struct tx_item {
	struct tx_item *next;
	size_t len;
	uint64_t seq;
	bool big;          /* through the table */
	char body[];       /* the envelope, NUL-terminated */
};

static struct {
	struct tx_item *head, **tail;
	size_t n, bytes;
	bool busy, in_kick;
	uint64_t seq;
	int64_t warned_us;
} tx = { NULL, &tx.head, 0, 0, false, false, 0, 0 };

static bool running;      /* the database is there and not shutting down */
static struct ad_timer cleanup_timer;

static const char notify_sql[] = "SELECT pg_notify('actiond', $1)";
/* $2 is the envelope's head up to "ref":, the row id and "}" complete it. */
static const char insert_notify_sql[] =
	"WITH r AS (INSERT INTO publishes (body) VALUES ($1) RETURNING id) "
	"SELECT pg_notify('actiond', $2 || r.id || '}') FROM r";
static const char fetch_sql[] = "SELECT body FROM publishes WHERE id = $1::bigint";
static const char cleanup_sql[] =
	"DELETE FROM publishes WHERE created_at < now() - interval '60 seconds'";

static void tx_kick(void);

static void tx_done(void *arg, enum ad_pg_status status, PGresult *const *r, int n,
		    int failed)
{
	size_t sent = (size_t)(uintptr_t)arg;
	int64_t now = lws_now_usecs();

	if (status != AD_PG_OK) {
		st.dropped_send += sent;
		/* At most one line a second while the database is away. */
		if (now - tx.warned_us >= 1000000) {
			tx.warned_us = now;
			ad_log_warn("publish: notifications to other instances lost (%s)",
				    status == AD_PG_ERROR && failed >= 0 && failed < n && r[failed]
					    ? PQresultErrorMessage(r[failed])
					    : status == AD_PG_ERROR ? "statement failed"
								    : "no database");
		}
	}
	tx.busy = false;
	if (!tx.in_kick)
		tx_kick();
}

/*
 * Sends everything queued, TX_PER_JOB envelopes per job and one job at a
 * time, so that their transactions commit in order.  A job whose callback
 * runs inside ad_pg_submit() (no connection) is followed by the next one
 * from this loop rather than by recursion.
 */
static void tx_kick(void)
{
	tx.in_kick = true;
	while (!tx.busy && tx.head && running) {
		struct ad_pg_stmt stmts[TX_PER_JOB];
		const char *params[TX_PER_JOB][2];
		struct tx_item *items[TX_PER_JOB];
		char heads[TX_PER_JOB][96];
		int n = 0;

		while (tx.head && n < TX_PER_JOB) {
			struct tx_item *it = tx.head;

			tx.head = it->next;
			if (!tx.head)
				tx.tail = &tx.head;
			tx.n--;
			tx.bytes -= it->len;
			items[n] = it;
			params[n][0] = it->body;
			if (it->big) {
				snprintf(heads[n], sizeof(heads[n]),
					 "{\"op\":\"publish\",\"from\":\"%s\",\"seq\":%llu,"
					 "\"ref\":", ad_cluster_instance(),
					 (unsigned long long)it->seq);
				params[n][1] = heads[n];
				stmts[n] = (struct ad_pg_stmt){ insert_notify_sql, 2, params[n] };
			} else {
				stmts[n] = (struct ad_pg_stmt){ notify_sql, 1, params[n] };
			}
			n++;
		}
		tx.busy = true;
		ad_pg_submit(stmts, n, 0, NULL, tx_done, (void *)(uintptr_t)n);
		for (int i = 0; i < n; i++)
			free(items[i]); /* ad_pg_submit copied the parameters */
	}
	tx.in_kick = false;
}

/* Builds the envelope of a publish for the other instances. */
static struct tx_item *envelope(const struct aud *a, const struct ad_msg *m)
{
	struct ad_buf b = AD_BUF_INIT;
	struct tx_item *it;
	size_t plen;
	const char *payload = ad_msg_payload(m, &plen);
	uint64_t seq = ++tx.seq;

	ad_buf_puts(&b, "{\"op\":\"publish\",\"from\":\"");
	ad_buf_puts(&b, ad_cluster_instance());
	ad_buf_puts(&b, "\",\"seq\":");
	ad_buf_int(&b, (long long)seq);
	ad_buf_puts(&b, ",\"org\":");
	ad_buf_int(&b, a->org_id);
	ad_buf_puts(&b, ",\"roles\":");
	ad_buf_int(&b, a->roles);
	ad_buf_puts(&b, ",\"account\":");
	ad_buf_int(&b, a->account_id);
	ad_buf_puts(&b, ",\"agent\":");
	ad_buf_int(&b, a->agent_session_id);
	if (a->topic_len) {
		ad_buf_puts(&b, ",\"topic\":");
		ad_buf_json_str(&b, a->topic, a->topic_len);
	}
	ad_buf_puts(&b, ",\"msg\":");
	ad_buf_json_str(&b, payload, plen);
	ad_buf_putc(&b, '}');
	if (b.oom || !(it = malloc(sizeof(*it) + b.len + 1))) {
		ad_buf_free(&b);
		return NULL;
	}
	it->next = NULL;
	it->seq = seq;
	it->len = b.len;
	it->big = b.len > NOTIFY_MAX;
	memcpy(it->body, b.data, b.len);
	it->body[b.len] = '\0';
	ad_buf_free(&b);
	return it;
}

/* ---- publishing ------------------------------------------------------------------ */

static int dump_cb(const char *buf, size_t size, void *data)
{
	struct ad_buf *b = data;

	ad_buf_append(b, buf, size);
	return b->oom || b->len > AD_PUBLISH_MAX ? -1 : 0;
}

/* Checks a public audience and turns it into the inside one. */
static bool audience(const struct ad_audience *pa, struct aud *a)
{
	if (!pa || pa->org_id <= 0 ||
	    (pa->roles & ~(AD_AUDIENCE_MEMBER | AD_AUDIENCE_ADMIN | AD_AUDIENCE_OWNER |
			   AD_AUDIENCE_AGENTS | AD_AUDIENCE_KEYS)) ||
	    pa->account_id < 0 || pa->agent_session_id < 0)
		return false;
	*a = (struct aud){ pa->org_id, pa->roles, pa->account_id, pa->agent_session_id,
			   pa->topic, pa->topic ? strlen(pa->topic) : 0 };
	return !pa->topic || (a->topic_len && a->topic_len <= AD_TOPIC_MAX);
}

/* ad_publish_msg(), or only here when here is true. */
static int publish_msg(const struct ad_audience *pa, struct ad_msg *m, bool here)
{
	struct tx_item *it = NULL;
	struct aud a;
	size_t reached;

	if (!audience(pa, &a) || m->frame_len > AD_PUBLISH_MAX + 10)
		return -1;
	if (running && !here) {
		it = envelope(&a, m);
		if (!it || tx.n >= TX_MAX_ITEMS || tx.bytes + it->len > TX_MAX_BYTES) {
			/* All or nothing: refused here too when it cannot go out. */
			free(it);
			st.dropped_send++;
			return -1;
		}
	}
	st.publishes++;
	reached = deliver(&a, m);
	if (it) {
		*tx.tail = it;
		tx.tail = &it->next;
		tx.n++;
		tx.bytes += it->len;
		tx_kick();
	}
	return (int)(reached > INT32_MAX ? INT32_MAX : reached);
}

int ad_publish_msg(const struct ad_audience *pa, struct ad_msg *m)
{
	return publish_msg(pa, m, false);
}

/* Serialises the notification once and publishes it (here, or everywhere). */
static int publish(const struct ad_audience *pa, const char *method, const json_t *params,
		   bool here)
{
	struct ad_buf b = AD_BUF_INIT;
	struct ad_msg *m;
	struct aud a;
	int n;

	if (!audience(pa, &a) || !method || !*method ||
	    (params && !json_is_object(params) && !json_is_array(params)))
		return -1;
	ad_buf_puts(&b, "{\"jsonrpc\":\"2.0\",\"method\":");
	ad_buf_json_str(&b, method, strlen(method));
	if (params) {
		ad_buf_puts(&b, ",\"params\":");
		if (json_dump_callback(params, dump_cb, &b, JSON_COMPACT)) {
			ad_buf_free(&b);
			return -1;
		}
	}
	ad_buf_putc(&b, '}');
	if (b.oom || b.len > AD_PUBLISH_MAX || !(m = ad_msg_new(b.data, b.len))) {
		ad_buf_free(&b);
		return -1;
	}
	ad_buf_free(&b);
	n = publish_msg(pa, m, here);
	ad_msg_unref(m);
	return n;
}

int ad_publish(const struct ad_audience *pa, const char *method, const json_t *params)
{
	return publish(pa, method, params, false);
}

int ad_publish_here(const struct ad_audience *pa, const char *method, const json_t *params)
{
	return publish(pa, method, params, true);
}

int ad_topic_subscribers(int64_t org_id, const char *topic)
{
	size_t tl = topic ? strlen(topic) : 0;
	struct ps_group *g;

	if (!tl || tl > AD_TOPIC_MAX ||
	    !(g = group_get(G_TOPIC, org_id, 0, topic, tl, false)))
		return 0;
	/* A topic group counts its subscriptions (walks are not under way here). */
	return g->count > INT32_MAX ? INT32_MAX : (int)g->count;
}

/* ---- receiving from the other instances ------------------------------------------ */

struct rx_item {
	struct rx_item *next;
	struct ad_pg_job *job;  /* the row fetch in flight */
	struct aud a;
	char topic[AD_TOPIC_MAX];
	struct ad_msg *msg;     /* NULL until known */
	int64_t ref;            /* the row to fetch, 0 if none */
	bool done;              /* msg set, or given up */
};

static struct {
	struct rx_item *head, **tail, *next_fetch;
	size_t n;
	unsigned fetching;
	bool in_pump, again;
} rx = { NULL, &rx.head, NULL, 0, 0, false, false };

/* Reads an envelope's audience and message into it; false if malformed. */
static bool parse_envelope(const json_t *m, struct rx_item *it)
{
	const json_t *msg = json_object_get(m, "msg"), *topic = json_object_get(m, "topic");

	it->a.org_id = json_integer_value(json_object_get(m, "org"));
	it->a.roles = (uint32_t)json_integer_value(json_object_get(m, "roles"));
	it->a.account_id = json_integer_value(json_object_get(m, "account"));
	it->a.agent_session_id = json_integer_value(json_object_get(m, "agent"));
	if (it->a.org_id <= 0 || !json_is_string(msg) ||
	    json_string_length(msg) > AD_PUBLISH_MAX)
		return false;
	if (topic) {
		size_t tl = json_string_length(topic);

		if (!json_is_string(topic) || !tl || tl > AD_TOPIC_MAX)
			return false;
		memcpy(it->topic, json_string_value(topic), tl);
		it->a.topic = it->topic;
		it->a.topic_len = tl;
	}
	it->msg = ad_msg_new(json_string_value(msg), json_string_length(msg));
	return it->msg != NULL;
}

static void rx_pump(void);

static void fetched(void *arg, enum ad_pg_status status, PGresult *const *r, int n,
		    int failed)
{
	struct rx_item *it = arg;
	json_t *m = NULL;

	(void)failed;
	it->job = NULL;
	rx.fetching--;
	if (status == AD_PG_OK && n == 1 && PQntuples(r[0]) == 1)
		m = ad_json_loadb(PQgetvalue(r[0], 0, 0), (size_t)PQgetlength(r[0], 0, 0), 0,
				  NULL);
	if (!m || !parse_envelope(m, it)) {
		st.fetch_failed++;
		ad_log_warn("publish: row %lld from another instance could not be read",
			    (long long)it->ref);
	}
	json_decref(m);
	it->done = true;
	rx_pump();
}

/*
 * Starts row fetches (up to RX_MAX_FETCHES) and delivers what is ready from
 * the head.  A fetch whose callback runs inside ad_pg_submit() (no
 * connection) comes back here; that nested call only asks this one to go
 * round again, so no item is freed under the loop.
 */
static void rx_pump(void)
{
	if (rx.in_pump) {
		rx.again = true;
		return;
	}
	rx.in_pump = true;
	do {
		rx.again = false;
		while (rx.next_fetch && rx.fetching < RX_MAX_FETCHES && running) {
			struct rx_item *it = rx.next_fetch;
			char id[24];
			const char *p[1] = { id };
			struct ad_pg_stmt s = { fetch_sql, 1, p };

			rx.next_fetch = it->next;
			while (rx.next_fetch && !rx.next_fetch->ref)
				rx.next_fetch = rx.next_fetch->next;
			snprintf(id, sizeof(id), "%lld", (long long)it->ref);
			rx.fetching++;
			it->job = ad_pg_submit(&s, 1, 0, NULL, fetched, it);
		}
		while (rx.head && rx.head->done) {
			struct rx_item *it = rx.head;

			rx.head = it->next;
			if (!rx.head)
				rx.tail = &rx.head;
			rx.n--;
			if (it->msg)
				deliver(&it->a, it->msg);
			ad_msg_unref(it->msg);
			free(it);
		}
	} while (rx.again);
	rx.in_pump = false;
}

void ad_pubsub_remote(const json_t *m)
{
	const json_t *ref = json_object_get(m, "ref");
	struct rx_item *it;

	if (rx.n >= RX_MAX_ITEMS || !(it = calloc(1, sizeof(*it)))) {
		st.dropped_receive++;
		return;
	}
	if (ref) {
		it->ref = json_integer_value(ref);
		if (it->ref <= 0) {
			free(it);
			st.dropped_receive++;
			return;
		}
		st.remote_table++;
		if (!rx.next_fetch)
			rx.next_fetch = it;
	} else {
		st.remote_notify++;
		if (!parse_envelope(m, it)) {
			ad_msg_unref(it->msg);
			free(it);
			st.dropped_receive++;
			return;
		}
		it->done = true;
	}
	*rx.tail = it;
	rx.tail = &it->next;
	rx.n++;
	rx_pump();
}

/* ---- lifetime ---------------------------------------------------------------------- */

static void cleanup_done(void *arg, enum ad_pg_status status, PGresult *const *r, int n,
			 int failed)
{
	(void)arg;
	(void)r;
	(void)n;
	(void)failed;
	if (status == AD_PG_ERROR)
		ad_log_warn("publish: deleting old rows failed");
}

static void cleanup(struct ad_timer *t)
{
	struct ad_pg_stmt s = { cleanup_sql, 0, NULL };

	if (!running)
		return;
	if (ad_pg_ready())
		ad_pg_submit(&s, 1, 0, NULL, cleanup_done, NULL);
	ad_timer_start(t, CLEANUP_MS, cleanup);
}

void ad_pubsub_init(bool with_db)
{
	ad_cluster_on("publish", ad_pubsub_remote);
	running = with_db;
	if (running)
		ad_timer_start(&cleanup_timer, CLEANUP_MS, cleanup);
}

void ad_pubsub_shutdown(void)
{
	running = false;
	ad_timer_stop(&cleanup_timer);
	while (tx.head) {
		struct tx_item *it = tx.head;

		tx.head = it->next;
		free(it);
	}
	tx.tail = &tx.head;
	tx.n = tx.bytes = 0;
	while (rx.head) {
		struct rx_item *it = rx.head;

		rx.head = it->next;
		if (it->job)
			ad_pg_abandon(it->job);
		ad_msg_unref(it->msg);
		free(it);
	}
	rx.tail = &rx.head;
	rx.next_fetch = NULL;
	rx.n = 0;
	rx.fetching = 0;
}

void ad_pubsub_free(void)
{
	free(tab);
	tab = NULL;
	tab_cap = tab_used = 0;
}

void ad_pubsub_metrics(struct ad_buf *b)
{
	ad_buf_printf(b,
		      "# HELP actiond_publishes_total Publishes made on this instance.\n"
		      "# TYPE actiond_publishes_total counter\n"
		      "actiond_publishes_total %llu\n"
		      "# HELP actiond_publish_deliveries_total Notifications queued on "
		      "local connections by publishes from any instance.\n"
		      "# TYPE actiond_publish_deliveries_total counter\n"
		      "actiond_publish_deliveries_total %llu\n"
		      "# HELP actiond_publish_received_total Publishes received from other "
		      "instances, by how they came.\n"
		      "# TYPE actiond_publish_received_total counter\n"
		      "actiond_publish_received_total{via=\"notify\"} %llu\n"
		      "actiond_publish_received_total{via=\"table\"} %llu\n"
		      "# HELP actiond_publish_dropped_total Publishes that did not reach "
		      "the other instances or were not delivered from them.\n"
		      "# TYPE actiond_publish_dropped_total counter\n"
		      "actiond_publish_dropped_total{stage=\"send\"} %llu\n"
		      "actiond_publish_dropped_total{stage=\"receive\"} %llu\n"
		      "actiond_publish_dropped_total{stage=\"fetch\"} %llu\n"
		      "# HELP actiond_publish_groups Groups in the connection index.\n"
		      "# TYPE actiond_publish_groups gauge\n"
		      "actiond_publish_groups %zu\n",
		      (unsigned long long)st.publishes, (unsigned long long)st.deliveries,
		      (unsigned long long)st.remote_notify,
		      (unsigned long long)st.remote_table,
		      (unsigned long long)st.dropped_send,
		      (unsigned long long)st.dropped_receive,
		      (unsigned long long)st.fetch_failed, tab_used);
}
