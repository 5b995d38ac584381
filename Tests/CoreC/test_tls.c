/*
 * test_tls.c — unit test of the transport's TLS layer (CSources/AegisIO/src/tls.c).
 *
 * Build and run (from the repository root):
 *   cc -std=gnu17 -g -O1 -fsanitize=address,undefined -fno-sanitize-recover=all \
 *      -I CSources/AegisCore/include -I CSources/AegisIO/src -I Tests/CoreC \
 *      CSources/AegisIO/src/tls.c CSources/AegisCore/src/status.c Tests/CoreC/test_tls.c \
 *      -lssl -lcrypto -o /tmp/test_tls && /tmp/test_tls
 * (build it once more without the sanitizer, -O2, for meaningful memory and
 * timing figures).
 *
 * Everything runs in memory: a client tls_conn and a server tls_conn are
 * wired together by copying tls_take() of one into tls_feed() of the other,
 * no socket anywhere. Certificates (and ticket key files) are generated
 * into a mkdtemp directory. A raw OpenSSL client (capped at TLS 1.2, or at
 * 1.1) covers what our own client never does, and a ClientHello built by
 * hand offers a ticket with psk_ke alone, which no OpenSSL 3.0 client can
 * be made to send. The figures printed at the end (heap per idle
 * connection, handshake cost) are measurements, not assertions.
 */
#include <dirent.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

#include "check.h"
#include "tls.h"

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifdef UNDER_ASAN
size_t __sanitizer_get_current_allocated_bytes(void);
#endif

static char dir[] = "/tmp/aegis-tls-XXXXXX";
static double now_us(void);
static char err[512];

/* ------------------------------------------------------------------------ */
/* Wiring                                                                    */

/* Moves every pending ciphertext byte from one end to the other, in pieces
 * of `piece` bytes so that records arrive split. Returns bytes moved. */
static size_t transfer(tls_conn *from, tls_conn *to, size_t piece) {
    uint8_t buf[4096];
    size_t total = 0, n;
    if (piece == 0 || piece > sizeof buf) piece = sizeof buf;
    while ((n = tls_take(from, buf, piece)) > 0) {
        CHECK_EQ_INT(tls_feed(to, buf, n), TLS_OK);
        total += n;
    }
    return total;
}

/* Drives one end: reads until it wants more. Plaintext during the
 * handshake is not expected (counted as a failure). */
static int drive(tls_conn *c) {
    uint8_t buf[512];
    size_t n;
    int rc;
    while ((rc = tls_read(c, buf, sizeof buf, &n)) == TLS_OK) CHECK(n == 0);
    return rc;
}

typedef struct hs_result {
    int client, server;   /* last status of each side */
} hs_result;

/* Time spent in the server's calls, for the handshake figures. */
static double server_us;
static bool echo_after_connect = true;

/* Pumps until both ends are done and nothing moves (so the client has read
 * the server's NewSessionTicket too), or until one end fails. */
static hs_result handshake(tls_conn *cli, tls_conn *srv) {
    hs_result r = {TLS_WANT_MORE, TLS_WANT_MORE};
    for (int round = 0; round < 20; round++) {
        size_t moved = transfer(cli, srv, 0);
        double t = now_us();
        r.server = drive(srv);
        server_us += now_us() - t;
        moved += transfer(srv, cli, 0);
        r.client = drive(cli);
        if (r.client < 0 || r.server < 0) {
            /* Let the alert reach the other side, as a real loop would. */
            transfer(srv, cli, 0);
            transfer(cli, srv, 0);
            return r;
        }
        if (moved == 0 && tls_handshake_done(cli) && tls_handshake_done(srv) &&
            tls_pending(cli) == 0 && tls_pending(srv) == 0)
            return r;
    }
    return r;
}

static bool handshake_ok(tls_conn *cli, tls_conn *srv) {
    hs_result r = handshake(cli, srv);
    return r.client == TLS_WANT_MORE && r.server == TLS_WANT_MORE && tls_handshake_done(cli) &&
           tls_handshake_done(srv);
}

/* Sends len bytes from one end to the other: written in `wchunk` pieces,
 * moved in `piece`-byte pieces, read with buffers of `rcap` bytes. Returns
 * true when exactly the same bytes came out. */
static bool send_all(tls_conn *from, tls_conn *to, const uint8_t *data, size_t len, size_t wchunk,
                     size_t piece, size_t rcap) {
    uint8_t *got = malloc(len + 1), *rbuf = malloc(rcap);
    size_t have = 0, off = 0;
    bool ok = got != NULL && rbuf != NULL;
    while (ok && (off < len || tls_pending(from) > 0)) {
        size_t w = len - off < wchunk ? len - off : wchunk;
        if (w > 0 && tls_write(from, data + off, w) != TLS_OK) ok = false;
        off += w;
        transfer(from, to, piece);
        size_t n;
        int rc;
        while (ok && (rc = tls_read(to, rbuf, rcap, &n)) == TLS_OK) {
            if (have + n > len) ok = false;
            else memcpy(got + have, rbuf, n);
            have += n;
        }
        if (ok && rc != TLS_WANT_MORE) ok = false;
        transfer(to, from, 0);   /* e.g. a KeyUpdate reply: none expected */
    }
    ok = ok && have == len && memcmp(got, data, len) == 0;
    free(got);
    free(rbuf);
    return ok;
}

static void fill(uint8_t *p, size_t n, uint32_t seed) {
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        p[i] = (uint8_t)(seed >> 16);
    }
}

static char *path_in(const char *sub, const char *file) {
    static char bufs[8][512];
    static int next;
    char *p = bufs[next++ % 8];
    snprintf(p, sizeof bufs[0], "%s/%s%s%s", dir, sub, *sub ? "/" : "", file);
    return p;
}

static bool copy_file(const char *from, const char *to) {
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp", to);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);   /* keys too: never world-readable */
    FILE *in = fopen(from, "rb"), *out = fd >= 0 ? fdopen(fd, "wb") : NULL;
    bool ok = in != NULL && out != NULL;
    char buf[4096];
    size_t n;
    while (ok && (n = fread(buf, 1, sizeof buf, in)) > 0) ok = fwrite(buf, 1, n, out) == n;
    if (in) fclose(in);
    if (out && fclose(out) != 0) ok = false;
    return ok && rename(tmp, to) == 0;
}

static void remove_tree(const char *path) {
    DIR *d = opendir(path);
    if (d == NULL) {
        unlink(path);
        return;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        char sub[1024];
        snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
        remove_tree(sub);
    }
    closedir(d);
    rmdir(path);
}

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, size_t n) {
    qsort(v, n, sizeof *v, cmp_double);
    return v[n / 2];
}

static size_t heap_in_use(void) {
#ifdef UNDER_ASAN
    return __sanitizer_get_current_allocated_bytes();
#else
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
#endif
}

/* ------------------------------------------------------------------------ */
/* Fixtures: two self-signed pairs, and a server directory to reload        */

static char fp1[65], fp2[65];
static char crt1[512], key1[512], crt2[512], key2[512];

