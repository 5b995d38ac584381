/*
 * tls.c — TLS 1.2/1.3 with OpenSSL 3 over in-memory queues (see tls.h).
 *
 * Each connection's SSL reads and writes through a small custom BIO whose
 * two byte queues (ciphertext in, ciphertext out) belong to the tls_conn and
 * are freed the moment they empty. Together with SSL_MODE_RELEASE_BUFFERS an
 * idle connection holds no buffer at all, only OpenSSL's per-connection
 * state (the SSL, its session and the cipher contexts).
 *
 * Threads: a tls_server or tls_client is shared by the workers; each
 * tls_conn belongs to one thread at a time. The server's mutex guards the
 * current SSL_CTX pointer and the ticket keys (a second one serialises
 * writes of the ticket key file); the client's guards its session cache.
 * Every SSL holds a reference on the SSL_CTX it was made from (SSL_new
 * takes it), so a reload only swaps the pointer and drops the server's own
 * reference: the old context lives until its last connection.
 */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

/* TLS 1.2 suites: forward secrecy and AEAD only. TLS 1.3's defaults are
 * all AEAD already. */
#define TLS12_CIPHERS "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL"
#define TLS_GROUPS "X25519:P-256:P-384"
/* The same on every server context, so a ticket made under one context
 * still resumes under its successor after a reload. */
#define TLS_SID_CTX "aegis"
#define TLS_DEFAULT_ROTATE 3600u
#define TLS_CLIENT_SESSIONS 16
#define QUEUE_MIN 1024

/* ------------------------------------------------------------------------ */
/* Errors                                                                    */

/* Writes "what: OpenSSL's reason" (or just what) to err, clears OpenSSL's
 * error queue so nothing is left for the next call on this thread, and
 * returns code. */
__attribute__((format(printf, 4, 5))) static int fail(int code, char *err, size_t err_len,
                                                      const char *fmt, ...) {
    if (err != NULL && err_len > 0) {
        char what[512], why[256] = "";
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(what, sizeof what, fmt, ap);
        va_end(ap);
        unsigned long e = ERR_peek_last_error();
        if (e != 0) ERR_error_string_n(e, why, sizeof why);
        snprintf(err, err_len, "%s%s%s", what, e != 0 ? ": " : "", why);
    }
    ERR_clear_error();
    return code;
}

