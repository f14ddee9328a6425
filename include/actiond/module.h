/*
 * actiond/module.h - how an action family plugs into actiond.
 *
 * Every action family is a module: the protocol actions, identity, the test
 * actions, and any plugin.  A module is described by one constant,
 * struct ad_module_info, which names it, states the API version it was built
 * against, and points at its init function.  Built-in modules are linked in;
 * a plugin is a shared object that exports the constant under the name
 * "actiond_module" (AD_MODULE_EXPORT does that) and is loaded at start from
 * the directory in modules.dir.
 *
 * Loading a module is all or nothing.  The loader checks the API version
 * before calling any of the module's functions (ELF constructors excepted:
 * they run when the file is opened, so a plugin must not have any), then
 * calls init() with a
 * registration handle.  init() adds action specs (JSON, checked against
 * protocol/spec.schema.json exactly like the built-in ones), binds a
 * handler to each, and may add versioned SQL migrations.  If anything is
 * wrong - a version this actiond cannot serve, a missing symbol, an invalid
 * spec, a method that exists already, a spec without a handler, init()
 * returning non-zero - the module is refused with one log line naming the
 * file and the reason, nothing it registered is kept, and actiond starts
 * without it.
 *
 * Threads: everything in this header runs on the main thread, before the
 * event loop starts (init) or after it ended (fini).
 */
#ifndef ACTIOND_MODULE_H
#define ACTIOND_MODULE_H

#include "actiond/action.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * The version of this API.  It changes when a function's contract or a
 * structure a module sees changes; actiond serves exactly this version.
 */
#define AD_MODULE_API_VERSION 1

/*
 * A named text compiled into a module: a spec or a migration (actiond's own
 * build generates arrays of these from files; a plugin may do the same).
 */
struct ad_module_text {
	const char *name;
	const char *data;
	size_t len;
};

/* The registration handle; valid only during init(). */
struct ad_module;

struct ad_module_info {
	uint32_t api_version;  /* AD_MODULE_API_VERSION, as built */
	const char *name;      /* [a-z][a-z0-9_]{0,31}, unique among modules */
	const char *version;   /* the module's own version, for logs */
	/* Registers the module's actions and migrations; 0 or -1. */
	int (*init)(struct ad_module *m);
	/* Optional: called once at shutdown, after the event loop ended. */
	void (*fini)(void);
};

/* The symbol the plugin loader looks for. */
#define AD_MODULE_SYMBOL "actiond_module"

/* Declares a plugin's module constant under the name the loader wants. */
#define AD_MODULE_EXPORT(name_, version_, init_, fini_)                        \
	__attribute__((visibility("default"))) const struct ad_module_info     \
		actiond_module = { AD_MODULE_API_VERSION, (name_), (version_), \
				   (init_), (fini_) }

/*
 * Adds one action spec (len bytes of JSON text, copied).  The spec is
 * checked against the spec meta-schema and its schemas compiled now; its
 * method must not exist in any module.  Returns 0, or -1 with the reason
 * recorded (the module is then refused).
 */
int ad_module_add_spec(struct ad_module *m, const char *json, size_t len);

/*
 * Binds the handler of a method whose spec this module added (before or
 * after this call).  Every spec needs exactly one handler.  Returns 0 or -1.
 */
int ad_module_handle(struct ad_module *m, const char *method, ad_handler_fn fn);

/* ad_module_add_spec() and ad_module_handle() for the spec's own method. */
int ad_module_add_action(struct ad_module *m, const char *json, size_t len,
			 ad_handler_fn fn);

/*
 * Adds a migration: SQL run once, in its own transaction, as the database
 * owner, before actiond serves.  Versions are the module's own (1, 2, ...),
 * applied in increasing order and recorded per module, so a second start
 * applies nothing.  A failing migration stops actiond (a module whose
 * tables are half made must not serve).  Tenant tables should call
 * actiond_tenant_table('name') (see docs/modules.md) to get forced
 * row-level security keyed on the caller's org.  sql is copied.
 */
int ad_module_add_migration(struct ad_module *m, uint32_t version, const char *name,
			    const char *sql);

/*
 * The module's setting key from the configuration (section [module.NAME],
 * or -s module.NAME.KEY=VALUE), or NULL.  Valid for the process; callable
 * from init() on, on the main or loop thread.
 */
const char *ad_module_setting(const char *module, const char *key);

/*
 * Registers fn to run once on the event loop when actiond starts serving
 * (migrations done, the database pool started): where a module starts its
 * timers, since there is no loop yet during init().  database is false
 * when actiond runs without one (database.enabled = off): SQL then fails.
 * One per module; returns 0.
 */
typedef void (*ad_module_start_fn)(bool database);
int ad_module_on_start(struct ad_module *m, ad_module_start_fn fn);

/*
 * Messages between the instances of one module sharing the database:
 * ad_module_broadcast() sends msg (an object, at most ~7 KiB as JSON) to
 * the same module on every other instance, through PostgreSQL NOTIFY; the
 * handler set with ad_module_on_message() (during init) gets it there, on
 * the loop.  At most once and unordered between senders: for hints ("this
 * finished, look again"), never for anything that must not be lost.
 * ad_module_broadcast runs on the loop; returns 0, or -1 (too big, no
 * database, out of memory).
 */
typedef void (*ad_module_message_fn)(const json_t *msg);
int ad_module_on_message(struct ad_module *m, ad_module_message_fn fn);
int ad_module_broadcast(const char *module, const json_t *msg);

/*
 * The change capture saw a transaction of a call of `method` write rows of
 * `table`.  When the method's spec does not list the table in "writes", it
 * is logged and counted (actiond_undeclared_writes_total{method} in
 * /metrics); returns true when the write was declared.  Every transaction
 * of a call sets app.action to its method, which is how a capture trigger
 * knows it.  On the loop.
 */
bool ad_action_write_seen(const char *method, const char *table);

/* Records why the module cannot load (shown in the refusal); returns -1. */
int ad_module_refuse(struct ad_module *m, const char *reason);

/* The module's name, as declared. */
const char *ad_module_name(const struct ad_module *m);

#ifdef __cplusplus
}
#endif

#endif
