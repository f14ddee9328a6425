/*
 * oauth.c - OAuth2 refresh-token credentials: an org's credential for an
 * integration may be an OAuth client, {client_id, client_secret?,
 * refresh_token, token_url?, client_auth?}, from which actiond gets access
 * tokens (RFC 6749 6: grant_type=refresh_token) and keeps them sealed in
 * integration_oauth.
 *
 * A run asks for a token (ig_oauth_token): the stored access token when it
 * is valid for at least 60 s more, else a refresh.  Refreshes are single
 * flight per credential twice over:
 *
 *  - in this process, every run that needs one joins the same flight (one
 *    per org and integration), which ends with a token or an error for all;
 *  - across processes, a flight claims the refresh in one short transaction
 *    that sets a lease (lease_owner, lease_until) on the row's version it
 *    saw; a flight that cannot claim (another holds the lease) polls the
 *    row every 50 ms until the version changes, and then uses what the
 *    other stored.  A claim on a version that moved meanwhile fails, so a
 *    flight started on what turns out to be an old read re-reads instead
 *    of refreshing again.  A lease that runs out (its holder died) can be
 *    claimed anew; everything is bounded in time.
 *
 * The refresh's outcome is stored by the lease holder with the version
 * bumped: the new access token and its expiry, and a rotated refresh token
 * if the server sent one; or the credential marked broken; or the error of
 * a failed attempt, which the flights waiting elsewhere report too.
 *
 * Broken: the token server answered invalid_grant (or invalid_client,
 * unauthorized_client).  Another process may have rotated the refresh
 * token, or an admin set a new credential, so the stored credential is
 * read again first; only when it is what was sent is it marked broken: the
 * row's status, an event in the org's audit chain and the notification
 * integration_credential_broken to the org's admins and owners.  Until an
 * admin sets the credential again (which changes integration_secrets'
 * nonce, and with it resets the row), runs fail at once without asking the
 * token server.
 *
 * Secrets: the client secret and refresh tokens are opened only to build
 * the token request and wiped after; access tokens only to hand them to
 * the run that injects them.  What the token server says goes into errors
 * and reasons cleaned, with every one of them redacted.
 */
#include "integrations.h"

#include <ctype.h>
#include <sodium.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LEASE "20 seconds"         /* a claimed refresh, at most */
#define TOKEN_TIMEOUT_MS 10000     /* the token request (less than the lease) */
#define POLL_MS 50                 /* a flight waiting on another process's refresh */
#define FLIGHT_MAX_MS 45000        /* a flight gives up after this */
#define MAX_CLAIMS 4               /* claims a flight attempts */
#define MAX_FLIGHTS 256            /* credentials refreshing at once, per process */
#define TOKEN_MAX_RESPONSE 65536
#define TOKEN_MAX 8192             /* an access or refresh token */
#define REASON_MAX 300
#define DEFAULT_EXPIRES_S 3600     /* when the server does not say */

/* The state of a credential as STATE_SQL reads it. */
#define STATE_SQL                                                                            \
	"SELECT coalesce(o.version, 0), coalesce(o.secret_nonce = s.nonce, false), "        \
	"coalesce(o.status, 'ok'), o.reason, o.last_error, "                                \
	"coalesce(o.lease_until > now(), false), "                                          \
	"coalesce(o.access_sealed IS NOT NULL AND o.expires_at > now() + interval '60 "     \
	"seconds', false), encode(o.access_sealed, 'hex'), encode(o.refresh_sealed, 'hex'), " \
	"encode(s.nonce || s.sealed, 'hex') FROM integration_secrets s LEFT JOIN "           \
	"integration_oauth o ON o.org_id = s.org_id AND o.integration = s.integration "     \
	"WHERE s.org_id = $1::bigint AND s.integration = $2"

struct state {
	bool exists;           /* a credential is set */
	int64_t version;
	bool current;          /* the row belongs to the credential set now */
	bool broken;
	bool lease_active;
	bool valid;            /* an access token valid for 60 s more */
	const char *reason, *last_error, *access_hex, *refresh_hex, *sealed_hex;
};

static void read_state(const struct ad_sql_result *res, int stmt, struct state *st)
{
	memset(st, 0, sizeof(*st));
	if (ad_sql_rows(res, stmt) != 1)
		return;
	st->exists = true;
	st->version = ad_sql_int(res, stmt, 0, 0);
	st->current = ad_sql_bool(res, stmt, 0, 1);
	st->broken = st->current && !strcmp(ad_sql_text(res, stmt, 0, 2, NULL), "broken");
	st->reason = ad_sql_text(res, stmt, 0, 3, NULL);
	st->last_error = st->current && !ad_sql_is_null(res, stmt, 0, 4)
				 ? ad_sql_text(res, stmt, 0, 4, NULL)
				 : NULL;
	st->lease_active = st->current && ad_sql_bool(res, stmt, 0, 5);
	st->valid = st->current && ad_sql_bool(res, stmt, 0, 6);
	st->access_hex = ad_sql_text(res, stmt, 0, 7, NULL);
	st->refresh_hex = st->current && !ad_sql_is_null(res, stmt, 0, 8)
				  ? ad_sql_text(res, stmt, 0, 8, NULL)
				  : NULL;
	st->sealed_hex = ad_sql_text(res, stmt, 0, 9, NULL);
}