static void hex_encode(const uint8_t *in, size_t n, char *out) {
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

static int hex_nibble(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Exactly 2n hex digits, either case. */
static bool hex_decode(const char *hex, uint8_t *out, size_t n) {
    if (strlen(hex) != 2 * n) return false;
    for (size_t i = 0; i < n; i++) {
        int hi = hex_nibble(hex[2 * i]), lo = hex_nibble(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) return false;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return true;
}

static bool cert_digest(X509 *x, uint8_t md[32]) {
    unsigned len = 0;
    return x != NULL && X509_digest(x, EVP_sha256(), md, &len) == 1 && len == 32;
}

/* ------------------------------------------------------------------------ */
/* Ciphertext queues and the BIO over them                                   */

typedef struct tls_queue {
    uint8_t *buf;
    size_t head, len, cap;
} tls_queue;

struct tls_conn {
    SSL *ssl;
    tls_queue in, out;       /* ciphertext from / to the socket */
    tls_client *client;      /* client connections: whose session cache */
    char *name;              /* client connections: the cache key ("" for none) */
    unsigned long ssl_err;   /* OpenSSL's code of the last failure, for tls_conn_error */
    bool established;        /* the handshake completed (OpenSSL forgets after an error) */
    bool failed;             /* a fatal error: the connection is done */
    bool oom;                /* a queue failed to grow: report NOMEM, not PROTOCOL */
};

static bool queue_push(tls_queue *q, const uint8_t *p, size_t n) {
    if (n == 0) return true;
    if (n > SIZE_MAX / 4 - q->len) return false;
    if (q->head + q->len + n > q->cap && q->head > 0) {
        /* Taken bytes sit at the front: reuse their room before growing. */
        memmove(q->buf, q->buf + q->head, q->len);
        q->head = 0;
    }
    if (q->len + n > q->cap) {
        size_t cap = q->cap < QUEUE_MIN ? QUEUE_MIN : q->cap;
        while (cap < q->len + n) cap *= 2;
        uint8_t *buf = realloc(q->buf, cap);
        if (buf == NULL) return false;
        q->buf = buf;
        q->cap = cap;
    }
    memcpy(q->buf + q->head + q->len, p, n);
    q->len += n;
    return true;
}

/* Takes up to cap bytes; an emptied queue gives its buffer back, which is
 * what keeps an idle connection at no buffer. */
static size_t queue_pop(tls_queue *q, uint8_t *out, size_t cap) {
    size_t n = q->len < cap ? q->len : cap;
    if (n > 0) memcpy(out, q->buf + q->head, n);
    q->head += n;
    q->len -= n;
    if (q->len == 0) {
        free(q->buf);
        *q = (tls_queue){0};
    }
    return n;
}

static int bio_read(BIO *b, char *out, size_t cap, size_t *n) {
    tls_conn *c = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    *n = queue_pop(&c->in, (uint8_t *)out, cap);
    if (*n > 0) return 1;
    BIO_set_retry_read(b);   /* not EOF: the event loop has not fed more yet */
    return 0;
}

static int bio_write(BIO *b, const char *in, size_t len, size_t *n) {
    tls_conn *c = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (!queue_push(&c->out, (const uint8_t *)in, len)) {
        c->oom = true;
        *n = 0;
        return 0;   /* no retry flag: OpenSSL sees a hard error */
    }
    *n = len;
    return 1;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr) {
    (void)num;
    (void)ptr;
    tls_conn *c = BIO_get_data(b);
    switch (cmd) {
    case BIO_CTRL_PENDING: return (long)(c->in.len < LONG_MAX ? c->in.len : LONG_MAX);
    case BIO_CTRL_WPENDING: return (long)(c->out.len < LONG_MAX ? c->out.len : LONG_MAX);
    case BIO_CTRL_FLUSH: return 1;   /* the queue is the destination */
    default: return 0;
    }
}

static int bio_create(BIO *b) {
    BIO_set_init(b, 1);
    return 1;
}

/* One method per tls_server/tls_client rather than a process-wide one:
 * no global to initialise. The type number only matters to BIO_find_type. */
static BIO_METHOD *queue_bio_method(void) {
    BIO_METHOD *m = BIO_meth_new(BIO_TYPE_SOURCE_SINK | 0xAE, "aegis tls queue");
    if (m == NULL) return NULL;
    if (BIO_meth_set_read_ex(m, bio_read) != 1 || BIO_meth_set_write_ex(m, bio_write) != 1 ||
        BIO_meth_set_ctrl(m, bio_ctrl) != 1 || BIO_meth_set_create(m, bio_create) != 1) {
        BIO_meth_free(m);
        return NULL;
    }
    return m;
}

/* ------------------------------------------------------------------------ */
/* Settings common to both sides                                             */

/* TLS 1.3 resumption without (EC)DHE (psk_ke).
 *
 * A resumed handshake with psk_dhe_ke still costs the server an X25519 key
 * generation and derivation: measured (test_tls.c), about 50 us of the
 * ~130 us a resumption costs the server, against ~150 us for a full
 * handshake. With psk_ke the ticket's PSK alone keys the session.
 *
 * What it gives up: TLS-level forward secrecy of resumed sessions. Whoever
 * obtains a ticket key (from the key file, a copy of it, or the process's
 * memory) and has recorded a psk_ke connection resumed with a ticket under
 * that key can decrypt that connection's TLS layer, the upgrade request and
 * its headers included; with psk_dhe_ke the recording stays sealed. (A
 * stolen ticket key lets its holder pose as the gateway to clients resuming
 * under it in either mode: see tls.h on the key file.) TLS is not the only
 * layer: the protocol's own handshake derives the keys that seal every
 * message from the agent's ephemeral X25519 key (mandatory with
 * require_ephemeral), so message contents keep their forward secrecy; at
 * the TLS layer it is defence in depth. Full handshakes are unchanged.
 *
 * Our choice, on both sides:
 *  - the client offers psk_ke *and* psk_dhe_ke (SSL_OP_ALLOW_NO_DHE_KEX:
 *    OpenSSL lists psk_dhe_ke first), so any server may still insist on
 *    DHE and nothing breaks;
 *  - the server accepts psk_ke (SSL_OP_ALLOW_NO_DHE_KEX) and, where OpenSSL
 *    can (3.3 and later, SSL_OP_PREFER_NO_DHE_KEX), prefers it.
 * What OpenSSL 3.0-3.2 actually do: a server takes psk_dhe_ke whenever the
 * client offers it, and a client always offers it, so between two such
 * ends a resumption still does X25519 (test_tls.c checks which mode was
 * used, and that a client offering psk_ke alone gets it). */
#ifdef SSL_OP_PREFER_NO_DHE_KEX
#define SERVER_PSK_KE (SSL_OP_ALLOW_NO_DHE_KEX | SSL_OP_PREFER_NO_DHE_KEX)
#else
#define SERVER_PSK_KE SSL_OP_ALLOW_NO_DHE_KEX
#endif
#define CLIENT_PSK_KE SSL_OP_ALLOW_NO_DHE_KEX

static int ctx_common(SSL_CTX *ctx) {
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    /* Renegotiation is a CPU-exhaustion vector and nothing here needs it. */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) return -1;
    if (SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS) != 1) return -1;
    if (SSL_CTX_set1_groups_list(ctx, TLS_GROUPS) != 1) return -1;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Server: ticket keys                                                       */

typedef struct ticket_key {
    uint8_t name[16];
    uint8_t aes[32];
    uint8_t hmac[32];
    int64_t born;   /* monotonic milliseconds (negative: older than this boot's clock) */
    bool live;
} ticket_key;

struct tls_server {
    pthread_mutex_t lock;   /* guards ctx, fingerprint, cur, prev */
    SSL_CTX *ctx;           /* for new handshakes; each SSL holds its own reference */
    char fingerprint[65];
    ticket_key cur, prev;   /* shared by every context, so tickets survive reloads */
    int64_t rotate_ms;
    unsigned rotate;
    char *cert_path, *key_path;
    char *ticket_path;            /* NULL: the keys live in memory only */
    pthread_mutex_t file_lock;    /* one writer of ticket_path at a time */
    BIO_METHOD *bio_method;
};

/* Milliseconds, not seconds: whole seconds would cut a key's life short
 * by up to one second at each end. Ages within a run are measured on the
 * monotonic clock (immune to the wall clock being set); only the key file
 * holds wall-clock times, as a monotonic time means nothing after a reboot. */
static int64_t mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t real_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool key_new(ticket_key *k, int64_t now) {
    ticket_key fresh = {.born = now, .live = true};
    if (RAND_bytes(fresh.name, sizeof fresh.name) != 1 ||
        RAND_bytes(fresh.aes, sizeof fresh.aes) != 1 ||
        RAND_bytes(fresh.hmac, sizeof fresh.hmac) != 1) {
        OPENSSL_cleanse(&fresh, sizeof fresh);
        return false;
    }
    OPENSSL_cleanse(k, sizeof *k);
    *k = fresh;
    OPENSSL_cleanse(&fresh, sizeof fresh);
    return true;
}

/* Rotation is lazy, at the first ticket operation past the deadline: no
 * timer thread. The outgoing key stays as `prev` only while it is younger
 * than two periods, so no ticket lives longer than that. Lock held.
 * Returns true when the keys changed. */
static bool keys_rotate_locked(tls_server *s, int64_t now) {
    if (now - s->cur.born < s->rotate_ms) return false;
    ticket_key next;
    if (!key_new(&next, now)) return false;   /* keep the old key rather than none */
    OPENSSL_cleanse(&s->prev, sizeof s->prev);
    if (now - s->cur.born < 2 * s->rotate_ms) s->prev = s->cur;
    s->cur = next;
    OPENSSL_cleanse(&next, sizeof next);
    return true;
}

/* ---- the key file (see tls.h) ----
 *
 *   aegis-tls-ticket-keys 1
 *   current <born, Unix ms> <name: 32 hex> <AES key: 64 hex> <HMAC key: 64 hex>
 *   previous <born> <name> <AES key> <HMAC key>          (optional)
 */
#define KEYFILE_MAGIC "aegis-tls-ticket-keys 1"
#define KEYFILE_MAX 4096
/* A key dated this far in the future (the clock was set back since it was
 * written) is discarded: its real age is unknown. Less is taken as age 0. */
#define KEYFILE_FUTURE_SLACK_MS 60000

static void sync_dir(const char *dir);

/* One "current"/"previous" line; born is left in wall-clock ms. */
static int key_line_format(char *out, size_t cap, const char *kind, const ticket_key *k,
                           int64_t born_real) {
    char name[33], aes[65], hmac[65];
    hex_encode(k->name, sizeof k->name, name);
    hex_encode(k->aes, sizeof k->aes, aes);
    hex_encode(k->hmac, sizeof k->hmac, hmac);
    int n = snprintf(out, cap, "%s %lld %s %s %s\n", kind, (long long)born_real, name, aes, hmac);
    OPENSSL_cleanse(aes, sizeof aes);
    OPENSSL_cleanse(hmac, sizeof hmac);
    return n;
}

static bool key_line_parse(const char *line, char kind[16], ticket_key *k) {
    char name[40], aes[72], hmac[72], extra;
    long long born = 0;
    int n = sscanf(line, "%15s %lld %39s %71s %71s %c", kind, &born, name, aes, hmac, &extra);
    bool ok = n == 5 && hex_decode(name, k->name, sizeof k->name) &&
              hex_decode(aes, k->aes, sizeof k->aes) && hex_decode(hmac, k->hmac, sizeof k->hmac);
    k->born = born;
    k->live = ok;
    OPENSSL_cleanse(aes, sizeof aes);
    OPENSSL_cleanse(hmac, sizeof hmac);
    return ok;
}

/* Writes the file: a temporary file (mkstemp: 0600) next to it, synced,
 * renamed over it, and the directory synced, so that a crash leaves either
 * the old keys or the new ones, never a torn file. */
static int keyfile_write(const char *path, const ticket_key *cur, const ticket_key *prev,
                         int64_t mono_now, int64_t real_now, char *err, size_t err_len) {
    char text[512], tmp[PATH_MAX], dir[PATH_MAX];   /* the text needs ~420 bytes */
    size_t len = (size_t)snprintf(text, sizeof text, "%s\n", KEYFILE_MAGIC);
    len += (size_t)key_line_format(text + len, sizeof text - len, "current", cur,
                                   real_now - (mono_now - cur->born));
    if (prev->live && len < sizeof text)
        len += (size_t)key_line_format(text + len, sizeof text - len, "previous", prev,
                                       real_now - (mono_now - prev->born));
    int rc = TLS_OK, fd = -1;
    if (len >= sizeof text ||
        (size_t)snprintf(tmp, sizeof tmp, "%s.tmpXXXXXX", path) >= sizeof tmp) {
        rc = fail(TLS_ERR_CONFIG, err, err_len, "ticket key file %s: path too long", path);
        goto out;
    }
    fd = mkstemp(tmp);
    if (fd < 0) {
        rc = fail(TLS_ERR_CONFIG, err, err_len, "writing ticket key file %s: %s", path,
                  strerror(errno));
        goto out;
    }
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, text + off, len - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) break;
        off += (size_t)w;
    }
    bool ok = off == len && fchmod(fd, 0600) == 0 && fsync(fd) == 0;
    int saved = errno;
    if (close(fd) != 0 && ok) {
        ok = false;
        saved = errno;
    }
    if (ok && rename(tmp, path) != 0) {
        ok = false;
        saved = errno;
    }
    if (!ok) {
        unlink(tmp);
        rc = fail(TLS_ERR_CONFIG, err, err_len, "writing ticket key file %s: %s", path,
                  strerror(saved));
        goto out;
    }
    const char *slash = strrchr(path, '/');
    if (slash == NULL) {
        sync_dir(".");
    } else {
        size_t dl = slash == path ? 1 : (size_t)(slash - path);
        if (dl < sizeof dir) {
            memcpy(dir, path, dl);
            dir[dl] = '\0';
            sync_dir(dir);
        }
    }
out:
    OPENSSL_cleanse(text, sizeof text);
    return rc;
}