static void test_self_signed(void) {
    char fp_again[65], c2[512], k2[512];
    CHECK_EQ_INT(tls_ensure_self_signed(path_in("", "one"), crt1, key1, sizeof crt1, fp1, err,
                                        sizeof err),
                 TLS_OK);
    CHECK_EQ_INT(strlen(fp1), 64);
    for (size_t i = 0; i < 64; i++) CHECK(strchr("0123456789abcdef", fp1[i]) != NULL);

    struct stat st_key, st_crt, st_dir;
    CHECK(stat(key1, &st_key) == 0 && (st_key.st_mode & 0777) == 0600);
    CHECK(stat(crt1, &st_crt) == 0);
    CHECK(stat(path_in("", "one"), &st_dir) == 0 && (st_dir.st_mode & 0777) == 0700);

    /* Idempotent: the same files (same inodes) and fingerprint. */
    CHECK_EQ_INT(tls_ensure_self_signed(path_in("", "one"), c2, k2, sizeof c2, fp_again, err,
                                        sizeof err),
                 TLS_OK);
    CHECK(strcmp(fp_again, fp1) == 0);
    CHECK(strcmp(c2, crt1) == 0 && strcmp(k2, key1) == 0);
    struct stat st_key2, st_crt2;
    CHECK(stat(key1, &st_key2) == 0 && st_key2.st_ino == st_key.st_ino);
    CHECK(stat(crt1, &st_crt2) == 0 && st_crt2.st_ino == st_crt.st_ino);

    char fp_file[65];
    CHECK_EQ_INT(tls_cert_fingerprint(crt1, fp_file), TLS_OK);
    CHECK(strcmp(fp_file, fp1) == 0);
    CHECK_EQ_INT(tls_cert_fingerprint(key1, fp_file), TLS_ERR_CONFIG);
    CHECK_EQ_INT(tls_cert_fingerprint(path_in("", "missing.crt"), fp_file), TLS_ERR_CONFIG);
    CHECK(ERR_peek_error() == 0);

    /* With only the key left, both are made anew. */
    CHECK_EQ_INT(tls_ensure_self_signed(path_in("", "two"), crt2, key2, sizeof crt2, fp2, err,
                                        sizeof err),
                 TLS_OK);
    CHECK(strcmp(fp1, fp2) != 0);
    char fp3[65];
    CHECK(unlink(crt2) == 0);
    CHECK_EQ_INT(tls_ensure_self_signed(path_in("", "two"), crt2, key2, sizeof crt2, fp3, err,
                                        sizeof err),
                 TLS_OK);
    CHECK(strcmp(fp3, fp2) != 0);
    memcpy(fp2, fp3, sizeof fp2);

    /* A path that does not fit the caller's buffers. */
    char small_c[8], small_k[8];
    CHECK_EQ_INT(tls_ensure_self_signed(dir, small_c, small_k, sizeof small_c, fp3, err,
                                        sizeof err),
                 TLS_ERR_CONFIG);
}

static void test_config_errors(void) {
    tls_server *s = NULL;
    CHECK_EQ_INT(tls_server_create(path_in("", "nope.crt"), key1, 0, NULL, &s, err, sizeof err),
                 TLS_ERR_CONFIG);
    CHECK(s == NULL && strstr(err, "nope.crt") != NULL);
    CHECK_EQ_INT(tls_server_create(crt1, key2, 0, NULL, &s, err, sizeof err), TLS_ERR_CONFIG);
    CHECK(s == NULL && strstr(err, "does not match") != NULL);
    /* err is optional */
    CHECK_EQ_INT(tls_server_create(crt1, key1, 0, NULL, &s, NULL, 0), TLS_OK);
    tls_server_free(s);

    tls_client *c = NULL;
    CHECK_EQ_INT(tls_client_create(NULL, "abcd", &c, err, sizeof err), TLS_ERR_CONFIG);
    CHECK_EQ_INT(tls_client_create(path_in("", "nope.crt"), NULL, &c, err, sizeof err),
                 TLS_ERR_CONFIG);
    CHECK(c == NULL);
    /* The system store, and a name is then required. */
    CHECK_EQ_INT(tls_client_create(NULL, NULL, &c, err, sizeof err), TLS_OK);
    CHECK(tls_conn_client(c, NULL) == NULL);
    tls_client_free(c);
    CHECK(ERR_peek_error() == 0);
}

/* ------------------------------------------------------------------------ */
/* Handshakes, data, resumption, reload                                       */

static void test_handshake_and_data(tls_server *srv, tls_client *cli) {
    tls_conn *c = tls_conn_client(cli, "localhost"), *s = tls_conn_server(srv);
    CHECK(c != NULL && s != NULL);
    CHECK(tls_pending(c) > 0);   /* the ClientHello */
    uint8_t early[4] = "abc";
    CHECK_EQ_INT(tls_write(c, early, 3), TLS_ERR_PROTOCOL);
    CHECK(handshake_ok(c, s));
    CHECK(strcmp(tls_version(c), "TLSv1.3") == 0 && strcmp(tls_version(s), "TLSv1.3") == 0);
    CHECK(!tls_resumed(c) && !tls_resumed(s));

    static const uint8_t hello[] = "hello, gateway";
    CHECK(send_all(c, s, hello, sizeof hello, 1 << 20, 0, 4096));
    CHECK(send_all(s, c, hello, sizeof hello, 1 << 20, 1, 3));   /* byte by byte, tiny reads */

    size_t big = 1 << 20;
    uint8_t *data = malloc(big);
    fill(data, big, 42);
    CHECK(send_all(c, s, data, big, 16384, 4096, 16384));
    CHECK(send_all(s, c, data, big, 100000, 1000, 7001));
    CHECK(send_all(c, s, data, big, big, 4096, 65536));   /* one 1 MiB write */
    CHECK(tls_pending(c) == 0 && tls_pending(s) == 0);
    free(data);

    /* close_notify: the peer reads CLOSED (again, if it asks again). */
    tls_shutdown(c);
    CHECK(tls_pending(c) > 0);
    transfer(c, s, 0);
    size_t n = 1;
    uint8_t buf[64];
    CHECK_EQ_INT(tls_read(s, buf, sizeof buf, &n), TLS_ERR_CLOSED);
    CHECK_EQ_INT(n, 0);
    CHECK_EQ_INT(tls_read(s, buf, sizeof buf, &n), TLS_ERR_CLOSED);
    tls_shutdown(s);   /* the reply */
    transfer(s, c, 0);
    CHECK_EQ_INT(tls_read(c, buf, sizeof buf, &n), TLS_ERR_CLOSED);
    CHECK_EQ_INT(tls_write(c, hello, sizeof hello), TLS_ERR_PROTOCOL);   /* after our shutdown */
    CHECK(ERR_peek_error() == 0);
    tls_conn_free(c);
    tls_conn_free(s);
}

/* Connects with `cli` to `srv`; returns the status of the failing side (or
 * TLS_OK) and whether it resumed. */
static int connect_once(tls_server *srv, tls_client *cli, const char *name, bool *resumed) {
    tls_conn *c = tls_conn_client(cli, name);
    double t = now_us();
    tls_conn *s = tls_conn_server(srv);
    server_us += now_us() - t;
    if (c == NULL || s == NULL) {
        tls_conn_free(c);
        tls_conn_free(s);
        return TLS_ERR_NOMEM;
    }
    hs_result r = handshake(c, s);
    int rc = r.client < 0 ? r.client : r.server < 0 ? r.server : TLS_OK;
    if (rc == TLS_OK && !(tls_handshake_done(c) && tls_handshake_done(s))) rc = TLS_ERR_HANDSHAKE;
    if (resumed != NULL) *resumed = rc == TLS_OK && tls_resumed(c) && tls_resumed(s);
    if (rc == TLS_OK && echo_after_connect) {
        static const uint8_t ping[] = "ping";
        CHECK(send_all(c, s, ping, sizeof ping, 64, 0, 64));
    }
    tls_conn_free(c);
    t = now_us();
    tls_conn_free(s);
    server_us += now_us() - t;
    return rc;
}

