/*
 * tools/bench-pattern.c - the "pattern" keyword three ways, same process,
 * same subjects (built and run by tools/bench-pattern; docs/bench-pattern.md):
 *
 *   ours  ad_schema_validate() of a string instance against the draft-07
 *         schema {"type":"string","pattern":P} (src/core/schema.c: ECMA-262
 *         translated to POSIX ERE, glibc regexec(REG_STARTEND));
 *   jit   PCRE2 pcre2_jit_match() on the pattern compiled with
 *         pcre2_jit_compile(PCRE2_JIT_COMPLETE);
 *   int   PCRE2 interpreter, pcre2_match(PCRE2_NO_JIT).
 *
 * PCRE2 gets PCRE2_UTF (instances are Unicode text) without PCRE2_UCP
 * (ECMA-262's \d, \w and \b are ASCII), PCRE2_DOLLAR_ENDONLY (ECMA's $ does
 * not match before a final newline), PCRE2_ALT_BSUX + PCRE2_EXTRA_ALT_BSUX
 * (\uHHHH, \u{H...}) and PCRE2_ALLOW_EMPTY_CLASS ([] and [^]); subjects are
 * matched with PCRE2_NO_UTF_CHECK, as Jansson strings are valid UTF-8.  The
 * match context sets the match limit (-m, default 100000), the depth limit
 * (-d, default 10000; the JIT ignores it) and a 1 MiB JIT stack.  A call that
 * ends in a limit is a refusal, printed as LIMIT (match limit), DEPTH,
 * HEAP or JITSTACK, not as a result.
 *
 * Each cell: the call is repeated in batches of about 5 ms (after growing
 * the batch size up to that), 11 batches; printed is the median batch mean in
 * ns per call.  A call of 50 ms or more is timed alone, 3 times, median.
 * Compiles are timed the same way (compile + free).
 *
 * Output, tab-separated, one line per cell:
 *   M <pattern or case> <subject> <engine> <result> <ns per call>
 *   C <pattern> - <engine> <ok|refused> <ns per compile> [reason]
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "schema.h"

#define BATCHES 11
#define BATCH_NS 5000000.0
#define SLOW_NS 50000000.0

static uint32_t match_limit = 100000, depth_limit = 10000;
static pcre2_match_context *mctx;
static pcre2_compile_context *cctx;
static pcre2_jit_stack *jstack;

static const uint32_t PCRE_OPTS =
    PCRE2_UTF | PCRE2_DOLLAR_ENDONLY | PCRE2_ALT_BSUX | PCRE2_ALLOW_EMPTY_CLASS;

static double now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

/*
 * Median over BATCHES of the mean ns per call of fn(arg); a call that takes
 * SLOW_NS or more is only repeated 3 times (median of those).
 */
static double measure(void (*fn)(void *), void *arg)
{
    double t[BATCHES], t0, el;
    long iters = 1;

    t0 = now_ns();
    fn(arg);
    if (now_ns() - t0 >= SLOW_NS) {
        for (int b = 0; b < 3; b++) {
            t0 = now_ns();
            fn(arg);
            t[b] = now_ns() - t0;
        }
        qsort(t, 3, sizeof(t[0]), cmp_double);
        return t[1];
    }
    for (;;) {
        t0 = now_ns();
        for (long i = 0; i < iters; i++)
            fn(arg);
        el = now_ns() - t0;
        if (el >= BATCH_NS || iters >= (1L << 30))
            break;
        iters = el < BATCH_NS / 64 ? iters * 8 : iters * 2;
    }
    for (int b = 0; b < BATCHES; b++) {
        t0 = now_ns();
        for (long i = 0; i < iters; i++)
            fn(arg);
        t[b] = (now_ns() - t0) / (double)iters;
    }
    qsort(t, BATCHES, sizeof(t[0]), cmp_double);
    return t[BATCHES / 2];
}

/* ------------------------------------------------------------------ */

struct cell {
    const char *pattern;
    const char *subject;
    size_t len;
    struct ad_schema *schema;
    json_t *instance;
    pcre2_code *code;
    pcre2_match_data *md;
    int rc;
    bool valid;
};

static void run_ours(void *arg)
{
    struct cell *c = arg;
    struct ad_schema_error err;

    c->valid = ad_schema_validate(c->schema, c->instance, &err);
}

static void run_jit(void *arg)
{
    struct cell *c = arg;

    c->rc = pcre2_jit_match(c->code, (PCRE2_SPTR)c->subject, c->len, 0, 0, c->md, mctx);
}

static void run_int(void *arg)
{
    struct cell *c = arg;

    c->rc = pcre2_match(c->code, (PCRE2_SPTR)c->subject, c->len, 0,
                        PCRE2_NO_JIT | PCRE2_NO_UTF_CHECK, c->md, mctx);
}

