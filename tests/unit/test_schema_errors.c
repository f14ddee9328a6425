/*
 * Tests of src/schema.c beyond the official suite: the error report (JSON
 * pointer, keyword, message), compile-time rejection of bad schemas, the
 * remote loader, and the depth limits that protect against hostile input.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "schema.h"

static unsigned passed, failed;

static void check(bool ok, const char *what, const char *detail)
{
    if (ok) {
        passed++;
    } else {
        failed++;
        printf("FAIL %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    }
}

static json_t *parse(const char *text)
{
    json_error_t error;
    json_t *v = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &error);

    if (!v) {
        fprintf(stderr, "bad test JSON %s: %s\n", text, error.text);
        exit(2);
    }
    return v;
}

static struct ad_schema *compile_text(const char *text, ad_schema_loader_fn loader, void *arg)
{
    json_t *doc = parse(text);
    struct ad_schema *s = NULL;
    char errbuf[256];
    int rc = ad_schema_compile(doc, NULL, loader, arg, &s, errbuf, sizeof(errbuf));

    json_decref(doc);
    check(rc == 0, text, rc == 0 ? NULL : errbuf);
    return s;
}

/* Validates "instance" and checks the verdict and, if invalid, the report. */
static void expect(const char *schema, const char *instance, const char *pointer,
                   const char *keyword, const char *in_message)
{
    struct ad_schema *s = compile_text(schema, NULL, NULL);
    json_t *x = parse(instance);
    struct ad_schema_error err;
    char what[512], detail[512];
    bool ok;

    if (!s) {
        json_decref(x);
        return;
    }
    ok = ad_schema_validate(s, x, &err);
    snprintf(what, sizeof(what), "%s with %s", schema, instance);
    snprintf(detail, sizeof(detail), "got %s, pointer \"%s\", keyword \"%s\", message \"%s\"",
             ok ? "valid" : "invalid", err.pointer, err.keyword, err.message);
    if (!pointer) {
        check(ok, what, detail);
    } else {
        check(!ok && strcmp(err.pointer, pointer) == 0 && strcmp(err.keyword, keyword) == 0 &&
                  (!in_message || strstr(err.message, in_message)),
              what, detail);
        /* The verdict must not depend on whether a report is wanted. */
        check(ad_schema_validate(s, x, NULL) == ok, what, "verdict differs without a report");
    }
    json_decref(x);
    ad_schema_free(s);
}

static void expect_compile_error(const char *schema, const char *in_message)
{
    json_t *doc = parse(schema);
    struct ad_schema *s = NULL;
    char errbuf[256], detail[400];
    int rc = ad_schema_compile(doc, NULL, NULL, NULL, &s, errbuf, sizeof(errbuf));

    snprintf(detail, sizeof(detail), "rc %d, message \"%s\"", rc, errbuf);
    check(rc == -EINVAL && s == NULL && strstr(errbuf, in_message), schema, detail);
    json_decref(doc);
    ad_schema_free(s);
}

