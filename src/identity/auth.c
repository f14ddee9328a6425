/*
 * auth.c - configured API keys, the cache of database credentials, and
 * revocation.
 */
#include "auth.h"
#include "keys.h"
#include "log.h"
#include "spec.h"

#include <libpq-fe.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct key_entry {
	uint8_t hash[32];
	struct ad_cred *cred;
};

static struct key_entry *keys;
static size_t nkeys;

/* The token table: open addressing on the (uniformly random) token hash. */
static struct ad_cred **table;
static size_t table_cap, table_used;

static struct ad_cred *cred_alloc(enum ad_cred_kind kind, enum ad_role role,
				  const char *org, const char *id)
{
	struct ad_cred *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->refs = 1;
	c->kind = kind;
	c->role = role;
	c->org = strdup(org);
	c->id = strdup(id);
	ad_list_init(&c->conns);
	if (!c->org || !c->id)
		return ad_cred_unref(c);
	return c;
}

struct ad_cred *ad_cred_new_db(enum ad_cred_kind kind, int64_t db_id,
			       int64_t org_id, const char *org, int64_t account_id,
			       enum ad_role role, int64_t agent_session_id,
			       int64_t expires_at, const uint8_t hash[32])
{
	char id[64];
	struct ad_cred *c;

	/* Named by its public id: it appears in notifications and logs. */
	snprintf(id, sizeof(id), "%s:%lld", ad_cred_kind_name(kind),
		 (long long)ad_keys_id_out(kind == AD_CRED_SESSION     ? AD_ID_SESSION
					   : kind == AD_CRED_API_TOKEN ? AD_ID_API_TOKEN
								       : AD_ID_AGENT_TOKEN,
					   db_id));
	c = cred_alloc(kind, kind == AD_CRED_AGENT ? AD_ROLE_NONE : role, org, id);
	if (!c)
		return NULL;
	c->db_id = db_id;
	c->org_id = org_id;
	c->account_id = account_id;
	c->agent_session_id = agent_session_id;
	c->expires_at = expires_at;
	memcpy(c->hash, hash, 32);
	return c;
}

int ad_cred_set_integrations(struct ad_cred *c, char *const *names, size_t n)
{
	c->integrations = calloc(n ? n : 1, sizeof(char *));
	if (!c->integrations)
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (!(c->integrations[i] = strdup(names[i])))
			return -1;
		c->n_integrations = i + 1;
	}
	return 0;
}

/* ---- configured API keys -------------------------------------------------- */

int ad_auth_init(const struct ad_config *cfg)
{
	keys = calloc(cfg->n_api_keys ? cfg->n_api_keys : 1, sizeof(*keys));
	if (!keys)
		return -1;
	for (size_t i = 0; i < cfg->n_api_keys; i++) {
		const struct ad_api_key *k = &cfg->api_keys[i];
		char id[256];

		snprintf(id, sizeof(id), "api_key:%s", k->name);
		memcpy(keys[i].hash, k->hash, 32);
		keys[i].cred = cred_alloc(AD_CRED_API_KEY, k->role, k->org, id);
		if (!keys[i].cred)
			return -1;
		nkeys = i + 1;
		/*
		 * A local org id, shared by the keys of one org, for a server
		 * without a database (publishes address orgs by id);
		 * ad_auth_resolve_orgs() replaces it with the database's.
		 */
		keys[i].cred->org_id = (int64_t)i + 1;
		for (size_t j = 0; j < i; j++)
			if (!strcmp(keys[j].cred->org, k->org)) {
				keys[i].cred->org_id = keys[j].cred->org_id;
				break;
			}
	}
	return 0;
}

void ad_token_hash(const char *token, size_t len, uint8_t out[32])
{
	crypto_generichash(out, 32, (const unsigned char *)token, len, NULL, 0);
}

/* ---- the token table ------------------------------------------------------ */

/*
 * Two indexes beside the table, so that nothing periodic or per revocation
 * walks every credential: each org's credentials on one list (a revocation
 * is always within one org), and a min-heap of expiry times (the periodic
 * expiry pops only what is due).
 */
struct org_bucket {
	int64_t org_id;          /* 0: free */
	struct ad_list creds;
};
static struct org_bucket *orgs;
static size_t orgs_cap, orgs_used;
static struct ad_cred **heap;
static uint32_t heap_len, heap_cap;