static void test_resumption_and_reload(void) {
    /* The server reads its files from srv/, which the test swaps. */
    mkdir(path_in("", "srv"), 0700);
    char *scrt = path_in("srv", "tls.crt"), *skey = path_in("srv", "tls.key");
    CHECK(copy_file(crt1, scrt) && copy_file(key1, skey));
    tls_server *srv = NULL;
    CHECK_EQ_INT(tls_server_create(scrt, skey, 0, NULL, &srv, err, sizeof err), TLS_OK);
    if (srv == NULL) return;
    char fp[65];
    tls_server_fingerprint(srv, fp);
    CHECK(strcmp(fp, fp1) == 0);

    tls_client *pin1 = NULL, *pin2 = NULL, *pin1_fresh = NULL, *ca1 = NULL;
    CHECK_EQ_INT(tls_client_create(NULL, fp1, &pin1, err, sizeof err), TLS_OK);
    CHECK_EQ_INT(tls_client_create(NULL, fp2, &pin2, err, sizeof err), TLS_OK);
    CHECK_EQ_INT(tls_client_create(crt2, fp1, &pin1_fresh, err, sizeof err), TLS_OK);
    CHECK_EQ_INT(tls_client_create(crt1, NULL, &ca1, err, sizeof err), TLS_OK);

    test_handshake_and_data(srv, ca1);

    /* Resumption: the second connection to the same name uses the ticket. */
    bool resumed = true;
    CHECK_EQ_INT(connect_once(srv, pin1, "localhost", &resumed), TLS_OK);
    CHECK(!resumed);
    CHECK_EQ_INT(connect_once(srv, pin1, "localhost", &resumed), TLS_OK);
    CHECK(resumed);
    CHECK_EQ_INT(connect_once(srv, pin1, "localhost", &resumed), TLS_OK);
    CHECK(resumed);
    CHECK_EQ_INT(connect_once(srv, pin1, "other.name", &resumed), TLS_OK);   /* per name */
    CHECK(!resumed);
    CHECK_EQ_INT(connect_once(srv, pin1, NULL, &resumed), TLS_OK);   /* pin: no name needed */
    CHECK(!resumed);
    CHECK_EQ_INT(connect_once(srv, pin1, NULL, &resumed), TLS_OK);
    CHECK(resumed);

    /* A connection that stays open across the reload. */
    tls_conn *old_c = tls_conn_client(pin1, "old"), *old_s = tls_conn_server(srv);
    CHECK(handshake_ok(old_c, old_s));

    /* A failed reload keeps the old certificate. */
    FILE *f = fopen(scrt, "w");
    if (f) { fputs("not a certificate\n", f); fclose(f); }
    CHECK_EQ_INT(tls_server_reload(srv, err, sizeof err), TLS_ERR_CONFIG);
    CHECK(strstr(err, "tls.crt") != NULL);
    tls_server_fingerprint(srv, fp);
    CHECK(strcmp(fp, fp1) == 0);
    CHECK_EQ_INT(connect_once(srv, pin1_fresh, "localhost", NULL), TLS_OK);

    /* Reload with the second certificate. */
    CHECK(copy_file(crt2, scrt) && copy_file(key2, skey));
    CHECK_EQ_INT(tls_server_reload(srv, err, sizeof err), TLS_OK);
    tls_server_fingerprint(srv, fp);
    CHECK(strcmp(fp, fp2) == 0);
    CHECK(ERR_peek_error() == 0);

    /* New connections see the new certificate: the new pin passes, the
     * old pin (without a session to resume) fails verification. */
    CHECK_EQ_INT(connect_once(srv, pin2, "localhost", &resumed), TLS_OK);
    CHECK(!resumed);
    CHECK_EQ_INT(connect_once(srv, pin1_fresh, "fresh.name", &resumed), TLS_ERR_VERIFY);
    /* A ticket issued before the reload still resumes after it. */
    CHECK_EQ_INT(connect_once(srv, pin1, "localhost", &resumed), TLS_OK);
    CHECK(resumed);

    /* The old connection still works both ways. */
    static const uint8_t msg[] = "still here after the reload";
    CHECK(send_all(old_c, old_s, msg, sizeof msg, 64, 7, 64));
    CHECK(send_all(old_s, old_c, msg, sizeof msg, 64, 0, 64));
    tls_conn_free(old_c);
    tls_conn_free(old_s);

    tls_client_free(pin1);
    tls_client_free(pin2);
    tls_client_free(pin1_fresh);
    tls_client_free(ca1);
    tls_server_free(srv);
}

static void test_verification(tls_server *srv) {
    tls_client *ca1 = NULL, *ca2 = NULL, *pin2 = NULL;
    CHECK_EQ_INT(tls_client_create(crt1, NULL, &ca1, err, sizeof err), TLS_OK);
    CHECK_EQ_INT(tls_client_create(crt2, NULL, &ca2, err, sizeof err), TLS_OK);
    CHECK_EQ_INT(tls_client_create(NULL, fp2, &pin2, err, sizeof err), TLS_OK);

    /* The self-signed certificate as CA: its DNS and IP names pass. */
    CHECK_EQ_INT(connect_once(srv, ca1, "localhost", NULL), TLS_OK);
    CHECK_EQ_INT(connect_once(srv, ca1, "127.0.0.1", NULL), TLS_OK);
    CHECK_EQ_INT(connect_once(srv, ca1, "::1", NULL), TLS_OK);
    CHECK_EQ_INT(connect_once(srv, ca1, "example.com", NULL), TLS_ERR_VERIFY);
    CHECK_EQ_INT(connect_once(srv, ca1, "10.0.0.1", NULL), TLS_ERR_VERIFY);
    CHECK_EQ_INT(connect_once(srv, ca2, "localhost", NULL), TLS_ERR_VERIFY);

    /* Pin mismatch: the client says VERIFY, the server sees the alert. */
    tls_conn *c = tls_conn_client(pin2, "localhost"), *s = tls_conn_server(srv);
    hs_result r = handshake(c, s);
    CHECK_EQ_INT(r.client, TLS_ERR_VERIFY);
    drive(s);
    char why[256];
    tls_conn_error(c, why, sizeof why);
    printf("pin mismatch: %s\n", why);
    CHECK(strstr(why, "certificate") != NULL);
    CHECK(!tls_handshake_done(s));
    CHECK(ERR_peek_error() == 0);
    tls_conn_free(c);
    tls_conn_free(s);

    tls_client_free(ca1);
    tls_client_free(ca2);
    tls_client_free(pin2);
}

static void test_garbage(tls_server *srv, tls_client *cli) {
    /* Garbage instead of a ClientHello. */
    uint8_t junk[300];
    fill(junk, sizeof junk, 7);
    tls_conn *s = tls_conn_server(srv);
    CHECK_EQ_INT(tls_feed(s, junk, sizeof junk), TLS_OK);
    int rc = drive(s);
    CHECK(rc == TLS_ERR_HANDSHAKE || rc == TLS_ERR_PROTOCOL);
    CHECK_EQ_INT(drive(s), rc);   /* and it stays failed */
    tls_conn_free(s);

    /* Plain HTTP on the TLS port. */
    static const char http[] = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
    s = tls_conn_server(srv);
    tls_feed(s, (const uint8_t *)http, sizeof http - 1);
    rc = drive(s);
    CHECK(rc == TLS_ERR_HANDSHAKE || rc == TLS_ERR_PROTOCOL);
    char why[256];
    tls_conn_error(s, why, sizeof why);
    printf("http on the TLS port: %s\n", why);
    tls_conn_free(s);

    /* Garbage to the client in place of the ServerHello. */
    tls_conn *c = tls_conn_client(cli, "localhost");
    tls_feed(c, junk, sizeof junk);
    rc = drive(c);
    CHECK(rc == TLS_ERR_HANDSHAKE || rc == TLS_ERR_PROTOCOL);
    tls_conn_free(c);

    /* After the handshake: a record whose tag was altered. */
    c = tls_conn_client(cli, "localhost");
    s = tls_conn_server(srv);
    CHECK(handshake_ok(c, s));
    static const uint8_t msg[] = "tamper with me";
    CHECK_EQ_INT(tls_write(c, msg, sizeof msg), TLS_OK);
    uint8_t rec[256];
    size_t n = tls_take(c, rec, sizeof rec);
    CHECK(n > 20 && tls_pending(c) == 0);
    rec[n - 1] ^= 1;
    tls_feed(s, rec, n);
    uint8_t buf[64];
    size_t got = 9;
    CHECK_EQ_INT(tls_read(s, buf, sizeof buf, &got), TLS_ERR_PROTOCOL);
    CHECK_EQ_INT(got, 0);
    CHECK(tls_pending(s) > 0);   /* the bad_record_mac alert */
    transfer(s, c, 0);
    rc = tls_read(c, buf, sizeof buf, &got);
    CHECK(rc == TLS_ERR_PROTOCOL);
    /* Random records after the handshake. */
    tls_conn_free(s);
    tls_conn_free(c);
    c = tls_conn_client(cli, "localhost");
    s = tls_conn_server(srv);
    CHECK(handshake_ok(c, s));
    for (int i = 0; i < 50; i++) {
        fill(junk, sizeof junk, (uint32_t)i);
        junk[0] = 23, junk[1] = 3, junk[2] = 3, junk[3] = 0, junk[4] = 200;   /* app data header */
        tls_feed(s, junk, sizeof junk);
    }
    CHECK_EQ_INT(tls_read(s, buf, sizeof buf, &got), TLS_ERR_PROTOCOL);
    CHECK(ERR_peek_error() == 0);
    tls_conn_free(s);
    tls_conn_free(c);
}

/* ------------------------------------------------------------------------ */
/* A raw OpenSSL client: TLS 1.2 (with ticket resumption), and TLS 1.1     */

typedef struct raw_client {
    SSL *ssl;
    BIO *in, *out;   /* in: what it reads; out: what it wrote */
} raw_client;