/* Reads the file into cur/prev (ages converted to the monotonic clock);
 * with no file, TLS_OK and no live key. A file that others may read, or
 * that is not ours, is refused: the keys decrypt every ticket. */
static int keyfile_read(const char *path, ticket_key *cur, ticket_key *prev, char *err,
                        size_t err_len) {
    *cur = (ticket_key){0};
    *prev = (ticket_key){0};
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT) return TLS_OK;
    if (fd < 0)
        return fail(TLS_ERR_CONFIG, err, err_len, "ticket key file %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return fail(TLS_ERR_CONFIG, err, err_len, "ticket key file %s: not a regular file", path);
    }
    if ((st.st_mode & 077) != 0) {
        close(fd);
        return fail(TLS_ERR_CONFIG, err, err_len,
                    "ticket key file %s has mode %04o: group and others must have no access, "
                    "as the keys decrypt every session ticket (chmod 600 %s)",
                    path, (unsigned)(st.st_mode & 07777), path);
    }
    char text[KEYFILE_MAX + 1];
    size_t len = 0;
    ssize_t r = 0;
    while (len < sizeof text && (r = read(fd, text + len, sizeof text - len)) != 0) {
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) break;
        len += (size_t)r;
    }
    int saved = errno;
    close(fd);
    if (r < 0) {
        OPENSSL_cleanse(text, sizeof text);
        return fail(TLS_ERR_CONFIG, err, err_len, "ticket key file %s: %s", path,
                    strerror(saved));
    }
    bool ok = len < sizeof text;   /* a full buffer: too long to be ours */
    text[ok ? len : KEYFILE_MAX] = '\0';
    char *save = NULL, *line = strtok_r(text, "\n", &save);
    ok = ok && line != NULL && strcmp(line, KEYFILE_MAGIC) == 0;
    while (ok && (line = strtok_r(NULL, "\n", &save)) != NULL) {
        char kind[16];
        ticket_key k = {0};
        ok = key_line_parse(line, kind, &k);
        if (ok && strcmp(kind, "current") == 0 && !cur->live) *cur = k;
        else if (ok && strcmp(kind, "previous") == 0 && !prev->live) *prev = k;
        else ok = false;
        OPENSSL_cleanse(&k, sizeof k);
    }
    OPENSSL_cleanse(text, sizeof text);
    if (!ok || !cur->live) {
        OPENSSL_cleanse(cur, sizeof *cur);
        OPENSSL_cleanse(prev, sizeof *prev);
        return fail(TLS_ERR_CONFIG, err, err_len,
                    "ticket key file %s is not one this server wrote (remove it to start with "
                    "new ticket keys)",
                    path);
    }
    /* Wall clock to monotonic: born = now - age. */
    int64_t mono_now = mono_ms(), real_now = real_ms();
    ticket_key *keys[2] = {cur, prev};
    for (int i = 0; i < 2; i++) {
        if (!keys[i]->live) continue;
        int64_t age = real_now - keys[i]->born;
        if (age < -KEYFILE_FUTURE_SLACK_MS) OPENSSL_cleanse(keys[i], sizeof *keys[i]);
        else keys[i]->born = mono_now - (age < 0 ? 0 : age);
    }
    return TLS_OK;
}