/* What a refresh sends; every string wiped when dropped. */
struct creds {
	char *client_id, *client_secret, *refresh_token, *token_url;
	bool basic;            /* client_auth "basic": HTTP Basic, else in the body */
};

struct ig_flight {
	struct ad_timer timer;        /* the poll; first */
	struct ig_flight *next;
	int64_t org_id;
	const struct ig_adapter *adapter;
	int64_t seen;                 /* the version the flight waits to see change */
	char invocation_id[33];       /* the run that started it, for the audit event */
	struct ig_token_wait *waiters;
	uint64_t started_ms;
	int claims;
	bool waited;                  /* it saw another process's lease */
	bool reread;                  /* an invalid_grant made it read the credential again */
	struct creds c;
	char nonce_hex[49];           /* of the credential c came from */
};

static struct ig_flight *flights;
static size_t nflights;

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void wipe_str(char **s)
{
	if (*s) {
		sodium_memzero(*s, strlen(*s));
		free(*s);
		*s = NULL;
	}
}

static void creds_clear(struct creds *c)
{
	wipe_str(&c->client_id);
	wipe_str(&c->client_secret);
	wipe_str(&c->refresh_token);
	wipe_str(&c->token_url);
	c->basic = false;
}

/* A sealed value in hex opened into a NUL-terminated string; NULL when it
 * does not open or holds a NUL.  Wipe and free it. */
static char *open_hex(const char *hex)
{
	size_t hexlen = hex ? strlen(hex) : 0, blen;
	uint8_t *bin = hexlen ? malloc(hexlen / 2 + 1) : NULL;
	char *plain = NULL;

	if (!bin || sodium_hex2bin(bin, hexlen / 2 + 1, hex, hexlen, NULL, &blen, NULL) ||
	    blen <= AD_SECRET_OVERHEAD || !(plain = malloc(blen - AD_SECRET_OVERHEAD + 1)))
		goto out;
	if (ad_secret_open(bin, blen, (uint8_t *)plain)) {
		free(plain);
		plain = NULL;
		goto out;
	}
	plain[blen - AD_SECRET_OVERHEAD] = '\0';
	if (strlen(plain) != blen - AD_SECRET_OVERHEAD) {
		sodium_memzero(plain, blen - AD_SECRET_OVERHEAD);
		free(plain);
		plain = NULL;
	}
out:
	free(bin);
	return plain;
}

/* s sealed, in hex (for decode(..., 'hex')); NULL when out of memory. */
static char *seal_hex(const char *s)
{
	size_t len = strlen(s), blen = len + AD_SECRET_OVERHEAD;
	uint8_t *bin = malloc(blen);
	char *hex = malloc(2 * blen + 1);

	if (!bin || !hex) {
		free(bin);
		free(hex);
		return NULL;
	}
	ad_secret_seal((const uint8_t *)s, len, bin);
	sodium_bin2hex(hex, 2 * blen + 1, bin, blen);
	free(bin);
	return hex;
}

bool ig_oauth_is(const json_t *secret)
{
	return json_is_object(secret) && json_object_get(secret, "refresh_token") &&
	       json_object_get(secret, "client_id");
}

/* A member that is a usable string (no NUL, no line break, not too long). */
static const char *good_str(const json_t *o, const char *key)
{
	const json_t *v = json_object_get(o, key);
	const char *s = json_string_value(v);

	if (!s || !*s || strlen(s) != json_string_length(v) || strlen(s) > TOKEN_MAX ||
	    strpbrk(s, "\r\n"))
		return NULL;
	return s;
}

/*
 * The credential set now (sealed_hex) and the rotated refresh token, if
 * any, as what a refresh sends.  Returns NULL, or why not (for reasons).
 */