static raw_client raw_new(SSL_CTX *ctx, SSL_SESSION *sess) {
    raw_client r = {SSL_new(ctx), BIO_new(BIO_s_mem()), BIO_new(BIO_s_mem())};
    SSL_set_bio(r.ssl, r.in, r.out);
    SSL_set_connect_state(r.ssl);
    if (sess) SSL_set_session(r.ssl, sess);
    return r;
}

/* Returns the server's last status; the raw client's in *raw_rc. */
static int raw_handshake(raw_client *r, tls_conn *s, int *raw_rc) {
    int srv_rc = TLS_WANT_MORE;
    uint8_t buf[8192];
    for (int round = 0; round < 20; round++) {
        *raw_rc = SSL_do_handshake(r->ssl);
        int n;
        while ((n = BIO_read(r->out, buf, sizeof buf)) > 0) tls_feed(s, buf, (size_t)n);
        srv_rc = drive(s);
        size_t m;
        while ((m = tls_take(s, buf, sizeof buf)) > 0) BIO_write(r->in, buf, (int)m);
        if (srv_rc < 0 || (*raw_rc == 1 && tls_handshake_done(s))) break;
    }
    *raw_rc = SSL_do_handshake(r->ssl);
    return srv_rc;
}

static void test_tls12_and_old_versions(tls_server *srv) {
    SSL_CTX *ctx12 = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_max_proto_version(ctx12, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx12, SSL_VERIFY_NONE, NULL);

    raw_client r = raw_new(ctx12, NULL);
    tls_conn *s = tls_conn_server(srv);
    int raw_rc = 0;
    CHECK_EQ_INT(raw_handshake(&r, s, &raw_rc), TLS_WANT_MORE);
    CHECK_EQ_INT(raw_rc, 1);
    CHECK(strcmp(tls_version(s), "TLSv1.2") == 0);
    CHECK(!tls_resumed(s));
    /* Data from the raw client. */
    static const uint8_t msg[] = "tls 1.2 data";
    CHECK(SSL_write(r.ssl, msg, sizeof msg) == (int)sizeof msg);
    uint8_t buf[8192];
    int n = BIO_read(r.out, buf, sizeof buf);
    tls_feed(s, buf, (size_t)n);
    size_t got = 0;
    CHECK_EQ_INT(tls_read(s, buf, sizeof buf, &got), TLS_OK);
    CHECK(got == sizeof msg && memcmp(buf, msg, got) == 0);
    SSL_SESSION *sess = SSL_get1_session(r.ssl);
    CHECK(sess != NULL && SSL_SESSION_has_ticket(sess));
    SSL_shutdown(r.ssl);   /* else SSL_free marks the session not resumable */
    SSL_free(r.ssl);
    tls_conn_free(s);

    /* Its ticket resumes. */
    r = raw_new(ctx12, sess);
    s = tls_conn_server(srv);
    CHECK_EQ_INT(raw_handshake(&r, s, &raw_rc), TLS_WANT_MORE);
    CHECK_EQ_INT(raw_rc, 1);
    CHECK(tls_resumed(s) && SSL_session_reused(r.ssl));
    SSL_free(r.ssl);
    SSL_SESSION_free(sess);
    tls_conn_free(s);
    SSL_CTX_free(ctx12);

    /* TLS 1.1 at most: refused. */
    SSL_CTX *ctx11 = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(ctx11, TLS1_VERSION);
    SSL_CTX_set_max_proto_version(ctx11, TLS1_1_VERSION);
    SSL_CTX_set_cipher_list(ctx11, "DEFAULT:@SECLEVEL=0");
    SSL_CTX_set_verify(ctx11, SSL_VERIFY_NONE, NULL);
    r = raw_new(ctx11, NULL);
    s = tls_conn_server(srv);
    CHECK_EQ_INT(raw_handshake(&r, s, &raw_rc), TLS_ERR_HANDSHAKE);
    CHECK(raw_rc != 1);
    char why[256];
    tls_conn_error(s, why, sizeof why);
    printf("TLS 1.1 client: %s\n", why);
    SSL_free(r.ssl);
    tls_conn_free(s);
    SSL_CTX_free(ctx11);
    ERR_clear_error();   /* the raw client's own failures */
}

/* ------------------------------------------------------------------------ */
/* Ticket key rotation (sleeps ~2.5 s)                                        */

static void test_ticket_rotation(void) {
    tls_server *srv = NULL;
    CHECK_EQ_INT(tls_server_create(crt1, key1, 1, NULL, &srv, err, sizeof err), TLS_OK);
    tls_client *a = NULL, *b = NULL;
    CHECK_EQ_INT(tls_client_create(NULL, fp1, &a, err, sizeof err), TLS_OK);
    CHECK_EQ_INT(tls_client_create(NULL, fp1, &b, err, sizeof err), TLS_OK);
    bool resumed;
    CHECK_EQ_INT(connect_once(srv, a, "localhost", &resumed), TLS_OK);
    CHECK_EQ_INT(connect_once(srv, b, "localhost", &resumed), TLS_OK);
    CHECK(!resumed);
    /* One period later the key is the previous one: still resumes (and a
     * ticket under the new key replaces it). */
    nanosleep(&(struct timespec){1, 300000000}, NULL);
    CHECK_EQ_INT(connect_once(srv, a, "localhost", &resumed), TLS_OK);
    CHECK(resumed);
    /* Two periods later b's ticket is dead. */
    nanosleep(&(struct timespec){1, 200000000}, NULL);
    CHECK_EQ_INT(connect_once(srv, b, "localhost", &resumed), TLS_OK);
    CHECK(!resumed);
    tls_client_free(a);
    tls_client_free(b);
    tls_server_free(srv);
}

/* ------------------------------------------------------------------------ */
/* Ticket keys kept in a file: restarts, permissions, rotation               */

/* The key names (hex) in a ticket key file and the current key's creation
 * time; returns how many keys it holds, -1 if unreadable. */
static int keyfile_names(const char *path, char cur[33], char prev[33], long long *cur_born) {
    FILE *f = fopen(path, "r");
    if (f == NULL) return -1;
    char line[512];
    int n = 0;
    cur[0] = prev[0] = '\0';
    while (fgets(line, sizeof line, f) != NULL) {
        char kind[16], name[33];
        long long born;
        if (sscanf(line, "%15s %lld %32s", kind, &born, name) != 3) continue;
        if (strcmp(kind, "current") == 0) {
            snprintf(cur, 33, "%s", name);
            if (cur_born != NULL) *cur_born = born;
            n++;
        } else if (strcmp(kind, "previous") == 0) {
            snprintf(prev, 33, "%s", name);
            n++;
        }
    }
    fclose(f);
    return n;
}

/* Redates the key line `kind` of a key file to `age_ms` ago (negative: in
 * the future), as if the server had been down that long. */
static bool keyfile_redate(const char *path, const char *kind, long long age_ms) {
    FILE *f = fopen(path, "r");
    if (f == NULL) return false;
    char text[4096] = "", line[512];
    size_t len = 0;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    long long now = (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    bool found = false;
    while (fgets(line, sizeof line, f) != NULL && len < sizeof text) {
        char k[16], rest[400];
        long long born;
        if (sscanf(line, "%15s %lld %399[^\n]", k, &born, rest) == 3 && strcmp(k, kind) == 0) {
            len += (size_t)snprintf(text + len, sizeof text - len, "%s %lld %s\n", k,
                                    now - age_ms, rest);
            found = true;
        } else {
            len += (size_t)snprintf(text + len, sizeof text - len, "%s", line);
        }
    }
    fclose(f);
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.edit", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    bool ok = fd >= 0 && write(fd, text, len) == (ssize_t)len;
    if (fd >= 0) close(fd);
    return found && ok && rename(tmp, path) == 0;
}

static bool write_text(const char *path, const char *text, mode_t mode) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    if (fd < 0) return false;
    bool ok = write(fd, text, strlen(text)) == (ssize_t)strlen(text);
    return close(fd) == 0 && ok && chmod(path, mode) == 0;
}

static ino_t inode_of(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? st.st_ino : 0;
}

/* No temporary file left behind by the atomic rewrites. */
static int temp_files_in(const char *path) {
    DIR *d = opendir(path);
    int n = 0;
    struct dirent *e;
    while (d != NULL && (e = readdir(d)) != NULL) n += strstr(e->d_name, ".tmp") != NULL;
    if (d != NULL) closedir(d);
    return n;
}

