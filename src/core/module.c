/*
 * module.c - the registration side of actiond/module.h, and loading a module
 * all or nothing.
 */
#include "module.h"
#include "actiond/sql.h"
#include "log.h"
#include "pg.h"
#include "loop.h"
#include "migrate.h"
#include "spec.h"

#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SPECS_PER_MODULE 512
#define MAX_MIGRATIONS_PER_MODULE 256

struct ad_module {
	const struct ad_module_info *info;
	const char *origin;
	struct ad_spec *specs;
	size_t nspecs, capspecs;
	struct ad_migration *migs;
	size_t nmigs, capmigs;
	char reason[256];
	bool failed;
	ad_module_start_fn start;
	ad_module_message_fn on_message;
};

/* A module that loaded: kept for its migrations and fini(). */
struct loaded {
	const struct ad_module_info *info;
	struct ad_migration *migs;
	size_t nmigs;
	ad_module_start_fn start;
	ad_module_message_fn on_message;
};

static struct loaded loaded[AD_MAX_MODULES];
static size_t nloaded;

static int refuse(struct ad_module *m, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static int refuse(struct ad_module *m, const char *fmt, ...)
{
	va_list ap;

	if (m->failed)
		return -1; /* keep the first reason: it is the cause */
	m->failed = true;
	va_start(ap, fmt);
	vsnprintf(m->reason, sizeof(m->reason), fmt, ap);
	va_end(ap);
	return -1;
}

int ad_module_refuse(struct ad_module *m, const char *reason)
{
	return refuse(m, "%s", reason ? reason : "refused by its init");
}

const char *ad_module_name(const struct ad_module *m)
{
	return m->info->name;
}

static struct ad_spec *module_spec(struct ad_module *m, const char *method)
{
	for (size_t i = 0; i < m->nspecs; i++)
		if (!strcmp(m->specs[i].method, method))
			return &m->specs[i];
	return NULL;
}

int ad_module_add_spec(struct ad_module *m, const char *json, size_t len)
{
	char err[256], origin[96];
	struct ad_spec s;

	if (m->failed)
		return -1;
	if (!json)
		return refuse(m, "a spec is NULL");
	if (m->nspecs >= MAX_SPECS_PER_MODULE)
		return refuse(m, "more than %d specs", MAX_SPECS_PER_MODULE);
	snprintf(origin, sizeof(origin), "spec #%zu", m->nspecs + 1);
	if (ad_spec_parse(json, len, origin, &s, err, sizeof(err)))
		return refuse(m, "invalid spec: %s", err);
	if (ad_specs_taken(s.method) || module_spec(m, s.method)) {
		refuse(m, "method %s exists already", s.method);
		ad_spec_clear(&s);
		return -1;
	}
	if (m->nspecs == m->capspecs) {
		size_t cap = m->capspecs ? m->capspecs * 2 : 16;
		struct ad_spec *t = realloc(m->specs, cap * sizeof(*t));

		if (!t) {
			ad_spec_clear(&s);
			return refuse(m, "out of memory");
		}
		m->specs = t;
		m->capspecs = cap;
	}
	m->specs[m->nspecs++] = s;
	return 0;
}

int ad_module_handle(struct ad_module *m, const char *method, ad_handler_fn fn)
{
	struct ad_spec *s;

	if (m->failed)
		return -1;
	if (!method || !fn)
		return refuse(m, "a handler or its method is NULL");
	if (!(s = module_spec(m, method)))
		return refuse(m, "handler for %s, which has no spec in this module", method);
	if (s->handler)
		return refuse(m, "two handlers for %s", method);
	s->handler = fn;
	return 0;
}

int ad_module_add_action(struct ad_module *m, const char *json, size_t len,
			 ad_handler_fn fn)
{
	if (ad_module_add_spec(m, json, len))
		return -1;
	return ad_module_handle(m, m->specs[m->nspecs - 1].method, fn);
}

int ad_module_add_migration(struct ad_module *m, uint32_t version, const char *name,
			    const char *sql)
{
	struct ad_migration *mg;

	if (m->failed)
		return -1;
	if (!version || !name || !*name || !sql)
		return refuse(m, "a migration needs a version > 0, a name and SQL");
	if (m->nmigs >= MAX_MIGRATIONS_PER_MODULE)
		return refuse(m, "more than %d migrations", MAX_MIGRATIONS_PER_MODULE);
	for (size_t i = 0; i < m->nmigs; i++)
		if (m->migs[i].version == version)
			return refuse(m, "two migrations with version %u", version);
	if (m->nmigs == m->capmigs) {
		size_t cap = m->capmigs ? m->capmigs * 2 : 8;
		struct ad_migration *t = realloc(m->migs, cap * sizeof(*t));

		if (!t)
			return refuse(m, "out of memory");
		m->migs = t;
		m->capmigs = cap;
	}
	mg = &m->migs[m->nmigs];
	mg->version = version;
	mg->name = strdup(name);
	mg->sql = strdup(sql);
	mg->len = strlen(sql);
	if (!mg->name || !mg->sql) {
		free((char *)mg->name);
		free((char *)mg->sql);
		return refuse(m, "out of memory");
	}
	m->nmigs++;
	return 0;
}

static void migs_free(struct ad_migration *migs, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free((char *)migs[i].name);
		free((char *)migs[i].sql);
	}
	free(migs);
}

