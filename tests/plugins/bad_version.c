/*
 * bad_version.c - a plugin built for a module API this actiond does not
 * serve.  The loader must refuse it from the version alone: init() must never
 * run, and aborts if it does.
 */
#include <actiond/actiond.h>

#include <stdlib.h>

static int init(struct ad_module *m)
{
	abort();
}

__attribute__((visibility("default"))) const struct ad_module_info actiond_module = {
	.api_version = 999,
	.name = "bad_version",
	.version = "1.0",
	.init = init,
};