static void test_ticket_key_file(void) {
    mkdir(path_in("", "state"), 0700);
    char *kf = path_in("state", "tls-tickets.key");
    char cur[33], prev[33], cur2[33], prev2[33];
    bool resumed;

    /* Created at the first start, 0600, with a current key only. */
    tls_server *srv = NULL;
    CHECK_EQ_INT(tls_server_create(crt1, key1, 0, kf, &srv, err, sizeof err), TLS_OK);
    if (srv == NULL) return;
    struct stat st;
    CHECK(stat(kf, &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 0777) == 0600);
    CHECK_EQ_INT(keyfile_names(kf, cur, prev, NULL), 1);
    CHECK_EQ_INT(strlen(cur), 32);

    tls_client *cli = NULL, *other = NULL;
    CHECK_EQ_INT(tls_client_create(NULL, fp1, &cli, err, sizeof err), TLS_OK);
    CHECK_EQ_INT(tls_client_create(NULL, fp1, &other, err, sizeof err), TLS_OK);
    CHECK_EQ_INT(connect_once(srv, cli, "localhost", &resumed), TLS_OK);
    CHECK(!resumed);

    /* A restart within the period: the same key, the file untouched, and
     * the ticket from before the restart resumes. */
    ino_t ino = inode_of(kf);
    tls_server_free(srv);
    CHECK_EQ_INT(tls_server_create(crt1, key1, 0, kf, &srv, err, sizeof err), TLS_OK);
    if (srv == NULL) goto out;
    CHECK(inode_of(kf) == ino);
    CHECK_EQ_INT(keyfile_names(kf, cur2, prev2, NULL), 1);
    CHECK(strcmp(cur, cur2) == 0);
    CHECK_EQ_INT(connect_once(srv, cli, "localhost", &resumed), TLS_OK);
    CHECK(resumed);
    CHECK_EQ_INT(connect_once(srv, cli, "localhost", &resumed), TLS_OK);
    CHECK(resumed);

    /* Readable or writable by group or others: refused, and said why. */
    tls_server_free(srv);
    srv = NULL;
    static const mode_t bad_modes[] = {0644, 0640, 0604, 0620, 0660};
    for (size_t i = 0; i < sizeof bad_modes / sizeof *bad_modes; i++) {
        CHECK(chmod(kf, bad_modes[i]) == 0);
        err[0] = '\0';
        CHECK_EQ_INT(tls_server_create(crt1, key1, 0, kf, &srv, err, sizeof err),
                     TLS_ERR_CONFIG);
        CHECK(srv == NULL && strstr(err, "tls-tickets.key") != NULL &&
              strstr(err, "chmod 600") != NULL);
        if (i == 0) {
            CHECK(strstr(err, "0644") != NULL);
            printf("ticket key file 0644: %s\n", err);
        }
    }
    CHECK(chmod(kf, 0600) == 0);
    CHECK(inode_of(kf) == ino);   /* refused, not replaced */

    /* A start after a gap of more than one period rotates: a new current
     * key, the old one kept as previous, and its tickets still resume. */
    CHECK(keyfile_redate(kf, "current", 3600 * 1000LL * 3 / 2));
    CHECK_EQ_INT(tls_server_create(crt1, key1, 0, kf, &srv, err, sizeof err), TLS_OK);
    if (srv == NULL) goto out;
    CHECK_EQ_INT(keyfile_names(kf, cur2, prev2, NULL), 2);
    CHECK(strcmp(prev2, cur) == 0 && strcmp(cur2, cur) != 0);
    CHECK_EQ_INT(connect_once(srv, cli, "localhost", &resumed), TLS_OK);
    CHECK(resumed);   /* and the new ticket is under the new key */
    memcpy(cur, cur2, sizeof cur);

    /* More than two periods: nothing kept, every ticket is dead. */
    tls_server_free(srv);
    CHECK(keyfile_redate(kf, "current", 3600 * 1000LL * 5 / 2));
    CHECK_EQ_INT(tls_server_create(crt1, key1, 0, kf, &srv, err, sizeof err), TLS_OK);
    if (srv == NULL) goto out;
    CHECK_EQ_INT(keyfile_names(kf, cur2, prev2, NULL), 1);
    CHECK(strcmp(cur2, cur) != 0);
    CHECK_EQ_INT(connect_once(srv, cli, "localhost", &resumed), TLS_OK);
    CHECK(!resumed);
    memcpy(cur, cur2, sizeof cur);

    /* A current key dated in the future (the clock was set back): its age
     * is unknown, so it is replaced. A minute's skew is tolerated. */
    tls_server_free(srv);
    CHECK(keyfile_redate(kf, "current", -30 * 1000LL));
    CHECK_EQ_INT(tls_server_create(crt1, key1, 0, kf, &srv, err, sizeof err), TLS_OK);
    tls_server_free(srv);
    CHECK_EQ_INT(keyfile_names(kf, cur2, prev2, NULL), 1);
    CHECK(strcmp(cur2, cur) == 0);
    CHECK(keyfile_redate(kf, "current", -86400 * 1000LL));
    CHECK_EQ_INT(tls_server_create(crt1, key1, 0, kf, &srv, err, sizeof err), TLS_OK);
    CHECK_EQ_INT(keyfile_names(kf, cur2, prev2, NULL), 1);
    CHECK(strcmp(cur2, cur) != 0);

    /* A server with other keys (here: in memory) cannot read the tickets. */
    tls_server *mem = NULL;
    CHECK_EQ_INT(connect_once(srv, other, "localhost", &resumed), TLS_OK);
    CHECK_EQ_INT(tls_server_create(crt1, key1, 0, NULL, &mem, err, sizeof err), TLS_OK);
    CHECK_EQ_INT(connect_once(mem, other, "localhost", &resumed), TLS_OK);
    CHECK(!resumed);
    tls_server_free(mem);

    /* Files that are not ours, and places we cannot write. */
    tls_server *bad = NULL;
    char *junk = path_in("state", "junk.key");
    static const char *const junk_texts[] = {
        "hello\n",
        "aegis-tls-ticket-keys 1\n",   /* no current key */
        "aegis-tls-ticket-keys 1\ncurrent 1 00 00 00\n",
        "aegis-tls-ticket-keys 2\n",
    };
    for (size_t i = 0; i < sizeof junk_texts / sizeof *junk_texts; i++) {
        CHECK(write_text(junk, junk_texts[i], 0600));
        CHECK_EQ_INT(tls_server_create(crt1, key1, 0, junk, &bad, err, sizeof err),
                     TLS_ERR_CONFIG);
        CHECK(bad == NULL && strstr(err, "remove it") != NULL);
    }
    CHECK_EQ_INT(tls_server_create(crt1, key1, 0, path_in("", "state"), &bad, err, sizeof err),
                 TLS_ERR_CONFIG);   /* a directory */
    CHECK(strstr(err, "regular file") != NULL);
    CHECK_EQ_INT(tls_server_create(crt1, key1, 0, path_in("missing", "tls-tickets.key"), &bad,
                                   err, sizeof err),
                 TLS_ERR_CONFIG);
    CHECK(bad == NULL && strstr(err, "No such file") != NULL);
    /* A certificate error comes first and writes nothing. */
    char *unwritten = path_in("state", "unwritten.key");
    CHECK_EQ_INT(tls_server_create(crt1, key2, 0, unwritten, &bad, err, sizeof err),
                 TLS_ERR_CONFIG);
    CHECK(access(unwritten, F_OK) != 0);
    CHECK_EQ_INT(temp_files_in(path_in("", "state")), 0);
    CHECK(ERR_peek_error() == 0);
out:
    tls_server_free(srv);
    tls_client_free(cli);
    tls_client_free(other);
}