static bool valid_name(const char *s)
{
	size_t n = 0;

	if (!s || !(*s >= 'a' && *s <= 'z'))
		return false;
	for (; s[n]; n++)
		if (!((s[n] >= 'a' && s[n] <= 'z') || (s[n] >= '0' && s[n] <= '9') ||
		      s[n] == '_'))
			return false;
	return n <= 32;
}

static int cmp_mig(const void *a, const void *b)
{
	uint32_t x = ((const struct ad_migration *)a)->version;
	uint32_t y = ((const struct ad_migration *)b)->version;

	return x < y ? -1 : x > y;
}

int ad_module_load(const struct ad_module_info *info, const char *origin, char *err,
		   size_t errlen)
{
	struct ad_module m = { .info = info, .origin = origin };

	if (info->api_version != AD_MODULE_API_VERSION) {
		snprintf(err, errlen, "built for module API %u, this actiond serves %d",
			 info->api_version, AD_MODULE_API_VERSION);
		return -1;
	}
	if (!valid_name(info->name)) {
		snprintf(err, errlen, "module name must match [a-z][a-z0-9_]{0,31}");
		return -1;
	}
	for (size_t i = 0; i < nloaded; i++)
		if (!strcmp(loaded[i].info->name, info->name)) {
			snprintf(err, errlen, "a module named %s is loaded already",
				 info->name);
			return -1;
		}
	if (nloaded == AD_MAX_MODULES) {
		snprintf(err, errlen, "more than %d modules", AD_MAX_MODULES);
		return -1;
	}
	if (!info->init)
		refuse(&m, "no init function");
	else if (info->init(&m) && !m.failed)
		refuse(&m, "its init failed");
	for (size_t i = 0; !m.failed && i < m.nspecs; i++)
		if (!m.specs[i].handler)
			refuse(&m, "spec %s has no handler", m.specs[i].method);
	if (!m.failed && ad_specs_add(m.specs, m.nspecs))
		refuse(&m, "out of memory");
	if (m.failed) {
		snprintf(err, errlen, "%s", m.reason);
		for (size_t i = 0; i < m.nspecs; i++)
			ad_spec_clear(&m.specs[i]);
		free(m.specs);
		migs_free(m.migs, m.nmigs);
		return -1;
	}
	free(m.specs); /* moved into the registry */
	if (m.nmigs)
		qsort(m.migs, m.nmigs, sizeof(*m.migs), cmp_mig);
	loaded[nloaded++] = (struct loaded){ info, m.migs, m.nmigs, m.start, m.on_message };
	ad_log_debug("module %s %s (%s): %zu actions, %zu migrations", info->name,
		     info->version ? info->version : "", origin, m.nspecs, m.nmigs);
	return 0;
}

