/*
 * actiond/actiond.h - the whole public module API of actiond.
 *
 * A module (built in, or a plugin built against the installed headers with
 * `pkg-config --cflags actiond`) includes this one header.  See
 * docs/modules.md for a walk through a complete plugin.
 */
#ifndef ACTIOND_ACTIOND_H
#define ACTIOND_ACTIOND_H

#include "actiond/action.h"
#include "actiond/http_client.h"
#include "actiond/log.h"
#include "actiond/module.h"
#include "actiond/offload.h"
#include "actiond/publish.h"
#include "actiond/secrets.h"
#include "actiond/sql.h"

#endif