/* Rotation while running is written to the file (sleeps ~1.2 s). */
static void test_ticket_rotation_persisted(void) {
    char *kf = path_in("state", "rotating.key");
    char k1[33], k2[33], cur[33], prev[33];
    long long born1 = 0, born2 = 0;
    tls_server *srv = NULL;
    CHECK_EQ_INT(tls_server_create(crt1, key1, 1, kf, &srv, err, sizeof err), TLS_OK);
    if (srv == NULL) return;
    CHECK_EQ_INT(keyfile_names(kf, k1, prev, &born1), 1);
    tls_client *a = NULL, *b = NULL, *c = NULL;
    CHECK_EQ_INT(tls_client_create(NULL, fp1, &a, err, sizeof err), TLS_OK);
    CHECK_EQ_INT(tls_client_create(NULL, fp1, &b, err, sizeof err), TLS_OK);
    CHECK_EQ_INT(tls_client_create(NULL, fp1, &c, err, sizeof err), TLS_OK);
    bool resumed;
    CHECK_EQ_INT(connect_once(srv, a, "localhost", &resumed), TLS_OK);   /* a: ticket under k1 */

    /* Meanwhile, a server whose key file cannot be rewritten (its
     * directory moved away; permissions would not stop root). */
    mkdir(path_in("", "vanishing"), 0700);
    char *vf = path_in("vanishing", "tls-tickets.key"), vk[33], vprev[33];
    tls_server *stuck = NULL;
    CHECK_EQ_INT(tls_server_create(crt1, key1, 1, vf, &stuck, err, sizeof err), TLS_OK);
    CHECK_EQ_INT(keyfile_names(vf, vk, vprev, NULL), 1);
    if (stuck != NULL) CHECK_EQ_INT(connect_once(stuck, c, "localhost", &resumed), TLS_OK);
    CHECK(rename(path_in("", "vanishing"), path_in("", "vanished")) == 0);

    /* One period later the next ticket operation rotates, and the file
     * follows: the new key current, k1 previous. */
    nanosleep(&(struct timespec){1, 200000000}, NULL);
    ino_t ino = inode_of(kf);
    CHECK_EQ_INT(connect_once(srv, b, "localhost", &resumed), TLS_OK);   /* b: ticket under k2 */
    CHECK(!resumed);

    /* The write failed there: the server goes on with its keys in memory
     * (c's ticket, now under the previous key, still resumes), the file
     * keeps the old ones. */
    if (stuck != NULL) {
        CHECK_EQ_INT(connect_once(stuck, b, "stuck", &resumed), TLS_OK);   /* rotates */
        CHECK_EQ_INT(connect_once(stuck, c, "localhost", &resumed), TLS_OK);
        CHECK(resumed);
        CHECK(ERR_peek_error() == 0);
    }
    tls_server_free(stuck);
    CHECK_EQ_INT(keyfile_names(path_in("vanished", "tls-tickets.key"), cur, prev, NULL), 1);
    CHECK(strcmp(cur, vk) == 0);
    CHECK_EQ_INT(temp_files_in(path_in("", "vanished")), 0);
    CHECK(inode_of(kf) != ino);   /* replaced by a rename, not rewritten in place */
    CHECK_EQ_INT(keyfile_names(kf, k2, prev, &born2), 2);
    CHECK(strcmp(prev, k1) == 0 && strcmp(k2, k1) != 0);
    CHECK(born2 - born1 >= 1000 && born2 - born1 < 5000);
    struct stat st;
    CHECK(stat(kf, &st) == 0 && (st.st_mode & 0777) == 0600);

    /* A restart now keeps both: a's ticket (previous key) and b's
     * (current) both resume on the new server. */
    tls_server_free(srv);
    ino = inode_of(kf);
    CHECK_EQ_INT(tls_server_create(crt1, key1, 1, kf, &srv, err, sizeof err), TLS_OK);
    if (srv != NULL) {
        CHECK(inode_of(kf) == ino);
        CHECK_EQ_INT(keyfile_names(kf, cur, prev, NULL), 2);
        CHECK(strcmp(cur, k2) == 0 && strcmp(prev, k1) == 0);
        CHECK_EQ_INT(connect_once(srv, a, "localhost", &resumed), TLS_OK);
        CHECK(resumed);
        CHECK_EQ_INT(connect_once(srv, b, "localhost", &resumed), TLS_OK);
        CHECK(resumed);
    }
    CHECK_EQ_INT(temp_files_in(path_in("", "state")), 0);
    tls_client_free(a);
    tls_client_free(b);
    tls_client_free(c);
    tls_server_free(srv);
}

/* ------------------------------------------------------------------------ */
/* Resumption without (EC)DHE                                                */

/* The extensions of the ServerHello that starts a server's first flight
 * (a plaintext handshake record). False if it is not one. */
static bool server_hello_exts(const uint8_t *p, size_t n, bool *psk, bool *key_share) {
    *psk = *key_share = false;
    if (n < 9 || p[0] != 22 || p[5] != 2) return false;
    size_t rec = (size_t)p[3] << 8 | p[4];
    if (5 + rec > n) return false;
    const uint8_t *h = p + 9, *end = p + 5 + rec;
    if (end - h < 35) return false;
    h += 34;   /* legacy_version, random */
    size_t sid = *h++;
    if ((size_t)(end - h) < sid + 5) return false;
    h += sid + 3;   /* session id, cipher suite, compression */
    size_t elen = (size_t)h[0] << 8 | h[1];
    h += 2;
    if ((size_t)(end - h) != elen) return false;
    while (end - h >= 4) {
        unsigned type = (unsigned)h[0] << 8 | h[1];
        size_t len = (size_t)h[2] << 8 | h[3];
        h += 4;
        if ((size_t)(end - h) < len) return false;
        if (type == 41) *psk = true;         /* pre_shared_key */
        if (type == 51) *key_share = true;   /* key_share */
        h += len;
    }
    return h == end;
}

/* Feeds a ClientHello to a new server connection; returns the server's
 * first flight (and whether it is resuming) in out. */
static size_t first_flight(tls_server *srv, const uint8_t *hello, size_t n, uint8_t *out,
                           size_t cap, bool *resumed) {
    tls_conn *s = tls_conn_server(srv);
    size_t got = 0;
    if (s != NULL && tls_feed(s, hello, n) == TLS_OK && drive(s) == TLS_WANT_MORE) {
        got = tls_take(s, out, cap);
        *resumed = tls_resumed(s);
    }
    tls_conn_free(s);
    return got;
}

/* Our client's ClientHello for `name` (offering the cached session, if
 * any), which is left unanswered. */
static size_t client_hello(tls_client *cli, const char *name, uint8_t *out, size_t cap) {
    tls_conn *c = tls_conn_client(cli, name);
    size_t n = c != NULL ? tls_take(c, out, cap) : 0;
    tls_conn_free(c);   /* mid-handshake: the cached session stays resumable */
    return n;
}

static uint8_t *put16(uint8_t *p, size_t v) {
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
    return p + 2;
}

/* HKDF-Expand-Label for one hash-length block (RFC 8446 §7.1). */
static void expand_label(const EVP_MD *md, const uint8_t *secret, const char *label,
                         const uint8_t *ctx, size_t ctx_len, uint8_t *out) {
    int hl = EVP_MD_get_size(md);
    uint8_t info[160];
    size_t n = 0, ll = strlen(label);
    info[n++] = (uint8_t)(hl >> 8);
    info[n++] = (uint8_t)hl;
    info[n++] = (uint8_t)(6 + ll);
    memcpy(info + n, "tls13 ", 6);
    memcpy(info + n + 6, label, ll);
    n += 6 + ll;
    info[n++] = (uint8_t)ctx_len;
    if (ctx_len > 0) memcpy(info + n, ctx, ctx_len);
    n += ctx_len;
    info[n++] = 1;   /* T(1) = HMAC(secret, info | 0x01) */
    HMAC(md, secret, hl, info, n, out, NULL);
}

/* A TLS 1.3 ClientHello record offering `sess`'s ticket with psk_ke as the
 * only mode and no key_share: what OpenSSL 3.0's client cannot be made to
 * send. The binder is computed by hand (RFC 8446 §4.2.11.2). */
