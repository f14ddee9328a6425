/*
 * plugins.h - modules from shared objects, loaded at start from modules.dir.
 *
 * Every *.so file of the directory is a candidate, loaded in name order, at
 * most AD_PLUGINS_MAX of them.  A file is refused - one error line naming it
 * and the reason, nothing of it kept - when it cannot be loaded, does not
 * export AD_MODULE_SYMBOL, was built for another module API version, or the
 * module registry refuses what its init() registers.  Refusals never stop
 * actiond: it starts and serves without the refused plugin.
 *
 * Threads: main thread only, before the event loop starts and after it
 * ended.
 */
#ifndef AD_PLUGINS_H
#define AD_PLUGINS_H

/* The most plugins one actiond loads; further files are refused. */
#define AD_PLUGINS_MAX 64

/*
 * Loads every plugin of dir (NULL: none).  Call after the built-in modules
 * are loaded (a plugin may not reuse their methods), before the registry is
 * finalised (ad_specs_finalize) and the migrations run (a plugin's are
 * applied with the other modules').
 * Returns the number of plugins loaded, or -1 when dir itself cannot be
 * read (reason logged): a misconfigured directory stops actiond, a bad
 * plugin does not.
 */
int ad_plugins_load(const char *dir);

/*
 * Unloads every loaded plugin, last loaded first.  Call after the event
 * loop and the worker threads have stopped and ad_modules_fini() ran the
 * plugins' fini(): nothing may run plugin code afterwards.
 */
void ad_plugins_unload(void);

#endif