static size_t org_slot(int64_t id, size_t cap)
{
	return (size_t)((uint64_t)id * 0x9e3779b97f4a7c15ull >> 20) & (cap - 1);
}

/* The list of org_id's credentials, made if need be (NULL: no memory). */
static struct ad_list *org_list(int64_t org_id, bool create)
{
	size_t i;

	if (create && (orgs_used + 1) * 2 > orgs_cap) {
		size_t cap = orgs_cap ? orgs_cap * 2 : 64;
		struct org_bucket *t = calloc(cap, sizeof(*t));

		if (!t)
			return NULL;
		for (size_t k = 0; k < orgs_cap; k++) {
			struct ad_list *pos, *tmp;

			if (!orgs[k].org_id)
				continue;
			for (i = org_slot(orgs[k].org_id, cap); t[i].org_id; i = (i + 1) & (cap - 1))
				;
			t[i].org_id = orgs[k].org_id;
			ad_list_init(&t[i].creds);
			ad_list_foreach_safe(pos, tmp, &orgs[k].creds)
				ad_list_move_tail(&t[i].creds, pos);
		}
		free(orgs);
		orgs = t;
		orgs_cap = cap;
	}
	if (!orgs_cap)
		return NULL;
	for (i = org_slot(org_id, orgs_cap); orgs[i].org_id; i = (i + 1) & (orgs_cap - 1))
		if (orgs[i].org_id == org_id)
			return &orgs[i].creds;
	if (!create)
		return NULL;
	orgs[i].org_id = org_id;
	ad_list_init(&orgs[i].creds);
	orgs_used++;
	return &orgs[i].creds;
}

static void heap_set(uint32_t i, struct ad_cred *c)
{
	heap[i] = c;
	c->heap_pos = i + 1;
}

static void heap_up(uint32_t i)
{
	struct ad_cred *c = heap[i];

	while (i && heap[(i - 1) / 2]->expires_at > c->expires_at) {
		heap_set(i, heap[(i - 1) / 2]);
		i = (i - 1) / 2;
	}
	heap_set(i, c);
}

static void heap_down(uint32_t i)
{
	struct ad_cred *c = heap[i];

	for (;;) {
		uint32_t k = 2 * i + 1;

		if (k >= heap_len)
			break;
		if (k + 1 < heap_len && heap[k + 1]->expires_at < heap[k]->expires_at)
			k++;
		if (heap[k]->expires_at >= c->expires_at)
			break;
		heap_set(i, heap[k]);
		i = k;
	}
	heap_set(i, c);
}

static int heap_push(struct ad_cred *c)
{
	if (heap_len == heap_cap) {
		uint32_t cap = heap_cap ? heap_cap * 2 : 256;
		struct ad_cred **t = realloc(heap, cap * sizeof(*t));

		if (!t)
			return -1;
		heap = t;
		heap_cap = cap;
	}
	heap[heap_len++] = c;
	heap_up(heap_len - 1);
	return 0;
}

static void heap_remove(struct ad_cred *c)
{
	uint32_t i;

	if (!c->heap_pos)
		return;
	i = c->heap_pos - 1;
	c->heap_pos = 0;
	if (i == --heap_len)
		return;
	heap_set(i, heap[heap_len]);
	heap_up(i);
	heap_down(heap[i]->heap_pos - 1);
}

static size_t slot_of(const uint8_t hash[32], size_t cap)
{
	uint64_t h;

	memcpy(&h, hash, sizeof(h)); /* the hash is already uniform */
	return (size_t)h & (cap - 1);
}

static struct ad_cred **table_find(const uint8_t hash[32])
{
	size_t i;

	if (!table_cap)
		return NULL;
	for (i = slot_of(hash, table_cap); table[i]; i = (i + 1) & (table_cap - 1))
		if (sodium_memcmp(table[i]->hash, hash, 32) == 0)
			return &table[i];
	return NULL;
}

static int table_grow(void)
{
	size_t cap = table_cap ? table_cap * 2 : 1024;
	struct ad_cred **t = calloc(cap, sizeof(*t));

	if (!t)
		return -1;
	for (size_t i = 0; i < table_cap; i++) {
		size_t k;

		if (!table[i])
			continue;
		for (k = slot_of(table[i]->hash, cap); t[k]; k = (k + 1) & (cap - 1))
			;
		t[k] = table[i];
	}
	free(table);
	table = t;
	table_cap = cap;
	return 0;
}