static size_t psk_ke_client_hello(SSL_SESSION *sess, uint8_t *out, size_t cap) {
    const SSL_CIPHER *cipher = SSL_SESSION_get0_cipher(sess);
    const EVP_MD *md = cipher != NULL ? SSL_CIPHER_get_handshake_digest(cipher) : NULL;
    const unsigned char *ticket = NULL;
    size_t ticket_len = 0, hl = md != NULL ? (size_t)EVP_MD_get_size(md) : 0;
    uint8_t psk[EVP_MAX_MD_SIZE];
    SSL_SESSION_get0_ticket(sess, &ticket, &ticket_len);
    if (hl == 0 || SSL_SESSION_get_master_key(sess, psk, sizeof psk) != hl || ticket_len == 0 ||
        ticket_len + hl + 200 > cap || ticket_len > 0x4000)
        return 0;
    uint8_t *b = out + 9;   /* after the record and handshake headers */
    b = put16(b, 0x0303);
    RAND_bytes(b, 32);
    b += 32;
    *b++ = 32;   /* a legacy session id, as middlebox-compatible clients send */
    RAND_bytes(b, 32);
    b += 32;
    b = put16(b, 2);
    b = put16(b, SSL_CIPHER_get_protocol_id(cipher));
    *b++ = 1;
    *b++ = 0;
    uint8_t *ext_len = b;
    b += 2;
    static const uint8_t exts[] = {
        0x00, 0x2b, 0x00, 0x03, 0x02, 0x03, 0x04,                    /* supported_versions */
        0x00, 0x0d, 0x00, 0x06, 0x00, 0x04, 0x04, 0x03, 0x08, 0x04,  /* signature_algorithms */
        0x00, 0x0a, 0x00, 0x04, 0x00, 0x02, 0x00, 0x1d,              /* supported_groups */
        0x00, 0x2d, 0x00, 0x02, 0x01, 0x00,                          /* psk_kex_modes: psk_ke */
    };
    memcpy(b, exts, sizeof exts);
    b += sizeof exts;
    /* pre_shared_key, last: one identity (the ticket, age 0), one binder. */
    size_t ids = 2 + ticket_len + 4, binders = 1 + hl;
    b = put16(b, 41);
    b = put16(b, 2 + ids + 2 + binders);
    b = put16(b, ids);
    b = put16(b, ticket_len);
    memcpy(b, ticket, ticket_len);
    b += ticket_len;
    memset(b, 0, 4);
    b += 4;
    uint8_t *truncated_end = b;   /* the binder covers the hello up to here */
    b = put16(b, binders);
    *b++ = (uint8_t)hl;
    uint8_t *binder = b;
    b += hl;
    put16(ext_len, (size_t)(b - ext_len - 2));
    size_t body = (size_t)(b - (out + 9));
    out[5] = 1;   /* client_hello */
    out[6] = (uint8_t)(body >> 16);
    put16(out + 7, body);
    out[0] = 22;
    put16(out + 1, 0x0301);
    put16(out + 3, body + 4);

    uint8_t zeros[EVP_MAX_MD_SIZE] = {0}, early[EVP_MAX_MD_SIZE], empty[EVP_MAX_MD_SIZE],
            binder_key[EVP_MAX_MD_SIZE], finished[EVP_MAX_MD_SIZE], th[EVP_MAX_MD_SIZE];
    HMAC(md, zeros, (int)hl, psk, hl, early, NULL);   /* HKDF-Extract(0, PSK) */
    EVP_Digest("", 0, empty, NULL, md, NULL);
    expand_label(md, early, "res binder", empty, hl, binder_key);
    expand_label(md, binder_key, "finished", NULL, 0, finished);
    EVP_Digest(out + 5, (size_t)(truncated_end - (out + 5)), th, NULL, md, NULL);
    HMAC(md, finished, (int)hl, th, hl, binder, NULL);
    return (size_t)(b - out);
}

/* A TLS 1.3 session (with its ticket) from `srv`, by a raw OpenSSL client. */
static SSL_SESSION *raw_tls13_session(tls_server *srv) {
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    raw_client r = raw_new(ctx, NULL);
    tls_conn *s = tls_conn_server(srv);
    int raw_rc = 0;
    SSL_SESSION *sess = NULL;
    if (raw_handshake(&r, s, &raw_rc) == TLS_WANT_MORE && raw_rc == 1) {
        uint8_t buf[256];
        size_t n;
        (void)SSL_read_ex(r.ssl, buf, sizeof buf, &n);   /* takes the NewSessionTicket */
        sess = SSL_get1_session(r.ssl);
    }
    if (sess != NULL && !SSL_SESSION_has_ticket(sess)) {
        SSL_SESSION_free(sess);
        sess = NULL;
    }
    SSL_shutdown(r.ssl);
    SSL_free(r.ssl);
    tls_conn_free(s);
    SSL_CTX_free(ctx);
    ERR_clear_error();
    return sess;
}

/* Does the OpenSSL we run make the server prefer psk_ke when both modes
 * are offered (our client offers both)? 3.3 and later. */
static bool server_prefers_psk_ke(void) {
#ifdef SSL_OP_PREFER_NO_DHE_KEX
    return OpenSSL_version_num() >= 0x30300000L;
#else
    return false;
#endif
}

static uint8_t psk_ke_hello[4096];
static size_t psk_ke_hello_len;

static void test_resumption_kex(tls_server *srv) {
    uint8_t hello[4096], flight[16384];
    bool psk, key_share, resumed = false;
    tls_client *cli = NULL;
    CHECK_EQ_INT(tls_client_create(NULL, fp1, &cli, err, sizeof err), TLS_OK);
    if (cli == NULL) return;

    /* Our client, full then resumed: which mode did the server pick? */
    CHECK_EQ_INT(connect_once(srv, cli, "kex.test", &resumed), TLS_OK);
    size_t n = client_hello(cli, "kex.test", hello, sizeof hello);
    size_t m = first_flight(srv, hello, n, flight, sizeof flight, &resumed);
    CHECK(resumed && server_hello_exts(flight, m, &psk, &key_share) && psk);
    CHECK(key_share == !server_prefers_psk_ke());
    printf("resumption between our client and server (%s): %s\n",
           OpenSSL_version(OPENSSL_VERSION),
           key_share ? "psk_dhe_ke (OpenSSL < 3.3 always takes DHE when offered)"
                     : "psk_ke (no key share)");
    /* A full handshake's ServerHello has a key share and no PSK. */
    n = client_hello(cli, "kex.other", hello, sizeof hello);
    m = first_flight(srv, hello, n, flight, sizeof flight, &resumed);
    CHECK(!resumed && server_hello_exts(flight, m, &psk, &key_share) && !psk && key_share);

    tls_client_free(cli);

    /* A client offering psk_ke alone resumes with no key share at all. */
    SSL_SESSION *sess = raw_tls13_session(srv);
    CHECK(sess != NULL);
    if (sess == NULL) return;
    psk_ke_hello_len = psk_ke_client_hello(sess, psk_ke_hello, sizeof psk_ke_hello);
    SSL_SESSION_free(sess);
    CHECK(psk_ke_hello_len > 0);
    resumed = false;
    m = first_flight(srv, psk_ke_hello, psk_ke_hello_len, flight, sizeof flight, &resumed);
    CHECK(resumed && server_hello_exts(flight, m, &psk, &key_share) && psk && !key_share);
    /* Such a client has nothing to fall back on: a ticket the server
     * cannot read (other keys), or a binder that does not verify, ends the
     * handshake (RFC 8446 §4.2.9, §4.2.11). Ours always offers psk_dhe_ke
     * and a key share as well. */
    tls_server *other = NULL;
    CHECK_EQ_INT(tls_server_create(crt1, key1, 0, NULL, &other, err, sizeof err), TLS_OK);
    for (int i = 0; i < 2 && psk_ke_hello_len > 0 && other != NULL; i++) {
        memcpy(hello, psk_ke_hello, psk_ke_hello_len);
        if (i == 1) hello[psk_ke_hello_len - 1] ^= 1;   /* the binder's last byte */
        tls_conn *s = tls_conn_server(i == 0 ? other : srv);
        tls_feed(s, hello, psk_ke_hello_len);
        CHECK_EQ_INT(drive(s), TLS_ERR_HANDSHAKE);
        CHECK(!tls_handshake_done(s) && !tls_resumed(s));
        tls_conn_free(s);
    }
    tls_server_free(other);
    CHECK(ERR_peek_error() == 0);
}

/* ------------------------------------------------------------------------ */
/* Threads: workers handshaking while another thread reloads                  */

typedef struct worker_arg {
    tls_server *srv;
    tls_client *cli;
    int ok, resumed;
} worker_arg;

static void *worker(void *p) {
    worker_arg *w = p;
    static const char *const names[] = {"localhost", "127.0.0.1", "::1"};
    for (int i = 0; i < 60; i++) {
        bool resumed = false;
        /* No CHECK here: check.h's counters are not thread-safe. */
        tls_conn *c = tls_conn_client(w->cli, names[i % 3]);
        tls_conn *s = tls_conn_server(w->srv);
        hs_result r = {0, 0};
        for (int round = 0; round < 20 && c && s; round++) {
            uint8_t buf[4096];
            size_t n, moved = 0;
            while ((n = tls_take(c, buf, sizeof buf)) > 0) tls_feed(s, buf, n), moved += n;
            while ((r.server = tls_read(s, buf, sizeof buf, &n)) == TLS_OK) {}
            while ((n = tls_take(s, buf, sizeof buf)) > 0) tls_feed(c, buf, n), moved += n;
            while ((r.client = tls_read(c, buf, sizeof buf, &n)) == TLS_OK) {}
            if (r.client < 0 || r.server < 0 || (moved == 0 && tls_handshake_done(c))) break;
        }
        resumed = c && s && tls_resumed(s);
        if (c && s && r.client == TLS_WANT_MORE && r.server == TLS_WANT_MORE &&
            tls_handshake_done(c) && tls_handshake_done(s))
            w->ok++;
        w->resumed += resumed;
        if (ERR_peek_error() != 0) w->ok = -1000;
        tls_conn_free(c);
        tls_conn_free(s);
    }
    return NULL;
}

