/*
 * bootstrap.h - creating the first org and owner from the command line.
 */
#ifndef AD_BOOTSTRAP_H
#define AD_BOOTSTRAP_H

struct ad_bootstrap_opts {
	const char *org;      /* slug */
	const char *org_name; /* may be NULL: the slug */
	const char *email;
	const char *password; /* NULL: generate one */
};

/* Blocking; prints key=value lines on success.  Returns an exit status. */
int ad_bootstrap(const char *conninfo, const struct ad_bootstrap_opts *o);

#endif