/* Saves the current keys. The keys are copied under the key lock while the
 * file lock is held, so whichever thread writes last writes the newest. */
static int keys_save(tls_server *s, char *err, size_t err_len) {
    pthread_mutex_lock(&s->file_lock);
    pthread_mutex_lock(&s->lock);
    ticket_key cur = s->cur, prev = s->prev;
    pthread_mutex_unlock(&s->lock);
    int rc = keyfile_write(s->ticket_path, &cur, &prev, mono_ms(), real_ms(), err, err_len);
    OPENSSL_cleanse(&cur, sizeof cur);
    OPENSSL_cleanse(&prev, sizeof prev);
    pthread_mutex_unlock(&s->file_lock);
    return rc;
}

/* At start: the keys from the file when there is one (rotated if the
 * current one is a period old or more, i.e. the server was down that
 * long), else new ones; the file is written if anything changed. */
static int keys_init(tls_server *s, char *err, size_t err_len) {
    int64_t now = mono_ms();
    bool dirty = false;
    ticket_key cur = {0}, prev = {0};
    if (s->ticket_path != NULL) {
        int rc = keyfile_read(s->ticket_path, &cur, &prev, err, err_len);
        if (rc != TLS_OK) return rc;
    }
    if (!cur.live) {   /* no file, or its current key was dated in the future */
        dirty = true;
        if (!key_new(&s->cur, now))
            return fail(TLS_ERR_CONFIG, err, err_len, "ticket key: no randomness");
    } else {
        s->cur = cur;
        if (prev.live && now - prev.born < 2 * s->rotate_ms) s->prev = prev;
        else dirty = dirty || prev.live;   /* expired: drop it from the file too */
        dirty = keys_rotate_locked(s, now) || dirty;   /* no other thread yet */
    }
    OPENSSL_cleanse(&cur, sizeof cur);
    OPENSSL_cleanse(&prev, sizeof prev);
    if (s->ticket_path == NULL || !dirty) return TLS_OK;
    return keys_save(s, err, err_len);
}

/* Copies the key to use (enc) or the one named (dec) out of the lock.
 * Returns true when there is one (a name may be unknown or expired). A
 * rotation is written to the key file here, by the thread that made it:
 * once per period, a write and two fsyncs outside the key lock. If the
 * write fails the file keeps the older keys (tickets under the newer ones
 * then do not survive a restart), and the next rotation tries again. */
static bool keys_pick(tls_server *s, const uint8_t *name, ticket_key *out) {
    int64_t now = mono_ms();
    bool found = false;
    pthread_mutex_lock(&s->lock);
    bool rotated = keys_rotate_locked(s, now);
    if (name == NULL || memcmp(name, s->cur.name, 16) == 0) {
        *out = s->cur;
        found = true;
    } else if (s->prev.live && memcmp(name, s->prev.name, 16) == 0 &&
               now - s->prev.born < 2 * s->rotate_ms) {
        *out = s->prev;
        found = true;
    }
    pthread_mutex_unlock(&s->lock);
    if (rotated && s->ticket_path != NULL) (void)keys_save(s, NULL, 0);
    return found;
}

static int ticket_key_cb(SSL *ssl, unsigned char key_name[16], unsigned char *iv,
                         EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc) {
    tls_server *s = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    ticket_key k;
    /* Unknown or expired key: a full handshake (and a new ticket). */
    if (!keys_pick(s, enc ? NULL : key_name, &k)) return 0;
    /* Decrypting, 2 asks OpenSSL for a fresh ticket, always: TLS 1.3
     * clients use a ticket once (OpenSSL's drops it after resuming), so
     * without a new one every other connection would be a full handshake;
     * and a ticket under the previous key moves to the current one. */
    int rc = enc ? 1 : 2;
    char digest[] = "SHA256";
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, k.hmac, sizeof k.hmac),
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
        OSSL_PARAM_construct_end(),
    };
    if (enc) {
        memcpy(key_name, k.name, 16);
        if (RAND_bytes(iv, 16) != 1 ||
            EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k.aes, iv) != 1)
            rc = -1;
    } else if (EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k.aes, iv) != 1) {
        rc = -1;
    }
    if (rc > 0 && EVP_MAC_CTX_set_params(hctx, params) != 1) rc = -1;
    OPENSSL_cleanse(&k, sizeof k);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Server: contexts                                                          */