int ad_modules_migrate(const char *conninfo)
{
	for (size_t i = 0; i < nloaded; i++)
		if (loaded[i].nmigs &&
		    ad_migrate_module(conninfo, loaded[i].info->name, loaded[i].migs,
				      loaded[i].nmigs) < 0)
			return -1;
	return 0;
}

int ad_module_on_start(struct ad_module *m, ad_module_start_fn fn)
{
	m->start = fn;
	return 0;
}

void ad_modules_start(bool database)
{
	for (size_t i = 0; i < nloaded; i++)
		if (loaded[i].start)
			loaded[i].start(database);
}

void ad_modules_fini(void)
{
	while (nloaded) {
		struct loaded *l = &loaded[--nloaded];

		if (l->info->fini)
			l->info->fini();
		migs_free(l->migs, l->nmigs);
	}
}

size_t ad_modules_count(void)
{
	return nloaded;
}

const struct ad_module_info *ad_modules_info(size_t i)
{
	return i < nloaded ? loaded[i].info : NULL;
}

const char *ad_module_setting(const char *module, const char *key)
{
	return ad_config_module_setting(ad_cfg, module, key);
}

/* ---- messages between instances ------------------------------------------ */

/* This process among the instances, so that it skips its own messages. */
static char self_id[33];

int ad_module_on_message(struct ad_module *m, ad_module_message_fn fn)
{
	m->on_message = fn;
	return 0;
}

static const char *self(void)
{
	if (!self_id[0]) {
		unsigned char raw[16];

		randombytes_buf(raw, sizeof(raw));
		sodium_bin2hex(self_id, sizeof(self_id), raw, sizeof(raw));
	}
	return self_id;
}

static void broadcast_done(void *arg, const struct ad_sql_result *res)
{
	(void)arg;
	if (ad_sql_error(res, NULL))
		ad_log_debug("module message not sent: %s", ad_sql_error_message(res));
}

int ad_module_broadcast(const char *module, const json_t *msg)
{
	json_t *env;
	char *text;
	struct ad_sql *q;
	int r = -1;

	if (!json_is_object(msg) || !ad_pg_ready())
		return -1;
	env = json_pack("{s:s,s:s,s:s,s:O}", "op", "module", "from", self(), "module", module,
			"msg", msg);
	text = env ? json_dumps(env, JSON_COMPACT) : NULL;
	json_decref(env);
	/* NOTIFY takes under 8000 bytes. */
	if (text && strlen(text) < 7900 && (q = ad_sql_new_background(0))) {
		const char *p[1] = { text };

		ad_sql_add(q, "SELECT pg_notify('actiond', $1)", 1, p);
		ad_sql_run_background(q, broadcast_done, NULL);
		r = 0;
	}
	free(text);
	return r;
}

void ad_modules_deliver(const char *module, const char *from, const json_t *msg)
{
	if (!module || !from || !json_is_object(msg) || !strcmp(from, self()))
		return;
	for (size_t i = 0; i < nloaded; i++)
		if (loaded[i].on_message && !strcmp(loaded[i].info->name, module)) {
			loaded[i].on_message(msg);
			return;
		}
}

bool ad_action_write_seen(const char *method, const char *table)
{
	struct ad_spec *sp = method ? ad_spec_find(method, strlen(method)) : NULL;
	const json_t *writes, *w;
	size_t i;

	if (!sp)
		return false;
	writes = json_object_get(sp->doc, "writes");
	json_array_foreach(writes, i, w)
		if (json_is_string(w) && !strcmp(json_string_value(w), table))
			return true;
	sp->stat_undeclared_writes++;
	ad_log(AD_LOG_WARN, "%s wrote %s, which its spec's writes list leaves out", method,
	       table);
	return false;
}