/* Removes the entry at slot i, keeping probe chains intact. */
static void table_remove_at(size_t i)
{
	struct ad_cred *c = table[i];
	size_t j = i;

	table[i] = NULL;
	table_used--;
	for (;;) {
		size_t home;

		j = (j + 1) & (table_cap - 1);
		if (!table[j])
			break;
		home = slot_of(table[j]->hash, table_cap);
		/* Move it back if its home is not cyclically in (i, j]. */
		if ((i < j) ? (home <= i || home > j) : (home <= i && home > j)) {
			table[i] = table[j];
			table[j] = NULL;
			i = j;
		}
	}
	c->cached = false;
	ad_list_del(&c->org_node);
	heap_remove(c);
	ad_cred_unref(c);
}

int ad_auth_cache_add(struct ad_cred *c)
{
	size_t i;

	/* Credentials do not change once issued: the cached one (with its
	 * sockets) stays. */
	if (table_find(c->hash))
		return 0;
	if ((table_used + 1) * 2 > table_cap && table_grow())
		return -1;
	{
		struct ad_list *ol = org_list(c->org_id, true);

		if (!ol || (c->expires_at && heap_push(c)))
			return -1;
		ad_list_add_tail(ol, &c->org_node);
	}
	for (i = slot_of(c->hash, table_cap); table[i]; i = (i + 1) & (table_cap - 1))
		;
	table[i] = ad_cred_ref(c);
	c->cached = true;
	table_used++;
	return 0;
}

/* Removes c from the table (and its indexes); c stays alive while held. */
static void table_remove(struct ad_cred *c)
{
	struct ad_cred **slot = table_find(c->hash);

	if (slot && *slot == c)
		table_remove_at((size_t)(slot - table));
}

size_t ad_auth_cache_size(void)
{
	return table_used;
}

struct ad_cred *ad_auth_token(const char *token, size_t len,
			      enum ad_cred_kind want_kind)
{
	struct ad_cred *found = NULL, **slot;
	uint8_t h[32];

	if (len == 0 || len > AD_TOKEN_MAX)
		return NULL;
	/* Issued tokens carry a prefix (ads_, adt_, ada_); keys do not. */
	if (len > 4 && (!memcmp(token, "ads_", 4) || !memcmp(token, "adt_", 4) ||
			!memcmp(token, "ada_", 4))) {
		ad_keys_token_hash(token, len, h);
		slot = table_find(h);
		if (!slot)
			return NULL;
		found = *slot;
		if (found->expires_at && found->expires_at <= (int64_t)time(NULL))
			return NULL;
	} else {
		ad_token_hash(token, len, h);
		/* Compare against every key so the time taken does not depend
		 * on which one (if any) matched. */
		for (size_t i = 0; i < nkeys; i++)
			if (sodium_memcmp(h, keys[i].hash, 32) == 0)
				found = keys[i].cred;
	}
	if (found && want_kind && found->kind != want_kind)
		return NULL;
	return ad_cred_ref(found);
}

/* ---- loading -------------------------------------------------------------- */

/* The live credentials, with what authorization needs. */
#define LOAD_SQL                                                                 \
	"SELECT c.id, c.kind, c.org_id, o.slug, coalesce(c.account_id, 0), "   \
	"coalesce(m.role, ''), coalesce(c.agent_session_id, 0), "               \
	"coalesce(extract(epoch FROM c.expires_at)::bigint, 0), "               \
	"encode(c.token_hash, 'hex'), coalesce(array_to_string(s.integrations, ','), '') " \
	"FROM credentials c JOIN orgs o ON o.id = c.org_id "                    \
	"LEFT JOIN memberships m ON m.org_id = c.org_id AND m.account_id = c.account_id " \
	"LEFT JOIN accounts a ON a.id = c.account_id "                          \
	"LEFT JOIN agent_sessions s ON s.id = c.agent_session_id "              \
	"WHERE c.revoked_at IS NULL AND (c.expires_at IS NULL OR c.expires_at > now()) " \
	"AND (c.kind = 'agent_token' OR (m.role IS NOT NULL AND m.disabled_at IS NULL " \
	"AND a.disabled_at IS NULL)) AND (s.id IS NULL OR s.revoked_at IS NULL)"

