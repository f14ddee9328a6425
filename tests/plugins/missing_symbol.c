/*
 * missing_symbol.c - a shared object with a module inside but no exported
 * actiond_module constant (it is hidden), so actiond does not take it for a
 * plugin.
 */
#include <actiond/actiond.h>

static int init(struct ad_module *m)
{
	return ad_module_refuse(m, "this init() must not run");
}

/* Built with hidden visibility and not declared with AD_MODULE_EXPORT. */
const struct ad_module_info actiond_module = {
	AD_MODULE_API_VERSION, "missing_symbol", "1.0", init, NULL,
};
