/*
 * openrpc.h - the OpenRPC 1.2 document of the registry, answered by
 * rpc.discover (ad_openrpc() in actiond/action.h); built once, cached.
 */
#ifndef AD_OPENRPC_H
#define AD_OPENRPC_H

#include <jansson.h>

/* The cached document (borrowed reference). */
json_t *ad_openrpc_document(void);
void ad_openrpc_free(void);

#endif
