/*
 * module.h - loading modules (built in or plugins) into the registry.
 *
 * ad_module_load() runs one module's init() against a fresh registration
 * handle and keeps what it registered only if everything was right: the
 * API version, the name, every spec valid and new, every spec bound to
 * exactly one handler, every migration well formed.  Loaded modules are
 * remembered for their migrations (ad_modules_migrate) and their fini().
 * Everything here runs on the main thread before the loop starts or after
 * it ended.
 */
#ifndef AD_MODULE_INTERNAL_H
#define AD_MODULE_INTERNAL_H

#include "actiond/module.h"

#include <stddef.h>

#define AD_MAX_MODULES 64

/*
 * Loads one module.  origin names it in messages ("built-in", a file
 * path).  Returns 0, or -1 with a one-line reason in err (nothing kept).
 */
int ad_module_load(const struct ad_module_info *info, const char *origin, char *err,
		   size_t errlen);

/* Applies every loaded module's migrations (blocking); 0 or -1. */
int ad_modules_migrate(const char *conninfo);

/* Runs fini() of every loaded module, last loaded first, and forgets them. */
void ad_modules_fini(void);
/* Runs each loaded module's start hook (ad_module_on_start), on the loop. */
void ad_modules_start(bool database);

/* How many modules are loaded, and the name and version of each. */
size_t ad_modules_count(void);
const struct ad_module_info *ad_modules_info(size_t i);

/*
 * A message another instance's module broadcast (ad_module_broadcast): to
 * module's handler, unless this process sent it.
 */
#include <jansson.h>
void ad_modules_deliver(const char *module, const char *from, const json_t *msg);

#endif
