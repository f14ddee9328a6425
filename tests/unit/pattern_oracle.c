/*
 * pattern_oracle - the validator's verdict on patterns, for differential
 * tests against an ECMA-262 engine (tests/unit/patterns_ecma.mjs).
 *
 * Reads lines of JSON [pattern, text] from stdin and writes one line per
 * input: "1" (the text matches), "0" (it does not) or "E" (the pattern is
 * refused when the schema is compiled).
 */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "schema.h"

int main(void)
{
    char line[8192];

    while (fgets(line, sizeof(line), stdin)) {
        json_t *in = json_loads(line, 0, NULL), *doc, *text;
        struct ad_schema *s = NULL;
        char err[256];

        if (!json_is_array(in) || !json_is_string(json_array_get(in, 0)) ||
            !json_is_string(text = json_array_get(in, 1))) {
            fprintf(stderr, "pattern_oracle: not [pattern, text]: %s", line);
            return 2;
        }
        doc = json_pack("{s:O}", "pattern", json_array_get(in, 0));
        if (!doc || ad_schema_compile(doc, NULL, NULL, NULL, &s, err, sizeof(err)) != 0)
            puts("E");
        else
            puts(ad_schema_validate(s, text, NULL) ? "1" : "0");
        ad_schema_free(s);
        json_decref(doc);
        json_decref(in);
    }
    return 0;
}
