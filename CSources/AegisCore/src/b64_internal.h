/*
 * b64_internal.h — implementation selection for strict base64 (internal to
 * AegisCore; used by the unit test and the benchmarks).
 *
 * The public aegis_b64*_encode / _decode pick the fastest kernel for this
 * CPU once. These entry points force a kernel so that the test can check
 * that the AVX2 and scalar paths agree byte for byte, and the benchmarks
 * can time each. A kernel the CPU (or the build target) lacks falls back to
 * the scalar one, so calling them is always safe.
 */
#ifndef AEGIS_B64_INTERNAL_H
#define AEGIS_B64_INTERNAL_H

#include "aegis_core.h"

typedef enum aegis_b64_impl {
    AEGIS_B64_IMPL_AUTO = 0,   /* what the public functions use */
    AEGIS_B64_IMPL_SCALAR = 1, /* table driven, portable */
    AEGIS_B64_IMPL_AVX2 = 2,   /* x86-64 with AVX2 */
} aegis_b64_impl;

/* True when `impl` runs as itself here (AUTO and SCALAR always do). */
bool aegis_b64_impl_supported(aegis_b64_impl impl);

/* "scalar" or "avx2": the kernel AUTO resolves to on this CPU. */
const char *aegis_b64_impl_name(void);

/* As aegis_b64[u]_encode / _decode (url selects b64u), with a forced kernel. */
void aegis_b64_encode_impl(aegis_b64_impl impl, bool url, const uint8_t *bin,
                           size_t bin_len, char *out);
aegis_status aegis_b64_decode_impl(aegis_b64_impl impl, bool url,
                                   const char *text, size_t text_len,
                                   uint8_t *out, size_t out_cap,
                                   size_t *out_len);

#endif /* AEGIS_B64_INTERNAL_H */