static void test_threads(void) {
    tls_server *srv = NULL;
    CHECK_EQ_INT(tls_server_create(crt1, key1, 0, NULL, &srv, err, sizeof err), TLS_OK);
    tls_client *cli = NULL;
    CHECK_EQ_INT(tls_client_create(crt1, NULL, &cli, err, sizeof err), TLS_OK);
    enum { W = 4 };
    pthread_t t[W];
    worker_arg args[W];
    for (int i = 0; i < W; i++) {
        args[i] = (worker_arg){srv, cli, 0, 0};
        pthread_create(&t[i], NULL, worker, &args[i]);
    }
    int reloads = 0;
    for (int i = 0; i < 40; i++) {
        reloads += tls_server_reload(srv, err, sizeof err) == TLS_OK;
        nanosleep(&(struct timespec){0, 2000000}, NULL);
    }
    int ok = 0, resumed = 0;
    for (int i = 0; i < W; i++) {
        pthread_join(t[i], NULL);
        ok += args[i].ok;
        resumed += args[i].resumed;
    }
    CHECK_EQ_INT(reloads, 40);
    CHECK_EQ_INT(ok, W * 60);
    CHECK(resumed > W * 30);
    printf("threads: %d handshakes, %d resumed, %d reloads meanwhile\n", ok, resumed, reloads);
    tls_client_free(cli);
    tls_server_free(srv);
}

/* ------------------------------------------------------------------------ */
/* Measurements                                                              */

static void measure(tls_server *srv) {
    tls_client *cli = NULL;
    CHECK_EQ_INT(tls_client_create(NULL, fp1, &cli, err, sizeof err), TLS_OK);
    char name[32];

    /* Handshake cost, both ends in this thread, connection setup and free
     * included; medians, as this machine's neighbours make means noisy. */
    enum { H = 400 };
    static double full_total[H], full_srv[H], res_total[H], res_srv[H];
    for (int i = 0; i < 20; i++) connect_once(srv, cli, "warm", NULL);
    echo_after_connect = false;
    int full_ok = 0, res_ok = 0;
    for (int i = 0; i < H; i++) {
        bool resumed = true;
        snprintf(name, sizeof name, "full-%d", i);   /* a new name: nothing to resume */
        server_us = 0;
        double t = now_us();
        full_ok += connect_once(srv, cli, name, &resumed) == TLS_OK && !resumed;
        full_total[i] = now_us() - t;
        full_srv[i] = server_us;
    }
    connect_once(srv, cli, "warm", NULL);   /* the full-* names evicted it from the cache */
    for (int i = 0; i < H; i++) {
        bool resumed = false;
        server_us = 0;
        double t = now_us();
        res_ok += connect_once(srv, cli, "warm", &resumed) == TLS_OK && resumed;
        res_total[i] = now_us() - t;
        res_srv[i] = server_us;
    }
    echo_after_connect = true;
    CHECK_EQ_INT(full_ok, H);
    CHECK_EQ_INT(res_ok, H);
    double full_med = median(full_srv, H), res_med = median(res_srv, H);
    printf("handshake in memory (TLS 1.3, X25519, ECDSA P-256), median per connection: "
           "full %.0f us (server side %.0f us), resumed %.0f us (server side %.0f us, %.2f of "
           "full)\n",
           median(full_total, H), full_med, median(res_total, H), res_med, res_med / full_med);

    /* The server's first flight alone (a ClientHello in; ServerHello to
     * Finished out; connection setup and free included), each hello
     * replayed H times: a full handshake, our client's resumption, and a
     * client offering psk_ke alone. */
    static double ff[3][H];
    static uint8_t hellos[3][4096], flight[16384];
    size_t hello_len[3] = {
        client_hello(cli, "first-flight", hellos[0], sizeof hellos[0]),
        client_hello(cli, "warm", hellos[1], sizeof hellos[1]),
        psk_ke_hello_len,
    };
    memcpy(hellos[2], psk_ke_hello, psk_ke_hello_len);
    int ff_ok = 0;
    for (int k = 0; k < 3; k++) {
        for (int i = 0; i < H; i++) {
            bool resumed = false;
            double t = now_us();
            size_t n = first_flight(srv, hellos[k], hello_len[k], flight, sizeof flight, &resumed);
            ff[k][i] = now_us() - t;
            ff_ok += n > 0 && resumed == (k > 0);
        }
    }
    CHECK_EQ_INT(ff_ok, 3 * H);
    double ff_full = median(ff[0], H), ff_dhe = median(ff[1], H), ff_ke = median(ff[2], H);
    double ke_est = res_med - (ff_dhe - ff_ke);
    printf("server side, first flight only, median: full %.0f us, resumed psk_dhe_ke %.0f us, "
           "resumed psk_ke %.0f us; a psk_ke resumption would cost the server ~%.0f us in all "
           "(%.2f of full)\n",
           ff_full, ff_dhe, ff_ke, ke_est, ke_est / full_med);

    /* Heap held by idle established connections. */
    enum { N = 1000 };
    tls_conn **conns = calloc(N, sizeof *conns);
    size_t before = heap_in_use();
    int ok = 0;
    for (int i = 0; i < N; i++) {
        tls_conn *c = tls_conn_client(cli, "warm");
        conns[i] = tls_conn_server(srv);
        ok += handshake_ok(c, conns[i]);
        tls_conn_free(c);
    }
    size_t after = heap_in_use();
    CHECK_EQ_INT(ok, N);
    double per_server = (double)(after - before) / N;
    for (int i = 0; i < N; i++) tls_conn_free(conns[i]);

    before = heap_in_use();
    for (int i = 0; i < N; i++) {
        tls_conn *s = tls_conn_server(srv);
        conns[i] = tls_conn_client(cli, "warm");
        ok += handshake_ok(conns[i], s);
        tls_conn_free(s);
    }
    after = heap_in_use();
    double per_client = (double)(after - before) / N;
    for (int i = 0; i < N; i++) tls_conn_free(conns[i]);

    /* Full (not resumed) server connections: they keep no ticket state
     * either, but measure rather than assume. */
    before = heap_in_use();
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "mem-%d", i);
        tls_conn *c = tls_conn_client(cli, name);
        conns[i] = tls_conn_server(srv);
        ok += handshake_ok(c, conns[i]);
        tls_conn_free(c);
    }
    after = heap_in_use();
    double per_server_full = (double)(after - before) / N;
    for (int i = 0; i < N; i++) tls_conn_free(conns[i]);
    CHECK_EQ_INT(ok, 3 * N);
    free(conns);

    printf("heap per idle established connection (%s): server %.0f B (resumed), %.0f B (full "
           "handshake); client %.0f B\n",
#ifdef UNDER_ASAN
           "ASan allocator",
#else
           "glibc mallinfo2",
#endif
           per_server, per_server_full, per_client);
    tls_client_free(cli);
}

int main(void) {
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    test_self_signed();
    test_config_errors();
    test_resumption_and_reload();
    test_ticket_key_file();
    test_ticket_rotation_persisted();

    tls_server *srv = NULL;
    tls_client *cli = NULL;
    CHECK_EQ_INT(tls_server_create(crt1, key1, 0, NULL, &srv, err, sizeof err), TLS_OK);
    CHECK_EQ_INT(tls_client_create(crt1, NULL, &cli, err, sizeof err), TLS_OK);
    if (srv != NULL && cli != NULL) {
        test_verification(srv);
        test_garbage(srv, cli);
        test_tls12_and_old_versions(srv);
        test_resumption_kex(srv);
        measure(srv);
    }
    tls_client_free(cli);
    tls_server_free(srv);

    test_ticket_rotation();
    test_threads();

    remove_tree(dir);
    return check_summary();
}