static void test_reports(void)
{
    const char *nested = "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"array\","
                         "\"items\":{\"type\":\"integer\",\"maximum\":3}}},\"required\":[\"b\"]}";

    expect(nested, "{\"a\":[1,5],\"b\":1}", "/a/1", "maximum", "5");
    expect(nested, "{\"a\":[1,2]}", "", "required", "\"b\"");
    expect(nested, "{\"a\":[1,2.0],\"b\":1}", NULL, NULL, NULL);
    expect(nested, "[]", "", "type", "object");
    expect("{\"properties\":{\"a/b\":{\"properties\":{\"m~n\":{\"type\":\"string\"}}}}}",
           "{\"a/b\":{\"m~n\":1}}", "/a~1b/m~0n", "type", NULL);
    expect("{\"properties\":{\"x\":{\"anyOf\":[{\"type\":\"string\"},{\"minimum\":2}]}}}",
           "{\"x\":1}", "/x", "anyOf", NULL);
    expect("{\"oneOf\":[{\"type\":\"integer\"},{\"minimum\":0}]}", "3", "", "oneOf", NULL);
    expect("{\"oneOf\":[{\"type\":\"integer\"},{\"minimum\":0}]}", "-1.5", "", "oneOf", NULL);
    expect("{\"not\":{\"type\":\"null\"}}", "null", "", "not", NULL);
    expect("{\"properties\":{\"a\":true},\"additionalProperties\":false}",
           "{\"a\":1,\"zz\":2}", "", "additionalProperties", "\"zz\"");
    expect("{\"items\":[{}],\"additionalItems\":false}", "[1,2]", "", "additionalItems", NULL);
    expect("{\"properties\":{\"a\":false}}", "{\"a\":1}", "/a", "properties", NULL);
    expect("false", "1", "", "false", NULL);
    expect("{\"if\":{\"minimum\":10},\"then\":{\"multipleOf\":2},\"else\":{\"const\":1}}", "11",
           "", "multipleOf", NULL);
    expect("{\"contains\":{\"const\":3}}", "[1,2]", "", "contains", NULL);
    expect("{\"propertyNames\":{\"maxLength\":2}}", "{\"ab\":1,\"abc\":2}", "", "propertyNames",
           "abc");
    expect("{\"dependencies\":{\"a\":[\"b\"]}}", "{\"a\":1}", "", "dependencies", "\"b\"");
    expect("{\"uniqueItems\":true}", "[{\"a\":1,\"b\":[1]},{\"b\":[1.0],\"a\":1}]", "",
           "uniqueItems", NULL);
    expect("{\"items\":{\"pattern\":\"^\\\\d+$\"}}", "[\"12\",\"1a\"]", "/1", "pattern", NULL);
    expect("{\"definitions\":{\"n\":{\"type\":\"integer\"}},\"items\":{\"$ref\":\"#/definitions/n\"}}",
           "[1,\"x\"]", "/1", "type", NULL);
}

