/*
 * identity.c — long-term Ed25519 identities: created, loaded, saved, and
 * used to sign, without their secret ever leaving secure memory.
 */
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

static aegis_status identity_new(const uint8_t seed[AEGIS_SEED_BYTES], aegis_identity **out) {
    aegis_identity *id = calloc(1, sizeof *id);
    if (id == NULL) return AEGIS_E_NOMEM;
    id->secret_key = secmem_alloc();
    if (id->secret_key == NULL) {
        free(id);
        return AEGIS_E_NOMEM;
    }
    crypto_sign_seed_keypair(id->public_key, id->secret_key, seed);
    atomic_init(&id->refs, 1);
    *out = id;
    return AEGIS_OK;
}

aegis_status aegis_identity_generate(aegis_identity **out) {
    uint8_t *seed = secmem_alloc();
    if (seed == NULL) return AEGIS_E_NOMEM;
    randombytes_buf(seed, AEGIS_SEED_BYTES);
    aegis_status st = identity_new(seed, out);
    secmem_free(seed);
    return st;
}

aegis_status aegis_identity_from_seed(const uint8_t seed[AEGIS_SEED_BYTES], aegis_identity **out) {
    if (seed == NULL || out == NULL) return AEGIS_E_INVALID_ARGUMENT;
    return identity_new(seed, out);
}

aegis_status aegis_identity_from_seed_b64(const char *text, size_t len, aegis_identity **out) {
    uint8_t *seed = secmem_alloc();
    if (seed == NULL) return AEGIS_E_NOMEM;
    /* Accept the line as written by save(): b64 with padding, in constant time. */
    size_t bin_len = 0;
    aegis_status st = AEGIS_E_B64;
    if (len == aegis_b64_encoded_len(AEGIS_SEED_BYTES) &&
        sodium_base642bin(seed, AEGIS_SEED_BYTES, text, len, NULL, &bin_len, NULL,
                          sodium_base64_VARIANT_ORIGINAL) == 0 &&
        bin_len == AEGIS_SEED_BYTES)
        st = identity_new(seed, out);
    secmem_free(seed);
    return st;
}

aegis_status aegis_identity_load(const char *path, aegis_identity **out) {
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) return AEGIS_E_IO;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return AEGIS_E_IO;
    }
    if (st.st_mode & (S_IRWXG | S_IRWXO)) {
        close(fd);
        return AEGIS_E_KEY_FILE_PERMISSIONS;
    }
    /* The file is one b64 line (44 characters) and an optional newline. */
    uint8_t *line = secmem_alloc();
    if (line == NULL) {
        close(fd);
        return AEGIS_E_NOMEM;
    }
    ssize_t n = read(fd, line, SECMEM_SLOT);
    close(fd);
    aegis_status result = AEGIS_E_B64;
    if (n > 0) {
        size_t len = (size_t)n;
        if (line[len - 1] == '\n') len--;
        result = aegis_identity_from_seed_b64((const char *)line, len, out);
    } else {
        result = AEGIS_E_IO;
    }
    secmem_free(line);
    return result;
}

aegis_status aegis_identity_save(const aegis_identity *id, const char *path) {
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) return AEGIS_E_IO;
    char *line = secmem_alloc();
    if (line == NULL) {
        close(fd);
        unlink(path);
        return AEGIS_E_NOMEM;
    }
    sodium_bin2base64(line, SECMEM_SLOT, id->secret_key, AEGIS_SEED_BYTES,
                      sodium_base64_VARIANT_ORIGINAL);
    size_t len = aegis_b64_encoded_len(AEGIS_SEED_BYTES);
    line[len] = '\n';
    ssize_t n = write(fd, line, len + 1);
    secmem_free(line);
    if (n != (ssize_t)(len + 1) || fsync(fd) != 0) {
        close(fd);
        unlink(path);
        return AEGIS_E_IO;
    }
    return close(fd) == 0 ? AEGIS_OK : AEGIS_E_IO;
}

void aegis_identity_public_key(const aegis_identity *id, uint8_t pk[AEGIS_PUBLIC_KEY_BYTES]) {
    memcpy(pk, id->public_key, AEGIS_PUBLIC_KEY_BYTES);
}

void identity_retain(const aegis_identity *id) {
    /* The count is the one mutable part of an otherwise immutable identity. */
    atomic_fetch_add(&((aegis_identity *)id)->refs, 1);
}

void aegis_identity_free(aegis_identity *id) {
    if (id == NULL) return;
    if (atomic_fetch_sub(&id->refs, 1) != 1) return;
    secmem_free(id->secret_key);
    free(id);
}

void identity_sign(const aegis_identity *id, uint8_t sig[AEGIS_SIGNATURE_BYTES],
                   const uint8_t *m, size_t m_len) {
    crypto_sign_detached(sig, NULL, m, m_len, id->secret_key);
}