static const char *pcre_result(int rc)
{
    static char buf[32];

    if (rc >= 0)
        return "match";
    switch (rc) {
    case PCRE2_ERROR_NOMATCH: return "no";
    case PCRE2_ERROR_MATCHLIMIT: return "LIMIT";
    case PCRE2_ERROR_DEPTHLIMIT: return "DEPTH";
    case PCRE2_ERROR_HEAPLIMIT: return "HEAP";
    case PCRE2_ERROR_JIT_STACKLIMIT: return "JITSTACK";
    default: snprintf(buf, sizeof(buf), "err%d", rc); return buf;
    }
}

static json_t *schema_doc(const char *pattern)
{
    json_t *d = json_pack("{s:s}", "type", "string");

    if (pattern)
        json_object_set_new(d, "pattern", json_string(pattern));
    return d;
}

static pcre2_code *pcre_compile(const char *pattern, char *why, size_t whylen)
{
    int errcode;
    PCRE2_SIZE off;
    pcre2_code *code = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, PCRE_OPTS,
                                     &errcode, &off, cctx);

    if (!code) {
        PCRE2_UCHAR msg[120];

        pcre2_get_error_message(errcode, msg, sizeof(msg));
        snprintf(why, whylen, "%s (offset %zu)", (char *)msg, (size_t)off);
    }
    return code;
}

static void measure_case(const char *name, const char *what, const char *pattern,
                         const char *subject, size_t len)
{
    struct cell c = {.pattern = pattern, .subject = subject, .len = len};
    char err[256];
    json_t *doc = schema_doc(pattern);

    c.instance = json_stringn(subject, len);
    if (ad_schema_compile(doc, NULL, NULL, NULL, &c.schema, err, sizeof(err)) == 0) {
        double ns = measure(run_ours, &c);

        printf("M\t%s\t%s\tours\t%s\t%.1f\n", name, what, c.valid ? "match" : "no", ns);
        c.schema = ad_schema_free(c.schema);
    } else {
        printf("M\t%s\t%s\tours\trefused\t-\n", name, what);
    }
    json_decref(doc);
    json_decref(c.instance);

    if (!pattern)
        return;
    c.code = pcre_compile(pattern, err, sizeof(err));
    if (!c.code) {
        printf("M\t%s\t%s\tjit\trefused\t-\nM\t%s\t%s\tint\trefused\t-\n", name, what, name,
               what);
        return;
    }
    c.md = pcre2_match_data_create(1, NULL);
    if (pcre2_jit_compile(c.code, PCRE2_JIT_COMPLETE) == 0) {
        double ns = measure(run_jit, &c);

        printf("M\t%s\t%s\tjit\t%s\t%.1f\n", name, what, pcre_result(c.rc), ns);
    } else {
        printf("M\t%s\t%s\tjit\trefused\t-\n", name, what);
    }
    {
        double ns = measure(run_int, &c);

        printf("M\t%s\t%s\tint\t%s\t%.1f\n", name, what, pcre_result(c.rc), ns);
    }
    pcre2_match_data_free(c.md);
    pcre2_code_free(c.code);
    fflush(stdout);
}

/* ------------------------------------------------------------------ */

static const char *compile_pattern;

static void compile_ours(void *arg)
{
    struct ad_schema *s = NULL;
    json_t *doc = arg;
    char err[8];

    if (ad_schema_compile(doc, NULL, NULL, NULL, &s, err, sizeof(err)) == 0)
        ad_schema_free(s);
}

static void compile_pcre(void *arg)
{
    int errcode;
    PCRE2_SIZE off;
    pcre2_code *code = pcre2_compile((PCRE2_SPTR)compile_pattern, PCRE2_ZERO_TERMINATED,
                                     PCRE_OPTS, &errcode, &off, cctx);

    if (code && arg)
        pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
    pcre2_code_free(code);
}

static void measure_compile(const char *pattern)
{
    char err[256];
    json_t *doc = schema_doc(pattern);
    struct ad_schema *s = NULL;
    pcre2_code *code;
    int rc = ad_schema_compile(doc, NULL, NULL, NULL, &s, err, sizeof(err));
    const char *label = pattern ? pattern : "(none: {\"type\":\"string\"})";

    if (rc == 0) {
        ad_schema_free(s);
        printf("C\t%s\t-\tours\tok\t%.1f\n", label, measure(compile_ours, doc));
    } else {
        printf("C\t%s\t-\tours\trefused\t-\t%s\n", label, err);
    }
    json_decref(doc);
    if (!pattern)
        return;
    compile_pattern = pattern;
    code = pcre_compile(pattern, err, sizeof(err));
    if (!code) {
        printf("C\t%s\t-\tint\trefused\t-\t%s\n", label, err);
        printf("C\t%s\t-\tjit\trefused\t-\t%s\n", label, err);
        return;
    }
    rc = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
    pcre2_code_free(code);
    printf("C\t%s\t-\tint\tok\t%.1f\n", label, measure(compile_pcre, NULL));
    if (rc == 0)
        printf("C\t%s\t-\tjit\tok\t%.1f\n", label, measure(compile_pcre, (void *)1));
    else
        printf("C\t%s\t-\tjit\trefused\t-\tpcre2_jit_compile %d\n", label, rc);
    fflush(stdout);
}

