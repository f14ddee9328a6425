/*
 * actions.h - the handler tables compiled into actiond.
 */
#ifndef AD_ACTIONS_H
#define AD_ACTIONS_H

#include "spec.h"

/* Protocol actions: heartbeat, cancel, rpc.discover. */
extern const struct ad_handler_entry ad_builtin_actions[];

/* Identity and admin actions (PRODUCT.md 4.1). */
extern const struct ad_handler_entry ad_identity_actions[];
/* Precomputes what identity needs (blocking, ~0.1 s). */
int ad_identity_init(void);

#ifdef AD_TEST_ACTIONS
/* Actions that exist only in test builds (test.sleep, test.echo, ...). */
extern const struct ad_handler_entry ad_test_actions[];
#endif

/* Every handler table of this build, NULL-terminated (for ad_specs_load). */
extern const struct ad_handler_entry *const ad_action_tables[];

/* The OpenRPC 1.2 document for every loaded spec (built once, cached). */
json_t *ad_openrpc_document(void);
void ad_openrpc_free(void);

#endif
