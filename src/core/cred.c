/*
 * cred.c - credential references, revocation of the connections resting on
 * one, and the flush waits that let a revocation answer only once their
 * close frames are out.
 */
#include "cred.h"

#include <stdlib.h>

static ad_cred_revoke_fn revoke_hook;

struct ad_cred *ad_cred_ref(struct ad_cred *c)
{
	if (c)
		c->refs++;
	return c;
}

struct ad_cred *ad_cred_unref(struct ad_cred *c)
{
	if (!c || --c->refs)
		return NULL;
	for (size_t i = 0; i < c->n_integrations; i++)
		free(c->integrations[i]);
	free(c->integrations);
	free(c->org);
	free(c->id);
	free(c);
	return NULL;
}

void ad_cred_set_revoke_hook(ad_cred_revoke_fn fn)
{
	revoke_hook = fn;
}

size_t ad_cred_close_all(struct ad_cred *c, const char *reason, int64_t t0_us,
			 struct ad_flush_wait *w)
{
	size_t n = 0;

	c->revoked = true;
	while (!ad_list_empty(&c->conns)) {
		struct ad_list *node = ad_list_first(&c->conns);

		if (revoke_hook)
			revoke_hook(node, reason, t0_us, w);
		ad_list_del(node); /* the hook unlinks it; be sure */
		n++;
	}
	while (c->links.next && !ad_list_empty(&c->links)) {
		struct ad_cred_link *l = ad_container_of(ad_list_first(&c->links),
							 struct ad_cred_link, node);

		ad_list_del(&l->node);
		n += l->revoked(l, reason, t0_us, w);
	}
	return n;
}

void ad_cred_link_add(struct ad_cred *c, struct ad_cred_link *l)
{
	if (!c->links.next)
		ad_list_init(&c->links);
	ad_list_add_tail(&c->links, &l->node);
}

void ad_cred_link_del(struct ad_cred_link *l)
{
	ad_list_del(&l->node);
}

struct ad_flush_wait *ad_flush_wait_new(void (*done)(struct ad_flush_wait *w), void *arg)
{
	struct ad_flush_wait *w = calloc(1, sizeof(*w));

	if (w) {
		w->done = done;
		w->arg = arg;
	}
	return w;
}

static void flush_wait_check(struct ad_flush_wait *w)
{
	if (w->pending || !w->armed)
		return;
	if (w->orphan)
		free(w);
	else if (w->done)
		w->done(w); /* the owner frees it */
}

void ad_flush_wait_arm(struct ad_flush_wait *w)
{
	w->armed = true;
	flush_wait_check(w);
}

void ad_flush_wait_orphan(struct ad_flush_wait *w)
{
	if (!w)
		return;
	w->orphan = true;
	w->armed = true;
	flush_wait_check(w);
}

void ad_flush_wait_release(struct ad_flush_wait *w)
{
	w->pending--;
	flush_wait_check(w);
}