static int server_ctx_new(tls_server *s, SSL_CTX **out, char fp[65], char *err, size_t err_len) {
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) return fail(TLS_ERR_NOMEM, err, err_len, "SSL_CTX_new");
    int rc = TLS_ERR_CONFIG;
    uint8_t md[32];
    if (ctx_common(ctx) != 0) {
        rc = fail(TLS_ERR_CONFIG, err, err_len, "TLS settings");
        goto out;
    }
    SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE | SERVER_PSK_KE);
    /* Resumption is by stateless tickets only: no per-session server state. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)TLS_SID_CTX,
                                   sizeof TLS_SID_CTX - 1);
    SSL_CTX_set_timeout(ctx, (long)(2 * (uint64_t)s->rotate));
    /* One ticket per handshake (OpenSSL sends two by default): clients
     * keep the latest anyway. */
    SSL_CTX_set_num_tickets(ctx, 1);
    SSL_CTX_set_app_data(ctx, s);
    if (SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_key_cb) != 1) {
        rc = fail(TLS_ERR_CONFIG, err, err_len, "ticket key callback");
        goto out;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, s->cert_path) != 1) {
        rc = fail(TLS_ERR_CONFIG, err, err_len, "certificate %s", s->cert_path);
        goto out;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, s->key_path, SSL_FILETYPE_PEM) != 1) {
        bool mismatch = ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH;
        rc = mismatch ? fail(TLS_ERR_CONFIG, err, err_len, "%s does not match %s", s->key_path,
                             s->cert_path)
                      : fail(TLS_ERR_CONFIG, err, err_len, "private key %s", s->key_path);
        goto out;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        rc = fail(TLS_ERR_CONFIG, err, err_len, "%s does not match %s", s->key_path,
                  s->cert_path);
        goto out;
    }
    if (!cert_digest(SSL_CTX_get0_certificate(ctx), md)) {
        rc = fail(TLS_ERR_CONFIG, err, err_len, "certificate digest");
        goto out;
    }
    hex_encode(md, sizeof md, fp);
    ERR_clear_error();   /* the PEM readers leave end-of-file notes behind */
    *out = ctx;
    return TLS_OK;
out:
    SSL_CTX_free(ctx);
    return rc;
}

int tls_server_create(const char *cert_path, const char *key_path, unsigned ticket_rotate_seconds,
                      const char *ticket_key_path, tls_server **out, char *err, size_t err_len) {
    *out = NULL;
    if (cert_path == NULL || key_path == NULL)
        return fail(TLS_ERR_CONFIG, err, err_len, "certificate and key paths are required");
    tls_server *s = calloc(1, sizeof *s);
    if (s == NULL) return fail(TLS_ERR_NOMEM, err, err_len, "tls_server");
    s->rotate = ticket_rotate_seconds ? ticket_rotate_seconds : TLS_DEFAULT_ROTATE;
    s->rotate_ms = (int64_t)s->rotate * 1000;
    s->cert_path = strdup(cert_path);
    s->key_path = strdup(key_path);
    s->ticket_path = ticket_key_path != NULL ? strdup(ticket_key_path) : NULL;
    s->bio_method = queue_bio_method();
    bool locks = false;
    if (pthread_mutex_init(&s->lock, NULL) == 0) {
        locks = pthread_mutex_init(&s->file_lock, NULL) == 0;
        if (!locks) pthread_mutex_destroy(&s->lock);
    }
    if (s->cert_path == NULL || s->key_path == NULL || s->bio_method == NULL || !locks ||
        (ticket_key_path != NULL && s->ticket_path == NULL)) {
        if (locks) {
            pthread_mutex_destroy(&s->lock);
            pthread_mutex_destroy(&s->file_lock);
        }
        BIO_meth_free(s->bio_method);
        free(s->cert_path);
        free(s->key_path);
        free(s->ticket_path);
        free(s);
        return fail(TLS_ERR_NOMEM, err, err_len, "tls_server");
    }
    int rc = server_ctx_new(s, &s->ctx, s->fingerprint, err, err_len);
    if (rc == TLS_OK) rc = keys_init(s, err, err_len);
    if (rc != TLS_OK) {
        tls_server_free(s);
        return rc;
    }
    *out = s;
    return TLS_OK;
}

int tls_server_reload(tls_server *s, char *err, size_t err_len) {
    SSL_CTX *fresh = NULL, *old;
    char fp[65];
    int rc = server_ctx_new(s, &fresh, fp, err, err_len);
    if (rc != TLS_OK) return rc;
    pthread_mutex_lock(&s->lock);
    old = s->ctx;
    s->ctx = fresh;
    memcpy(s->fingerprint, fp, sizeof fp);
    pthread_mutex_unlock(&s->lock);
    SSL_CTX_free(old);   /* only the server's reference: live SSLs keep theirs */
    return TLS_OK;
}

void tls_server_free(tls_server *s) {
    if (s == NULL) return;
    SSL_CTX_free(s->ctx);
    BIO_meth_free(s->bio_method);
    OPENSSL_cleanse(&s->cur, sizeof s->cur);
    OPENSSL_cleanse(&s->prev, sizeof s->prev);
    pthread_mutex_destroy(&s->lock);
    pthread_mutex_destroy(&s->file_lock);
    free(s->cert_path);
    free(s->key_path);
    free(s->ticket_path);
    free(s);
}

void tls_server_fingerprint(tls_server *s, char fingerprint_hex[65]) {
    pthread_mutex_lock(&s->lock);
    memcpy(fingerprint_hex, s->fingerprint, 65);
    pthread_mutex_unlock(&s->lock);
}

/* ------------------------------------------------------------------------ */
/* Fingerprints and the self-signed certificate                              */

int tls_cert_fingerprint(const char *cert_path, char fingerprint_hex[65]) {
    FILE *f = fopen(cert_path, "r");
    if (f == NULL) return TLS_ERR_CONFIG;
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    uint8_t md[32];
    bool ok = cert_digest(x, md);
    X509_free(x);
    ERR_clear_error();
    if (!ok) return TLS_ERR_CONFIG;
    hex_encode(md, sizeof md, fingerprint_hex);
    return TLS_OK;
}

static bool add_ext(X509 *x, int nid, const char *value) {
    X509V3_CTX v3;
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
    bool ok = ext != NULL && X509_add_ext(x, ext, -1) == 1;
    X509_EXTENSION_free(ext);
    return ok;
}

static bool set_random_serial(X509 *x) {
    uint8_t raw[16];
    if (RAND_bytes(raw, sizeof raw) != 1) return false;
    raw[0] &= 0x7f;   /* positive, and 16 bytes fit the 20 allowed */
    raw[0] |= 0x40;   /* no leading zero byte to strip */
    BIGNUM *bn = BN_bin2bn(raw, sizeof raw, NULL);
    bool ok = bn != NULL && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL;
    BN_free(bn);
    return ok;
}

/* CN=localhost, valid from an hour ago (clock skew) for 10 years. No
 * keyUsage: OpenSSL treats a self-signed certificate whose keyUsage lacks
 * keyCertSign as not self-signed, and clients then cannot anchor it. */
