/*
 * test_pubsub.h - the test-only publish/subscribe actions (test_pubsub.c),
 * for the handler table in testactions.c.
 */
#ifndef AD_TEST_PUBSUB_H
#define AD_TEST_PUBSUB_H

#include "actiond/action.h"

void ad_test_publish(struct ad_call *call);
void ad_test_subscribe(struct ad_call *call);
void ad_test_unsubscribe(struct ad_call *call);
void ad_test_whoami(struct ad_call *call);

#endif