static const char *creds_load(struct creds *c, const struct ig_adapter *a, const char *sealed_hex,
			      const char *refresh_hex)
{
	char *plain = open_hex(sealed_hex);
	json_t *o = plain ? json_loads(plain, 0, NULL) : NULL;
	const char *why = NULL, *url, *auth;
	char *rotated = NULL;

	creds_clear(c);
	if (plain) {
		sodium_memzero(plain, strlen(plain));
		free(plain);
	}
	if (!o || !ig_oauth_is(o)) {
		why = "the credential is not an OAuth client (client_id and refresh_token)";
		goto out;
	}
	url = good_str(o, "token_url");
	if (!url)
		url = a->token_url;
	auth = json_string_value(json_object_get(o, "client_auth"));
	if (!url || (strncmp(url, "https://", 8) && strncmp(url, "http://", 7))) {
		why = "the credential has no http(s) token_url, nor does the integration";
		goto out;
	}
	if (auth && strcmp(auth, "basic") && strcmp(auth, "post")) {
		why = "client_auth must be \"basic\" or \"post\"";
		goto out;
	}
	if (!good_str(o, "client_id") || !good_str(o, "refresh_token") ||
	    (json_object_get(o, "client_secret") && !good_str(o, "client_secret"))) {
		why = "client_id, client_secret and refresh_token must be one-line strings";
		goto out;
	}
	if (refresh_hex && !(rotated = open_hex(refresh_hex))) {
		why = "the stored refresh token cannot be opened (another master key?)";
		goto out;
	}
	c->basic = auth && !strcmp(auth, "basic");
	if (!(c->client_id = strdup(good_str(o, "client_id"))) ||
	    !(c->token_url = strdup(url)) ||
	    (good_str(o, "client_secret") && !(c->client_secret = strdup(good_str(o, "client_secret")))) ||
	    !(c->refresh_token = rotated ? rotated : strdup(good_str(o, "refresh_token")))) {
		rotated = NULL;
		why = "out of memory";
		goto out;
	}
	rotated = NULL;
out:
	if (rotated)
		wipe_str(&rotated);
	if (o) {
		/* jansson's copies of the secrets. */
		const char *k;
		json_t *m;

		json_object_foreach(o, k, m) {
			if (json_is_string(m))
				sodium_memzero((char *)json_string_value(m), json_string_length(m));
		}
		json_decref(o);
	}
	if (why)
		creds_clear(c);
	return why;
}

/* The nonce of a sealed credential (its first 24 bytes), in hex. */
static void nonce_of(char out[49], const char *sealed_hex)
{
	snprintf(out, 49, "%.48s", sealed_hex ? sealed_hex : "");
}

static bool creds_same(const struct creds *a, const struct creds *b)
{
	const char *x[] = { a->client_id, a->client_secret, a->refresh_token, a->token_url };
	const char *y[] = { b->client_id, b->client_secret, b->refresh_token, b->token_url };

	for (size_t i = 0; i < sizeof(x) / sizeof(x[0]); i++)
		if (!x[i] != !y[i] || (x[i] && strcmp(x[i], y[i])))
			return false;
	return a->basic == b->basic;
}

/* len bytes of s as text safe for a reason: printable, short, no secret of c. */
static char *clean(const struct creds *c, const char *s, size_t len)
{
	const char *secrets[] = { c->refresh_token, c->client_secret };
	char *t = ig_clean_text(s, len, REASON_MAX, NULL, 0);

	for (size_t i = 0; t && i < sizeof(secrets) / sizeof(secrets[0]); i++) {
		char *u;

		if (!secrets[i])
			continue;
		u = ig_clean_text(t, strlen(t), REASON_MAX, secrets[i], strlen(secrets[i]));
		free(t);
		t = u;
	}
	return t;
}

/* ---- flights ------------------------------------------------------------------------ */

static void flight_claim(struct ig_flight *f);
static void poll_fire(struct ad_timer *t);

static void waiter_unlink(struct ig_token_wait *w)
{
	struct ig_flight *f = w->flight;

	for (struct ig_token_wait **p = &f->waiters; *p; p = &(*p)->next)
		if (*p == w) {
			*p = w->next;
			break;
		}
	w->flight = NULL;
	w->next = NULL;
	ad_timer_stop(&w->timer);
}

/* Ends the flight: every waiter gets the token (and its version) or error. */
static void flight_end(struct ig_flight *f, const char *token, int64_t version, const char *error)
{
	for (struct ig_flight **p = &flights; *p; p = &(*p)->next)
		if (*p == f) {
			*p = f->next;
			nflights--;
			break;
		}
	ad_timer_stop(&f->timer);
	creds_clear(&f->c);
	while (f->waiters) {
		struct ig_token_wait *w = f->waiters;

		waiter_unlink(w);
		w->done(w, token, version, error);
	}
	free(f);
}

