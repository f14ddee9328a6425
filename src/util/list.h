/*
 * list.h - intrusive doubly-linked lists and container_of.
 *
 * A list head is a node pointing at itself.  Nodes live inside the objects
 * they link, so linking never allocates and an object can sit on several
 * lists at once (a connection is on the idle list and on its credential's
 * list).
 */
#ifndef AD_LIST_H
#define AD_LIST_H

#include <stdbool.h>
#include <stddef.h>

#define ad_container_of(ptr, type, member)                                     \
	((type *)(void *)((char *)(ptr) - offsetof(type, member)))

struct ad_list {
	struct ad_list *prev, *next;
};

static inline void ad_list_init(struct ad_list *h)
{
	h->prev = h->next = h;
}

static inline bool ad_list_empty(const struct ad_list *h)
{
	return h->next == h;
}

/* True when n is linked somewhere (nodes are kept NULL when unlinked). */
static inline bool ad_list_linked(const struct ad_list *n)
{
	return n->next != NULL;
}

static inline void ad_list_add_tail(struct ad_list *h, struct ad_list *n)
{
	n->prev = h->prev;
	n->next = h;
	h->prev->next = n;
	h->prev = n;
}

static inline void ad_list_del(struct ad_list *n)
{
	if (!n->next)
		return;
	n->prev->next = n->next;
	n->next->prev = n->prev;
	n->prev = n->next = NULL;
}

static inline void ad_list_move_tail(struct ad_list *h, struct ad_list *n)
{
	ad_list_del(n);
	ad_list_add_tail(h, n);
}

#define ad_list_first(h) ((h)->next)

/* Iterates allowing deletion of the current node. */
#define ad_list_foreach_safe(pos, tmp, h)                                      \
	for ((pos) = (h)->next, (tmp) = (pos)->next; (pos) != (h);            \
	     (pos) = (tmp), (tmp) = (pos)->next)

#endif
