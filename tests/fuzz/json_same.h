/*
 * json_same.h - whether two jansson values are the same value: same types,
 * same bytes, same key order, reals bit for bit (-0.0 is not 0.0); with
 * loose numbers, any two numbers of equal value match (a value read with
 * AD_JSON_BIG_AS_REAL next to jansson's with JSON_DECODE_INT_AS_REAL).
 * Shared by the fast JSON reader's unit test and fuzz driver.
 */
#ifndef AD_JSON_SAME_H
#define AD_JSON_SAME_H

#include <jansson.h>
#include <string.h>

static int json_same_as(json_t *a, json_t *b, int loose)
{
	if (loose && json_is_number(a) && json_is_number(b))
		return json_number_value(a) == json_number_value(b);
	if (json_typeof(a) != json_typeof(b))
		return 0;
	if (json_is_object(a)) {
		void *ia = json_object_iter(a), *ib = json_object_iter(b);

		for (; ia && ib; ia = json_object_iter_next(a, ia), ib = json_object_iter_next(b, ib)) {
			size_t la = json_object_iter_key_len(ia);

			if (la != json_object_iter_key_len(ib) ||
			    memcmp(json_object_iter_key(ia), json_object_iter_key(ib), la) ||
			    !json_same_as(json_object_iter_value(ia), json_object_iter_value(ib), loose))
				return 0;
		}
		return !ia && !ib;
	}
	if (json_is_array(a)) {
		if (json_array_size(a) != json_array_size(b))
			return 0;
		for (size_t i = 0; i < json_array_size(a); i++)
			if (!json_same_as(json_array_get(a, i), json_array_get(b, i), loose))
				return 0;
		return 1;
	}
	if (json_is_real(a)) {
		double x = json_real_value(a), y = json_real_value(b);

		return !memcmp(&x, &y, sizeof(x));
	}
	return json_equal(a, b);
}

static int json_same(json_t *a, json_t *b)
{
	return json_same_as(a, b, 0);
}

static int json_same_num(json_t *a, json_t *b)
{
	return json_same_as(a, b, 1);
}

#endif