static void test_semantics(void)
{
    /* Code points, not bytes: "\u00e9\u00e9" is four bytes. */
    expect("{\"maxLength\":2}", "\"\\u00e9\\u00e9\"", NULL, NULL, NULL);
    expect("{\"minLength\":3}", "\"\\u00e9\\u00e9\"", "", "minLength", NULL);
    expect("{\"type\":\"integer\"}", "1.0", NULL, NULL, NULL);
    expect("{\"type\":\"integer\"}", "1.5", "", "type", NULL);
    expect("{\"multipleOf\":0.0075}", "0.0225", NULL, NULL, NULL);
    expect("{\"multipleOf\":0.0075}", "0.0226", "", "multipleOf", NULL);
    expect("{\"enum\":[{\"a\":1,\"b\":2}]}", "{\"b\":2.0,\"a\":1}", NULL, NULL, NULL);
    expect("{\"const\":9007199254740993}", "9007199254740992", "", "const", NULL);
    expect("{\"maximum\":9007199254740992}", "9007199254740993", "", "maximum", NULL);
    expect("{\"pattern\":\"^.$\"}", "\"\\u65e5\"", NULL, NULL, NULL);
    expect("{\"pattern\":\"^[^a]{2}$\"}", "\"\\u65e5\\u00e9\"", NULL, NULL, NULL);
    expect("{\"pattern\":\"^(?:ab)+?$\"}", "\"abab\"", NULL, NULL, NULL);
    expect("{\"pattern\":\"^[\\\\w-]+$\"}", "\"a-b_c\"", NULL, NULL, NULL);
    expect("{\"pattern\":\"^[\\\\w-]+$\"}", "\"a b\"", "", "pattern", NULL);
    expect("{\"pattern\":\"^\\\\S+$\"}", "\"a\\u00a0b\"", "", "pattern", NULL);
    expect("{\"pattern\":\"a{2\"}", "\"a{2\"", NULL, NULL, NULL);
    /* Bounded repetitions of ordinary size stay allowed. */
    expect("{\"pattern\":\"^[a-z0-9._%+-]{1,64}@[a-z0-9.-]{1,255}\\\\.[a-z]{2,24}$\"}",
           "\"ada@example.org\"", NULL, NULL, NULL);
    expect("{\"pattern\":\"^.{1,100}$\"}", "\"\"", "", "pattern", NULL);
    /* Searched anywhere, with the text's own start and end as anchors,
     * U+0000 included. */
    expect("{\"pattern\":\"b\"}", "\"a\\u0000b\"", NULL, NULL, NULL);
    expect("{\"pattern\":\"^b\"}", "\"ab\"", "", "pattern", NULL);
    expect("{\"pattern\":\"a$|c\"}", "\"ab\"", "", "pattern", NULL);
    expect("{\"pattern\":\"a$|c\"}", "\"xa\"", NULL, NULL, NULL);
    expect("{\"pattern\":\"x+y\"}", "\"xxyxx\"", NULL, NULL, NULL);
    /* A run of one character (a length limit as a pattern) is counted. */
    expect("{\"pattern\":\"^.{1,255}$\"}", "\"\"", "", "pattern", NULL);
    expect("{\"pattern\":\"^.{2,}$\"}", "\"a\"", "", "pattern", NULL);
    expect("{\"pattern\":\"^.{2,}$\"}", "\"abc\"", NULL, NULL, NULL);
    expect("{\"pattern\":\"^.{3}$\"}", "\"a\\nb\"", "", "pattern", NULL);
    expect("{\"pattern\":\"^.{2}$\"}", "\"\\u65e5\\u00e9\"", NULL, NULL, NULL);
    expect("{\"pattern\":\"^[a-z0-9_]{3,32}$\"}", "\"abc_9\"", NULL, NULL, NULL);
    expect("{\"pattern\":\"^[a-z0-9_]{3,32}$\"}", "\"ab\"", "", "pattern", NULL);
    expect("{\"pattern\":\"^[a-z0-9_]{3,32}$\"}", "\"aBc\"", "", "pattern", NULL);
    expect("{\"pattern\":\"^[^a]{2}$\"}", "\"\\u65e5a\"", "", "pattern", NULL);
    expect("{\"pattern\":\"^\\\\d{4}$\"}", "\"2024\"", NULL, NULL, NULL);
    expect("{\"pattern\":\"^\\\\d{4}$\"}", "\"20245\"", "", "pattern", NULL);
    expect("{\"pattern\":\"^\\\\d{4}$\"}", "\"\\u0663\\u0663\\u0663\\u0663\"", "", "pattern", NULL);
    expect("{\"pattern\":\"^a{2}$\"}", "\"aa\"", NULL, NULL, NULL);
    expect("{\"pattern\":\"^a{2}$\"}", "\"aaa\"", "", "pattern", NULL);
    expect("{\"pattern\":\"^\\u00e9{1,2}?$\"}", "\"\\u00e9\\u00e9\"", NULL, NULL, NULL);
    /* "^" is the text's start, never the start of a line after a newline. */
    expect("{\"pattern\":\"^([a-z]+)$\"}", "\"!!!\\nabc\"", "", "pattern", NULL);
    expect("{\"pattern\":\"^(a|b)+$\"}", "\"x\\nab\"", "", "pattern", NULL);
    expect("{\"pattern\":\"(a|^b)c\"}", "\"x\\nbc\"", "", "pattern", NULL);
    expect("{\"pattern\":\"(a|^b)c\"}", "\"xac\"", NULL, NULL, NULL);
    expect("{\"pattern\":\"^[a-z]+@[a-z]+\\\\.(com|org)$\"}", "\"<s>\\nx@y.com\"", "",
           "pattern", NULL);
    expect("{\"pattern\":\"^[a-z]+@[a-z]+\\\\.(com|org)$\"}", "\"x@y.com\"", NULL, NULL, NULL);
    /* Anchors inside a counted group keep their meaning in every copy. */
    expect("{\"pattern\":\"^(x$){2}\"}", "\"xx\"", "", "pattern", NULL);
    expect("{\"pattern\":\"(a|^b){2}c\"}", "\"babc\"", "", "pattern", NULL);
    expect("{\"pattern\":\"(a|^b){2}c\"}", "\"bac\"", NULL, NULL, NULL);
    expect("{\"pattern\":\"^(\\\\bx){1,}$\"}", "\"xx\"", "", "pattern", NULL);
    expect("{\"pattern\":\"(x\\\\b.)+\"}", "\"x-\"", NULL, NULL, NULL);
    /* Runs in sequence, each but the last of a fixed length. */
    expect("{\"pattern\":\"^[a-z][a-z0-9_]{0,62}$\"}", "\"a\"", NULL, NULL, NULL);
    expect("{\"pattern\":\"^[a-z][a-z0-9_]{0,62}$\"}", "\"a_9\"", NULL, NULL, NULL);
    expect("{\"pattern\":\"^[a-z][a-z0-9_]{0,62}$\"}", "\"9a\"", "", "pattern", NULL);
    expect("{\"pattern\":\"^[a-z][a-z0-9_]{0,62}$\"}", "\"\"", "", "pattern", NULL);
    expect("{\"pattern\":\"^[a-z][a-z0-9_]{0,2}$\"}", "\"abcd\"", "", "pattern", NULL);
    expect("{\"pattern\":\"^\\\\d{3}-\\\\d{4}$\"}", "\"555-1234\"", NULL, NULL, NULL);
    expect("{\"pattern\":\"^\\\\d{3}-\\\\d{4}$\"}", "\"555-123\"", "", "pattern", NULL);
    expect("{\"pattern\":\"^\\\\d{3}-\\\\d{4}$\"}", "\"5551-234\"", "", "pattern", NULL);
    expect("{\"pattern\":\"^x[a-z]*$\"}", "\"x\"", NULL, NULL, NULL);
    expect("{\"pattern\":\"^x[a-z]+?$\"}", "\"x\"", "", "pattern", NULL);
    expect("{\"pattern\":\"^\\u65e5.?$\"}", "\"\\u65e5\\u00e9\"", NULL, NULL, NULL);
    expect("{\"pattern\":\"^\\u65e5.?$\"}", "\"\\u65e5\\n\"", "", "pattern", NULL);
    /* A large count is counted, not expanded (it was refused as too costly). */
    expect("{\"pattern\":\"^x[a-z]{0,5000}$\"}", "\"xabc\"", NULL, NULL, NULL);
    expect("{\"pattern\":\"^x[a-z]{0,5000}$\"}", "\"yabc\"", "", "pattern", NULL);
    expect("{\"pattern\":\"^x[a-z]{0,5000}$\"}", "\"xab1\"", "", "pattern", NULL);
}

