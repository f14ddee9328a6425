/*
 * schema_oracle - the validator's verdicts, for differential tests against
 * other implementations (tests/unit/patterns_ecma.mjs against Node's
 * RegExp, tests/integration/schemas.test.mjs against Ajv).
 *
 * Reads lines of JSON [schema, instance] from stdin and writes one line per
 * input: "1" (the instance is valid), "0" (it is not) or "E" (the schema is
 * refused when it is compiled).
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "schema.h"

int main(void)
{
    size_t cap = 1 << 16;
    char *line = malloc(cap);

    while (line && fgets(line, (int)cap, stdin)) {
        json_t *in = json_loads(line, JSON_DECODE_ANY, NULL);
        struct ad_schema *s = NULL;
        char err[256];

        if (!json_is_array(in) || json_array_size(in) != 2) {
            fprintf(stderr, "schema_oracle: not [schema, instance]: %s", line);
            return 2;
        }
        if (ad_schema_compile(json_array_get(in, 0), NULL, NULL, NULL, &s, err, sizeof(err)) != 0)
            puts("E");
        else
            puts(ad_schema_validate(s, json_array_get(in, 1), NULL) ? "1" : "0");
        ad_schema_free(s);
        json_decref(in);
    }
    free(line);
    return 0;
}
