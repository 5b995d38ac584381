/*
 * check.h — the C unit tests' whole framework, header-only.
 *
 * Each Tests/CoreC/test_*.c is its own program: it calls the CHECK macros,
 * which count and never stop, and ends with `return check_summary();`, which
 * prints "N passed, N failed" (the line `make ctest` and CI read) and gives
 * the exit status. A failure prints file:line and what differed.
 */
#ifndef AEGIS_TEST_CHECK_H
#define AEGIS_TEST_CHECK_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "aegis_core.h"

static int check_passed_, check_failed_;

static inline void check_result_(int ok, const char *file, int line, const char *what) {
    if (ok) { check_passed_++; return; }
    check_failed_++;
    fprintf(stderr, "%s:%d: FAILED: %s\n", file, line, what);
}

static inline void check_hex_dump_(const char *label, const void *p, size_t n) {
    const uint8_t *b = p;
    fprintf(stderr, "    %s (%zu bytes): ", label, n);
    for (size_t i = 0; i < n && i < 64; i++) fprintf(stderr, "%02x", b[i]);
    fprintf(stderr, "%s\n", n > 64 ? "…" : "");
}

#define CHECK(cond) check_result_(!!(cond), __FILE__, __LINE__, #cond)

/* CHECK with a formatted message, for loops that must say which case failed. */
#define CHECKF(ok, ...) checkf_((ok), __FILE__, __LINE__, __VA_ARGS__)

__attribute__((format(printf, 4, 5), unused)) static void checkf_(bool ok, const char *file,
                                                                  int line, const char *fmt, ...) {
    char msg[512] = "";
    if (!ok) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
    }
    check_result_(ok, file, line, msg);
}

#define CHECK_EQ_INT(a, b) do { \
    long long a_ = (long long)(a), b_ = (long long)(b); \
    check_result_(a_ == b_, __FILE__, __LINE__, #a " == " #b); \
    if (a_ != b_) fprintf(stderr, "    got %lld, want %lld\n", a_, b_); \
} while (0)

#define CHECK_EQ_MEM(a, b, n) do { \
    size_t n_ = (n); int eq_ = memcmp((a), (b), n_) == 0; \
    check_result_(eq_, __FILE__, __LINE__, "memcmp(" #a ", " #b ", " #n ") == 0"); \
    if (!eq_) { check_hex_dump_("got ", (a), n_); check_hex_dump_("want", (b), n_); } \
} while (0)

/* Compares aegis_status values and names both on failure. */
#define CHECK_STATUS(expr, want) do { \
    aegis_status s_ = (expr), w_ = (want); \
    check_result_(s_ == w_, __FILE__, __LINE__, #expr " == " #want); \
    if (s_ != w_) fprintf(stderr, "    got %s, want %s\n", aegis_status_name(s_), aegis_status_name(w_)); \
} while (0)

static inline int check_nibble_(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Decodes hex test data (no separators) into out. Returns the byte count,
 * or 0 and counts a failure when the text is not hex or does not fit. */
static inline size_t hex_decode(const char *hex, uint8_t *out, size_t cap) {
    size_t len = strlen(hex);
    if (len % 2 != 0 || len / 2 > cap) goto bad;
    for (size_t i = 0; i < len / 2; i++) {
        int hi = check_nibble_(hex[2 * i]), lo = check_nibble_(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) goto bad;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return len / 2;
bad:
    check_result_(0, __FILE__, __LINE__, "hex_decode: bad hex or buffer too small");
    return 0;
}

/* Prints the closing line; the program's exit status. Flushed here, as
 * LeakSanitizer's report at exit ends the process without flushing stdio. */
static inline int check_summary(void) {
    printf("%d passed, %d failed\n", check_passed_, check_failed_);
    fflush(stdout);
    return check_failed_ ? 1 : 0;
}

#endif