static void test_compile_errors(void)
{
    expect_compile_error("{\"type\":\"nonsense\"}", "nonsense");
    expect_compile_error("{\"properties\":{\"a\":{\"pattern\":\"(unclosed\"}}}",
                         "#/properties/a");
    expect_compile_error("{\"pattern\":\"(?=x)\"}", "lookaround");
    expect_compile_error("{\"pattern\":\"a\\\\B\"}", "word boundary");
    /* Counted repetitions the matcher would expand into seconds of work. */
    expect_compile_error("{\"pattern\":\"((a{0,50}){0,50}){0,50}\"}", "too costly");
    expect_compile_error("{\"pattern\":\"^((a{0,60}){0,60})$\"}", "too costly");
    expect_compile_error("{\"pattern\":\"^x[a-z]{0,5000}y$\"}", "too costly");
    expect_compile_error("{\"$ref\":\"#/definitions/missing\"}", "#/definitions/missing");
    expect_compile_error("{\"$ref\":\"http://example.com/none.json\"}", "none.json");
    expect_compile_error("{\"$ref\":\"#nowhere\"}", "nowhere");
    expect_compile_error("{\"minLength\":-1}", "minLength");
    expect_compile_error("{\"multipleOf\":0}", "multipleOf");
    expect_compile_error("{\"required\":[1]}", "required");
    expect_compile_error("{\"allOf\":[]}", "allOf");
    expect_compile_error("{\"items\":3}", "#/items");
    expect_compile_error("{\"$ref\":\"#\"}", "circular");
    expect_compile_error("{\"definitions\":{\"a\":{\"$ref\":\"#/definitions/b\"},"
                         "\"b\":{\"$ref\":\"#/definitions/a\"}},\"$ref\":\"#/definitions/a\"}",
                         "circular");
}

struct loader_state {
    unsigned calls;
};

