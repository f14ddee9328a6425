/*
 * module.h - the module registry (internal side).
 *
 * TEMPORARY: this header and module_stub.c stand in for the module registry
 * until it lands on the main branch; they are deleted then.
 */
#ifndef AD_CORE_MODULE_H
#define AD_CORE_MODULE_H

#include "actiond/module.h"

#include <stddef.h>

/*
 * Loads one module all or nothing: runs info->init() and keeps what it
 * registered, or keeps nothing and writes the reason into err.  origin
 * names where the module came from (a plugin's path), for messages.
 * Returns 0 or -1.
 */
int ad_module_load(const struct ad_module_info *info, const char *origin, char *err,
		   size_t errlen);

#endif