/* ------------------------------------------------------------------ */

static char *repeat(char ch, size_t n, const char *tail, size_t *len)
{
    size_t t = strlen(tail);
    char *s = malloc(n + t + 1);

    memset(s, ch, n);
    memcpy(s + n, tail, t + 1);
    *len = n + t;
    return s;
}

int main(int argc, char **argv)
{
    /* Catastrophic for a backtracking matcher; each against 50 and 5,000. */
    static const struct {
        const char *pattern;
        char ch;
        const char *tail;
    } bad[] = {
        {"^(a+)+$", 'a', "b"},
        {"^(a|aa)+$", 'a', "b"},
        {"^(a|a?)+$", 'a', "b"},
        {"(x+x+)+y", 'x', "b"},
        /* "by": the subject holds the 'y' PCRE2 requires, so it searches. */
        {"(x+x+)+y", 'x', "by"},
    };
    static const size_t sizes[] = {50, 5000};
    /* Not nested, but unanchored: every start position is tried. */
    static const struct {
        const char *pattern;
        size_t n;
        const char *tail;
    } scan[] = {
        {"x+y", 5000, "by"},
        {"x+y", 20000, "by"},
        {"x*x*y", 50, "by"},
        {"x*x*y", 2500, "by"},
    };
    static const struct {
        const char *pattern, *subject;
    } good[] = {
        {"^[a-z0-9._%+-]+@[a-z0-9.-]+\\.[a-z]{2,}$", "jane.doe+orders@mail.example.com"},
        {"^\\d{3}-\\d{4}$", "555-1234"},
        {"^[A-Z][a-z]{0,30}$", "Alexandria"},
        {"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$",
         "3f2b8c1e-9a4d-4e7b-8c21-5d6f7a8b9c0d"},
    };
    static const char *const compile_only[] = {
        NULL,
        "^(a+)+$",
        "(x+x+)+y",
        "^[a-z0-9._%+-]+@[a-z0-9.-]+\\.[a-z]{2,}$",
        "^\\d{3}-\\d{4}$",
        "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$",
        "^[ -~]*$",
        "^.{1,255}$",
        "^[a-z]{1,5000}$",
        "((a{0,50}){0,50}){0,50}",
        "^(?=.*[0-9]).{8,}$",
        "^(a)\\1$",
        "^(?<year>[0-9]{4})$",
        "^\\p{L}+$",
        "^\\u00e9\\u{1F600}$",
        "^[^]*$",
    };
    char name[96];
    size_t len;

    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "-m") == 0)
            match_limit = (uint32_t)strtoul(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "-d") == 0)
            depth_limit = (uint32_t)strtoul(argv[i + 1], NULL, 10);
    }
    cctx = pcre2_compile_context_create(NULL);
    pcre2_set_compile_extra_options(cctx, PCRE2_EXTRA_ALT_BSUX);
    mctx = pcre2_match_context_create(NULL);
    pcre2_set_match_limit(mctx, match_limit);
    pcre2_set_depth_limit(mctx, depth_limit);
    jstack = pcre2_jit_stack_create(32 * 1024, 1024 * 1024, NULL);
    pcre2_jit_stack_assign(mctx, NULL, jstack);
    printf("# match_limit=%u depth_limit=%u jit_stack=1MiB\n", match_limit, depth_limit);

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        for (size_t k = 0; k < 2; k++) {
            char *s = repeat(bad[i].ch, sizes[k], bad[i].tail, &len);

            snprintf(name, sizeof(name), "%c×%zu+%s", bad[i].ch, sizes[k], bad[i].tail);
            measure_case(bad[i].pattern, name, bad[i].pattern, s, len);
            free(s);
        }
    for (size_t i = 0; i < sizeof(scan) / sizeof(scan[0]); i++) {
        char *s = repeat('x', scan[i].n, scan[i].tail, &len);

        snprintf(name, sizeof(name), "x×%zu+%s", scan[i].n, scan[i].tail);
        measure_case(scan[i].pattern, name, scan[i].pattern, s, len);
        free(s);
    }
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        measure_case(good[i].pattern, good[i].subject, good[i].pattern, good[i].subject,
                     strlen(good[i].subject));
    {
        char *s = malloc(10240);

        for (size_t k = 0; k < 10240; k++)
            s[k] = (char)(' ' + k % 95);
        measure_case("^[ -~]*$", "10 KB printable ASCII", "^[ -~]*$", s, 10240);
        free(s);
    }
    measure_case("(no pattern: {\"type\":\"string\"})", "555-1234", NULL, "555-1234", 8);
    for (size_t i = 0; i < sizeof(compile_only) / sizeof(compile_only[0]); i++)
        measure_compile(compile_only[i]);

    pcre2_jit_stack_free(jstack);
    pcre2_match_context_free(mctx);
    pcre2_compile_context_free(cctx);
    return 0;
}