static X509 *self_signed_new(EVP_PKEY *pkey) {
    X509 *x = X509_new();
    if (x == NULL) return NULL;
    X509_NAME *name = X509_get_subject_name(x);
    bool ok = X509_set_version(x, X509_VERSION_3) == 1 && set_random_serial(x) &&
              X509_gmtime_adj(X509_getm_notBefore(x), -3600) != NULL &&
              X509_time_adj_ex(X509_getm_notAfter(x), 3650, 0, NULL) != NULL &&
              X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                         (const unsigned char *)"localhost", -1, -1, 0) == 1 &&
              X509_set_issuer_name(x, name) == 1 && X509_set_pubkey(x, pkey) == 1 &&
              add_ext(x, NID_basic_constraints, "critical,CA:FALSE") &&
              add_ext(x, NID_ext_key_usage, "serverAuth") &&
              add_ext(x, NID_subject_key_identifier, "hash") &&
              add_ext(x, NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1,IP:::1") &&
              X509_sign(x, pkey, EVP_sha256()) > 0;
    if (!ok) {
        X509_free(x);
        return NULL;
    }
    return x;
}

/* A temporary file next to `path`, written and synced, not yet renamed:
 * the caller renames both files only once both are complete. */
static int write_temp(const char *path, mode_t mode, EVP_PKEY *pkey, X509 *x, char *tmp,
                      size_t tmp_cap) {
    if ((size_t)snprintf(tmp, tmp_cap, "%s.tmpXXXXXX", path) >= tmp_cap) return -1;
    int fd = mkstemp(tmp);   /* created 0600, so the key is never readable by others */
    if (fd < 0) return -1;
    FILE *f = fdopen(fd, "w");
    if (f == NULL) {
        close(fd);
        unlink(tmp);
        return -1;
    }
    bool ok = fchmod(fd, mode) == 0 &&
              (pkey != NULL ? PEM_write_PrivateKey(f, pkey, NULL, NULL, 0, NULL, NULL)
                            : PEM_write_X509(f, x)) == 1 &&
              fflush(f) == 0 && fsync(fd) == 0;
    if (fclose(f) != 0) ok = false;
    if (!ok) unlink(tmp);
    return ok ? 0 : -1;
}

static void sync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return;
    (void)fsync(fd);
    close(fd);
}

static int generate_pair(const char *dir, const char *cert_path, const char *key_path,
                         char *err, size_t err_len) {
    EVP_PKEY *pkey = EVP_EC_gen("P-256");
    X509 *x = pkey != NULL ? self_signed_new(pkey) : NULL;
    if (x == NULL) {
        EVP_PKEY_free(pkey);
        return fail(TLS_ERR_CONFIG, err, err_len, "generating the self-signed certificate");
    }
    char key_tmp[PATH_MAX], cert_tmp[PATH_MAX];
    int rc = TLS_OK;
    if (write_temp(key_path, 0600, pkey, NULL, key_tmp, sizeof key_tmp) != 0) {
        rc = fail(TLS_ERR_CONFIG, err, err_len, "writing %s: %s", key_path, strerror(errno));
    } else if (write_temp(cert_path, 0644, NULL, x, cert_tmp, sizeof cert_tmp) != 0) {
        rc = fail(TLS_ERR_CONFIG, err, err_len, "writing %s: %s", cert_path, strerror(errno));
        unlink(key_tmp);
    } else if (rename(key_tmp, key_path) != 0 || rename(cert_tmp, cert_path) != 0) {
        rc = fail(TLS_ERR_CONFIG, err, err_len, "renaming into %s: %s", dir, strerror(errno));
        unlink(key_tmp);
        unlink(cert_tmp);
    } else {
        sync_dir(dir);
    }
    X509_free(x);
    EVP_PKEY_free(pkey);
    ERR_clear_error();
    return rc;
}

int tls_ensure_self_signed(const char *dir, char *cert_path, char *key_path, size_t path_cap,
                           char fingerprint_hex[65], char *err, size_t err_len) {
    if ((size_t)snprintf(cert_path, path_cap, "%s/tls.crt", dir) >= path_cap ||
        (size_t)snprintf(key_path, path_cap, "%s/tls.key", dir) >= path_cap)
        return fail(TLS_ERR_CONFIG, err, err_len, "path too long for %s", dir);
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return fail(TLS_ERR_CONFIG, err, err_len, "creating %s: %s", dir, strerror(errno));
    if (access(cert_path, F_OK) != 0 || access(key_path, F_OK) != 0) {
        int rc = generate_pair(dir, cert_path, key_path, err, err_len);
        if (rc != TLS_OK) return rc;
    }
    if (tls_cert_fingerprint(cert_path, fingerprint_hex) != TLS_OK)
        return fail(TLS_ERR_CONFIG, err, err_len, "%s is not a PEM certificate", cert_path);
    return TLS_OK;
}

/* ------------------------------------------------------------------------ */
/* Client contexts and their session cache                                   */

typedef struct cached_session {
    char *name;
    SSL_SESSION *sess;
    uint64_t stamp;   /* for replacing the least recently stored */
} cached_session;

struct tls_client {
    SSL_CTX *ctx;
    BIO_METHOD *bio_method;
    bool pinned;
    uint8_t pin[32];
    pthread_mutex_t lock;   /* guards sessions and clock */
    cached_session sessions[TLS_CLIENT_SESSIONS];
    uint64_t clock;
};

static cached_session *cache_find_locked(tls_client *cl, const char *name) {
    for (size_t i = 0; i < TLS_CLIENT_SESSIONS; i++)
        if (cl->sessions[i].name != NULL && strcmp(cl->sessions[i].name, name) == 0)
            return &cl->sessions[i];
    return NULL;
}

static void cache_clear_slot(cached_session *e) {
    SSL_SESSION_free(e->sess);
    free(e->name);
    *e = (cached_session){0};
}