static void flight_fail(struct ig_flight *f, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void flight_fail(struct ig_flight *f, const char *fmt, ...)
{
	char buf[REASON_MAX + 200];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	flight_end(f, NULL, 0, buf);
}

static void broken_error(char *buf, size_t n, const struct ig_adapter *a, const char *reason)
{
	snprintf(buf, n,
		 "the credential for %s is broken (%s); an admin must set it again "
		 "(admin.credential_set)",
		 a->name, reason && *reason ? reason : "no reason recorded");
}

/* The stored access token of st handed to the waiters. */
static void flight_use(struct ig_flight *f, const struct state *st)
{
	char *token = open_hex(st->access_hex);

	if (!token) {
		flight_fail(f, "the stored access token for %s cannot be opened", f->adapter->name);
		return;
	}
	flight_end(f, token, st->version, NULL);
	wipe_str(&token);
}

/*
 * What a flight that does not hold the lease does with the state it read:
 * use what another process stored, wait for it, or claim the refresh.
 */
static void flight_decide(struct ig_flight *f, const struct state *st)
{
	char buf[REASON_MAX + 200];

	if (!st->exists) {
		flight_fail(f, "no credential is set for %s (admin.credential_set)",
			    f->adapter->name);
		return;
	}
	if (st->broken) {
		broken_error(buf, sizeof(buf), f->adapter, st->reason);
		flight_end(f, NULL, 0, buf);
		return;
	}
	if (st->version != f->seen) {
		if (st->valid) {
			flight_use(f, st);
			return;
		}
		if (f->waited && st->last_error) {
			/* The refresh this flight waited for failed: so does it. */
			flight_fail(f, "%s", st->last_error);
			return;
		}
		f->seen = st->version;
	}
	if (!f->waiters) {
		flight_end(f, NULL, 0, "nobody waits");
		return;
	}
	if (now_ms() - f->started_ms > FLIGHT_MAX_MS) {
		flight_fail(f, "the credential refresh for %s did not finish in time",
			    f->adapter->name);
		return;
	}
	if (st->lease_active && st->version == f->seen) {
		f->waited = true;
		ad_timer_start(&f->timer, POLL_MS, poll_fire);
		return;
	}
	if (f->claims >= MAX_CLAIMS) {
		flight_fail(f, "the credential refresh for %s could not be claimed",
			    f->adapter->name);
		return;
	}
	flight_claim(f);
}

static void polled(void *arg, const struct ad_sql_result *res)
{
	struct ig_flight *f = arg;
	struct state st;

	if (ad_sql_error(res, NULL)) {
		flight_fail(f, "the credential for %s could not be read (database)",
			    f->adapter->name);
		return;
	}
	read_state(res, 0, &st);
	flight_decide(f, &st);
}

static struct ad_sql *org_batch(struct ig_flight *f)
{
	struct ad_sql *q = ad_sql_new_background(AD_SQL_SEE_ERRORS);

	if (q)
		ad_sql_in_org(q, f->org_id);
	return q;
}

static void poll_fire(struct ad_timer *t)
{
	struct ig_flight *f = (struct ig_flight *)(void *)t;
	struct ig_num org = ig_num(f->org_id);
	struct ad_sql *q = org_batch(f);

	if (!q) {
		flight_fail(f, "out of memory");
		return;
	}
	ad_sql_add(q, STATE_SQL, 2, (const char *[]){ org.v, f->adapter->name });
	ad_sql_run_background(q, polled, f);
}

/* ---- the refresh (this process holds the lease) ------------------------------------------ */

static void refresh_send(struct ig_flight *f);

/* After the outcome was stored: the waiters get it. */
struct stored {
	struct ig_flight *f;
	char *token;              /* wiped */
	char *error;
};

static void outcome_stored(void *arg, const struct ad_sql_result *res)
{
	struct stored *s = arg;
	int64_t version = 0;

	if (ad_sql_error(res, NULL))
		ad_log(AD_LOG_WARN, "integrations: %s credential of org %lld: the refresh's outcome "
				    "was not stored: %s",
		       s->f->adapter->name, (long long)s->f->org_id, ad_sql_error_message(res));
	else if (ad_sql_rows(res, 0) == 1)
		version = ad_sql_int(res, 0, 0, 0);
	else
		ad_log(AD_LOG_WARN, "integrations: %s credential of org %lld: the refresh's lease "
				    "was lost before its outcome was stored",
		       s->f->adapter->name, (long long)s->f->org_id);
	flight_end(s->f, s->token, version, s->error);
	wipe_str(&s->token);
	free(s->error);
	free(s);
}

/* Stores a failed attempt (the others report it too) and ends the flight. */
static void refresh_failed(struct ig_flight *f, const char *error)
{
	struct stored *s = calloc(1, sizeof(*s));
	struct ig_num org = ig_num(f->org_id);
	struct ad_sql *q = s ? org_batch(f) : NULL;

	if (!q || !(s->error = strdup(error))) {
		ad_sql_free(q);
		free(s);
		flight_fail(f, "%s", error);
		return;
	}
	s->f = f;
	ad_sql_add(q,
		   "UPDATE integration_oauth SET version = version + 1, last_error = left($4, 500), "
		   "lease_owner = NULL, lease_until = NULL WHERE org_id = $1::bigint AND "
		   "integration = $2 AND lease_owner = $3 RETURNING version",
		   4, (const char *[]){ org.v, f->adapter->name, ig_runner_id(), error });
	ad_sql_run_background(q, outcome_stored, s);
}

struct broken {
	struct ig_flight *f;
	char *reason;
};

static void broken_stored(void *arg, const struct ad_sql_result *res)
{
	struct broken *b = arg;
	struct ig_flight *f = b->f;
	char buf[REASON_MAX + 200];

	if (ad_sql_error(res, NULL)) {
		ad_log(AD_LOG_WARN, "integrations: %s credential of org %lld: broken, but not "
				    "recorded: %s",
		       f->adapter->name, (long long)f->org_id, ad_sql_error_message(res));
	} else if (ad_sql_rows(res, 0) == 1) {
		json_t *note = json_pack("{s:s,s:s,s:s,s:o}", "integration", f->adapter->name,
					 "credential_status", "broken", "reason", b->reason,
					 "at", ad_sql_string(res, 0, 0, 1));

		ad_log(AD_LOG_WARN, "integrations: %s credential of org %lld is broken: %s",
		       f->adapter->name, (long long)f->org_id, b->reason);
		if (note)
			ig_publish(f->org_id, 0, "integration_credential_broken", note);
		json_decref(note);
		ig_chain_soon();
	}
	broken_error(buf, sizeof(buf), f->adapter, b->reason);
	flight_end(f, NULL, 0, buf);
	free(b->reason);
	free(b);
}

/* The token server refused the credential itself: mark it broken. */
static void mark_broken(struct ig_flight *f, const char *reason)
{
	struct broken *b = calloc(1, sizeof(*b));
	struct ig_num org = ig_num(f->org_id);
	struct ad_sql *q = b ? org_batch(f) : NULL;

	if (!q || !(b->reason = strdup(reason))) {
		ad_sql_free(q);
		free(b);
		flight_fail(f, "%s", reason);
		return;
	}
	b->f = f;
	ad_sql_add(q,
		   "WITH u AS (UPDATE integration_oauth SET version = version + 1, status = 'broken', "
		   "reason = left($4, 500), last_error = NULL, access_sealed = NULL, expires_at = NULL, "
		   "secret_nonce = coalesce(decode(nullif($6, ''), 'hex'), secret_nonce), "
		   "lease_owner = NULL, lease_until = NULL WHERE org_id = $1::bigint AND "
		   "integration = $2 AND lease_owner = $3 RETURNING org_id, integration, reason), "
		   "e AS (INSERT INTO invocation_events (org_id, invocation_id, event, actor, detail) "
		   "SELECT org_id, $5, 'credential_broken', 'actiond', jsonb_build_object("
		   "'integration', integration, 'reason', reason) FROM u RETURNING at) "
		   "SELECT u.reason, iso(now()) FROM u",
		   6,
		   (const char *[]){ org.v, f->adapter->name, ig_runner_id(), reason,
				     f->invocation_id, f->nonce_hex });
	ad_sql_run_background(q, broken_stored, b);
}

/* invalid_grant: read the credential again; retry if it changed, else broken. */
struct reread {
	struct ig_flight *f;
	char *reason;
};

static void reread_done(void *arg, const struct ad_sql_result *res)
{
	struct reread *rr = arg;
	struct ig_flight *f = rr->f;
	char *reason = rr->reason;
	struct creds now = { 0 };
	struct state st;

	free(rr);
	if (ad_sql_error(res, NULL) || ad_sql_rows(res, 0) != 1) {
		/* The lease is gone or the database away: no verdict now. */
		refresh_failed(f, reason);
		free(reason);
		return;
	}
	read_state(res, 1, &st);
	if (!st.exists || creds_load(&now, f->adapter, st.sealed_hex, st.refresh_hex) ||
	    creds_same(&now, &f->c)) {
		creds_clear(&now);
		mark_broken(f, reason);
		free(reason);
		return;
	}
	/* Rotated by another process, or set again by an admin: once more. */
	creds_clear(&f->c);
	f->c = now;
	nonce_of(f->nonce_hex, st.sealed_hex);
	free(reason);
	refresh_send(f);
}

static void refresh_refused(struct ig_flight *f, const char *reason)
{
	struct reread *rr;
	struct ig_num org = ig_num(f->org_id);
	struct ad_sql *q;

	if (f->reread) {
		mark_broken(f, reason);
		return;
	}
	f->reread = true;
	if (!(rr = calloc(1, sizeof(*rr))) || !(rr->reason = strdup(reason)) ||
	    !(q = org_batch(f))) {
		if (rr)
			free(rr->reason);
		free(rr);
		refresh_failed(f, reason);
		return;
	}
	rr->f = f;
	/* The lease is renewed for the retry. */
	ad_sql_add(q,
		   "UPDATE integration_oauth SET lease_until = now() + interval '" LEASE "' "
		   "WHERE org_id = $1::bigint AND integration = $2 AND lease_owner = $3 "
		   "RETURNING version",
		   3, (const char *[]){ org.v, f->adapter->name, ig_runner_id() });
	ad_sql_add(q, STATE_SQL, 2, (const char *[]){ org.v, f->adapter->name });
	ad_sql_run_background(q, reread_done, rr);
}

/* A successful token response: the new tokens stored, then handed out. */
static void refresh_ok(struct ig_flight *f, json_t *doc)
{
	const char *access = good_str(doc, "access_token");
	const char *rotated = good_str(doc, "refresh_token");
	json_t *ei = json_object_get(doc, "expires_in");
	int64_t expires = DEFAULT_EXPIRES_S;
	struct stored *s;
	struct ad_sql *q;
	struct ig_num org, exp;
	char *access_hex = NULL, *refresh_hex = NULL;

	if (!access) {
		refresh_failed(f, "the token endpoint answered without a usable access_token");
		return;
	}
	/* expires_in may come as a number or (some servers) a string. */
	if (json_is_string(ei))
		expires = strtoll(json_string_value(ei), NULL, 10);
	else if (ei && !ad_json_int(ei, &expires))
		expires = DEFAULT_EXPIRES_S;
	if (expires < 0)
		expires = 0;
	if (expires > 10LL * 365 * 86400)
		expires = 10LL * 365 * 86400;
	if (!(s = calloc(1, sizeof(*s))) || !(s->token = strdup(access)) ||
	    !(access_hex = seal_hex(access)) || (rotated && !(refresh_hex = seal_hex(rotated))) ||
	    !(q = org_batch(f))) {
		if (s)
			wipe_str(&s->token);
		free(s);
		free(access_hex);
		free(refresh_hex);
		flight_fail(f, "out of memory");
		return;
	}
	s->f = f;
	org = ig_num(f->org_id);
	exp = ig_num(expires);
	ad_sql_add(q,
		   "UPDATE integration_oauth SET version = version + 1, "
		   "access_sealed = decode($4, 'hex'), expires_at = now() + $5::bigint * "
		   "interval '1 second', refresh_sealed = CASE WHEN secret_nonce = "
		   "decode($7, 'hex') THEN coalesce(decode($6, 'hex'), refresh_sealed) ELSE "
		   "decode($6, 'hex') END, secret_nonce = decode($7, 'hex'), "
		   "status = 'ok', reason = NULL, last_error = NULL, lease_owner = NULL, "
		   "lease_until = NULL, refreshed_at = now(), refreshes = refreshes + 1 "
		   "WHERE org_id = $1::bigint AND integration = $2 AND lease_owner = $3 "
		   "RETURNING version",
		   7,
		   (const char *[]){ org.v, f->adapter->name, ig_runner_id(), access_hex, exp.v,
				     refresh_hex, f->nonce_hex });
	free(access_hex);
	free(refresh_hex);
	ad_sql_run_background(q, outcome_stored, s);
}

static void refresh_done(void *arg, const struct ad_http_response *resp)
{
	struct ig_flight *f = arg;
	json_t *doc = NULL;
	const char *err;
	char *desc = NULL, reason[REASON_MAX + 100];

	if (resp->error != AD_HTTP_OK) {
		char buf[200];

		snprintf(buf, sizeof(buf), "the token endpoint of %s could not be reached (%s)",
			 f->adapter->name,
			 resp->error == AD_HTTP_TIMEOUT     ? "timeout"
			 : resp->error == AD_HTTP_TOO_LARGE ? "answer too large"
			 : resp->error == AD_HTTP_CANCELLED ? "cancelled"
							    : "no connection");
		refresh_failed(f, buf);
		return;
	}
	if (resp->body_len)
		doc = json_loadb(resp->body, resp->body_len, 0, NULL);
	if (resp->status >= 200 && resp->status <= 299 && json_is_object(doc)) {
		refresh_ok(f, doc);
		/* jansson's copies of the tokens. */
		{
			const char *k;
			json_t *m;

			json_object_foreach(doc, k, m) {
				if (json_is_string(m))
					sodium_memzero((char *)json_string_value(m),
						       json_string_length(m));
			}
		}
		json_decref(doc);
		return;
	}
	err = json_string_value(json_object_get(doc, "error"));
	if (json_is_string(json_object_get(doc, "error_description")))
		desc = clean(&f->c, json_string_value(json_object_get(doc, "error_description")),
			     json_string_length(json_object_get(doc, "error_description")));
	if (err && (!strcmp(err, "invalid_grant") || !strcmp(err, "invalid_client") ||
		    !strcmp(err, "unauthorized_client"))) {
		snprintf(reason, sizeof(reason), "the token endpoint refused it: %s%s%s", err,
			 desc && *desc ? ": " : "", desc ? desc : "");
		free(desc);
		json_decref(doc);
		refresh_refused(f, reason);
		return;
	}
	{
		char *e = err ? clean(&f->c, err, strlen(err)) : NULL;

		snprintf(reason, sizeof(reason), "the token endpoint of %s answered HTTP %d%s%s%s%s%s",
			 f->adapter->name, resp->status, e ? " (" : "", e ? e : "",
			 e && desc && *desc ? ": " : "", e && desc ? desc : "", e ? ")" : "");
		free(e);
	}
	free(desc);
	json_decref(doc);
	refresh_failed(f, reason);
}

/* application/x-www-form-urlencoded */
static void form_put(char **p, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";

	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
			*(*p)++ = (char)c;
		} else {
			*(*p)++ = '%';
			*(*p)++ = hex[c >> 4];
			*(*p)++ = hex[c & 15];
		}
	}
	**p = '\0';
}