static json_t *test_loader(const char *uri, void *arg)
{
    struct loader_state *st = arg;

    st->calls++;
    if (strcmp(uri, "http://example.com/schemas/int.json") == 0)
        return json_loads("{\"definitions\":{\"small\":{\"type\":\"integer\",\"maximum\":9}}}",
                          0, NULL);
    return NULL;
}

static void test_loader_refs(void)
{
    struct loader_state st = {0};
    struct ad_schema *s;
    struct ad_schema_error err;
    json_t *x;

    s = compile_text("{\"$id\":\"http://example.com/schemas/root.json\",\"items\":"
                     "{\"$ref\":\"int.json#/definitions/small\"},"
                     "\"contains\":{\"$ref\":\"int.json#/definitions/small\"}}",
                     test_loader, &st);
    check(st.calls == 1, "loader called once per document", NULL);
    if (!s)
        return;
    x = parse("[1,2,30]");
    check(!ad_schema_validate(s, x, &err) && strcmp(err.pointer, "/2") == 0 &&
              strcmp(err.keyword, "maximum") == 0,
          "remote $ref error", err.keyword);
    json_decref(x);
    ad_schema_free(s);

    /* The draft-07 meta-schema is built in. */
    s = compile_text("{\"$ref\":\"http://json-schema.org/draft-07/schema#\"}", NULL, NULL);
    if (s) {
        x = parse("{\"properties\":{\"a\":{\"type\":\"nonsense\"}}}");
        check(!ad_schema_validate(s, x, &err), "meta-schema rejects a bad schema", NULL);
        json_decref(x);
        ad_schema_free(s);
    }
}

/* Builds [[[...1...]]] nested "depth" levels deep. */
static json_t *nested_arrays(unsigned depth)
{
    json_t *v = json_integer(1);

    for (unsigned i = 0; i < depth; i++) {
        json_t *a = json_array();

        json_array_append_new(a, v);
        v = a;
    }
    return v;
}

static void test_limits(void)
{
    struct ad_schema *s = compile_text("{\"items\":{\"$ref\":\"#\"}}", NULL, NULL);
    struct ad_schema_error err;
    json_t *x;
    char key[400], schema[600], instance[600];

    if (s) {
        x = nested_arrays(AD_SCHEMA_MAX_DEPTH - 1);
        check(ad_schema_validate(s, x, &err), "nesting below the limit", err.message);
        json_decref(x);
        x = nested_arrays(AD_SCHEMA_MAX_DEPTH + 50);
        check(!ad_schema_validate(s, x, &err) && strcmp(err.keyword, "maxDepth") == 0,
              "nesting beyond the limit", err.keyword);
        json_decref(x);
        ad_schema_free(s);
    }

    /* Evaluation that loops without descending into the instance. */
    s = compile_text("{\"anyOf\":[{\"$ref\":\"#\"}]}", NULL, NULL);
    if (s) {
        x = json_integer(1);
        check(!ad_schema_validate(s, x, &err) && strcmp(err.keyword, "maxDepth") == 0,
              "runaway evaluation", err.keyword);
        check(!ad_schema_validate(s, x, NULL), "runaway evaluation without report", NULL);
        json_decref(x);
        ad_schema_free(s);
    }

    /* A deep instance inside "enum" or "uniqueItems" comparisons. */
    s = compile_text("{\"uniqueItems\":true,\"enum\":[[1]]}", NULL, NULL);
    if (s) {
        json_t *arr = json_array();

        json_array_append_new(arr, nested_arrays(AD_SCHEMA_MAX_DEPTH + 10));
        json_array_append_new(arr, nested_arrays(AD_SCHEMA_MAX_DEPTH + 10));
        check(!ad_schema_validate(s, arr, &err), "deep duplicate items", err.keyword);
        json_decref(arr);
        ad_schema_free(s);
    }

    /* Many items take the hashing path of "uniqueItems". */
    s = compile_text("{\"uniqueItems\":true}", NULL, NULL);
    if (s) {
        json_t *arr = json_array();

        for (int i = 0; i < 1000; i++)
            json_array_append_new(arr, json_pack("{s:i,s:[i]}", "k", i, "l", i));
        check(ad_schema_validate(s, arr, &err), "1000 distinct items", err.message);
        json_array_append_new(arr, json_pack("{s:[f],s:f}", "l", 500.0, "k", 500.0));
        check(!ad_schema_validate(s, arr, &err) && strcmp(err.keyword, "uniqueItems") == 0 &&
                  strstr(err.message, "500") && strstr(err.message, "1000"),
              "duplicate among 1001 items", err.message);
        json_decref(arr);
        ad_schema_free(s);
    }

    /* A pointer longer than the buffer is cut, still NUL-terminated. */
    memset(key, 'k', sizeof(key) - 1);
    key[sizeof(key) - 1] = '\0';
    snprintf(schema, sizeof(schema), "{\"additionalProperties\":{\"type\":\"string\"}}");
    snprintf(instance, sizeof(instance), "{\"%s\":1}", key);
    s = compile_text(schema, NULL, NULL);
    if (s) {
        x = parse(instance);
        check(!ad_schema_validate(s, x, &err) && strlen(err.pointer) < sizeof(err.pointer) &&
                  strncmp(err.pointer, "/kkk", 4) == 0,
              "long pointer", err.pointer);
        json_decref(x);
        ad_schema_free(s);
    }

    check(ad_schema_free(NULL) == NULL, "ad_schema_free(NULL)", NULL);
    check(!ad_schema_validate(NULL, NULL, &err), "validate(NULL)", NULL);
}