/* new_session_cb: keeps the newest session for the connection's name. */
static int on_new_session(SSL *ssl, SSL_SESSION *sess) {
    tls_conn *c = SSL_get_app_data(ssl);
    tls_client *cl = c->client;
    int kept = 0;
    pthread_mutex_lock(&cl->lock);
    cached_session *e = cache_find_locked(cl, c->name);
    if (e == NULL) {
        e = &cl->sessions[0];
        for (size_t i = 1; i < TLS_CLIENT_SESSIONS && e->name != NULL; i++)
            if (cl->sessions[i].name == NULL || cl->sessions[i].stamp < e->stamp)
                e = &cl->sessions[i];
        cache_clear_slot(e);
        e->name = strdup(c->name);
    }
    if (e->name != NULL) {
        SSL_SESSION_free(e->sess);
        e->sess = sess;
        e->stamp = ++cl->clock;
        kept = 1;   /* the reference is ours now */
    }
    pthread_mutex_unlock(&cl->lock);
    return kept;
}

static void cache_forget(tls_client *cl, const char *name) {
    pthread_mutex_lock(&cl->lock);
    cached_session *e = cache_find_locked(cl, name);
    if (e != NULL) cache_clear_slot(e);
    pthread_mutex_unlock(&cl->lock);
}

/* Replaces chain verification when pinning: the leaf's SHA-256 decides,
 * whatever its issuer, name or dates (the point of pinning a self-signed
 * certificate). OpenSSL still checks the server's signature with that key. */
static int pin_verify(X509_STORE_CTX *sctx, void *arg) {
    const tls_client *cl = arg;
    uint8_t md[32];
    if (cert_digest(X509_STORE_CTX_get0_cert(sctx), md) &&
        CRYPTO_memcmp(md, cl->pin, sizeof md) == 0) {
        X509_STORE_CTX_set_error(sctx, X509_V_OK);
        return 1;
    }
    X509_STORE_CTX_set_error(sctx, X509_V_ERR_CERT_REJECTED);
    return 0;
}

static int client_ctx_trust(tls_client *cl, const char *ca_path, const char *pin, char *err,
                            size_t err_len) {
    SSL_CTX_set_verify(cl->ctx, SSL_VERIFY_PEER, NULL);
    if (pin != NULL) {
        if (!hex_decode(pin, cl->pin, sizeof cl->pin))
            return fail(TLS_ERR_CONFIG, err, err_len, "pin: want 64 hex digits (SHA-256)");
        cl->pinned = true;
        SSL_CTX_set_cert_verify_callback(cl->ctx, pin_verify, cl);
        return TLS_OK;
    }
    if (ca_path != NULL) {
        if (SSL_CTX_load_verify_file(cl->ctx, ca_path) != 1)
            return fail(TLS_ERR_CONFIG, err, err_len, "CA file %s", ca_path);
    } else if (SSL_CTX_set_default_verify_paths(cl->ctx) != 1) {
        return fail(TLS_ERR_CONFIG, err, err_len, "system trust store");
    }
    return TLS_OK;
}

int tls_client_create(const char *ca_path, const char *pin_sha256_hex, tls_client **out, char *err,
                      size_t err_len) {
    *out = NULL;
    tls_client *cl = calloc(1, sizeof *cl);
    if (cl == NULL) return fail(TLS_ERR_NOMEM, err, err_len, "tls_client");
    if (pthread_mutex_init(&cl->lock, NULL) != 0) {
        free(cl);
        return fail(TLS_ERR_NOMEM, err, err_len, "tls_client");
    }
    cl->ctx = SSL_CTX_new(TLS_client_method());
    cl->bio_method = queue_bio_method();
    int rc = TLS_OK;
    if (cl->ctx == NULL || cl->bio_method == NULL) {
        rc = fail(TLS_ERR_NOMEM, err, err_len, "tls_client");
    } else if (ctx_common(cl->ctx) != 0) {
        rc = fail(TLS_ERR_CONFIG, err, err_len, "TLS settings");
    } else {
        /* Sessions go to our own per-name cache, not OpenSSL's (which is
         * keyed by session id and useless to a client). */
        SSL_CTX_set_session_cache_mode(cl->ctx,
                                       SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
        SSL_CTX_set_options(cl->ctx, CLIENT_PSK_KE);   /* see SERVER_PSK_KE */
        SSL_CTX_sess_set_new_cb(cl->ctx, on_new_session);
        rc = client_ctx_trust(cl, ca_path, pin_sha256_hex, err, err_len);
    }
    ERR_clear_error();
    if (rc != TLS_OK) {
        tls_client_free(cl);
        return rc;
    }
    *out = cl;
    return TLS_OK;
}

void tls_client_free(tls_client *cl) {
    if (cl == NULL) return;
    for (size_t i = 0; i < TLS_CLIENT_SESSIONS; i++) cache_clear_slot(&cl->sessions[i]);
    SSL_CTX_free(cl->ctx);
    BIO_meth_free(cl->bio_method);
    pthread_mutex_destroy(&cl->lock);
    free(cl);
}

/* ------------------------------------------------------------------------ */
/* Connections                                                               */

/* Maps the outcome of an SSL call that did not succeed. WANT_READ is the
 * normal "feed more"; anything else is recorded for tls_conn_error. The
 * error queue is cleared either way: it is per thread, and the next
 * connection served by this thread must start clean. */
static int conn_status(tls_conn *c, int ret) {
    int e = SSL_get_error(c->ssl, ret);
    unsigned long code = ERR_peek_last_error();
    int rc;
    switch (e) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        rc = TLS_WANT_MORE;
        break;
    case SSL_ERROR_ZERO_RETURN:
        rc = TLS_ERR_CLOSED;
        break;
    default:
        if (c->oom || ERR_GET_REASON(code) == ERR_R_MALLOC_FAILURE)
            rc = TLS_ERR_NOMEM;
        else if (c->client != NULL && SSL_get_verify_result(c->ssl) != X509_V_OK)
            rc = TLS_ERR_VERIFY;
        else if (!c->established)
            rc = TLS_ERR_HANDSHAKE;
        else
            rc = TLS_ERR_PROTOCOL;
        break;
    }
    if (rc < 0 && rc != TLS_ERR_CLOSED) {
        c->ssl_err = code;
        c->failed = true;
        /* A session that failed to resume must not be offered again. */
        if (c->client != NULL && !c->established) cache_forget(c->client, c->name);
    }
    ERR_clear_error();
    return rc;
}

