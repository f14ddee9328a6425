/*
 * audit_cmd.h - `actiond audit verify`: the invocation event chains checked
 * against the database from the command line.
 */
#ifndef AD_AUDIT_CMD_H
#define AD_AUDIT_CMD_H

/*
 * Blocking.  Verifies the chain of every org, or of the org whose slug is
 * org (NULL: all), printing one line per org: ok, or the first broken link.
 * Returns the exit status: 0 all ok, 1 some chain is broken, 2 the database
 * could not be read or there is no such org.
 */
int ad_audit_verify_cmd(const char *conninfo, const char *org);

#endif