static void refresh_send(struct ig_flight *f)
{
	struct creds *c = &f->c;
	size_t n = 3 * (strlen(c->refresh_token) + strlen(c->client_id) +
			(c->client_secret ? strlen(c->client_secret) : 0)) + 128;
	char *body = malloc(n), *p = body, *basic = NULL, *auth = NULL;
	const char *headers[4] = { "Content-Type: application/x-www-form-urlencoded",
				   "Accept: application/json", NULL, NULL };
	struct ad_http_request req = { 0 };

	if (!body) {
		refresh_failed(f, "out of memory");
		return;
	}
	p += sprintf(p, "grant_type=refresh_token&refresh_token=");
	form_put(&p, c->refresh_token);
	if (c->basic) {
		/* RFC 6749 2.3.1: both form-encoded, then Base64. */
		size_t m = 3 * (strlen(c->client_id) + (c->client_secret ? strlen(c->client_secret) : 0)) + 2;
		char *pair = malloc(m), *q = pair;
		size_t blen = sodium_base64_ENCODED_LEN(m, sodium_base64_VARIANT_ORIGINAL);

		if (!pair || !(basic = malloc(blen)) || !(auth = malloc(blen + 32))) {
			free(pair);
			free(basic);
			free(body);
			refresh_failed(f, "out of memory");
			return;
		}
		form_put(&q, c->client_id);
		*q++ = ':';
		form_put(&q, c->client_secret ? c->client_secret : "");
		sodium_bin2base64(basic, blen, (const unsigned char *)pair, strlen(pair),
				  sodium_base64_VARIANT_ORIGINAL);
		snprintf(auth, blen + 32, "Authorization: Basic %s", basic);
		headers[2] = auth;
		sodium_memzero(pair, m);
		free(pair);
	} else {
		p += sprintf(p, "&client_id=");
		form_put(&p, c->client_id);
		if (c->client_secret) {
			p += sprintf(p, "&client_secret=");
			form_put(&p, c->client_secret);
		}
	}
	req.method = "POST";
	req.url = c->token_url;
	req.headers = headers;
	req.body = body;
	req.body_len = strlen(body);
	req.timeout_ms = TOKEN_TIMEOUT_MS;
	req.max_response = TOKEN_MAX_RESPONSE;
	/* Everything is copied by the client; done may run before this returns. */
	(void)ad_http_fetch(&req, refresh_done, f);
	sodium_memzero(body, strlen(body));
	free(body);
	if (basic) {
		sodium_memzero(basic, strlen(basic));
		sodium_memzero(auth, strlen(auth));
	}
	free(basic);
	free(auth);
}