const char *const ad_auth_load_sql = LOAD_SQL;

static enum ad_cred_kind kind_parse(const char *s)
{
	if (!strcmp(s, "session"))
		return AD_CRED_SESSION;
	if (!strcmp(s, "api_token"))
		return AD_CRED_API_TOKEN;
	if (!strcmp(s, "agent_token"))
		return AD_CRED_AGENT;
	return 0;
}

/* Builds a credential from one row of LOAD_SQL (columns 0..9). */
struct ad_cred *ad_auth_cred_from_row(const PGresult *r, int row)
{
	uint8_t hash[32];
	size_t hl;
	int role = ad_role_parse(PQgetvalue(r, row, 5));
	struct ad_cred *c;
	const char *integ = PQgetvalue(r, row, 9);

	if (sodium_hex2bin(hash, 32, PQgetvalue(r, row, 8), 64, NULL, &hl, NULL) ||
	    hl != 32)
		return NULL;
	c = ad_cred_new_db(kind_parse(PQgetvalue(r, row, 1)),
			   strtoll(PQgetvalue(r, row, 0), NULL, 10),
			   strtoll(PQgetvalue(r, row, 2), NULL, 10), PQgetvalue(r, row, 3),
			   strtoll(PQgetvalue(r, row, 4), NULL, 10),
			   role < 0 ? AD_ROLE_NONE : (enum ad_role)role,
			   strtoll(PQgetvalue(r, row, 6), NULL, 10),
			   strtoll(PQgetvalue(r, row, 7), NULL, 10), hash);
	if (c && c->kind == AD_CRED_AGENT && *integ) {
		char *copy = strdup(integ), *save = NULL, *names[64];
		size_t n = 0;

		for (char *t = copy ? strtok_r(copy, ",", &save) : NULL; t && n < 64;
		     t = strtok_r(NULL, ",", &save))
			names[n++] = t;
		if (!copy || ad_cred_set_integrations(c, names, n))
			c = ad_cred_unref(c);
		free(copy);
	}
	return c;
}

int ad_auth_load(const char *conninfo)
{
	PGconn *pg = PQconnectdb(conninfo);
	PGresult *r = NULL;
	int n = -1;

	if (PQstatus(pg) != CONNECTION_OK) {
		ad_log_error("database: %s", PQerrorMessage(pg));
		goto out;
	}
	r = PQexec(pg, LOAD_SQL);
	if (PQresultStatus(r) != PGRES_TUPLES_OK) {
		ad_log_error("loading credentials: %s", PQerrorMessage(pg));
		goto out;
	}
	for (n = 0; n < PQntuples(r); n++) {
		struct ad_cred *c = ad_auth_cred_from_row(r, n);

		if (!c || ad_auth_cache_add(c)) {
			ad_cred_unref(c);
			n = -1;
			goto out;
		}
		ad_cred_unref(c);
	}
out:
	PQclear(r);
	PQfinish(pg);
	return n;
}

int ad_auth_resolve_orgs(const char *conninfo)
{
	PGconn *pg;
	int ret = 0;

	if (!nkeys)
		return 0;
	pg = PQconnectdb(conninfo);
	if (PQstatus(pg) != CONNECTION_OK) {
		ad_log_error("database: %s", PQerrorMessage(pg));
		PQfinish(pg);
		return -1;
	}
	for (size_t i = 0; i < nkeys && !ret; i++) {
		struct ad_cred *c = keys[i].cred;
		const char *p[1] = { c->org };
		PGresult *r = PQexecParams(
			pg,
			"INSERT INTO orgs (slug, name) VALUES ($1, $1) ON CONFLICT (slug) "
			"DO UPDATE SET slug = excluded.slug RETURNING id",
			1, NULL, p, NULL, NULL, 0);

		if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
			c->org_id = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
		} else {
			ad_log_error("api_key %s: org \"%s\": %s", c->id, c->org,
				     PQerrorMessage(pg));
			ret = -1;
		}
		PQclear(r);
	}
	PQfinish(pg);
	return ret;
}

/* ---- revocation ----------------------------------------------------------- */

