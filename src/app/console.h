/*
 * console.h - the browser console at / and the JavaScript client at
 * /client/, compiled in and served with content-hashed names.
 */
#ifndef AD_CONSOLE_H
#define AD_CONSOLE_H

#include "actiond/module.h"

/* Prepares the files and hands them to the transport; 0 or -1. */
int ad_console_init(void);
void ad_console_fini(void);

#endif