static tls_conn *conn_new(SSL_CTX *ctx, BIO_METHOD *method) {
    tls_conn *c = calloc(1, sizeof *c);
    if (c == NULL) return NULL;
    c->ssl = SSL_new(ctx);
    BIO *bio = BIO_new(method);
    if (c->ssl == NULL || bio == NULL) {
        BIO_free(bio);
        SSL_free(c->ssl);
        free(c);
        return NULL;
    }
    BIO_set_data(bio, c);
    SSL_set_bio(c->ssl, bio, bio);   /* one BIO both ways; the SSL owns it */
    SSL_set_app_data(c->ssl, c);
    return c;
}

tls_conn *tls_conn_server(tls_server *s) {
    /* A reference of our own across SSL_new, so that a reload on another
     * thread cannot free the context between reading the pointer and
     * SSL_new taking the SSL's reference. */
    pthread_mutex_lock(&s->lock);
    SSL_CTX *ctx = s->ctx;
    SSL_CTX_up_ref(ctx);
    pthread_mutex_unlock(&s->lock);
    tls_conn *c = conn_new(ctx, s->bio_method);
    SSL_CTX_free(ctx);
    if (c != NULL) SSL_set_accept_state(c->ssl);
    ERR_clear_error();
    return c;
}

static bool is_ip_literal(const char *name) {
    unsigned char buf[16];
    return inet_pton(AF_INET, name, buf) == 1 || inet_pton(AF_INET6, name, buf) == 1;
}

/* SNI (never for an IP literal: RFC 6066 §3), the name to check the
 * certificate against, and the cached session for that name. */
static bool client_setup(tls_conn *c, const char *server_name) {
    tls_client *cl = c->client;
    bool ip = server_name != NULL && is_ip_literal(server_name);
    if (server_name != NULL && !ip && SSL_set_tlsext_host_name(c->ssl, server_name) != 1)
        return false;
    if (!cl->pinned) {
        if (server_name == NULL) return false;   /* would accept any name */
        X509_VERIFY_PARAM *param = SSL_get0_param(c->ssl);
        if (ip ? X509_VERIFY_PARAM_set1_ip_asc(param, server_name) != 1
               : SSL_set1_host(c->ssl, server_name) != 1)
            return false;
    }
    pthread_mutex_lock(&cl->lock);
    cached_session *e = cache_find_locked(cl, c->name);
    bool ok = e == NULL || !SSL_SESSION_is_resumable(e->sess) ||
              SSL_set_session(c->ssl, e->sess) == 1;
    pthread_mutex_unlock(&cl->lock);
    return ok;
}

tls_conn *tls_conn_client(tls_client *cl, const char *server_name) {
    tls_conn *c = conn_new(cl->ctx, cl->bio_method);
    if (c == NULL) return NULL;
    c->client = cl;
    c->name = strdup(server_name != NULL ? server_name : "");
    if (c->name == NULL || !client_setup(c, server_name)) {
        tls_conn_free(c);
        ERR_clear_error();
        return NULL;
    }
    SSL_set_connect_state(c->ssl);
    /* Writes the ClientHello now, so that it is waiting in tls_pending(). */
    int r = SSL_do_handshake(c->ssl);
    if (r != 1 && conn_status(c, r) != TLS_WANT_MORE) {
        tls_conn_free(c);
        return NULL;
    }
    return c;
}

void tls_conn_free(tls_conn *c) {
    if (c == NULL) return;
    /* SSL_free marks the session of a connection closed without
     * close_notify as not resumable, and that session may be the one in
     * the client's cache. A socket closed abruptly says nothing against the
     * session (and a fatal TLS error has already invalidated it). */
    if (c->established && !c->failed) SSL_set_shutdown(c->ssl, SSL_SENT_SHUTDOWN);
    SSL_free(c->ssl);
    free(c->in.buf);
    free(c->out.buf);
    free(c->name);
    free(c);
}

int tls_feed(tls_conn *c, const uint8_t *in, size_t len) {
    if (!queue_push(&c->in, in, len)) return TLS_ERR_NOMEM;
    return TLS_OK;
}

int tls_read(tls_conn *c, uint8_t *out, size_t cap, size_t *n) {
    *n = 0;
    ERR_clear_error();
    if (!c->established) {
        int r = SSL_do_handshake(c->ssl);
        if (r != 1) return conn_status(c, r);
        c->established = true;
    }
    if (cap == 0) return TLS_WANT_MORE;
    int r = SSL_read_ex(c->ssl, out, cap, n);
    if (r == 1) return TLS_OK;
    *n = 0;
    return conn_status(c, r);
}

int tls_write(tls_conn *c, const uint8_t *in, size_t len) {
    if (!SSL_is_init_finished(c->ssl)) return TLS_ERR_PROTOCOL;
    ERR_clear_error();
    while (len > 0) {
        size_t done = 0;
        int r = SSL_write_ex(c->ssl, in, len, &done);
        if (r != 1) {
            int rc = conn_status(c, r);
            /* The queue never refuses bytes, so "want" here is a broken state. */
            return rc == TLS_WANT_MORE ? TLS_ERR_PROTOCOL : rc;
        }
        in += done;
        len -= done;
    }
    return TLS_OK;
}

size_t tls_pending(const tls_conn *c) {
    return c->out.len;
}

size_t tls_take(tls_conn *c, uint8_t *out, size_t cap) {
    return queue_pop(&c->out, out, cap);
}

void tls_shutdown(tls_conn *c) {
    /* During the handshake OpenSSL refuses (and queues an error): the
     * caller simply closes the socket then. */
    if (SSL_is_init_finished(c->ssl)) (void)SSL_shutdown(c->ssl);
    ERR_clear_error();
}

bool tls_handshake_done(const tls_conn *c) {
    return c->established;
}

bool tls_resumed(const tls_conn *c) {
    return SSL_session_reused(c->ssl) == 1;
}

const char *tls_version(const tls_conn *c) {
    return SSL_get_version(c->ssl);
}

void tls_conn_error(const tls_conn *c, char *err, size_t err_len) {
    if (err == NULL || err_len == 0) return;
    char why[256] = "no error";
    if (c->ssl_err != 0) ERR_error_string_n(c->ssl_err, why, sizeof why);
    long v = c->client != NULL ? SSL_get_verify_result(c->ssl) : X509_V_OK;
    if (v != X509_V_OK)
        snprintf(err, err_len, "%s (%s)", why, X509_verify_cert_error_string(v));
    else
        snprintf(err, err_len, "%s", why);
}