/* Every field set in the scope must match (and the org always is set). */
static bool scope_matches(const struct ad_revoke_scope *s, const struct ad_cred *c)
{
	if (!c->db_id || c->db_id == s->except_cred_id || !s->org_id)
		return false;
	return c->org_id == s->org_id && (!s->kind || c->kind == s->kind) &&
	       (!s->cred_id || c->db_id == s->cred_id) &&
	       (!s->account_id || c->account_id == s->account_id) &&
	       (!s->agent_session_id || c->agent_session_id == s->agent_session_id);
}

/*
 * Recent scope revocations, numbered: a credential whose creation (or
 * loading) began before one of these and that it covers must not enter the
 * cache afterwards - its row was revoked, or never committed live.
 */
#define RECENT_REVOCATIONS 256
static struct ad_revoke_scope recent[RECENT_REVOCATIONS];
static uint64_t revocation_seq;

uint64_t ad_auth_revocation_seq(void)
{
	return revocation_seq;
}

bool ad_auth_revoked_since(uint64_t seq, const struct ad_cred *c)
{
	/* Older than what is remembered: assume the worst. */
	if (revocation_seq - seq > RECENT_REVOCATIONS)
		return true;
	for (uint64_t k = seq + 1; k <= revocation_seq; k++) {
		const struct ad_revoke_scope *s = &recent[k % RECENT_REVOCATIONS];

		if (c->org_id == s->org_id && (!s->kind || c->kind == s->kind) &&
		    (!s->account_id || c->account_id == s->account_id) &&
		    (!s->agent_session_id || c->agent_session_id == s->agent_session_id) &&
		    !s->cred_id)
			return true;
	}
	return false;
}

size_t ad_auth_revoke(const struct ad_revoke_scope *s, const char *reason,
		      int64_t t0_us, struct ad_flush_wait *w)
{
	size_t closed = 0;

	struct ad_list *ol = org_list(s->org_id, false), *pos, *tmp;

	recent[++revocation_seq % RECENT_REVOCATIONS] = *s;
	if (!ol)
		return 0;
	ad_list_foreach_safe(pos, tmp, ol) {
		struct ad_cred *c = ad_container_of(pos, struct ad_cred, org_node);

		if (!scope_matches(s, c))
			continue;
		ad_cred_ref(c);
		table_remove(c);
		closed += ad_cred_close_all(c, reason, t0_us, w);
		ad_cred_unref(c);
		/* Closing may have unlinked neighbours: start over when tmp went. */
		if (!ad_list_linked(tmp) && tmp != ol)
			tmp = ol->next;
	}
	return closed;
}

void ad_auth_resync(const PGresult *r)
{
	for (size_t i = 0; i < table_cap; i++)
		if (table[i])
			table[i]->seen = false;
	for (int row = 0; row < PQntuples(r); row++) {
		struct ad_cred *c = ad_auth_cred_from_row(r, row), **slot;

		if (!c)
			continue;
		if ((slot = table_find(c->hash)))
			(*slot)->seen = true;
		else if (ad_auth_cache_add(c) == 0)
			c->seen = true;
		ad_cred_unref(c);
	}
	for (size_t i = 0; i < table_cap;) {
		struct ad_cred *c = table[i];

		if (!c || c->seen) {
			i++;
			continue;
		}
		ad_cred_ref(c);
		table_remove_at(i);
		ad_cred_close_all(c, "revoked", 0, NULL);
		ad_cred_unref(c);
	}
}

void ad_auth_expire(int64_t now_unix)
{
	while (heap_len && heap[0]->expires_at <= now_unix) {
		struct ad_cred *c = ad_cred_ref(heap[0]);

		table_remove(c);
		heap_remove(c); /* if it was not in the table */
		ad_cred_close_all(c, "expired", 0, NULL);
		ad_cred_unref(c);
	}
}

void ad_auth_free(void)
{
	for (size_t i = 0; i < nkeys; i++)
		ad_cred_unref(keys[i].cred);
	free(keys);
	keys = NULL;
	nkeys = 0;
	for (size_t i = 0; i < table_cap; i++)
		if (table[i]) {
			table[i]->cached = false;
			ad_list_del(&table[i]->org_node);
			table[i]->heap_pos = 0;
			ad_cred_unref(table[i]);
		}
	free(table);
	table = NULL;
	table_cap = table_used = 0;
	free(orgs);
	orgs = NULL;
	orgs_cap = orgs_used = 0;
	free(heap);
	heap = NULL;
	heap_len = heap_cap = 0;
}
