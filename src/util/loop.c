/*
 * loop.c - the shared event-loop handles, and ad_timer (actiond/action.h):
 * one-shot timers embedded in their owners, on lws's sorted timer list.
 */
#include "loop.h"
#include "actiond/action.h"
#include "list.h"

struct lws_context *ad_loop;
struct lws_vhost *ad_loop_vhost;
const struct ad_config *ad_cfg;
bool ad_loop_draining;

struct timer_impl {
	lws_sorted_usec_list_t sul;
	ad_timer_fn fn;
};

_Static_assert(sizeof(struct timer_impl) <= sizeof(struct ad_timer),
	       "struct ad_timer is too small for its implementation");

static void timer_fire(lws_sorted_usec_list_t *sul)
{
	struct timer_impl *t = ad_container_of(sul, struct timer_impl, sul);

	t->fn((struct ad_timer *)(void *)t);
}

void ad_timer_start(struct ad_timer *t, uint32_t ms, ad_timer_fn fn)
{
	struct timer_impl *ti = (struct timer_impl *)(void *)t;

	ti->fn = fn;
	lws_sul_schedule(ad_loop, 0, &ti->sul, timer_fire, (lws_usec_t)ms * 1000);
}

void ad_timer_stop(struct ad_timer *t)
{
	lws_sul_cancel(&((struct timer_impl *)(void *)t)->sul);
}
