/*
 * JSON Schema draft-07 validator over jansson.
 *
 * ad_schema_compile() turns a schema document into a graph of nodes: one node
 * per schema object or boolean, with every keyword parsed into a field, every
 * "$ref" resolved to a pointer to its target node and every regular
 * expression translated from ECMA-262 to POSIX and compiled.
 * ad_schema_validate() walks that graph along the instance; it only
 * allocates for "propertyNames" and for "uniqueItems" on long arrays (and
 * the C library's regexec() allocates for its own needs).
 *
 * Compilation happens in three steps: every document (the root one and those
 * loaded for "$ref") is indexed, recording the URIs declared by "$id"; nodes
 * are then compiled from the root, and the targets of "$ref" are queued and
 * compiled from a work list, so that recursion follows only the syntactic
 * nesting of a document; last, chains of "$ref" are checked for cycles.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "schema.h"

#include <errno.h>
#include <float.h>
#include <locale.h>
#include <math.h>
#include <regex.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define METASCHEMA_URI "http://json-schema.org/draft-07/schema"

/*
 * Validation may re-enter the same instance value through "$ref" and the
 * in-place applicators without descending into it ({"anyOf":[{"$ref":"#"}]}
 * loops forever); this bounds the nesting of node evaluations.
 */
#define MAX_EVAL_DEPTH (AD_SCHEMA_MAX_DEPTH * 4)

/* Below this many items "uniqueItems" compares all pairs instead of hashing. */
#define UNIQUE_PAIRWISE_MAX 16

#define ARENA_CHUNK 16384

#if JANSSON_VERSION_HEX >= 0x020e00
#define obj_getn(obj, key, len) json_object_getn((obj), (key), (len))
#define iter_keylen(it) json_object_iter_key_len(it)
#else
static json_t *obj_getn(const json_t *obj, const char *key, size_t len)
{
    if (memchr(key, '\0', len))
        return NULL;
    return json_object_get(obj, key);
}
#define iter_keylen(it) strlen(json_object_iter_key(it))
#endif

#if defined(__GNUC__)
#define PRINTF_LIKE(f, a) __attribute__((format(printf, f, a)))
#else
#define PRINTF_LIKE(f, a)
#endif

/* ------------------------------------------------------------------------ */
/* Arena allocation: compiled nodes live until the schema is freed.          */

struct arena_chunk {
    struct arena_chunk *next;
    size_t size, used;
    max_align_t data[];
};

struct arena {
    struct arena_chunk *head;
};

/* Returns "n" zeroed bytes aligned for any type, or NULL when out of memory. */
static void *arena_alloc(struct arena *a, size_t n)
{
    const size_t align = sizeof(max_align_t);
    struct arena_chunk *ch;
    void *p;

    if (n == 0)
        n = 1;
    if (n > SIZE_MAX / 2)
        return NULL;
    n = (n + align - 1) / align * align;

    ch = a->head;
    if (!ch || ch->size - ch->used < n) {
        size_t size = n > ARENA_CHUNK / 4 ? n : ARENA_CHUNK;

        ch = malloc(sizeof(*ch) + size);
        if (!ch)
            return NULL;
        ch->size = size;
        ch->used = 0;
        if (size > ARENA_CHUNK / 4 && a->head) {
            /* A large block gets a chunk of its own behind the current one. */
            ch->next = a->head->next;
            a->head->next = ch;
        } else {
            ch->next = a->head;
            a->head = ch;
        }
    }
    p = (char *)ch->data + ch->used;
    ch->used += n;
    memset(p, 0, n);
    return p;
}

static void *arena_array(struct arena *a, size_t count, size_t size)
{
    if (size && count > SIZE_MAX / 2 / size)
        return NULL;
    return arena_alloc(a, count * size);
}

