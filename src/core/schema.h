/*
 * JSON Schema (draft-07) validation for actiond.
 *
 * A schema is compiled once, typically at server start, into a form that
 * can validate many JSON instances quickly.  Compilation resolves every
 * "$ref" (including references to other documents through a caller-supplied
 * loader), compiles every regular expression and rejects malformed schemas,
 * so that validation itself cannot fail for reasons other than the instance.
 *
 * A compiled schema is immutable: ad_schema_validate() may be called
 * concurrently from several threads on the same compiled schema.
 */
#ifndef ACTIOND_SCHEMA_H
#define ACTIOND_SCHEMA_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

/*
 * The deepest nesting of instance values that validation descends into.
 * An instance nested more deeply where the schema looks into it is
 * reported as invalid with the keyword "maxDepth".  The same limit bounds
 * the nesting of a schema document.
 */
#define AD_SCHEMA_MAX_DEPTH 128

/* A compiled schema; it owns everything it needs. */
struct ad_schema;

/* Describes the first violation found by ad_schema_validate(). */
struct ad_schema_error {
    /*
     * The location of the failing instance value as a JSON pointer
     * (RFC 6901, with "~" and "/" escaped as "~0" and "~1"); it is the empty
     * string for the instance root.  A pointer too long for the buffer is
     * cut at a character boundary.
     */
    char pointer[256];
    /*
     * The draft-07 keyword that failed, such as "type", "required" or
     * "anyOf".  When a boolean schema "false" rejects a value, this is the
     * keyword that applied it ("properties", "items", ...), or "false" when
     * the whole schema is "false".  "maxDepth" means the instance or the
     * evaluation was nested beyond AD_SCHEMA_MAX_DEPTH.
     */
    char keyword[32];
    /* A short sentence in English explaining the failure. */
    char message[160];
};

/*
 * Fetches the document named by an absolute URI (without a fragment) so that
 * a "$ref" into it can be resolved.  It returns a new reference, which the
 * compiled schema takes over, or NULL when the document is unknown.  It is
 * only called during ad_schema_compile().
 */
typedef json_t *(*ad_schema_loader_fn)(const char *uri, void *arg);

/*
 * Compiles the schema document "schema" into *ret_schema.
 *
 * "base_uri" is the URI the document was retrieved from; it may be NULL, in
 * which case relative references are resolved against the document's own
 * "$id" only.  "loader" (which may be NULL) is asked for documents that
 * "$ref" points at but that are neither part of "schema" nor the built-in
 * draft-07 meta-schema (http://json-schema.org/draft-07/schema).
 *
 * The compiled schema keeps a reference to "schema" and to every loaded
 * document and reads them while validating: they must not be modified while
 * the compiled schema exists.
 *
 * Returns 0 on success.  On failure it returns -EINVAL for a malformed or
 * unresolvable schema, -ENOMEM when memory runs out, leaves *ret_schema
 * untouched and writes an explanation to "errbuf" (when errlen > 0).
 */
int ad_schema_compile(json_t *schema, const char *base_uri, ad_schema_loader_fn loader,
                      void *loader_arg, struct ad_schema **ret_schema, char *errbuf,
                      size_t errlen);

/*
 * Validates "instance" against the compiled schema "s".  Returns true when
 * the instance is valid.  Otherwise it returns false and, when "ret_err" is
 * not NULL, describes the first violation found there.  It does not allocate
 * memory itself except for "uniqueItems" on long arrays and for
 * "propertyNames"; the C library's regexec() may allocate for "pattern" and
 * "patternProperties".
 */
bool ad_schema_validate(const struct ad_schema *s, const json_t *instance,
                        struct ad_schema_error *ret_err);

/* Frees a compiled schema.  Accepts NULL and always returns NULL. */
struct ad_schema *ad_schema_free(struct ad_schema *s);

#endif
