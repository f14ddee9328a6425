/*
 * Runs the official JSON-Schema-Test-Suite (draft-07) against src/schema.c.
 *
 * Usage: test_schema_suite SUITE_ROOT [-v]
 *
 * SUITE_ROOT holds tests/draft7/ and remotes/ (the layout of the upstream
 * repository and of the Debian package json-schema-test-suite).  Every case
 * of every file directly in tests/draft7/ must pass; the files of
 * tests/draft7/optional/ are run too, but their score is only printed.
 * With -v, the failures of optional cases are printed as well.  References
 * to http://localhost:1234/ are served from remotes/.
 */
#include <dirent.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "schema.h"

#define REMOTE_PREFIX "http://localhost:1234/"

struct score {
    unsigned passed, total, files;
};

static const char *suite_root;

/* Serves http://localhost:1234/... from SUITE_ROOT/remotes/. */
static json_t *load_remote(const char *uri, void *arg)
{
    char path[4096];
    json_error_t error;
    json_t *doc;

    (void)arg;
    if (strncmp(uri, REMOTE_PREFIX, strlen(REMOTE_PREFIX)) != 0)
        return NULL;
    if (strstr(uri, ".."))
        return NULL;
    snprintf(path, sizeof(path), "%s/remotes/%s", suite_root, uri + strlen(REMOTE_PREFIX));
    doc = json_load_file(path, JSON_DECODE_ANY | JSON_ALLOW_NUL, &error);
    if (!doc)
        fprintf(stderr, "remote %s: %s\n", uri, error.text);
    return doc;
}

/* Runs the groups of one test file; failures are printed when "verbose". */
static void run_file(const char *path, const char *name, bool verbose, struct score *sc)
{
    json_error_t error;
    json_t *groups = json_load_file(path, JSON_ALLOW_NUL, &error);
    size_t gi;
    json_t *group;

    if (!groups) {
        /* bignum.json holds integers beyond the range of json_int_t. */
        groups = json_load_file(path, JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL, &error);
    }
    if (!json_is_array(groups)) {
        fprintf(stderr, "%s: cannot load: %s\n", name, error.text);
        json_decref(groups);
        return;
    }
    sc->files++;
    json_array_foreach(groups, gi, group) {
        const char *gdesc = json_string_value(json_object_get(group, "description"));
        json_t *tests = json_object_get(group, "tests");
        struct ad_schema *schema = NULL;
        char errbuf[256];
        size_t ti;
        json_t *test;
        int rc;

        rc = ad_schema_compile(json_object_get(group, "schema"), NULL, load_remote, NULL, &schema,
                               errbuf, sizeof(errbuf));
        json_array_foreach(tests, ti, test) {
            const char *tdesc = json_string_value(json_object_get(test, "description"));
            bool expect = json_is_true(json_object_get(test, "valid"));
            struct ad_schema_error err;
            bool got;

            sc->total++;
            if (rc < 0) {
                if (verbose)
                    printf("FAIL %s: %s: %s: schema does not compile: %s\n", name, gdesc, tdesc,
                           errbuf);
                continue;
            }
            got = ad_schema_validate(schema, json_object_get(test, "data"), &err);
            if (got == expect && (got || err.keyword[0] != '\0')) {
                sc->passed++;
                continue;
            }
            if (verbose) {
                if (got == expect)
                    printf("FAIL %s: %s: %s: invalid without an error report\n", name, gdesc,
                           tdesc);
                else
                    printf("FAIL %s: %s: %s: expected %s, got %s%s%s%s%s\n", name, gdesc, tdesc,
                           expect ? "valid" : "invalid", got ? "valid" : "invalid",
                           got ? "" : " (", got ? "" : err.keyword, got ? "" : " at ",
                           got ? "" : (err.pointer[0] ? err.pointer : "root)"));
            }
        }
        ad_schema_free(schema);
    }
    json_decref(groups);
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Runs every *.json file directly in "dir", in name order. */
static void run_dir(const char *dir, const char *prefix, bool verbose, struct score *sc)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char **names = NULL;
    size_t n = 0, cap = 0;

    if (!d) {
        perror(dir);
        return;
    }
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);

        if (len < 6 || strcmp(e->d_name + len - 5, ".json") != 0)
            continue;
        if (n == cap) {
            char **p = realloc(names, (cap = cap ? cap * 2 : 64) * sizeof(*names));

            if (!p)
                break;
            names = p;
        }
        names[n] = strdup(e->d_name);
        if (names[n])
            n++;
    }
    closedir(d);
    if (n > 0)
        qsort(names, n, sizeof(*names), cmp_names);
    for (size_t i = 0; i < n; i++) {
        char path[4096], label[512];

        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        snprintf(label, sizeof(label), "%s%s", prefix, names[i]);
        run_file(path, label, verbose, sc);
        free(names[i]);
    }
    free(names);
}

int main(int argc, char **argv)
{
    struct score required = {0}, optional = {0};
    char dir[4096];
    bool verbose_optional = argc == 3 && strcmp(argv[2], "-v") == 0;

    if (argc != 2 && !verbose_optional) {
        fprintf(stderr, "usage: %s SUITE_ROOT [-v]\n", argv[0]);
        return 2;
    }
    suite_root = argv[1];

    snprintf(dir, sizeof(dir), "%s/tests/draft7", suite_root);
    run_dir(dir, "", true, &required);
    snprintf(dir, sizeof(dir), "%s/tests/draft7/optional", suite_root);
    run_dir(dir, "optional/", verbose_optional, &optional);
    snprintf(dir, sizeof(dir), "%s/tests/draft7/optional/format", suite_root);
    run_dir(dir, "optional/format/", verbose_optional, &optional);

    printf("draft7 optional (information only): %u/%u cases passed (%u files)\n",
           optional.passed, optional.total, optional.files);
    printf("draft7: %u/%u cases passed (%u files)\n", required.passed, required.total,
           required.files);
    return required.total > 0 && required.passed == required.total ? 0 : 1;
}
