/*
 * builtin.c - the list of modules compiled into actiond.
 */
#include "builtin.h"

#include <stddef.h>

const struct ad_module_info *const ad_builtin_modules[] = {
	&ad_protocol_module,
	&ad_identity_module,
	&ad_integrations_module,
	&ad_data_module,
#ifdef AD_TEST_ACTIONS
	&ad_test_module,
#endif
	NULL,
};
