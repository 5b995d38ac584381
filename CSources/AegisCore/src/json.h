/*
 * json.h — the strict, non-allocating JSON reader behind the envelopes
 * (internal to AegisCore).
 *
 * One call validates a whole JSON text (RFC 8259, UTF-8) as a single object
 * and reports the members the caller asked for by name. Strictness, as
 * PROTOCOL.md §1 wants it:
 *  - the text is exactly one object, with optional JSON whitespace around;
 *  - every string is valid UTF-8 (no overlongs, no surrogates, ≤ U+10FFFF),
 *    no raw control characters, only the escapes of RFC 8259, and \u
 *    surrogate pairs must pair up;
 *  - a name that repeats within one object is refused at every depth,
 *    comparing decoded names ("a" and "\u0061" are the same name);
 *  - nesting deeper than AEGIS_JSON_MAX_DEPTH, or more than
 *    AEGIS_JSON_MAX_MEMBERS object members in the whole text, is refused
 *    with AEGIS_E_JSON_LIMIT (bounded work and stack, no allocation).
 * Numbers anywhere must be valid JSON numbers; only requested integer
 * fields are range-checked.
 */
#ifndef AEGIS_JSON_H
#define AEGIS_JSON_H

#include "aegis_core.h"

typedef enum json_kind {
    JSON_FIELD_STRING = 0, /* must be a JSON string */
    JSON_FIELD_UINT = 1,   /* must be an integer 0 … 2^63−1: no '-', '.', 'e'/'E' */
    JSON_FIELD_ARRAY = 2,  /* must be an array; its raw span is reported */
    JSON_FIELD_ANY = 3,    /* any value; its raw span is reported */
} json_kind;

typedef struct json_field_spec {
    const char *name;      /* ASCII, NUL-terminated */
    json_kind kind;
} json_field_spec;

typedef struct json_field {
    bool present;
    /* JSON_FIELD_STRING: the bytes between the quotes, still escaped.
     * JSON_FIELD_ARRAY / ANY: the whole value text. */
    const char *raw;
    size_t raw_len;
    bool has_escapes;      /* a backslash occurs in the string */
    uint64_t uint_value;   /* JSON_FIELD_UINT */
} json_field;

/*
 * Validates `text` and fills fields[i] for specs[i] (n ≤ 32). Unknown
 * members are validated and skipped. Errors, in the order found while
 * scanning left to right:
 *   AEGIS_E_JSON_SYNTAX, AEGIS_E_JSON_NOT_OBJECT, AEGIS_E_JSON_DUPLICATE_KEY,
 *   AEGIS_E_JSON_LIMIT, AEGIS_E_FIELD_TYPE (a requested member of the wrong
 *   kind, `null` included), AEGIS_E_INTEGER_RANGE (a JSON_FIELD_UINT member
 *   that is an integer but negative or ≥ 2^63).
 * A requested member that is absent is left with present == false: the
 * caller decides which are required.
 */
aegis_status json_read_object(const char *text, size_t len,
                              const json_field_spec *specs, size_t n,
                              json_field *fields);

/* Decodes a string field's escapes into out (no NUL added).
 * AEGIS_E_BUFFER_TOO_SMALL when it does not fit. raw was validated by
 * json_read_object, so this cannot fail otherwise. */
aegis_status json_unescape(const char *raw, size_t raw_len,
                           char *out, size_t cap, size_t *out_len);

/* Walks the elements of an array span reported by json_read_object. */
typedef struct json_array_iter {
    const char *p;
    const char *end;
    size_t index;
} json_array_iter;

void json_array_begin(json_array_iter *it, const char *raw, size_t raw_len);
/* Next element, which must be a string: returns AEGIS_OK with its raw span,
 * AEGIS_E_FIELD_TYPE if it is not a string, and sets *done at the end. */
aegis_status json_array_next_string(json_array_iter *it, const char **raw,
                                    size_t *raw_len, bool *has_escapes, bool *done);

#endif /* AEGIS_JSON_H */