/* ---- claiming --------------------------------------------------------------------------- */

static void claimed(void *arg, const struct ad_sql_result *res)
{
	struct ig_flight *f = arg;
	struct state st;
	const char *why;

	if (ad_sql_error(res, NULL)) {
		flight_fail(f, "the credential for %s could not be read (database)",
			    f->adapter->name);
		return;
	}
	read_state(res, 2, &st);
	if (ad_sql_rows(res, 1) != 1) {
		flight_decide(f, &st);
		return;
	}
	/* This process holds the lease: it refreshes. */
	f->seen = ad_sql_int(res, 1, 0, 0);
	nonce_of(f->nonce_hex, st.sealed_hex);
	if ((why = creds_load(&f->c, f->adapter, st.sealed_hex, st.refresh_hex))) {
		mark_broken(f, why);
		return;
	}
	refresh_send(f);
}

static void flight_claim(struct ig_flight *f)
{
	struct ig_num org = ig_num(f->org_id), seen = ig_num(f->seen);
	struct ad_sql *q = org_batch(f);
	const char *p[4] = { org.v, f->adapter->name, ig_runner_id(), seen.v };

	if (!q) {
		flight_fail(f, "out of memory");
		return;
	}
	f->claims++;
	/* The row, made or reset for the credential set now. */
	ad_sql_add(q,
		   "INSERT INTO integration_oauth (org_id, integration, secret_nonce) "
		   "SELECT org_id, integration, nonce FROM integration_secrets WHERE "
		   "org_id = $1::bigint AND integration = $2 ON CONFLICT (org_id, integration) DO "
		   "UPDATE SET secret_nonce = excluded.secret_nonce, version = "
		   "integration_oauth.version + 1, access_sealed = NULL, expires_at = NULL, "
		   "refresh_sealed = NULL, status = 'ok', reason = NULL, last_error = NULL, "
		   "lease_owner = NULL, lease_until = NULL "
		   "WHERE integration_oauth.secret_nonce <> excluded.secret_nonce",
		   2, p);
	ad_sql_add(q,
		   "UPDATE integration_oauth SET lease_owner = $3, lease_until = now() + interval '"
		   LEASE "' WHERE org_id = $1::bigint AND integration = $2 AND version = $4::bigint "
		   "AND status = 'ok' AND (lease_until IS NULL OR lease_until <= now()) "
		   "RETURNING version",
		   4, p);
	ad_sql_add(q, STATE_SQL, 2, p);
	ad_sql_run_background(q, claimed, f);
}