static char *arena_strndup(struct arena *a, const char *s, size_t n)
{
    char *p = arena_alloc(a, n + 1);

    if (p) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

static void arena_free(struct arena *a)
{
    struct arena_chunk *ch = a->head;

    while (ch) {
        struct arena_chunk *next = ch->next;

        free(ch);
        ch = next;
    }
    a->head = NULL;
}

/* ------------------------------------------------------------------------ */
/* Growable string buffer used at compile time.                              */

struct sbuf {
    char *p;
    size_t len, cap;
    bool oom;
};

static void sb_putn(struct sbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->cap - b->len <= n) {
        size_t cap = b->cap ? b->cap : 64;
        char *p;

        while (cap - b->len <= n) {
            if (cap > SIZE_MAX / 4) {
                b->oom = true;
                return;
            }
            cap *= 2;
        }
        p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_puts(struct sbuf *b, const char *s)
{
    sb_putn(b, s, strlen(s));
}

static void sb_putc(struct sbuf *b, char c)
{
    sb_putn(b, &c, 1);
}

/* ------------------------------------------------------------------------ */
/* Compiled schema.                                                          */

enum node_kind { NODE_SCHEMA, NODE_TRUE, NODE_FALSE };

enum {
    T_NULL = 1 << 0,
    T_BOOLEAN = 1 << 1,
    T_OBJECT = 1 << 2,
    T_ARRAY = 1 << 3,
    T_NUMBER = 1 << 4,
    T_STRING = 1 << 5,
    T_INTEGER = 1 << 6,
};

/* Groups of keywords, so that validation skips absent groups quickly. */
enum {
    G_NUMBER = 1 << 0,
    G_STRING = 1 << 1,
    G_ARRAY = 1 << 2,
    G_OBJECT = 1 << 3,
    G_APPLY = 1 << 4,
};

/* min..max characters that each match re (one character); ascii[]
 * caches re for each ASCII byte. */
struct run {
    regex_t re;
    size_t min, max;
    bool ascii[128];
};

struct pattern {
    regex_t re;
    const char *source;
    struct pattern *next;
    /* A sequence of runs (see runs_of()), matched by counting; re unused. */
    struct run *runs;
    size_t nruns;
};

struct str {
    const char *s;
    size_t len;
};

struct named_node {
    struct str name;
    struct node *node;
};

struct pattern_node {
    struct pattern *re;
    struct node *node;
};

struct dependency {
    struct str name;
    struct str *required;
    size_t n_required;
    struct node *schema;
};

struct node {
    enum node_kind kind;
    unsigned groups;
    struct node *ref;

    unsigned types;
    const json_t *enum_values;
    const json_t *const_value;

    const json_t *multiple_of, *maximum, *minimum, *exclusive_maximum, *exclusive_minimum;

    long long max_length, min_length;
    struct pattern *pattern;

    struct node *items;
    struct node **item_list;
    size_t n_item_list;
    bool items_is_list;
    struct node *additional_items;
    long long max_items, min_items;
    bool unique_items;
    struct node *contains;

    long long max_properties, min_properties;
    struct str *required;
    size_t n_required;
    const json_t *properties_object;
    struct named_node *properties;
    size_t n_properties;
    struct pattern_node *pattern_properties;
    size_t n_pattern_properties;
    struct node *additional_properties;
    struct dependency *dependencies;
    size_t n_dependencies;
    struct node *property_names;

    struct node *if_schema, *then_schema, *else_schema;
    struct node **all_of, **any_of, **one_of;
    size_t n_all_of, n_any_of, n_one_of;
    struct node *not_schema;
};

struct ad_schema {
    struct arena perm;
    struct node *root;
    json_t **docs;
    size_t n_docs, cap_docs;
    struct pattern *patterns;
    /* The "C" locale, in which patterns are compiled and run byte-wise. */
    locale_t c_locale;
};

/* ------------------------------------------------------------------------ */
/* Compiler state.                                                           */

/* A schema that a URI names: a document root or the target of an "$id". */
struct resource {
    const char *uri;
    const json_t *target;
    /* The base URI in force around the target, before its own "$id". */
    const char *pbase;
};

struct cache_entry {
    const json_t *key;
    struct node *node;
};

struct pending {
    struct node *node;
    const json_t *schema;
    const char *pbase, *loc;
};

struct compiler {
    struct ad_schema *s;
    struct arena tmp;
    ad_schema_loader_fn loader;
    void *loader_arg;

    struct resource *res;
    size_t n_res, cap_res;
    const char **tried;
    size_t n_tried, cap_tried;

    struct cache_entry *cache;
    size_t n_cache, cap_cache;

    struct pending *work;
    size_t n_work, cap_work;

    char *errbuf;
    size_t errlen;
    int rc;
};

/* Records the first compile error; returns the error code to propagate. */
PRINTF_LIKE(3, 4)
static int cerr(struct compiler *c, int rc, const char *fmt, ...)
{
    va_list ap;

    if (c->rc == 0) {
        c->rc = rc;
        if (c->errbuf && c->errlen) {
            va_start(ap, fmt);
            vsnprintf(c->errbuf, c->errlen, fmt, ap);
            va_end(ap);
        }
    }
    return c->rc;
}

static int oom(struct compiler *c)
{
    return cerr(c, -ENOMEM, "out of memory");
}

/* Grows a malloc'ed array so that it holds at least n + 1 elements. */
static int grow(void **arr, size_t *cap, size_t n, size_t size)
{
    size_t ncap;
    void *p;

    if (n < *cap)
        return 0;
    ncap = *cap ? *cap * 2 : 16;
    if (ncap > SIZE_MAX / 2 / size)
        return -ENOMEM;
    p = realloc(*arr, ncap * size);
    if (!p)
        return -ENOMEM;
    *arr = p;
    *cap = ncap;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* URI references (RFC 3986).                                                */

struct uri_parts {
    const char *scheme, *auth, *path, *query, *frag;
    size_t scheme_len, auth_len, path_len, query_len, frag_len;
    bool has_scheme, has_auth, has_query, has_frag;
};

static bool is_alpha(int ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z');
}

static bool is_digit(int ch)
{
    return ch >= '0' && ch <= '9';
}

static void uri_split(const char *s, struct uri_parts *u)
{
    const char *p = s;

    memset(u, 0, sizeof(*u));
    if (is_alpha((unsigned char)*p)) {
        const char *q = p + 1;

        while (is_alpha((unsigned char)*q) || is_digit((unsigned char)*q) || *q == '+' ||
               *q == '-' || *q == '.')
            q++;
        if (*q == ':') {
            u->has_scheme = true;
            u->scheme = p;
            u->scheme_len = (size_t)(q - p);
            p = q + 1;
        }
    }
    if (p[0] == '/' && p[1] == '/') {
        p += 2;
        u->has_auth = true;
        u->auth = p;
        while (*p && *p != '/' && *p != '?' && *p != '#')
            p++;
        u->auth_len = (size_t)(p - u->auth);
    }
    u->path = p;
    while (*p && *p != '?' && *p != '#')
        p++;
    u->path_len = (size_t)(p - u->path);
    if (*p == '?') {
        u->has_query = true;
        u->query = ++p;
        while (*p && *p != '#')
            p++;
        u->query_len = (size_t)(p - u->query);
    }
    if (*p == '#') {
        u->has_frag = true;
        u->frag = ++p;
        u->frag_len = strlen(p);
    }
}

/* Drops the last segment, and the "/" before it, from out[0..*o). */
static void pop_segment(const char *out, size_t *o)
{
    while (*o > 0 && out[*o - 1] != '/')
        (*o)--;
    if (*o > 0)
        (*o)--;
}

/*
 * Writes "in" with its "." and ".." segments removed (RFC 3986, 5.2.4) to
 * "out", which has room for n bytes; returns the length written.
 */
static size_t remove_dots(const char *in, size_t n, char *out)
{
    size_t i = 0, o = 0;

    while (i < n) {
        const char *s = in + i;
        size_t rem = n - i, j;

        if (rem >= 3 && memcmp(s, "../", 3) == 0) {
            i += 3;
        } else if (rem >= 2 && memcmp(s, "./", 2) == 0) {
            i += 2;
        } else if (rem >= 3 && memcmp(s, "/./", 3) == 0) {
            i += 2;
        } else if (rem == 2 && memcmp(s, "/.", 2) == 0) {
            out[o++] = '/';
            i += 2;
        } else if (rem >= 4 && memcmp(s, "/../", 4) == 0) {
            i += 3;
            pop_segment(out, &o);
        } else if (rem == 3 && memcmp(s, "/..", 3) == 0) {
            i += 3;
            pop_segment(out, &o);
            out[o++] = '/';
        } else if ((rem == 1 && s[0] == '.') || (rem == 2 && memcmp(s, "..", 2) == 0)) {
            i = n;
        } else {
            j = s[0] == '/' ? 1 : 0;
            while (j < rem && s[j] != '/')
                j++;
            memcpy(out + o, s, j);
            o += j;
            i += j;
        }
    }
    return o;
}

static void put(char *out, size_t *o, const char *s, size_t n)
{
    memcpy(out + *o, s, n);
    *o += n;
}

/*
 * Resolves the URI reference "ref" against "base" (RFC 3986, 5.2.2).  The
 * base need not be absolute: an empty base leaves references as they are,
 * apart from dot segments.  Returns a string in the arena, or NULL.
 */
static char *uri_resolve(struct arena *a, const char *base, const char *ref)
{
    struct uri_parts b, r;
    const struct uri_parts *scheme_from, *auth_from, *query_from;
    size_t cap = strlen(base) + strlen(ref) + 8, o = 0;
    char *out = arena_alloc(a, cap), *merged = arena_alloc(a, cap);
    const char *path;
    size_t path_len;
    bool dots = true;

    if (!out || !merged)
        return NULL;
    uri_split(ref, &r);
    uri_split(base, &b);
    if (r.has_scheme) {
        scheme_from = auth_from = query_from = &r;
        path = r.path;
        path_len = r.path_len;
    } else {
        scheme_from = &b;
        if (r.has_auth) {
            auth_from = query_from = &r;
            path = r.path;
            path_len = r.path_len;
        } else {
            auth_from = &b;
            if (r.path_len == 0) {
                path = b.path;
                path_len = b.path_len;
                dots = false;
                query_from = r.has_query ? &r : &b;
            } else {
                query_from = &r;
                if (r.path[0] == '/') {
                    path = r.path;
                    path_len = r.path_len;
                } else {
                    size_t m = 0;

                    if (b.has_auth && b.path_len == 0) {
                        merged[m++] = '/';
                    } else {
                        size_t k = b.path_len;

                        while (k > 0 && b.path[k - 1] != '/')
                            k--;
                        put(merged, &m, b.path, k);
                    }
                    put(merged, &m, r.path, r.path_len);
                    path = merged;
                    path_len = m;
                }
            }
        }
    }

    if (scheme_from->has_scheme) {
        put(out, &o, scheme_from->scheme, scheme_from->scheme_len);
        out[o++] = ':';
    }
    if (auth_from->has_auth) {
        put(out, &o, "//", 2);
        put(out, &o, auth_from->auth, auth_from->auth_len);
    }
    if (dots)
        o += remove_dots(path, path_len, out + o);
    else
        put(out, &o, path, path_len);
    if (query_from->has_query) {
        out[o++] = '?';
        put(out, &o, query_from->query, query_from->query_len);
    }
    if (r.has_frag) {
        out[o++] = '#';
        put(out, &o, r.frag, r.frag_len);
    }
    out[o] = '\0';
    return out;
}

static int hex_value(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* Decodes %XX escapes into the arena; *len receives the decoded length. */
static char *percent_decode(struct arena *a, const char *s, size_t *len)
{
    size_t n = strlen(s), o = 0;
    char *out = arena_alloc(a, n + 1);

    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        int hi, lo;

        if (s[i] == '%' && i + 2 < n && (hi = hex_value((unsigned char)s[i + 1])) >= 0 &&
            (lo = hex_value((unsigned char)s[i + 2])) >= 0) {
            out[o++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            out[o++] = s[i];
        }
    }
    out[o] = '\0';
    *len = o;
    return out;
}

/* ------------------------------------------------------------------------ */
/* Regular expressions: ECMA-262 patterns translated to POSIX ERE.           */
/*                                                                           */
/* Patterns run byte-wise in the "C" locale.  Every character class becomes */
/* a set of code points, emitted as an alternation of UTF-8 byte sequences,  */
/* so that classes, "." and quantified literals work on whole characters.    */

struct cpset {
    uint32_t (*r)[2];
    size_t n, cap;
    bool oom;
};

static void cpset_add(struct cpset *set, uint32_t lo, uint32_t hi)
{
    if (set->oom || lo > hi)
        return;
    if (set->n == set->cap) {
        size_t cap = set->cap ? set->cap * 2 : 16;
        void *p = realloc(set->r, cap * sizeof(*set->r));

        if (!p) {
            set->oom = true;
            return;
        }
        set->r = p;
        set->cap = cap;
    }
    set->r[set->n][0] = lo;
    set->r[set->n][1] = hi;
    set->n++;
}

static int cmp_range(const void *a, const void *b)
{
    const uint32_t *x = a, *y = b;

    return x[0] < y[0] ? -1 : x[0] > y[0];
}

/* Sorts and merges the ranges of a set. */
static void cpset_normalize(struct cpset *set)
{
    size_t o = 0;

    if (set->n == 0)
        return;
    qsort(set->r, set->n, sizeof(*set->r), cmp_range);
    for (size_t i = 1; i < set->n; i++) {
        if (set->r[i][0] <= set->r[o][1] + 1) {
            if (set->r[i][1] > set->r[o][1])
                set->r[o][1] = set->r[i][1];
        } else {
            o++;
            set->r[o][0] = set->r[i][0];
            set->r[o][1] = set->r[i][1];
        }
    }
    set->n = o + 1;
}

/* Replaces the set by its complement among all code points. */
static void cpset_negate(struct cpset *set)
{
    struct cpset out = {0};
    uint32_t next = 0;

    cpset_normalize(set);
    for (size_t i = 0; i < set->n; i++) {
        if (set->r[i][0] > next)
            cpset_add(&out, next, set->r[i][0] - 1);
        next = set->r[i][1] + 1;
    }
    if (next <= 0x10FFFF)
        cpset_add(&out, next, 0x10FFFF);
    out.oom |= set->oom;
    free(set->r);
    *set = out;
}

static void cpset_add_digit(struct cpset *set, bool negate)
{
    if (negate) {
        cpset_add(set, 0, '0' - 1);
        cpset_add(set, '9' + 1, 0x10FFFF);
    } else {
        cpset_add(set, '0', '9');
    }
}

static void cpset_add_word(struct cpset *set, bool negate)
{
    if (negate) {
        cpset_add(set, 0, '0' - 1);
        cpset_add(set, '9' + 1, 'A' - 1);
        cpset_add(set, 'Z' + 1, '_' - 1);
        cpset_add(set, '_' + 1, 'a' - 1);
        cpset_add(set, 'z' + 1, 0x10FFFF);
    } else {
        cpset_add(set, '0', '9');
        cpset_add(set, 'A', 'Z');
        cpset_add(set, '_', '_');
        cpset_add(set, 'a', 'z');
    }
}

/* ECMA-262 WhiteSpace and LineTerminator. */
static void cpset_add_space(struct cpset *set, bool negate)
{
    static const uint32_t spaces[][2] = {
        {0x09, 0x0D}, {0x20, 0x20},     {0xA0, 0xA0},     {0x1680, 0x1680}, {0x2000, 0x200A},
        {0x2028, 0x2029}, {0x202F, 0x202F}, {0x205F, 0x205F}, {0x3000, 0x3000}, {0xFEFF, 0xFEFF},
    };
    uint32_t next = 0;

    for (size_t i = 0; i < sizeof(spaces) / sizeof(spaces[0]); i++) {
        if (negate) {
            cpset_add(set, next, spaces[i][0] - 1);
            next = spaces[i][1] + 1;
        } else {
            cpset_add(set, spaces[i][0], spaces[i][1]);
        }
    }
    if (negate)
        cpset_add(set, next, 0x10FFFF);
}

static size_t utf8_encode(uint32_t cp, unsigned char *out)
{
    if (cp < 0x80) {
        out[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (unsigned char)(0xC0 | (cp >> 6));
        out[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (unsigned char)(0xE0 | (cp >> 12));
        out[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (unsigned char)(0xF0 | (cp >> 18));
    out[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Decodes one UTF-8 character of s[0..n), which must be valid UTF-8. */
static uint32_t utf8_decode(const char *s, size_t n, size_t *adv)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t len = u[0] < 0x80 ? 1 : u[0] < 0xE0 ? 2 : u[0] < 0xF0 ? 3 : 4;
    uint32_t cp;

    if (len > n || u[0] >= 0xF8 || (u[0] >= 0x80 && u[0] < 0xC0)) {
        *adv = 1;
        return u[0];
    }
    cp = len == 1 ? u[0] : len == 2 ? u[0] & 0x1Fu : len == 3 ? u[0] & 0x0Fu : u[0] & 0x07u;
    for (size_t i = 1; i < len; i++)
        cp = (cp << 6) | (u[i] & 0x3Fu);
    *adv = len;
    return cp;
}

/*
 * Emits the UTF-8 byte sequences of the code points lo..hi (all of which
 * are at least 0x80 and not surrogates) as alternatives, each made of byte
 * ranges.  The range is split until every byte position spans a contiguous
 * range of byte values.
 */
static void emit_utf8_range(struct sbuf *b, uint32_t lo, uint32_t hi, bool *first)
{
    static const uint32_t len_max[] = {0x7FF, 0xFFFF};
    unsigned char x[4], y[4];
    size_t n;

    for (size_t i = 0; i < 2; i++) {
        if (lo <= len_max[i] && hi > len_max[i]) {
            emit_utf8_range(b, lo, len_max[i], first);
            emit_utf8_range(b, len_max[i] + 1, hi, first);
            return;
        }
    }
    n = utf8_encode(lo, x);
    for (size_t i = 1; i < n; i++) {
        uint32_t m = (1u << (6 * i)) - 1;

        if ((lo & ~m) != (hi & ~m)) {
            if ((lo & m) != 0) {
                emit_utf8_range(b, lo, lo | m, first);
                emit_utf8_range(b, (lo | m) + 1, hi, first);
                return;
            }
            if ((hi & m) != m) {
                emit_utf8_range(b, lo, (hi & ~m) - 1, first);
                emit_utf8_range(b, hi & ~m, hi, first);
                return;
            }
        }
    }
    utf8_encode(hi, y);
    if (!*first)
        sb_putc(b, '|');
    *first = false;
    for (size_t i = 0; i < n; i++) {
        if (x[i] == y[i]) {
            sb_putc(b, (char)x[i]);
        } else {
            char br[5] = {'[', (char)x[i], '-', (char)y[i], ']'};

            sb_putn(b, br, sizeof(br));
        }
    }
}

/*
 * Emits a POSIX bracket expression matching the ASCII characters in
 * "bits" (1..0x7F), taking care of the characters that are special inside
 * brackets.
 */
static void emit_ascii_bracket(struct sbuf *b, const bool *bits)
{
    bool rbr = bits[']'], caret = bits['^'], lbr = bits['['], dash = bits['-'];
    size_t start = b->len;

    sb_putc(b, '[');
    if (rbr)
        sb_putc(b, ']');
    for (int ch = 1; ch < 0x80;) {
        int end;

        if (!bits[ch] || ch == ']' || ch == '^' || ch == '[' || ch == '-') {
            ch++;
            continue;
        }
        end = ch;
        while (end + 1 < 0x80 && bits[end + 1] && end + 1 != ']' && end + 1 != '^' &&
               end + 1 != '[' && end + 1 != '-')
            end++;
        sb_putc(b, (char)ch);
        if (end - ch >= 2)
            sb_putc(b, '-');
        if (end > ch)
            sb_putc(b, (char)end);
        ch = end + 1;
    }
    if (caret && b->len == start + 1) {
        /* A leading "^" would negate: put it after another member. */
        if (lbr) {
            sb_puts(b, "[^");
            caret = lbr = false;
        } else if (dash) {
            sb_puts(b, "-^]");
            return;
        } else {
            b->len = start;
            sb_puts(b, "\\^");
            return;
        }
    }
    if (caret)
        sb_putc(b, '^');
    if (lbr)
        sb_putc(b, '[');
    if (dash)
        sb_putc(b, '-');
    sb_putc(b, ']');
}

/* Emits an ERE atom matching exactly one character of the set. */
static void cpset_emit(struct sbuf *b, struct cpset *set)
{
    bool bits[0x80] = {false}, have_ascii = false, first = true;
    size_t start = b->len, alternatives = 0;

    cpset_normalize(set);
    for (size_t i = 0; i < set->n; i++) {
        uint32_t lo = set->r[i][0], hi = set->r[i][1] > 0x10FFFF ? 0x10FFFF : set->r[i][1];

        /* NUL cannot appear in a POSIX pattern. */
        if (lo == 0)
            lo = 1;
        for (uint32_t ch = lo; ch <= hi && ch < 0x80; ch++) {
            bits[ch] = true;
            have_ascii = true;
        }
    }
    sb_putc(b, '(');
    if (have_ascii) {
        emit_ascii_bracket(b, bits);
        first = false;
        alternatives++;
    }
    for (size_t i = 0; i < set->n; i++) {
        uint32_t lo = set->r[i][0] < 0x80 ? 0x80 : set->r[i][0];
        uint32_t hi = set->r[i][1] > 0x10FFFF ? 0x10FFFF : set->r[i][1];

        if (lo > hi)
            continue;
        if (lo < 0xD800 && hi > 0xDFFF) {
            emit_utf8_range(b, lo, 0xD7FF, &first);
            emit_utf8_range(b, 0xE000, hi, &first);
            alternatives += 2;
        } else if (lo >= 0xD800 && hi <= 0xDFFF) {
            continue;
        } else {
            if (lo >= 0xD800 && lo <= 0xDFFF)
                lo = 0xE000;
            if (hi >= 0xD800 && hi <= 0xDFFF)
                hi = 0xD7FF;
            emit_utf8_range(b, lo, hi, &first);
            alternatives += 2;
        }
    }
    if (alternatives == 0) {
        /* The empty set: a byte that valid UTF-8 never contains. */
        b->len = start;
        sb_putc(b, (char)0xFF);
        return;
    }
    if (alternatives == 1 && have_ascii) {
        /* Only a bracket expression: drop the parenthesis. */
        memmove(b->p + start, b->p + start + 1, b->len - start - 1);
        b->len--;
        b->p[b->len] = '\0';
        return;
    }
    sb_putc(b, ')');
}

/* Emits a literal character as an ERE atom. */
static void emit_literal(struct sbuf *b, uint32_t cp)
{
    unsigned char u[4];
    size_t n;

    if (cp < 0x80) {
        if (strchr(".[]()*+?{}|^$\\", (int)cp))
            sb_putc(b, '\\');
        sb_putc(b, (char)cp);
        return;
    }
    n = utf8_encode(cp, u);
    sb_putc(b, '(');
    sb_putn(b, (const char *)u, n);
    sb_putc(b, ')');
}

struct rx {
    const char *p;
    size_t n, i;
    const char *why;
};

static bool rx_hex(struct rx *x, size_t digits, uint32_t *out)
{
    uint32_t v = 0;

    if (x->n - x->i < digits)
        return false;
    for (size_t k = 0; k < digits; k++) {
        int h = hex_value((unsigned char)x->p[x->i + k]);

        if (h < 0)
            return false;
        v = v * 16 + (uint32_t)h;
    }
    x->i += digits;
    *out = v;
    return true;
}

/*
 * Parses the escape after a backslash (x->i points after it) that stands for
 * one character, such as \n, \x41, \u00e9, \u{1F600}, \cJ or \.; returns
 * false, setting x->why, for escapes that are not single characters.
 */
static bool rx_char_escape(struct rx *x, uint32_t *cp)
{
    char e;

    if (x->i >= x->n) {
        x->why = "pattern ends with a backslash";
        return false;
    }
    e = x->p[x->i++];
    switch (e) {
    case 'n': *cp = '\n'; return true;
    case 't': *cp = '\t'; return true;
    case 'r': *cp = '\r'; return true;
    case 'f': *cp = '\f'; return true;
    case 'v': *cp = '\v'; return true;
    case 'x':
        if (rx_hex(x, 2, cp))
            return true;
        x->why = "invalid \\x escape";
        return false;
    case 'u':
        if (x->i < x->n && x->p[x->i] == '{') {
            uint32_t v = 0;
            size_t k = x->i + 1;

            while (k < x->n && hex_value((unsigned char)x->p[k]) >= 0 && v <= 0x10FFFF)
                v = v * 16 + (uint32_t)hex_value((unsigned char)x->p[k++]);
            if (k == x->i + 1 || k >= x->n || x->p[k] != '}' || v > 0x10FFFF) {
                x->why = "invalid \\u{...} escape";
                return false;
            }
            x->i = k + 1;
            *cp = v;
            return true;
        }
        if (!rx_hex(x, 4, cp)) {
            x->why = "invalid \\u escape";
            return false;
        }
        if (*cp >= 0xD800 && *cp <= 0xDBFF && x->n - x->i >= 6 && x->p[x->i] == '\\' &&
            x->p[x->i + 1] == 'u') {
            size_t save = x->i;
            uint32_t low;

            x->i += 2;
            if (rx_hex(x, 4, &low) && low >= 0xDC00 && low <= 0xDFFF)
                *cp = 0x10000 + ((*cp - 0xD800) << 10) + (low - 0xDC00);
            else
                x->i = save;
        }
        return true;
    case 'c':
        if (x->i < x->n && is_alpha((unsigned char)x->p[x->i])) {
            *cp = (uint32_t)(x->p[x->i++] % 32);
            return true;
        }
        x->why = "invalid \\c escape";
        return false;
    case '0':
        if (x->i < x->n && is_digit((unsigned char)x->p[x->i])) {
            x->why = "octal escapes are not supported";
            return false;
        }
        *cp = 0;
        return true;
    default:
        break;
    }
    if ((unsigned char)e >= 0x80 || (!is_alpha(e) && !is_digit(e))) {
        size_t adv;

        x->i--;
        *cp = utf8_decode(x->p + x->i, x->n - x->i, &adv);
        x->i += adv;
        return true;
    }
    if (is_digit(e))
        x->why = "back-references are not supported";
    else
        x->why = "unsupported escape sequence";
    return false;
}

/* Adds \d \D \w \W \s \S to a set; returns false if "e" is none of them. */
static bool cpset_add_class_escape(struct cpset *set, char e)
{
    switch (e) {
    case 'd': cpset_add_digit(set, false); return true;
    case 'D': cpset_add_digit(set, true); return true;
    case 'w': cpset_add_word(set, false); return true;
    case 'W': cpset_add_word(set, true); return true;
    case 's': cpset_add_space(set, false); return true;
    case 'S': cpset_add_space(set, true); return true;
    default: return false;
    }
}

/* Reads one class member character; *is_class is set for \d and its kin. */
static bool rx_class_atom(struct rx *x, struct cpset *set, uint32_t *cp, bool *is_class)
{
    size_t adv;

    *is_class = false;
    if (x->p[x->i] == '\\') {
        x->i++;
        if (x->i < x->n && cpset_add_class_escape(set, x->p[x->i])) {
            x->i++;
            *is_class = true;
            return true;
        }
        if (x->i < x->n && x->p[x->i] == 'b') {
            x->i++;
            *cp = '\b';
            return true;
        }
        if (x->i < x->n && x->p[x->i] == '-') {
            x->i++;
            *cp = '-';
            return true;
        }
        return rx_char_escape(x, cp);
    }
    *cp = utf8_decode(x->p + x->i, x->n - x->i, &adv);
    x->i += adv;
    return true;
}

/* Parses a character class; x->i points after the "[". */
static bool rx_class(struct rx *x, struct sbuf *b)
{
    struct cpset set = {0};
    bool negate = false, ok = false;

    if (x->i < x->n && x->p[x->i] == '^') {
        negate = true;
        x->i++;
    }
    for (;;) {
        uint32_t lo, hi;
        bool is_class, hi_class;

        if (x->i >= x->n) {
            x->why = "unterminated character class";
            goto out;
        }
        if (x->p[x->i] == ']') {
            x->i++;
            break;
        }
        if (!rx_class_atom(x, &set, &lo, &is_class))
            goto out;
        if (!is_class && x->n - x->i >= 2 && x->p[x->i] == '-' && x->p[x->i + 1] != ']') {
            x->i++;
            if (!rx_class_atom(x, &set, &hi, &hi_class))
                goto out;
            if (hi_class) {
                /* ECMA-262 (annex B) reads [a-\d] as "a", "-" and \d. */
                cpset_add(&set, lo, lo);
                cpset_add(&set, '-', '-');
                continue;
            }
            if (lo > hi) {
                x->why = "character class range out of order";
                goto out;
            }
            cpset_add(&set, lo, hi);
        } else if (!is_class) {
            cpset_add(&set, lo, lo);
        }
    }
    if (negate)
        cpset_negate(&set);
    if (set.oom) {
        b->oom = true;
        goto out;
    }
    cpset_emit(b, &set);
    ok = true;
out:
    free(set.r);
    return ok;
}

/* Checks for an ECMA-262 quantifier {n}, {n,} or {n,m} at x->i. */
static size_t rx_brace_quantifier(const struct rx *x)
{
    size_t k = x->i + 1;
    size_t digits = 0;

    while (k < x->n && is_digit((unsigned char)x->p[k]))
        k++, digits++;
    if (digits == 0 || k >= x->n)
        return 0;
    if (x->p[k] == ',') {
        k++;
        while (k < x->n && is_digit((unsigned char)x->p[k]))
            k++;
    }
    if (k >= x->n || x->p[k] != '}')
        return 0;
    return k + 1 - x->i;
}

/* Reads the digits at p[i..) as a count, capped at 100,000,000. */
static size_t count_at(const char *p, size_t i)
{
    unsigned long long v = 0;

    for (; is_digit((unsigned char)p[i]); i++)
        v = v * 10 + (unsigned)(p[i] - '0') > 100000000ull ? 100000000ull
                                                           : v * 10 + (unsigned)(p[i] - '0');
    return (size_t)v;
}

#define RX_GROUPS_MAX 64
#define RX_REPEAT_MAX 16384

struct rx_group {
    size_t at; /* where the group starts in the output */
    bool zw;   /* it holds ^, $, \b or \B */
};

/*
 * Writes the group b->p[at..len), which holds a zero-width assertion, lo
 * times and then hi - lo times more, each optional (or once more with a
 * star when hi is unbounded), in place of the group and its count (or +).
 * glibc copies a counted group internally, and in its copies ^, $ and \b
 * lose their condition ("(x\'){2}" took "xx"); copies written out are
 * each parsed as they are.  False when they would take more than
 * RX_REPEAT_MAX bytes.
 */
static bool rx_repeat_group(struct sbuf *b, size_t at, size_t lo, size_t hi)
{
    size_t glen = b->len - at, copies = lo + (hi == SIZE_MAX ? 1 : hi - lo);
    char *g;

    if (lo > RX_REPEAT_MAX || copies > RX_REPEAT_MAX / (glen + 1))
        return false;
    if (!(g = malloc(glen ? glen : 1))) {
        b->oom = true;
        return true;
    }
    memcpy(g, b->p + at, glen);
    b->len = at;
    for (size_t i = 0; i < lo; i++)
        sb_putn(b, g, glen);
    if (hi == SIZE_MAX) {
        sb_putn(b, g, glen);
        sb_putc(b, '*');
    } else {
        for (size_t i = lo; i < hi; i++) {
            sb_putn(b, g, glen);
            sb_putc(b, '?');
        }
    }
    free(g);
    return true;
}

/*
 * Translates the ECMA-262 pattern p[0..n) into a POSIX extended regular
 * expression for byte-wise matching of UTF-8 text.  Lookaround assertions,
 * back-references and named groups are rejected; lazy quantifiers become
 * greedy ones, which does not change whether a match exists.
 */
static bool rx_translate(const char *p, size_t n, struct sbuf *b, const char **why)
{
    struct rx x = {.p = p, .n = n};
    /* Open groups: where each starts in b, and whether it holds a
     * zero-width assertion; the last group closed, if nothing followed. */
    struct rx_group group[RX_GROUPS_MAX];
    size_t depth = 0, last_at = SIZE_MAX;
    bool last_zw = false;

    while (x.i < x.n && !b->oom) {
        char ch = x.p[x.i];
        size_t adv;
        uint32_t cp;

        switch (ch) {
        case '\\':
            x.i++;
            if (x.i < x.n) {
                struct cpset set = {0};
                char e = x.p[x.i];

                if (cpset_add_class_escape(&set, e)) {
                    x.i++;
                    if (set.oom)
                        b->oom = true;
                    else
                        cpset_emit(b, &set);
                    free(set.r);
                    break;
                }
                if (e == 'B') {
                    /* glibc's \B, behind the "(.|[^.])*" in front, holds
                     * where ECMA-262's does not ("\B" took "1 b"). */
                    x.why = "\\B (no word boundary) is not supported";
                    goto fail;
                }
                if (e == 'b') {
                    x.i++;
                    sb_putc(b, '\\');
                    sb_putc(b, e);
                    if (depth)
                        group[depth - 1].zw = true;
                    last_at = SIZE_MAX;
                    break;
                }
            }
            if (!rx_char_escape(&x, &cp))
                goto fail;
            if (cp == 0) {
                x.why = "NUL characters are not supported in patterns";
                goto fail;
            }
            emit_literal(b, cp);
            break;
        case '[':
            x.i++;
            if (!rx_class(&x, b))
                goto fail;
            break;
        case '(':
            x.i++;
            if (x.i < x.n && x.p[x.i] == '?') {
                if (x.i + 1 < x.n && x.p[x.i + 1] == ':') {
                    x.i += 2;
                } else {
                    x.why = "lookaround assertions and named groups are not supported";
                    goto fail;
                }
            }
            if (depth == RX_GROUPS_MAX) {
                x.why = "groups nested too deep";
                goto fail;
            }
            group[depth++] = (struct rx_group){.at = b->len};
            sb_putc(b, '(');
            last_at = SIZE_MAX;
            continue;
        case '^':
        case '$':
            /*
             * The text's start and end: GNU's \` and \'.  glibc's "^" and
             * "$" inside an expression also match next to a newline ("^b"
             * after the "(.|[^.])*" compile_pattern() puts in front took
             * "a\nb", "$." took "\nx").
             */
            x.i++;
            sb_puts(b, ch == '^' ? "\\`" : "\\'");
            if (depth)
                group[depth - 1].zw = true;
            break;
        case ')':
            x.i++;
            sb_putc(b, ch);
            if (depth) {
                depth--;
                last_at = group[depth].at;
                last_zw = group[depth].zw;
                if (depth)
                    group[depth - 1].zw |= last_zw;
                continue;
            }
            break;
        case '|':
            x.i++;
            sb_putc(b, ch);
            break;
        case '*':
        case '+':
        case '?':
            x.i++;
            if (ch == '+' && last_at != SIZE_MAX && last_zw) {
                if (!rx_repeat_group(b, last_at, 1, SIZE_MAX)) {
                    x.why = "a group with ^, $ or \\b repeated too often";
                    goto fail;
                }
            } else {
                sb_putc(b, ch);
            }
            if (x.i < x.n && x.p[x.i] == '?')
                x.i++;
            break;
        case '{':
            adv = rx_brace_quantifier(&x);
            if (adv && last_at != SIZE_MAX && last_zw) {
                const char *comma = memchr(x.p + x.i, ',', adv);
                size_t lo = count_at(x.p, x.i + 1);
                size_t hi = !comma ? lo : comma[1] == '}' ? SIZE_MAX
                                                          : count_at(x.p, (size_t)(comma - x.p) + 1);

                if (hi < lo || !rx_repeat_group(b, last_at, lo, hi)) {
                    x.why = "a group with ^, $ or \\b repeated too often";
                    goto fail;
                }
                x.i += adv;
                if (x.i < x.n && x.p[x.i] == '?')
                    x.i++;
            } else if (adv) {
                sb_putn(b, x.p + x.i, adv);
                x.i += adv;
                if (x.i < x.n && x.p[x.i] == '?')
                    x.i++;
            } else {
                x.i++;
                sb_puts(b, "\\{");
            }
            break;
        case '.': {
            struct cpset set = {0};

            x.i++;
            cpset_add(&set, '\n', '\n');
            cpset_add(&set, '\r', '\r');
            cpset_add(&set, 0x2028, 0x2029);
            cpset_negate(&set);
            if (set.oom)
                b->oom = true;
            else
                cpset_emit(b, &set);
            free(set.r);
            break;
        }
        default:
            if (ch == '\0') {
                x.why = "NUL characters are not supported in patterns";
                goto fail;
            }
            cp = utf8_decode(x.p + x.i, x.n - x.i, &adv);
            x.i += adv;
            emit_literal(b, cp);
            break;
        }
        last_at = SIZE_MAX; /* what follows is not right after a group */
    }
    return true;
fail:
    *why = x.why;
    return false;
}

/*
 * What matching a translated (POSIX ERE) pattern may cost.  The C
 * library's matcher is an automaton, so nested stars such as (a+)+ are
 * cheap, but it expands a counted repetition into that many copies of what
 * it repeats: ((a{0,50}){0,50}){0,50} makes 125,000 copies, takes seconds
 * and exhausts memory.  Schemas may come from tenants (entities), so the
 * expansion is bounded: the cost of a pattern is its atoms, counted
 * repetitions multiplying what they repeat (saturating; a counted
 * repetition of something that holds one multiplies by its bound squared),
 * and a pattern over MAX_PATTERN_COST is refused at compile time.
 */
#define MAX_PATTERN_COST 4000

struct ere {
    const char *p;
    size_t n, i;
    bool counted; /* a counted repetition was seen in the current atom */
};

static size_t cost_mul(size_t a, size_t b)
{
    return b && a > (SIZE_MAX / 4) / b ? SIZE_MAX / 4 : a * b;
}

static size_t ere_expr(struct ere *e, unsigned depth);

static size_t ere_atom(struct ere *e, unsigned depth)
{
    char ch = e->p[e->i++];

    if (ch == '(') {
        size_t c = depth > 200 ? SIZE_MAX / 4 : ere_expr(e, depth + 1);

        if (e->i < e->n && e->p[e->i] == ')')
            e->i++;
        return c;
    }
    if (ch == '[') {
        /* A bracket expression is one atom: skip to its end. */
        if (e->i < e->n && e->p[e->i] == '^')
            e->i++;
        if (e->i < e->n && e->p[e->i] == ']')
            e->i++;
        while (e->i < e->n && e->p[e->i] != ']') {
            if (e->p[e->i] == '[' && e->i + 1 < e->n &&
                (e->p[e->i + 1] == ':' || e->p[e->i + 1] == '.' || e->p[e->i + 1] == '=')) {
                char close = e->p[e->i + 1];

                e->i += 2;
                while (e->i + 1 < e->n && !(e->p[e->i] == close && e->p[e->i + 1] == ']'))
                    e->i++;
                e->i += 2;
                continue;
            }
            e->i++;
        }
        if (e->i < e->n)
            e->i++;
        return 1;
    }
    if (ch == '\\' && e->i < e->n)
        e->i++;
    return 1;
}

/* One upper bound of a {m}, {m,} or {m,n} at e->i (after the '{'). */
static size_t ere_bound(struct ere *e)
{
    size_t m = 0, n = 0;
    bool comma = false, have_n = false;

    while (e->i < e->n && e->p[e->i] != '}') {
        char ch = e->p[e->i++];

        if (ch == ',')
            comma = true;
        else if (ch >= '0' && ch <= '9' && !comma)
            m = m < 100000 ? m * 10 + (size_t)(ch - '0') : m;
        else if (ch >= '0' && ch <= '9') {
            n = n < 100000 ? n * 10 + (size_t)(ch - '0') : n;
            have_n = true;
        }
    }
    if (e->i < e->n)
        e->i++;
    if (!comma)
        return m ? m : 1;
    return have_n ? (n ? n : 1) : m + 1;
}

static size_t ere_branch(struct ere *e, unsigned depth)
{
    size_t total = 0;

    while (e->i < e->n && e->p[e->i] != '|' && e->p[e->i] != ')') {
        bool outer = e->counted;
        size_t c;

        e->counted = false;
        c = ere_atom(e, depth);
        while (e->i < e->n) {
            char q = e->p[e->i];

            if (q == '*' || q == '+' || q == '?') {
                e->i++;
                c = c + 1;
            } else if (q == '{') {
                size_t bound;

                e->i++;
                bound = ere_bound(e);
                /* Nested counted repetitions are what makes the matcher
                 * slow (many ways to split the same text): they pay the
                 * bound twice. */
                c = cost_mul(c, e->counted ? cost_mul(bound, bound) : bound);
                e->counted = true;
            } else {
                break;
            }
        }
        e->counted = e->counted || outer;
        total = total + c > SIZE_MAX / 4 ? SIZE_MAX / 4 : total + c;
    }
    return total;
}

static size_t ere_expr(struct ere *e, unsigned depth)
{
    size_t total = ere_branch(e, depth);

    while (e->i < e->n && e->p[e->i] == '|') {
        e->i++;
        total += ere_branch(e, depth);
        if (total > SIZE_MAX / 4)
            total = SIZE_MAX / 4;
    }
    return total;
}

static size_t ere_cost(const char *p, size_t n)
{
    struct ere e = {.p = p, .n = n};
    size_t total = 0;

    /* A stray ')' at the top (the matcher refuses it anyway) ends nothing. */
    while (e.i < e.n) {
        total += ere_expr(&e, 0);
        if (e.i < e.n)
            e.i++;
    }
    return total;
}

/* A run as written: its character p[at..at+len) and its bounds. */
struct run_src {
    size_t at, len, min, max;
};

#define RUNS_MAX 16

/*
 * Whether the pattern p[0..n) is a sequence of runs of one character each,
 * ^A1{m1}A2{m2}...Ak{lo,hi}$: each A ".", an escape standing for one
 * character, a class or a literal, with a count ({m}, or none for one),
 * and the last with any quantifier ({m}, {m,}, {m,n}, ?, * or +, lazy or
 * not).  Every run but the last has a fixed length, so where each begins
 * is known and a match is one pass.  Length limits and shapes are written
 * so ("^.{1,255}$", "^[a-z][a-z0-9_]{0,62}$", "^\d{3}-\d{4}$"), and the C
 * library's matcher would expand A{m,n} into n copies.  Fills r[] and
 * answers how many runs, or 0.
 */
static size_t runs_of(const char *p, size_t n, struct run_src r[RUNS_MAX])
{
    struct rx x = {.p = p, .n = n, .i = 1};
    size_t nr = 0, adv, k;
    struct sbuf scratch = {0};
    bool ok;

    if (n < 3 || p[0] != '^' || p[n - 1] != '$' || p[n - 2] == '\\')
        return 0;
    while (x.i < n - 1) {
        size_t at = x.i, lo = 1, hi = 1;

        if (nr == RUNS_MAX || (nr && r[nr - 1].min != r[nr - 1].max))
            return 0; /* only the last run may vary */
        switch (p[x.i]) {
        case '.':
            x.i++;
            break;
        case '\\':
            /* One character: a class escape or an escaped punctuation mark. */
            if (x.i + 1 >= n - 1 || !p[x.i + 1] || is_digit((unsigned char)p[x.i + 1]) ||
                !strchr("dDwWsS.\\/^$|?*+()[]{}-", p[x.i + 1]))
                return 0;
            x.i += 2;
            break;
        case '[':
            x.i++;
            ok = rx_class(&x, &scratch);
            free(scratch.p);
            scratch = (struct sbuf){0};
            if (!ok || x.i > n - 1)
                return 0;
            break;
        default:
            if (strchr("()|^$*+?{}]", p[x.i]) || (unsigned char)p[x.i] < 0x20)
                return 0;
            (void)utf8_decode(p + x.i, n - 1 - x.i, &adv);
            x.i += adv;
            break;
        }
        r[nr].at = at;
        r[nr].len = x.i - at;
        if (x.i < n - 1 && p[x.i] == '{') {
            const char *comma;

            if (!(k = rx_brace_quantifier(&x)) || x.i + k > n - 1)
                return 0;
            comma = memchr(p + x.i, ',', k);
            lo = count_at(p, x.i + 1);
            hi = !comma ? lo : comma[1] == '}' ? SIZE_MAX : count_at(p, (size_t)(comma - p) + 1);
            if (hi < lo)
                return 0;
            x.i += k;
        } else if (x.i < n - 1 && strchr("?*+", p[x.i])) {
            lo = p[x.i] == '+';
            hi = p[x.i] == '?' ? 1 : SIZE_MAX;
            x.i++;
        }
        if (x.i < n - 1 && p[x.i] == '?' && (lo != 1 || hi != 1 || p[x.i - 1] == '}'))
            x.i++; /* lazy: the same matches, anchored at both ends */
        r[nr].min = lo;
        r[nr].max = hi;
        nr++;
    }
    return x.i == n - 1 ? nr : 0;
}

/*
 * Compiles one run's character (src[0..len)) as the pattern ^A$, and what
 * it says of each ASCII byte.  Called in the C locale.
 */
static bool compile_run(struct run *r, const char *src, size_t len, const char **why)
{
    struct sbuf one = {0}, b = {0};
    bool ok;

    sb_putc(&one, '^');
    sb_putn(&one, src, len);
    sb_putc(&one, '$');
    ok = !one.oom && rx_translate(one.p, one.len, &b, why);
    free(one.p);
    sb_putc(&b, '\0');
    if (!ok || b.oom || regcomp(&r->re, b.p, REG_EXTENDED | REG_NOSUB) != 0) {
        free(b.p);
        if (!*why)
            *why = "not a valid character";
        return false;
    }
    free(b.p);
    for (int ch = 0; ch < 128; ch++) {
        /* NUL-terminated as well: regexec may look past rm_eo. */
        char text[2] = {(char)ch, '\0'};
        regmatch_t m[1] = {{.rm_so = 0, .rm_eo = 1}};

        r->ascii[ch] = regexec(&r->re, text, 1, m, REG_STARTEND) == 0;
    }
    return true;
}

/* Whether the character at s[0..len) is one of r's; *adv is its length. */
static bool run_char(const struct run *r, const char *s, size_t len, size_t *adv)
{
    unsigned char u = (unsigned char)s[0];
    regmatch_t m[1];

    if (u < 0x80) {
        *adv = 1;
        return r->ascii[u];
    }
    (void)utf8_decode(s, len, adv);
    /* The character as a text of its own: ^ holds only at 0. */
    m[0].rm_so = 0;
    m[0].rm_eo = (regoff_t)*adv;
    return regexec(&r->re, s, 1, m, REG_STARTEND) == 0;
}

/* Matches a sequence of runs: each run's count of its characters in turn,
 * the last up to the end of the text. */
static bool runs_match(const struct pattern *pt, const char *s, size_t len)
{
    size_t i = 0, adv;

    for (size_t k = 0; k < pt->nruns; k++) {
        const struct run *r = &pt->runs[k];
        size_t count = 0;
        bool last = k + 1 == pt->nruns;

        while (i < len && (last || count < r->max)) {
            if (count == r->max || !run_char(r, s + i, len - i, &adv))
                return false;
            count++;
            i += adv;
        }
        if (count < r->min)
            return false;
    }
    return i == len;
}

/* Links a compiled pattern into the schema, which frees it. */
static struct pattern *pattern_keep(struct compiler *c, struct pattern *pt, const char *src)
{
    pt->source = src;
    pt->next = c->s->patterns;
    c->s->patterns = pt;
    return pt;
}

/*
 * Compiles the ECMA-262 pattern src[0..len), which must outlive the schema;
 * on failure records an error for "loc" and returns NULL.
 */
static struct pattern *compile_pattern(struct compiler *c, const char *src, size_t len,
                                       const char *loc)
{
    struct sbuf b = {0};
    const char *why = NULL;
    struct pattern *pt;
    locale_t old;
    struct run_src rs[RUNS_MAX];
    size_t nr;
    int rc;

    if ((nr = runs_of(src, len, rs))) {
        bool ok = true;

        pt = arena_alloc(&c->s->perm, sizeof(*pt));
        if (pt) {
            memset(pt, 0, sizeof(*pt));
            pt->runs = arena_alloc(&c->s->perm, nr * sizeof(*pt->runs));
        }
        if (!pt || !pt->runs) {
            oom(c);
            return NULL;
        }
        memset(pt->runs, 0, nr * sizeof(*pt->runs));
        old = uselocale(c->s->c_locale);
        for (size_t k = 0; k < nr && ok; k++) {
            pt->runs[k].min = rs[k].min;
            pt->runs[k].max = rs[k].max;
            if ((ok = compile_run(&pt->runs[k], src + rs[k].at, rs[k].len, &why)))
                pt->nruns = k + 1;
        }
        uselocale(old);
        if (!ok) {
            for (size_t k = 0; k < pt->nruns; k++)
                regfree(&pt->runs[k].re);
            cerr(c, -EINVAL, "%s: unsupported regular expression \"%s\": %s", loc, src, why);
            return NULL;
        }
        return pattern_keep(c, pt, src);
    }
    if (!rx_translate(src, len, &b, &why)) {
        free(b.p);
        cerr(c, -EINVAL, "%s: unsupported regular expression \"%s\": %s", loc, src, why);
        return NULL;
    }
    if (!b.oom && ere_cost(b.p, b.len) > MAX_PATTERN_COST) {
        free(b.p);
        cerr(c, -EINVAL,
             "%s: regular expression \"%s\" is too costly to match (nested or large "
             "counted repetitions)", loc, src);
        return NULL;
    }
    /*
     * Searched for anywhere, a pattern is tried at every start position,
     * which costs the text's length squared ("x+y" against 20,000 x's:
     * 0.6 s).  Anchored behind "any bytes", it is one pass: "(.|[^.])"
     * is any byte, U+0000 included ('.' alone leaves it out); the
     * pattern's "^" and "$" are translated as \` and \' (the text's
     * start and end, never next to a newline).
     */
    {
        struct sbuf w = {0};

        sb_putn(&w, "^(.|[^.])*(", 11);
        sb_putn(&w, b.p, b.len);
        sb_putn(&w, ")", 2); /* and the terminating NUL */
        w.oom |= b.oom;
        free(b.p);
        b = w;
    }
    pt = arena_alloc(&c->s->perm, sizeof(*pt));
    if (b.oom || !pt) {
        free(b.p);
        oom(c);
        return NULL;
    }
    old = uselocale(c->s->c_locale);
    rc = regcomp(&pt->re, b.p, REG_EXTENDED | REG_NOSUB);
    uselocale(old);
    free(b.p);
    if (rc != 0) {
        char msg[128];

        regerror(rc, &pt->re, msg, sizeof(msg));
        cerr(c, -EINVAL, "%s: invalid regular expression \"%s\": %s", loc, src, msg);
        return NULL;
    }
    return pattern_keep(c, pt, src);
}

/* Runs a compiled pattern on s[0..len); the caller has selected the C locale. */
static bool pattern_match(const struct pattern *pt, const char *s, size_t len)
{
    regmatch_t m[1];

    if (pt->nruns)
        return runs_match(pt, s, len);
    m[0].rm_so = 0;
    m[0].rm_eo = (regoff_t)len;
    return regexec(&pt->re, s, 1, m, REG_STARTEND) == 0;
}

/* ------------------------------------------------------------------------ */
/* Indexing of "$id" and resolution of "$ref".                               */

static const char metaschema_text[] =
    "{\"$schema\":\"http://json-schema.org/draft-07/schema#\","
    "\"$id\":\"http://json-schema.org/draft-07/schema#\","
    "\"title\":\"Core schema meta-schema\","
    "\"definitions\":{"
    "\"schemaArray\":{\"type\":\"array\",\"minItems\":1,\"items\":{\"$ref\":\"#\"}},"
    "\"nonNegativeInteger\":{\"type\":\"integer\",\"minimum\":0},"
    "\"nonNegativeIntegerDefault0\":{\"allOf\":[{\"$ref\":\"#/definitions/nonNegativeInteger\"},"
    "{\"default\":0}]},"
    "\"simpleTypes\":{\"enum\":[\"array\",\"boolean\",\"integer\",\"null\",\"number\","
    "\"object\",\"string\"]},"
    "\"stringArray\":{\"type\":\"array\",\"items\":{\"type\":\"string\"},\"uniqueItems\":true,"
    "\"default\":[]}},"
    "\"type\":[\"object\",\"boolean\"],"
    "\"properties\":{"
    "\"$id\":{\"type\":\"string\",\"format\":\"uri-reference\"},"
    "\"$schema\":{\"type\":\"string\",\"format\":\"uri\"},"
    "\"$ref\":{\"type\":\"string\",\"format\":\"uri-reference\"},"
    "\"$comment\":{\"type\":\"string\"},"
    "\"title\":{\"type\":\"string\"},"
    "\"description\":{\"type\":\"string\"},"
    "\"default\":true,"
    "\"readOnly\":{\"type\":\"boolean\",\"default\":false},"
    "\"writeOnly\":{\"type\":\"boolean\",\"default\":false},"
    "\"examples\":{\"type\":\"array\",\"items\":true},"
    "\"multipleOf\":{\"type\":\"number\",\"exclusiveMinimum\":0},"
    "\"maximum\":{\"type\":\"number\"},"
    "\"exclusiveMaximum\":{\"type\":\"number\"},"
    "\"minimum\":{\"type\":\"number\"},"
    "\"exclusiveMinimum\":{\"type\":\"number\"},"
    "\"maxLength\":{\"$ref\":\"#/definitions/nonNegativeInteger\"},"
    "\"minLength\":{\"$ref\":\"#/definitions/nonNegativeIntegerDefault0\"},"
    "\"pattern\":{\"type\":\"string\",\"format\":\"regex\"},"
    "\"additionalItems\":{\"$ref\":\"#\"},"
    "\"items\":{\"anyOf\":[{\"$ref\":\"#\"},{\"$ref\":\"#/definitions/schemaArray\"}],"
    "\"default\":true},"
    "\"maxItems\":{\"$ref\":\"#/definitions/nonNegativeInteger\"},"
    "\"minItems\":{\"$ref\":\"#/definitions/nonNegativeIntegerDefault0\"},"
    "\"uniqueItems\":{\"type\":\"boolean\",\"default\":false},"
    "\"contains\":{\"$ref\":\"#\"},"
    "\"maxProperties\":{\"$ref\":\"#/definitions/nonNegativeInteger\"},"
    "\"minProperties\":{\"$ref\":\"#/definitions/nonNegativeIntegerDefault0\"},"
    "\"required\":{\"$ref\":\"#/definitions/stringArray\"},"
    "\"additionalProperties\":{\"$ref\":\"#\"},"
    "\"definitions\":{\"type\":\"object\",\"additionalProperties\":{\"$ref\":\"#\"},"
    "\"default\":{}},"
    "\"properties\":{\"type\":\"object\",\"additionalProperties\":{\"$ref\":\"#\"},"
    "\"default\":{}},"
    "\"patternProperties\":{\"type\":\"object\",\"additionalProperties\":{\"$ref\":\"#\"},"
    "\"propertyNames\":{\"format\":\"regex\"},\"default\":{}},"
    "\"dependencies\":{\"type\":\"object\",\"additionalProperties\":{\"anyOf\":["
    "{\"$ref\":\"#\"},{\"$ref\":\"#/definitions/stringArray\"}]}},"
    "\"propertyNames\":{\"$ref\":\"#\"},"
    "\"const\":true,"
    "\"enum\":{\"type\":\"array\",\"items\":true},"
    "\"type\":{\"anyOf\":[{\"$ref\":\"#/definitions/simpleTypes\"},{\"type\":\"array\","
    "\"items\":{\"$ref\":\"#/definitions/simpleTypes\"},\"minItems\":1,\"uniqueItems\":true}]},"
    "\"format\":{\"type\":\"string\"},"
    "\"contentMediaType\":{\"type\":\"string\"},"
    "\"contentEncoding\":{\"type\":\"string\"},"
    "\"if\":{\"$ref\":\"#\"},"
    "\"then\":{\"$ref\":\"#\"},"
    "\"else\":{\"$ref\":\"#\"},"
    "\"allOf\":{\"$ref\":\"#/definitions/schemaArray\"},"
    "\"anyOf\":{\"$ref\":\"#/definitions/schemaArray\"},"
    "\"oneOf\":{\"$ref\":\"#/definitions/schemaArray\"},"
    "\"not\":{\"$ref\":\"#\"}},"
    "\"default\":true}";

static struct resource *find_resource(struct compiler *c, const char *uri)
{
    for (size_t i = 0; i < c->n_res; i++)
        if (strcmp(c->res[i].uri, uri) == 0)
            return &c->res[i];
    return NULL;
}

/* Names "target" by "uri"; the first schema to claim a URI keeps it. */
static int add_resource(struct compiler *c, const char *uri, const json_t *target,
                        const char *pbase)
{
    if (find_resource(c, uri))
        return 0;
    if (grow((void **)&c->res, &c->cap_res, c->n_res, sizeof(*c->res)) < 0)
        return oom(c);
    c->res[c->n_res].uri = uri;
    c->res[c->n_res].target = target;
    c->res[c->n_res].pbase = pbase;
    c->n_res++;
    return 0;
}

/*
 * Computes the base URI of "schema" given "pbase", the base URI around it:
 * an "$id" changes it unless "$ref" is present, since draft-07 ignores the
 * siblings of "$ref".  When "ret_id" is not NULL it receives the absolute
 * URI the "$id" declares (with its fragment), or NULL.
 */
static int schema_scope(struct compiler *c, const json_t *schema, const char *pbase,
                        const char **ret_base, const char **ret_id)
{
    const json_t *id;
    char *full, *hash;

    *ret_base = pbase;
    if (ret_id)
        *ret_id = NULL;
    if (!json_is_object(schema))
        return 0;
    id = json_object_get(schema, "$id");
    if (!json_is_string(id) || json_object_get(schema, "$ref"))
        return 0;
    full = uri_resolve(&c->tmp, pbase, json_string_value(id));
    if (!full)
        return oom(c);
    hash = strchr(full, '#');
    if (hash && hash[1] != '\0') {
        *ret_base = arena_strndup(&c->tmp, full, (size_t)(hash - full));
        if (!*ret_base)
            return oom(c);
    } else {
        if (hash)
            *hash = '\0';
        *ret_base = full;
    }
    if (ret_id)
        *ret_id = full;
    return 0;
}

static int index_schema(struct compiler *c, const json_t *schema, const char *pbase,
                        unsigned depth);

static int index_members(struct compiler *c, const json_t *obj, const char *base, unsigned depth)
{
    const char *key;
    json_t *v;
    int rc;

    if (!json_is_object(obj))
        return 0;
    json_object_foreach((json_t *)obj, key, v)
        if ((rc = index_schema(c, v, base, depth)) < 0)
            return rc;
    return 0;
}

static int index_list(struct compiler *c, const json_t *arr, const char *base, unsigned depth)
{
    size_t i;
    json_t *v;
    int rc;

    if (!json_is_array(arr))
        return index_schema(c, arr, base, depth);
    json_array_foreach(arr, i, v)
        if ((rc = index_schema(c, v, base, depth)) < 0)
            return rc;
    return 0;
}

/*
 * Records the URIs that "$id" declares in "schema" and in its subschemas
 * (those under the keywords that take schemas, so that an "$id" inside, for
 * example, an "enum" value is not taken for an identifier).
 */
static int index_schema(struct compiler *c, const json_t *schema, const char *pbase,
                        unsigned depth)
{
    static const char *const single[] = {
        "additionalItems", "additionalProperties", "contains", "propertyNames",
        "if", "then", "else", "not",
    };
    static const char *const members[] = {
        "properties", "patternProperties", "definitions", "dependencies",
    };
    static const char *const lists[] = {"items", "allOf", "anyOf", "oneOf"};
    const char *base, *id;
    int rc;

    if (!json_is_object(schema))
        return 0;
    if (depth > AD_SCHEMA_MAX_DEPTH)
        return cerr(c, -EINVAL, "schema nested more than %d levels deep", AD_SCHEMA_MAX_DEPTH);
    if ((rc = schema_scope(c, schema, pbase, &base, &id)) < 0)
        return rc;
    if (id && (rc = add_resource(c, id, schema, pbase)) < 0)
        return rc;
    for (size_t i = 0; i < sizeof(single) / sizeof(single[0]); i++)
        if ((rc = index_schema(c, json_object_get(schema, single[i]), base, depth + 1)) < 0)
            return rc;
    for (size_t i = 0; i < sizeof(members) / sizeof(members[0]); i++)
        if ((rc = index_members(c, json_object_get(schema, members[i]), base, depth + 1)) < 0)
            return rc;
    for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++)
        if ((rc = index_list(c, json_object_get(schema, lists[i]), base, depth + 1)) < 0)
            return rc;
    return 0;
}

/* Keeps a document alive for the life of the schema; takes over "doc". */
static int add_document(struct compiler *c, json_t *doc)
{
    struct ad_schema *s = c->s;

    if (grow((void **)&s->docs, &s->cap_docs, s->n_docs, sizeof(*s->docs)) < 0) {
        json_decref(doc);
        return oom(c);
    }
    s->docs[s->n_docs++] = doc;
    return 0;
}

/* Fetches the document "uri" (absolute, without fragment) and indexes it. */
static int load_document(struct compiler *c, const char *uri, const char *ref, const char *loc)
{
    json_t *doc = NULL;
    int rc;

    for (size_t i = 0; i < c->n_tried; i++)
        if (strcmp(c->tried[i], uri) == 0)
            return cerr(c, -EINVAL, "%s: cannot resolve $ref \"%s\"", loc, ref);
    if (grow((void **)&c->tried, &c->cap_tried, c->n_tried, sizeof(*c->tried)) < 0)
        return oom(c);
    c->tried[c->n_tried++] = uri;

    if (strcmp(uri, METASCHEMA_URI) == 0)
        doc = json_loads(metaschema_text, 0, NULL);
    else if (c->loader)
        doc = c->loader(uri, c->loader_arg);
    if (!doc)
        return cerr(c, -EINVAL, "%s: cannot resolve $ref \"%s\": document \"%s\" not found", loc,
                    ref, uri);
    if (!json_is_object(doc) && !json_is_boolean(doc)) {
        json_decref(doc);
        return cerr(c, -EINVAL, "%s: document \"%s\" is not a schema", loc, uri);
    }
    if ((rc = add_document(c, doc)) < 0)
        return rc;
    if ((rc = add_resource(c, uri, doc, uri)) < 0)
        return rc;
    return index_schema(c, doc, uri, 0);
}

/*
 * Follows the JSON pointer "ptr" (percent-decoded, possibly empty) from
 * "start"; *target and *pbase receive the schema reached and the base URI
 * around it.  Returns false if the pointer leads nowhere.
 */
static int walk_pointer(struct compiler *c, const json_t *start, const char *pbase,
                        const char *ptr, size_t len, const json_t **target, const char **ret_pbase)
{
    const json_t *cur = start;
    const char *end = ptr + len;
    char *tok = arena_alloc(&c->tmp, len + 1);
    int rc;

    if (!tok)
        return oom(c);
    if (len > 0 && ptr[0] != '/')
        return -EINVAL;
    while (ptr < end) {
        size_t t = 0;

        ptr++;
        while (ptr < end && *ptr != '/') {
            if (*ptr == '~') {
                if (ptr + 1 >= end || (ptr[1] != '0' && ptr[1] != '1'))
                    return -EINVAL;
                tok[t++] = ptr[1] == '0' ? '~' : '/';
                ptr += 2;
            } else {
                tok[t++] = *ptr++;
            }
        }
        tok[t] = '\0';
        if ((rc = schema_scope(c, cur, pbase, &pbase, NULL)) < 0)
            return rc;
        if (json_is_object(cur)) {
            cur = obj_getn(cur, tok, t);
        } else if (json_is_array(cur)) {
            size_t idx = 0;

            if (t == 0 || (t > 1 && tok[0] == '0'))
                return -EINVAL;
            for (size_t k = 0; k < t; k++) {
                if (!is_digit((unsigned char)tok[k]) || idx > SIZE_MAX / 10 - 1)
                    return -EINVAL;
                idx = idx * 10 + (size_t)(tok[k] - '0');
            }
            cur = json_array_get(cur, idx);
        } else {
            cur = NULL;
        }
        if (!cur)
            return -EINVAL;
    }
    *target = cur;
    *ret_pbase = pbase;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Node compilation.                                                         */

static size_t ptr_hash(const void *p)
{
    uint64_t x = (uint64_t)(uintptr_t)p;

    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return (size_t)x;
}

static struct node *cache_get(const struct compiler *c, const json_t *key)
{
    if (c->cap_cache == 0)
        return NULL;
    for (size_t i = ptr_hash(key) & (c->cap_cache - 1);; i = (i + 1) & (c->cap_cache - 1)) {
        if (c->cache[i].key == key)
            return c->cache[i].node;
        if (!c->cache[i].key)
            return NULL;
    }
}

static int cache_put(struct compiler *c, const json_t *key, struct node *node)
{
    if ((c->n_cache + 1) * 2 > c->cap_cache) {
        size_t ncap = c->cap_cache ? c->cap_cache * 2 : 64;
        struct cache_entry *old = c->cache, *nc = calloc(ncap, sizeof(*nc));

        if (!nc)
            return oom(c);
        for (size_t i = 0; i < c->cap_cache; i++) {
            size_t j;

            if (!old[i].key)
                continue;
            for (j = ptr_hash(old[i].key) & (ncap - 1); nc[j].key; j = (j + 1) & (ncap - 1))
                ;
            nc[j] = old[i];
        }
        free(old);
        c->cache = nc;
        c->cap_cache = ncap;
    }
    for (size_t i = ptr_hash(key) & (c->cap_cache - 1);; i = (i + 1) & (c->cap_cache - 1)) {
        if (!c->cache[i].key) {
            c->cache[i].key = key;
            c->cache[i].node = node;
            c->n_cache++;
            return 0;
        }
    }
}

static struct node *new_node(struct compiler *c, const json_t *schema)
{
    struct node *n = arena_alloc(&c->s->perm, sizeof(*n));

    if (!n || cache_put(c, schema, n) < 0) {
        oom(c);
        return NULL;
    }
    n->max_length = n->min_length = -1;
    n->max_items = n->min_items = -1;
    n->max_properties = n->min_properties = -1;
    return n;
}

/* Appends a JSON pointer segment to a location used in error messages. */
static const char *loc_join(struct compiler *c, const char *loc, const char *seg)
{
    size_t n = strlen(loc), m = 0;
    char *out;

    for (const char *p = seg; *p; p++)
        m += (*p == '~' || *p == '/') ? 2 : 1;
    out = arena_alloc(&c->tmp, n + m + 2);
    if (!out)
        return NULL;
    memcpy(out, loc, n);
    out[n++] = '/';
    for (const char *p = seg; *p; p++) {
        if (*p == '~' || *p == '/') {
            out[n++] = '~';
            out[n++] = *p == '~' ? '0' : '1';
        } else {
            out[n++] = *p;
        }
    }
    out[n] = '\0';
    return out;
}

static const char *loc_join2(struct compiler *c, const char *loc, const char *a, const char *b)
{
    loc = loc_join(c, loc, a);
    return loc ? loc_join(c, loc, b) : NULL;
}

static const char *loc_index(struct compiler *c, const char *loc, const char *kw, size_t i)
{
    char num[24];

    snprintf(num, sizeof(num), "%zu", i);
    return loc_join2(c, loc, kw, num);
}

static int fill_node(struct compiler *c, struct node *n, const json_t *schema, const char *pbase,
                     const char *loc, unsigned depth);

/* Returns the node of "schema", compiling it if it is new. */
static struct node *compile_node(struct compiler *c, const json_t *schema, const char *pbase,
                                 const char *loc, unsigned depth)
{
    struct node *n;

    if (!loc) {
        oom(c);
        return NULL;
    }
    n = cache_get(c, schema);
    if (n)
        return n;
    n = new_node(c, schema);
    if (!n || fill_node(c, n, schema, pbase, loc, depth) < 0)
        return NULL;
    return n;
}

/* Returns the node of a "$ref" target, queuing it for compilation if new. */
static struct node *target_node(struct compiler *c, const json_t *schema, const char *pbase,
                                const char *loc)
{
    struct node *n = cache_get(c, schema);

    if (n)
        return n;
    n = new_node(c, schema);
    if (!n)
        return NULL;
    if (grow((void **)&c->work, &c->cap_work, c->n_work, sizeof(*c->work)) < 0) {
        oom(c);
        return NULL;
    }
    c->work[c->n_work].node = n;
    c->work[c->n_work].schema = schema;
    c->work[c->n_work].pbase = pbase;
    c->work[c->n_work].loc = loc;
    c->n_work++;
    return n;
}

/* Resolves the "$ref" value "ref" found at "loc" under base URI "base". */
static struct node *resolve_ref(struct compiler *c, const char *base, const char *ref,
                                const char *loc)
{
    char *abs = uri_resolve(&c->tmp, base, ref), *doc, *hash;
    const char *frag = "";
    const json_t *target = NULL;
    const char *tpbase = NULL;
    struct resource *r;

    if (!abs) {
        oom(c);
        return NULL;
    }
    hash = strchr(abs, '#');
    doc = arena_strndup(&c->tmp, abs, hash ? (size_t)(hash - abs) : strlen(abs));
    if (!doc) {
        oom(c);
        return NULL;
    }
    if (hash)
        frag = hash + 1;

    if (frag[0] == '\0' || frag[0] == '/') {
        size_t len;
        char *ptr = percent_decode(&c->tmp, frag, &len);

        if (!ptr) {
            oom(c);
            return NULL;
        }
        r = find_resource(c, doc);
        if (!r && (load_document(c, doc, ref, loc) < 0 || !(r = find_resource(c, doc)))) {
            cerr(c, -EINVAL, "%s: cannot resolve $ref \"%s\"", loc, ref);
            return NULL;
        }
        /* Loading may have moved the resource table. */
        if (walk_pointer(c, r->target, r->pbase, ptr, len, &target, &tpbase) < 0) {
            cerr(c, -EINVAL, "%s: $ref \"%s\": no schema at \"%s\"", loc, ref, abs);
            return NULL;
        }
    } else {
        r = find_resource(c, abs);
        if (!r && !find_resource(c, doc) && load_document(c, doc, ref, loc) < 0)
            return NULL;
        if (!r && !(r = find_resource(c, abs))) {
            cerr(c, -EINVAL, "%s: $ref \"%s\": no schema has the identifier \"%s\"", loc, ref,
                 abs);
            return NULL;
        }
        target = r->target;
        tpbase = r->pbase;
    }
    return target_node(c, target, tpbase, abs);
}

/* Reads a non-negative integer keyword (an integral real is accepted). */
static int get_count(struct compiler *c, const json_t *schema, const char *kw, const char *loc,
                     long long *out)
{
    const json_t *v = json_object_get(schema, kw);

    if (!v)
        return 0;
    if (json_is_integer(v) && json_integer_value(v) >= 0) {
        *out = json_integer_value(v);
        return 0;
    }
    if (json_is_real(v) && json_real_value(v) >= 0 && json_real_value(v) < 9.2e18 &&
        floor(json_real_value(v)) == json_real_value(v)) {
        *out = (long long)json_real_value(v);
        return 0;
    }
    return cerr(c, -EINVAL, "%s: \"%s\" must be a non-negative integer", loc, kw);
}

static int get_number(struct compiler *c, const json_t *schema, const char *kw, const char *loc,
                      const json_t **out)
{
    const json_t *v = json_object_get(schema, kw);

    if (!v)
        return 0;
    if (!json_is_number(v))
        return cerr(c, -EINVAL, "%s: \"%s\" must be a number", loc, kw);
    *out = v;
    return 0;
}

/* Compiles the schema under keyword "kw", if present. */
static int get_schema(struct compiler *c, const json_t *schema, const char *kw, const char *base,
                      const char *loc, unsigned depth, struct node **out)
{
    const json_t *v = json_object_get(schema, kw);

    if (!v)
        return 0;
    *out = compile_node(c, v, base, loc_join(c, loc, kw), depth + 1);
    return *out ? 0 : c->rc;
}

/* Compiles a non-empty array of schemas under keyword "kw", if present. */
static int get_schema_list(struct compiler *c, const json_t *schema, const char *kw,
                           const char *base, const char *loc, unsigned depth, struct node ***out,
                           size_t *count)
{
    const json_t *v = json_object_get(schema, kw);
    size_t i;
    json_t *item;

    if (!v)
        return 0;
    if (!json_is_array(v) || json_array_size(v) == 0)
        return cerr(c, -EINVAL, "%s: \"%s\" must be a non-empty array of schemas", loc, kw);
    *out = arena_array(&c->s->perm, json_array_size(v), sizeof(**out));
    if (!*out)
        return oom(c);
    json_array_foreach(v, i, item) {
        (*out)[i] = compile_node(c, item, base, loc_index(c, loc, kw, i), depth + 1);
        if (!(*out)[i])
            return c->rc;
    }
    *count = json_array_size(v);
    return 0;
}

/* Parses a string array with unique members ("required", dependencies). */
static int get_string_list(struct compiler *c, const json_t *v, const char *what, const char *loc,
                           struct str **out, size_t *count)
{
    size_t i;
    json_t *item;

    if (!json_is_array(v))
        return cerr(c, -EINVAL, "%s: %s must be an array of strings", loc, what);
    *out = arena_array(&c->s->perm, json_array_size(v), sizeof(**out));
    if (!*out)
        return oom(c);
    json_array_foreach(v, i, item) {
        if (!json_is_string(item))
            return cerr(c, -EINVAL, "%s: %s must be an array of strings", loc, what);
        (*out)[i].s = json_string_value(item);
        (*out)[i].len = json_string_length(item);
    }
    *count = json_array_size(v);
    return 0;
}

static unsigned type_bit(const json_t *v)
{
    static const struct {
        const char *name;
        unsigned bit;
    } names[] = {
        {"null", T_NULL},     {"boolean", T_BOOLEAN}, {"object", T_OBJECT}, {"array", T_ARRAY},
        {"number", T_NUMBER}, {"string", T_STRING},   {"integer", T_INTEGER},
    };

    if (!json_is_string(v))
        return 0;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strcmp(json_string_value(v), names[i].name) == 0)
            return names[i].bit;
    return 0;
}

static int fill_type(struct compiler *c, struct node *n, const json_t *schema, const char *loc)
{
    const json_t *v = json_object_get(schema, "type");
    size_t i;
    json_t *item;

    if (!v)
        return 0;
    if (json_is_string(v)) {
        n->types = type_bit(v);
        if (!n->types)
            return cerr(c, -EINVAL, "%s: unknown type \"%s\"", loc, json_string_value(v));
        return 0;
    }
    if (!json_is_array(v) || json_array_size(v) == 0)
        return cerr(c, -EINVAL, "%s: \"type\" must be a string or a non-empty array", loc);
    json_array_foreach(v, i, item) {
        unsigned bit = type_bit(item);

        if (!bit)
            return cerr(c, -EINVAL, "%s: unknown type in \"type\"", loc);
        n->types |= bit;
    }
    return 0;
}

static int fill_number(struct compiler *c, struct node *n, const json_t *schema, const char *loc)
{
    int rc;

    if ((rc = get_number(c, schema, "multipleOf", loc, &n->multiple_of)) < 0 ||
        (rc = get_number(c, schema, "maximum", loc, &n->maximum)) < 0 ||
        (rc = get_number(c, schema, "minimum", loc, &n->minimum)) < 0 ||
        (rc = get_number(c, schema, "exclusiveMaximum", loc, &n->exclusive_maximum)) < 0 ||
        (rc = get_number(c, schema, "exclusiveMinimum", loc, &n->exclusive_minimum)) < 0)
        return rc;
    if (n->multiple_of && !(json_number_value(n->multiple_of) > 0))
        return cerr(c, -EINVAL, "%s: \"multipleOf\" must be greater than 0", loc);
    if (n->multiple_of || n->maximum || n->minimum || n->exclusive_maximum ||
        n->exclusive_minimum)
        n->groups |= G_NUMBER;
    return 0;
}

static int fill_string(struct compiler *c, struct node *n, const json_t *schema, const char *loc)
{
    const json_t *v;
    int rc;

    if ((rc = get_count(c, schema, "maxLength", loc, &n->max_length)) < 0 ||
        (rc = get_count(c, schema, "minLength", loc, &n->min_length)) < 0)
        return rc;
    v = json_object_get(schema, "pattern");
    if (v) {
        if (!json_is_string(v))
            return cerr(c, -EINVAL, "%s: \"pattern\" must be a string", loc);
        n->pattern = compile_pattern(c, json_string_value(v), json_string_length(v), loc);
        if (!n->pattern)
            return c->rc;
    }
    if (n->max_length >= 0 || n->min_length >= 0 || n->pattern)
        n->groups |= G_STRING;
    return 0;
}

static int fill_array(struct compiler *c, struct node *n, const json_t *schema, const char *base,
                      const char *loc, unsigned depth)
{
    const json_t *v = json_object_get(schema, "items"), *u;
    int rc;

    if (json_is_array(v)) {
        n->items_is_list = true;
        if (json_array_size(v) > 0 &&
            (rc = get_schema_list(c, schema, "items", base, loc, depth, &n->item_list,
                                  &n->n_item_list)) < 0)
            return rc;
        if ((rc = get_schema(c, schema, "additionalItems", base, loc, depth,
                             &n->additional_items)) < 0)
            return rc;
    } else if ((rc = get_schema(c, schema, "items", base, loc, depth, &n->items)) < 0) {
        return rc;
    }
    if ((rc = get_count(c, schema, "maxItems", loc, &n->max_items)) < 0 ||
        (rc = get_count(c, schema, "minItems", loc, &n->min_items)) < 0 ||
        (rc = get_schema(c, schema, "contains", base, loc, depth, &n->contains)) < 0)
        return rc;
    u = json_object_get(schema, "uniqueItems");
    if (u) {
        if (!json_is_boolean(u))
            return cerr(c, -EINVAL, "%s: \"uniqueItems\" must be a boolean", loc);
        n->unique_items = json_is_true(u);
    }
    if (n->items || n->items_is_list || n->max_items >= 0 || n->min_items >= 0 || n->contains ||
        n->unique_items)
        n->groups |= G_ARRAY;
    return 0;
}

static int fill_properties(struct compiler *c, struct node *n, const json_t *schema,
                           const char *base, const char *loc, unsigned depth)
{
    const json_t *v = json_object_get(schema, "properties");
    const char *key;
    json_t *item;
    size_t i = 0;

    if (!v)
        return 0;
    if (!json_is_object(v))
        return cerr(c, -EINVAL, "%s: \"properties\" must be an object", loc);
    n->properties_object = v;
    n->properties = arena_array(&c->s->perm, json_object_size(v), sizeof(*n->properties));
    if (!n->properties)
        return oom(c);
    json_object_foreach((json_t *)v, key, item) {
        struct named_node *p = &n->properties[i++];

        p->name.s = key;
        p->name.len = iter_keylen(json_object_key_to_iter(key));
        p->node = compile_node(c, item, base, loc_join2(c, loc, "properties", key), depth + 1);
        if (!p->node)
            return c->rc;
    }
    n->n_properties = i;
    return 0;
}

static int fill_pattern_properties(struct compiler *c, struct node *n, const json_t *schema,
                                   const char *base, const char *loc, unsigned depth)
{
    const json_t *v = json_object_get(schema, "patternProperties");
    const char *key;
    json_t *item;
    size_t i = 0;

    if (!v)
        return 0;
    if (!json_is_object(v))
        return cerr(c, -EINVAL, "%s: \"patternProperties\" must be an object", loc);
    n->pattern_properties =
        arena_array(&c->s->perm, json_object_size(v), sizeof(*n->pattern_properties));
    if (!n->pattern_properties)
        return oom(c);
    json_object_foreach((json_t *)v, key, item) {
        struct pattern_node *p = &n->pattern_properties[i++];
        const char *sub = loc_join2(c, loc, "patternProperties", key);

        p->re = compile_pattern(c, key, iter_keylen(json_object_key_to_iter(key)), sub ? sub : loc);
        if (!p->re)
            return c->rc;
        p->node = compile_node(c, item, base, sub, depth + 1);
        if (!p->node)
            return c->rc;
    }
    n->n_pattern_properties = i;
    return 0;
}

static int fill_dependencies(struct compiler *c, struct node *n, const json_t *schema,
                             const char *base, const char *loc, unsigned depth)
{
    const json_t *v = json_object_get(schema, "dependencies");
    const char *key;
    json_t *item;
    size_t i = 0;
    int rc;

    if (!v)
        return 0;
    if (!json_is_object(v))
        return cerr(c, -EINVAL, "%s: \"dependencies\" must be an object", loc);
    n->dependencies = arena_array(&c->s->perm, json_object_size(v), sizeof(*n->dependencies));
    if (!n->dependencies)
        return oom(c);
    json_object_foreach((json_t *)v, key, item) {
        struct dependency *d = &n->dependencies[i++];
        const char *sub = loc_join2(c, loc, "dependencies", key);

        d->name.s = key;
        d->name.len = iter_keylen(json_object_key_to_iter(key));
        if (json_is_array(item)) {
            if ((rc = get_string_list(c, item, "a dependency", sub ? sub : loc, &d->required,
                                      &d->n_required)) < 0)
                return rc;
        } else {
            d->schema = compile_node(c, item, base, sub, depth + 1);
            if (!d->schema)
                return c->rc;
        }
    }
    n->n_dependencies = i;
    return 0;
}

static int fill_object(struct compiler *c, struct node *n, const json_t *schema, const char *base,
                       const char *loc, unsigned depth)
{
    const json_t *v;
    int rc;

    if ((rc = get_count(c, schema, "maxProperties", loc, &n->max_properties)) < 0 ||
        (rc = get_count(c, schema, "minProperties", loc, &n->min_properties)) < 0)
        return rc;
    v = json_object_get(schema, "required");
    if (v && (rc = get_string_list(c, v, "\"required\"", loc, &n->required, &n->n_required)) < 0)
        return rc;
    if ((rc = fill_properties(c, n, schema, base, loc, depth)) < 0 ||
        (rc = fill_pattern_properties(c, n, schema, base, loc, depth)) < 0 ||
        (rc = get_schema(c, schema, "additionalProperties", base, loc, depth,
                         &n->additional_properties)) < 0 ||
        (rc = fill_dependencies(c, n, schema, base, loc, depth)) < 0 ||
        (rc = get_schema(c, schema, "propertyNames", base, loc, depth, &n->property_names)) < 0)
        return rc;
    if (n->max_properties >= 0 || n->min_properties >= 0 || n->n_required || n->n_properties ||
        n->n_pattern_properties || n->additional_properties || n->n_dependencies ||
        n->property_names)
        n->groups |= G_OBJECT;
    return 0;
}

static int fill_applicators(struct compiler *c, struct node *n, const json_t *schema,
                            const char *base, const char *loc, unsigned depth)
{
    int rc;

    if ((rc = get_schema_list(c, schema, "allOf", base, loc, depth, &n->all_of, &n->n_all_of)) <
            0 ||
        (rc = get_schema_list(c, schema, "anyOf", base, loc, depth, &n->any_of, &n->n_any_of)) <
            0 ||
        (rc = get_schema_list(c, schema, "oneOf", base, loc, depth, &n->one_of, &n->n_one_of)) <
            0 ||
        (rc = get_schema(c, schema, "not", base, loc, depth, &n->not_schema)) < 0 ||
        (rc = get_schema(c, schema, "if", base, loc, depth, &n->if_schema)) < 0 ||
        (rc = get_schema(c, schema, "then", base, loc, depth, &n->then_schema)) < 0 ||
        (rc = get_schema(c, schema, "else", base, loc, depth, &n->else_schema)) < 0)
        return rc;
    if (n->n_all_of || n->n_any_of || n->n_one_of || n->not_schema || n->if_schema)
        n->groups |= G_APPLY;
    return 0;
}

/* Compiles the members of "definitions", so that errors in them surface. */
static int fill_definitions(struct compiler *c, const json_t *schema, const char *base,
                            const char *loc, unsigned depth)
{
    const json_t *v = json_object_get(schema, "definitions");
    const char *key;
    json_t *item;

    if (!v)
        return 0;
    if (!json_is_object(v))
        return cerr(c, -EINVAL, "%s: \"definitions\" must be an object", loc);
    json_object_foreach((json_t *)v, key, item)
        if (!compile_node(c, item, base, loc_join2(c, loc, "definitions", key), depth + 1))
            return c->rc;
    return 0;
}

/* Fills node "n" from "schema"; "pbase" is the base URI around it. */
static int fill_node(struct compiler *c, struct node *n, const json_t *schema, const char *pbase,
                     const char *loc, unsigned depth)
{
    const json_t *v;
    const char *base;
    int rc;

    if (json_is_true(schema)) {
        n->kind = NODE_TRUE;
        return 0;
    }
    if (json_is_false(schema)) {
        n->kind = NODE_FALSE;
        return 0;
    }
    if (!json_is_object(schema))
        return cerr(c, -EINVAL, "%s: a schema must be an object or a boolean", loc);
    if (depth > AD_SCHEMA_MAX_DEPTH)
        return cerr(c, -EINVAL, "%s: schema nested more than %d levels deep", loc,
                    AD_SCHEMA_MAX_DEPTH);
    if ((rc = schema_scope(c, schema, pbase, &base, NULL)) < 0)
        return rc;

    v = json_object_get(schema, "$ref");
    if (v) {
        if (!json_is_string(v))
            return cerr(c, -EINVAL, "%s: \"$ref\" must be a string", loc);
        n->ref = resolve_ref(c, base, json_string_value(v), loc);
        if (!n->ref)
            return c->rc;
        return fill_definitions(c, schema, base, loc, depth);
    }

    if ((rc = fill_type(c, n, schema, loc)) < 0)
        return rc;
    v = json_object_get(schema, "enum");
    if (v) {
        if (!json_is_array(v))
            return cerr(c, -EINVAL, "%s: \"enum\" must be an array", loc);
        n->enum_values = v;
    }
    n->const_value = json_object_get(schema, "const");
    if ((rc = fill_number(c, n, schema, loc)) < 0 || (rc = fill_string(c, n, schema, loc)) < 0 ||
        (rc = fill_array(c, n, schema, base, loc, depth)) < 0 ||
        (rc = fill_object(c, n, schema, base, loc, depth)) < 0 ||
        (rc = fill_applicators(c, n, schema, base, loc, depth)) < 0)
        return rc;
    return fill_definitions(c, schema, base, loc, depth);
}

/*
 * Rejects cycles made only of "$ref" (which would never reach a keyword)
 * and points every "$ref" node straight at the end of its chain.
 */
static int check_refs(struct compiler *c)
{
    for (size_t i = 0; i < c->cap_cache; i++) {
        struct node *n = c->cache[i].node, *t;
        size_t steps = 0;

        if (!c->cache[i].key || !n->ref)
            continue;
        for (t = n->ref; t->ref; t = t->ref)
            if (++steps > c->n_cache)
                return cerr(c, -EINVAL, "circular $ref chain");
        n->ref = t;
    }
    return 0;
}

static void compiler_done(struct compiler *c)
{
    arena_free(&c->tmp);
    free(c->res);
    free(c->tried);
    free(c->cache);
    free(c->work);
}

int ad_schema_compile(json_t *schema, const char *base_uri, ad_schema_loader_fn loader,
                      void *loader_arg, struct ad_schema **ret_schema, char *errbuf, size_t errlen)
{
    struct compiler c = {
        .loader = loader, .loader_arg = loader_arg, .errbuf = errbuf, .errlen = errlen};
    const char *base;
    struct node *root;

    if (errbuf && errlen)
        errbuf[0] = '\0';
    if (!schema || !ret_schema) {
        cerr(&c, -EINVAL, "invalid argument");
        return -EINVAL;
    }
    c.s = calloc(1, sizeof(*c.s));
    if (!c.s)
        return oom(&c);
    c.s->c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0);
    if (!c.s->c_locale) {
        oom(&c);
        goto fail;
    }

    base = arena_strndup(&c.tmp, base_uri ? base_uri : "",
                         base_uri ? strcspn(base_uri, "#") : 0);
    if (!base) {
        oom(&c);
        goto fail;
    }
    if (add_document(&c, json_incref(schema)) < 0 || add_resource(&c, base, schema, base) < 0 ||
        index_schema(&c, schema, base, 0) < 0)
        goto fail;
    root = compile_node(&c, schema, base, "#", 0);
    if (!root)
        goto fail;
    while (c.n_work > 0) {
        struct pending p = c.work[--c.n_work];

        if (fill_node(&c, p.node, p.schema, p.pbase, p.loc, 0) < 0)
            goto fail;
    }
    if (check_refs(&c) < 0)
        goto fail;
    c.s->root = root->ref ? root->ref : root;
    compiler_done(&c);
    *ret_schema = c.s;
    return 0;

fail:
    compiler_done(&c);
    ad_schema_free(c.s);
    return c.rc ? c.rc : -EINVAL;
}

struct ad_schema *ad_schema_free(struct ad_schema *s)
{
    if (!s)
        return NULL;
    for (struct pattern *p = s->patterns; p; p = p->next) {
        if (!p->nruns)
            regfree(&p->re);
        for (size_t k = 0; k < p->nruns; k++)
            regfree(&p->runs[k].re);
    }
    for (size_t i = 0; i < s->n_docs; i++)
        json_decref(s->docs[i]);
    free(s->docs);
    arena_free(&s->perm);
    if (s->c_locale)
        freelocale(s->c_locale);
    free(s);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Validation.                                                               */

struct vseg {
    const char *key; /* NULL for an array index */
    size_t len;      /* the key length, or the array index */
};

struct vctx {
    struct ad_schema_error *err;
    unsigned quiet;
    bool recorded, aborted;
    unsigned depth, n_path;
    struct vseg path[AD_SCHEMA_MAX_DEPTH];
};

/* Writes the current instance location as a JSON pointer into out[cap]. */
static void format_pointer(const struct vctx *v, char *out, size_t cap)
{
    size_t o = 0;

    for (unsigned i = 0; i < v->n_path; i++) {
        const struct vseg *sg = &v->path[i];
        char num[24];
        const char *p = sg->key;
        size_t n = sg->len;

        if (!sg->key) {
            n = (size_t)snprintf(num, sizeof(num), "%zu", sg->len);
            p = num;
        }
        if (o + 1 >= cap)
            goto out;
        out[o++] = '/';
        for (size_t k = 0; k < n;) {
            unsigned char ch = (unsigned char)p[k];
            size_t clen = ch < 0x80 ? 1 : ch < 0xE0 ? 2 : ch < 0xF0 ? 3 : 4;
            const char *esc = ch == '~' ? "~0" : ch == '/' ? "~1" : NULL;
            size_t need = esc ? 2 : clen;

            if (clen > n - k)
                clen = need = n - k;
            if (o + need >= cap)
                goto out;
            if (esc)
                memcpy(out + o, esc, 2);
            else if (ch != '\0')
                memcpy(out + o, p + k, clen);
            else
                need = 0;
            o += need;
            k += clen;
        }
    }
out:
    out[o] = '\0';
}

PRINTF_LIKE(3, 0)
static void record(struct vctx *v, const char *kw, const char *fmt, va_list ap)
{
    v->recorded = true;
    format_pointer(v, v->err->pointer, sizeof(v->err->pointer));
    snprintf(v->err->keyword, sizeof(v->err->keyword), "%s", kw);
    vsnprintf(v->err->message, sizeof(v->err->message), fmt, ap);
}

/* Reports a failing keyword, unless an enclosing applicator is probing. */
PRINTF_LIKE(3, 4)
static bool vfail(struct vctx *v, const char *kw, const char *fmt, ...)
{
    va_list ap;

    if (v->err && !v->recorded && v->quiet == 0) {
        va_start(ap, fmt);
        record(v, kw, fmt, ap);
        va_end(ap);
    }
    return false;
}

/* Stops the whole validation: too deep, or out of memory. */
PRINTF_LIKE(2, 3)
static bool vabort(struct vctx *v, const char *fmt, ...)
{
    va_list ap;

    v->aborted = true;
    if (v->err && !v->recorded) {
        va_start(ap, fmt);
        record(v, "maxDepth", fmt, ap);
        va_end(ap);
    }
    return false;
}

static bool push_key(struct vctx *v, const char *key, size_t len)
{
    if (v->n_path >= AD_SCHEMA_MAX_DEPTH)
        return vabort(v, "instance nested more than %d levels deep", AD_SCHEMA_MAX_DEPTH);
    v->path[v->n_path].key = key;
    v->path[v->n_path].len = len;
    v->n_path++;
    return true;
}

static bool push_index(struct vctx *v, size_t idx)
{
    return push_key(v, NULL, idx);
}

static void pop(struct vctx *v)
{
    v->n_path--;
}

static bool real_is_integral(double d)
{
    return isfinite(d) && floor(d) == d;
}

static unsigned instance_types(const json_t *x)
{
    switch (json_typeof(x)) {
    case JSON_OBJECT: return T_OBJECT;
    case JSON_ARRAY: return T_ARRAY;
    case JSON_STRING: return T_STRING;
    case JSON_INTEGER: return T_INTEGER | T_NUMBER;
    case JSON_REAL:
        return real_is_integral(json_real_value(x)) ? T_INTEGER | T_NUMBER : T_NUMBER;
    case JSON_TRUE:
    case JSON_FALSE: return T_BOOLEAN;
    case JSON_NULL: return T_NULL;
    }
    return 0;
}

static const char *type_name(const json_t *x)
{
    switch (json_typeof(x)) {
    case JSON_OBJECT: return "object";
    case JSON_ARRAY: return "array";
    case JSON_STRING: return "string";
    case JSON_INTEGER: return "integer";
    case JSON_REAL: return "number";
    case JSON_TRUE:
    case JSON_FALSE: return "boolean";
    case JSON_NULL: return "null";
    }
    return "?";
}

static void types_text(unsigned types, char *out, size_t cap)
{
    static const char *const names[] = {"null",   "boolean", "object", "array",
                                        "number", "string",  "integer"};
    size_t o = 0;

    out[0] = '\0';
    for (unsigned i = 0; i < 7; i++) {
        if (!(types & (1u << i)))
            continue;
        o += (size_t)snprintf(out + o, cap - o, "%s%s", o ? " or " : "", names[i]);
        if (o >= cap)
            return;
    }
}

/* Formats a number in the shortest of two precisions that reads back exactly. */
static void number_text(const json_t *x, char *out, size_t cap)
{
    if (json_is_integer(x)) {
        snprintf(out, cap, "%lld", (long long)json_integer_value(x));
        return;
    }
    snprintf(out, cap, "%.15g", json_real_value(x));
    if (strtod(out, NULL) != json_real_value(x))
        snprintf(out, cap, "%.17g", json_real_value(x));
}

/* Compares two JSON numbers exactly, including integer against real. */
static int number_cmp(const json_t *a, const json_t *b)
{
    if (json_is_integer(a) && json_is_integer(b)) {
        json_int_t x = json_integer_value(a), y = json_integer_value(b);

        return x < y ? -1 : x > y;
    }
    if (json_is_real(a) && json_is_real(b)) {
        double x = json_real_value(a), y = json_real_value(b);

        return x < y ? -1 : x > y;
    }
    if (json_is_real(a))
        return -number_cmp(b, a);
    {
        json_int_t i = json_integer_value(a);
        double r = json_real_value(b), fl;
        long long fi;

        if (r >= 9223372036854775808.0)
            return -1;
        if (r < -9223372036854775808.0)
            return 1;
        fl = floor(r);
        fi = (long long)fl;
        if (i != fi)
            return i < fi ? -1 : 1;
        return r > fl ? -1 : 0;
    }
}

/* Tells whether x is a multiple of d (d > 0), tolerating rounding of reals. */
static bool is_multiple(const json_t *x, const json_t *d)
{
    double q, r;

    if (json_is_integer(x) && json_is_integer(d))
        return json_integer_value(x) % json_integer_value(d) == 0;
    q = json_number_value(x) / json_number_value(d);
    if (!isfinite(q))
        return fmod(json_number_value(x), json_number_value(d)) == 0;
    r = nearbyint(q);
    return fabs(q - r) <= 8 * DBL_EPSILON * fmax(1.0, fabs(q));
}

static size_t utf8_length(const char *s, size_t n)
{
    size_t count = 0;

    for (size_t i = 0; i < n; i++)
        count += ((unsigned char)s[i] & 0xC0) != 0x80;
    return count;
}

/* JSON equality where 1 equals 1.0 and key order does not matter. */
static bool json_equal_deep(struct vctx *v, const json_t *a, const json_t *b, unsigned depth)
{
    if (a == b)
        return true;
    if (depth > AD_SCHEMA_MAX_DEPTH)
        return vabort(v, "value nested more than %d levels deep", AD_SCHEMA_MAX_DEPTH);
    if (json_is_number(a) && json_is_number(b))
        return number_cmp(a, b) == 0;
    if (json_typeof(a) != json_typeof(b))
        return false;
    switch (json_typeof(a)) {
    case JSON_STRING:
        return json_string_length(a) == json_string_length(b) &&
               memcmp(json_string_value(a), json_string_value(b), json_string_length(a)) == 0;
    case JSON_ARRAY:
        if (json_array_size(a) != json_array_size(b))
            return false;
        for (size_t i = 0; i < json_array_size(a); i++)
            if (!json_equal_deep(v, json_array_get(a, i), json_array_get(b, i), depth + 1))
                return false;
        return true;
    case JSON_OBJECT:
        if (json_object_size(a) != json_object_size(b))
            return false;
        for (void *it = json_object_iter((json_t *)a); it;
             it = json_object_iter_next((json_t *)a, it)) {
            const json_t *bv = obj_getn(b, json_object_iter_key(it), iter_keylen(it));

            if (!bv || !json_equal_deep(v, json_object_iter_value(it), bv, depth + 1))
                return false;
        }
        return true;
    default:
        return true;
    }
}

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 31;
    x *= 0x7fb5d329728ea185ULL;
    x ^= x >> 27;
    x *= 0x81dadef4bc2dd44dULL;
    x ^= x >> 33;
    return x;
}

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL;

    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 0x100000001b3ULL;
    return mix64(h);
}

/* A hash consistent with json_equal_deep(). */
static uint64_t json_hash(struct vctx *v, const json_t *x, unsigned depth)
{
    uint64_t h;

    if (depth > AD_SCHEMA_MAX_DEPTH) {
        vabort(v, "value nested more than %d levels deep", AD_SCHEMA_MAX_DEPTH);
        return 0;
    }
    switch (json_typeof(x)) {
    case JSON_INTEGER:
    case JSON_REAL: {
        double d = json_number_value(x);
        uint64_t bits;

        if (d == 0)
            d = 0;
        memcpy(&bits, &d, sizeof(bits));
        return mix64(bits ^ 0x1);
    }
    case JSON_STRING:
        return hash_bytes(json_string_value(x), json_string_length(x));
    case JSON_ARRAY:
        h = 0x2;
        for (size_t i = 0; i < json_array_size(x); i++)
            h = mix64(h * 31 + json_hash(v, json_array_get(x, i), depth + 1));
        return h;
    case JSON_OBJECT:
        h = 0x3;
        for (void *it = json_object_iter((json_t *)x); it;
             it = json_object_iter_next((json_t *)x, it))
            h += mix64(hash_bytes(json_object_iter_key(it), iter_keylen(it)) ^
                       (json_hash(v, json_object_iter_value(it), depth + 1) * 0x9e3779b97f4a7c15ULL));
        return h;
    case JSON_TRUE: return 0x4;
    case JSON_FALSE: return 0x5;
    case JSON_NULL: return 0x6;
    }
    return 0;
}

struct hashed {
    uint64_t hash;
    size_t index;
};

static int cmp_hashed(const void *a, const void *b)
{
    const struct hashed *x = a, *y = b;

    if (x->hash != y->hash)
        return x->hash < y->hash ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

/*
 * Finds two equal items of an array; *i and *j receive their indexes.
 * Long arrays are hashed and sorted to stay O(n log n).
 */
static bool find_duplicate(struct vctx *v, const json_t *arr, size_t *i, size_t *j)
{
    size_t n = json_array_size(arr);
    struct hashed *h = NULL;
    bool found = false;

    if (n > UNIQUE_PAIRWISE_MAX)
        h = malloc(n * sizeof(*h));
    if (!h) {
        for (size_t a = 0; a < n; a++)
            for (size_t b = a + 1; b < n; b++) {
                if (json_equal_deep(v, json_array_get(arr, a), json_array_get(arr, b), 0)) {
                    *i = a;
                    *j = b;
                    return true;
                }
                if (v->aborted)
                    return false;
            }
        return false;
    }
    for (size_t a = 0; a < n; a++) {
        h[a].hash = json_hash(v, json_array_get(arr, a), 0);
        h[a].index = a;
    }
    if (!v->aborted)
        qsort(h, n, sizeof(*h), cmp_hashed);
    for (size_t a = 0; a < n && !found && !v->aborted; a++)
        for (size_t b = a + 1; b < n && h[b].hash == h[a].hash; b++) {
            if (json_equal_deep(v, json_array_get(arr, h[a].index), json_array_get(arr, h[b].index),
                                0)) {
                *i = h[a].index;
                *j = h[b].index;
                found = true;
                break;
            }
            if (v->aborted)
                break;
        }
    free(h);
    return found;
}

static bool validate(struct vctx *v, const struct node *n, const json_t *x, const char *via);

static bool check_number(struct vctx *v, const struct node *n, const json_t *x)
{
    char a[32], b[32];

    if (n->multiple_of && !is_multiple(x, n->multiple_of)) {
        number_text(x, a, sizeof(a));
        number_text(n->multiple_of, b, sizeof(b));
        return vfail(v, "multipleOf", "%s is not a multiple of %s", a, b);
    }
    if (n->maximum && number_cmp(x, n->maximum) > 0) {
        number_text(x, a, sizeof(a));
        number_text(n->maximum, b, sizeof(b));
        return vfail(v, "maximum", "%s is greater than the maximum %s", a, b);
    }
    if (n->exclusive_maximum && number_cmp(x, n->exclusive_maximum) >= 0) {
        number_text(x, a, sizeof(a));
        number_text(n->exclusive_maximum, b, sizeof(b));
        return vfail(v, "exclusiveMaximum", "%s is not less than %s", a, b);
    }
    if (n->minimum && number_cmp(x, n->minimum) < 0) {
        number_text(x, a, sizeof(a));
        number_text(n->minimum, b, sizeof(b));
        return vfail(v, "minimum", "%s is less than the minimum %s", a, b);
    }
    if (n->exclusive_minimum && number_cmp(x, n->exclusive_minimum) <= 0) {
        number_text(x, a, sizeof(a));
        number_text(n->exclusive_minimum, b, sizeof(b));
        return vfail(v, "exclusiveMinimum", "%s is not greater than %s", a, b);
    }
    return true;
}

static bool check_string(struct vctx *v, const struct node *n, const json_t *x)
{
    const char *s = json_string_value(x);
    size_t len = json_string_length(x);

    if (n->max_length >= 0 || n->min_length >= 0) {
        long long chars = (long long)utf8_length(s, len);

        if (n->max_length >= 0 && chars > n->max_length)
            return vfail(v, "maxLength", "string is longer than %lld characters", n->max_length);
        if (n->min_length >= 0 && chars < n->min_length)
            return vfail(v, "minLength", "string is shorter than %lld characters", n->min_length);
    }
    if (n->pattern && !pattern_match(n->pattern, s, len))
        return vfail(v, "pattern", "string does not match the pattern \"%.100s\"",
                     n->pattern->source);
    return true;
}

static bool check_array(struct vctx *v, const struct node *n, const json_t *x)
{
    size_t size = json_array_size(x), i, j;

    if (n->max_items >= 0 && (long long)size > n->max_items)
        return vfail(v, "maxItems", "array has more than %lld items", n->max_items);
    if (n->min_items >= 0 && (long long)size < n->min_items)
        return vfail(v, "minItems", "array has fewer than %lld items", n->min_items);
    if (n->items) {
        for (i = 0; i < size; i++) {
            bool ok;

            if (!push_index(v, i))
                return false;
            ok = validate(v, n->items, json_array_get(x, i), "items");
            pop(v);
            if (!ok)
                return false;
        }
    } else if (n->items_is_list) {
        for (i = 0; i < size; i++) {
            const struct node *sub = i < n->n_item_list ? n->item_list[i] : n->additional_items;
            bool ok;

            if (!sub)
                break;
            if (i >= n->n_item_list && sub->kind == NODE_FALSE)
                return vfail(v, "additionalItems", "array has more than %zu items",
                             n->n_item_list);
            if (!push_index(v, i))
                return false;
            ok = validate(v, sub, json_array_get(x, i),
                          i < n->n_item_list ? "items" : "additionalItems");
            pop(v);
            if (!ok)
                return false;
        }
    }
    if (n->unique_items && size > 1 && find_duplicate(v, x, &i, &j))
        return vfail(v, "uniqueItems", "items %zu and %zu are equal", i, j);
    if (v->aborted)
        return false;
    if (n->contains) {
        bool found = false;

        v->quiet++;
        for (i = 0; i < size && !found && !v->aborted; i++) {
            if (!push_index(v, i))
                break;
            found = validate(v, n->contains, json_array_get(x, i), "contains");
            pop(v);
        }
        v->quiet--;
        if (v->aborted)
            return false;
        if (!found)
            return vfail(v, "contains", "no item matches the \"contains\" schema");
    }
    return true;
}

static bool check_property(struct vctx *v, const struct node *sub, const char *key, size_t len,
                           const json_t *value, const char *via)
{
    bool ok;

    if (!push_key(v, key, len))
        return false;
    ok = validate(v, sub, value, via);
    pop(v);
    return ok;
}

/* Applies "patternProperties" and "additionalProperties" to every member. */
static bool check_members(struct vctx *v, const struct node *n, const json_t *x)
{
    for (void *it = json_object_iter((json_t *)x); it; it = json_object_iter_next((json_t *)x, it)) {
        const char *key = json_object_iter_key(it);
        size_t len = iter_keylen(it);
        const json_t *value = json_object_iter_value(it);
        bool matched = false;

        for (size_t i = 0; i < n->n_pattern_properties; i++) {
            const struct pattern_node *pp = &n->pattern_properties[i];

            if (!pattern_match(pp->re, key, len))
                continue;
            matched = true;
            if (!check_property(v, pp->node, key, len, value, "patternProperties"))
                return false;
        }
        if (!n->additional_properties || matched ||
            (n->properties_object && obj_getn(n->properties_object, key, len)))
            continue;
        if (n->additional_properties->kind == NODE_FALSE)
            return vfail(v, "additionalProperties", "property \"%.*s\" is not allowed",
                         (int)(len > 64 ? 64 : len), key);
        if (!check_property(v, n->additional_properties, key, len, value,
                            "additionalProperties"))
            return false;
    }
    return true;
}

static bool check_property_names(struct vctx *v, const struct node *n, const json_t *x)
{
    for (void *it = json_object_iter((json_t *)x); it; it = json_object_iter_next((json_t *)x, it)) {
        const char *key = json_object_iter_key(it);
        size_t len = iter_keylen(it);
        json_t *name = json_stringn_nocheck(key, len);
        bool ok;

        if (!name)
            return vabort(v, "out of memory");
        v->quiet++;
        ok = validate(v, n->property_names, name, "propertyNames");
        v->quiet--;
        json_decref(name);
        if (v->aborted)
            return false;
        if (!ok)
            return vfail(v, "propertyNames", "property name \"%.*s\" is invalid",
                         (int)(len > 64 ? 64 : len), key);
    }
    return true;
}

static bool check_object(struct vctx *v, const struct node *n, const json_t *x)
{
    size_t size = json_object_size(x);

    if (n->max_properties >= 0 && (long long)size > n->max_properties)
        return vfail(v, "maxProperties", "object has more than %lld properties",
                     n->max_properties);
    if (n->min_properties >= 0 && (long long)size < n->min_properties)
        return vfail(v, "minProperties", "object has fewer than %lld properties",
                     n->min_properties);
    for (size_t i = 0; i < n->n_required; i++) {
        const struct str *r = &n->required[i];

        if (!obj_getn(x, r->s, r->len))
            return vfail(v, "required", "missing required property \"%.*s\"",
                         (int)(r->len > 64 ? 64 : r->len), r->s);
    }
    for (size_t i = 0; i < n->n_properties; i++) {
        const struct named_node *p = &n->properties[i];
        const json_t *value = obj_getn(x, p->name.s, p->name.len);

        if (value && !check_property(v, p->node, p->name.s, p->name.len, value, "properties"))
            return false;
    }
    if ((n->n_pattern_properties || n->additional_properties) && !check_members(v, n, x))
        return false;
    for (size_t i = 0; i < n->n_dependencies; i++) {
        const struct dependency *d = &n->dependencies[i];

        if (!obj_getn(x, d->name.s, d->name.len))
            continue;
        for (size_t k = 0; k < d->n_required; k++) {
            const struct str *r = &d->required[k];

            if (!obj_getn(x, r->s, r->len))
                return vfail(v, "dependencies", "property \"%.*s\" requires property \"%.*s\"",
                             (int)(d->name.len > 48 ? 48 : d->name.len), d->name.s,
                             (int)(r->len > 48 ? 48 : r->len), r->s);
        }
        if (d->schema && !validate(v, d->schema, x, "dependencies"))
            return false;
    }
    if (n->property_names && !check_property_names(v, n, x))
        return false;
    return true;
}

/* Runs "sub" without reporting its failures; aborts still propagate. */
static bool probe(struct vctx *v, const struct node *sub, const json_t *x, const char *via)
{
    bool ok;

    v->quiet++;
    ok = validate(v, sub, x, via);
    v->quiet--;
    return ok;
}

static bool check_applicators(struct vctx *v, const struct node *n, const json_t *x)
{
    for (size_t i = 0; i < n->n_all_of; i++)
        if (!validate(v, n->all_of[i], x, "allOf"))
            return false;
    if (n->n_any_of) {
        bool found = false;

        for (size_t i = 0; i < n->n_any_of && !found; i++) {
            found = probe(v, n->any_of[i], x, "anyOf");
            if (v->aborted)
                return false;
        }
        if (!found)
            return vfail(v, "anyOf", "value matches none of the \"anyOf\" schemas");
    }
    if (n->n_one_of) {
        size_t matches = 0, first = 0;

        for (size_t i = 0; i < n->n_one_of; i++) {
            if (probe(v, n->one_of[i], x, "oneOf")) {
                if (matches++ == 0) {
                    first = i;
                } else {
                    return vfail(v, "oneOf",
                                 "value matches both \"oneOf\" schemas %zu and %zu", first, i);
                }
            }
            if (v->aborted)
                return false;
        }
        if (matches == 0)
            return vfail(v, "oneOf", "value matches none of the \"oneOf\" schemas");
    }
    if (n->not_schema) {
        bool matched = probe(v, n->not_schema, x, "not");

        if (v->aborted)
            return false;
        if (matched)
            return vfail(v, "not", "value matches the \"not\" schema");
    }
    if (n->if_schema) {
        bool cond = probe(v, n->if_schema, x, "if");

        if (v->aborted)
            return false;
        if (cond && n->then_schema && !validate(v, n->then_schema, x, "then"))
            return false;
        if (!cond && n->else_schema && !validate(v, n->else_schema, x, "else"))
            return false;
    }
    return true;
}

/*
 * Validates instance value "x" against node "n"; "via" names the keyword
 * that applied "n", for the report of a "false" schema.  Returns false on the
 * first failure, after reporting it unless v->quiet is set.
 */
static bool validate(struct vctx *v, const struct node *n, const json_t *x, const char *via)
{
    bool ok = true;

    if (n->ref)
        n = n->ref;
    if (n->kind == NODE_TRUE)
        return true;
    if (n->kind == NODE_FALSE)
        return vfail(v, via ? via : "false", "no value is allowed here");
    if (v->depth >= MAX_EVAL_DEPTH)
        return vabort(v, "schema evaluation nested more than %d levels deep", MAX_EVAL_DEPTH);
    v->depth++;

    if (n->types && !(n->types & instance_types(x))) {
        char want[64];

        types_text(n->types, want, sizeof(want));
        ok = vfail(v, "type", "expected %s, got %s", want, type_name(x));
        goto out;
    }
    if (n->enum_values) {
        bool found = false;

        for (size_t i = 0; i < json_array_size(n->enum_values) && !found && !v->aborted; i++)
            found = json_equal_deep(v, json_array_get(n->enum_values, i), x, 0);
        if (!found) {
            ok = v->aborted ? false : vfail(v, "enum", "value is not one of the allowed values");
            goto out;
        }
    }
    if (n->const_value && !json_equal_deep(v, n->const_value, x, 0)) {
        ok = v->aborted ? false : vfail(v, "const", "value is not the required constant");
        goto out;
    }
    switch (json_typeof(x)) {
    case JSON_INTEGER:
    case JSON_REAL:
        if (n->groups & G_NUMBER)
            ok = check_number(v, n, x);
        break;
    case JSON_STRING:
        if (n->groups & G_STRING)
            ok = check_string(v, n, x);
        break;
    case JSON_ARRAY:
        if (n->groups & G_ARRAY)
            ok = check_array(v, n, x);
        break;
    case JSON_OBJECT:
        if (n->groups & G_OBJECT)
            ok = check_object(v, n, x);
        break;
    default:
        break;
    }
    if (ok && (n->groups & G_APPLY))
        ok = check_applicators(v, n, x);
out:
    v->depth--;
    return ok;
}

bool ad_schema_validate(const struct ad_schema *s, const json_t *instance,
                        struct ad_schema_error *ret_err)
{
    struct vctx v;
    locale_t old = (locale_t)0;
    bool ok;

    v.err = ret_err;
    v.quiet = 0;
    v.recorded = v.aborted = false;
    v.depth = v.n_path = 0;
    if (ret_err)
        ret_err->pointer[0] = ret_err->keyword[0] = ret_err->message[0] = '\0';
    if (!s || !instance) {
        if (ret_err) {
            snprintf(ret_err->keyword, sizeof(ret_err->keyword), "%s", "$schema");
            snprintf(ret_err->message, sizeof(ret_err->message), "%s", "no schema or instance");
        }
        return false;
    }
    if (s->patterns)
        old = uselocale(s->c_locale);
    ok = validate(&v, s->root, instance, NULL);
    if (s->patterns)
        uselocale(old);
    return ok;
}