/*
 * Runs in sequence are matched by counting; the same pattern in a group is
 * matched by the C library.  Random patterns of runs and random texts must
 * get the same verdict both ways.
 */
static void test_runs_differential(void)
{
    static const char *const atoms[] = {".", "a", "b", "[ab]", "[^a]", "\\\\d", "\\u00e9",
                                        "\\\\-"};
    static const char *const quants[] = {"", "", "{2}", "{0,3}", "{1,}", "?", "*", "+",
                                         "{2}?", "*?"};
    static const char *const chars[] = {"a", "b", "1", "\\u00e9", "\\n", "-"};
    uint32_t seed = 12345;
    unsigned differ = 0, cases = 0;

#define NEXT(n) ((seed = seed * 1103515245u + 12345u) >> 16) % (n)
    for (int t = 0; t < 400; t++) {
        char body[256] = "", pat[2][320], text[128];
        size_t natoms = 1 + NEXT(4);
        struct ad_schema *s[2];

        for (size_t k = 0; k < natoms; k++) {
            strcat(body, atoms[NEXT(sizeof(atoms) / sizeof(*atoms))]);
            /* Only the last may vary in length for the counting path. */
            strcat(body, k + 1 < natoms ? (NEXT(2) ? "" : "{2}")
                                        : quants[NEXT(sizeof(quants) / sizeof(*quants))]);
        }
        snprintf(pat[0], sizeof(pat[0]), "{\"pattern\":\"^%s$\"}", body);
        snprintf(pat[1], sizeof(pat[1]), "{\"pattern\":\"^(%s)$\"}", body);
        s[0] = compile_text(pat[0], NULL, NULL);
        s[1] = compile_text(pat[1], NULL, NULL);
        for (int u = 0; s[0] && s[1] && u < 30; u++) {
            size_t len = NEXT(7);
            json_t *x;
            bool v0, v1;

            strcpy(text, "\"");
            for (size_t i = 0; i < len; i++)
                strcat(text, chars[NEXT(sizeof(chars) / sizeof(*chars))]);
            strcat(text, "\"");
            x = parse(text);
            v0 = ad_schema_validate(s[0], x, NULL);
            v1 = ad_schema_validate(s[1], x, NULL);
            cases++;
            if (v0 != v1 && differ++ < 5)
                printf("FAIL %s and %s disagree on %s\n", pat[0], pat[1], text);
            json_decref(x);
        }
        ad_schema_free(s[0]);
        ad_schema_free(s[1]);
    }
#undef NEXT
    check(differ == 0 && cases > 10000, "runs counted agree with the C library's matcher", NULL);
}

int main(void)
{
    test_reports();
    test_semantics();
    test_compile_errors();
    test_loader_refs();
    test_limits();
    test_runs_differential();
    printf("%u passed, %u failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