/* ---- waiters ------------------------------------------------------------------------------ */

static void waiter_timeout(struct ad_timer *t)
{
	struct ig_token_wait *w = (struct ig_token_wait *)(void *)t;
	char buf[200];

	snprintf(buf, sizeof(buf), "timed out waiting for the %s credential to be refreshed",
		 w->adapter->name);
	waiter_unlink(w);
	w->done(w, NULL, 0, buf);
}

static void join(struct ig_token_wait *w, int64_t seen)
{
	struct ig_flight *f;

	for (f = flights; f; f = f->next)
		if (f->org_id == w->org_id && f->adapter == w->adapter)
			break;
	if (!f) {
		if (nflights >= MAX_FLIGHTS || !(f = calloc(1, sizeof(*f)))) {
			w->done(w, NULL, 0, "too many credentials are being refreshed; try later");
			return;
		}
		f->org_id = w->org_id;
		f->adapter = w->adapter;
		f->seen = seen;
		f->started_ms = now_ms();
		snprintf(f->invocation_id, sizeof(f->invocation_id), "%s", w->invocation_id);
		f->next = flights;
		flights = f;
		nflights++;
		w->flight = f;
		w->next = f->waiters;
		f->waiters = w;
		ad_timer_start(&w->timer, w->wait_ms ? w->wait_ms : 1, waiter_timeout);
		flight_claim(f);
		return;
	}
	w->flight = f;
	w->next = f->waiters;
	f->waiters = w;
	ad_timer_start(&w->timer, w->wait_ms ? w->wait_ms : 1, waiter_timeout);
}

static void read_done(void *arg, const struct ad_sql_result *res)
{
	struct ig_token_wait *w = arg;
	struct state st;
	char buf[REASON_MAX + 200];
	char *token;

	if (ad_sql_error(res, NULL)) {
		snprintf(buf, sizeof(buf), "the credential for %s could not be read (database)",
			 w->adapter->name);
		w->done(w, NULL, 0, buf);
		return;
	}
	read_state(res, 0, &st);
	if (!st.exists) {
		snprintf(buf, sizeof(buf), "no credential is set for %s (admin.credential_set)",
			 w->adapter->name);
		w->done(w, NULL, 0, buf);
		return;
	}
	if (st.broken) {
		broken_error(buf, sizeof(buf), w->adapter, st.reason);
		w->done(w, NULL, 0, buf);
		return;
	}
	if (st.valid && (token = open_hex(st.access_hex))) {
		w->done(w, token, st.version, NULL);
		wipe_str(&token);
		return;
	}
	join(w, st.version);
}

void ig_oauth_token(struct ig_token_wait *w, int64_t org_id, const struct ig_adapter *a,
		    const char *invocation_id, bool force, int64_t seen_version, uint32_t wait_ms,
		    ig_token_fn done)
{
	struct ig_num org = ig_num(org_id);
	struct ad_sql *q;
	char buf[200];

	w->org_id = org_id;
	w->adapter = a;
	w->done = done;
	w->wait_ms = wait_ms;
	w->flight = NULL;
	w->next = NULL;
	snprintf(w->invocation_id, sizeof(w->invocation_id), "%s", invocation_id);
	if (force) {
		join(w, seen_version);
		return;
	}
	if (!(q = ad_sql_new_background(AD_SQL_SEE_ERRORS))) {
		snprintf(buf, sizeof(buf), "out of memory");
		done(w, NULL, 0, buf);
		return;
	}
	ad_sql_in_org(q, org_id);
	ad_sql_add(q, STATE_SQL, 2, (const char *[]){ org.v, a->name });
	ad_sql_run_background(q, read_done, w);
}

/* ---- credential_status ---------------------------------------------------------------- */

void ig_oauth_add_status(struct ad_sql *q)
{
	ad_sql_add(q,
		   "SELECT s.integration, coalesce(o.status, 'ok'), o.reason FROM "
		   "integration_secrets s LEFT JOIN integration_oauth o ON o.org_id = s.org_id AND "
		   "o.integration = s.integration AND o.secret_nonce = s.nonce",
		   0, NULL);
}
