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
 * no socket anywhere. Certificates are generated into a mkdtemp directory.
 * A raw OpenSSL client (capped at TLS 1.2, or at 1.1) covers what our own
 * client never does. The figures printed at the end (heap per idle
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
    CHECK_EQ_INT(tls_server_create(path_in("", "nope.crt"), key1, 0, &s, err, sizeof err),
                 TLS_ERR_CONFIG);
    CHECK(s == NULL && strstr(err, "nope.crt") != NULL);
    CHECK_EQ_INT(tls_server_create(crt1, key2, 0, &s, err, sizeof err), TLS_ERR_CONFIG);
    CHECK(s == NULL && strstr(err, "does not match") != NULL);
    CHECK_EQ_INT(tls_server_create(crt1, key1, 0, &s, NULL, 0), TLS_OK);   /* err is optional */
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
    CHECK_EQ_INT(tls_server_create(scrt, skey, 0, &srv, err, sizeof err), TLS_OK);
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
    CHECK_EQ_INT(tls_server_create(crt1, key1, 1, &srv, err, sizeof err), TLS_OK);
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
    CHECK_EQ_INT(tls_server_create(crt1, key1, 0, &srv, err, sizeof err), TLS_OK);
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
    printf("handshake in memory (TLS 1.3, X25519, ECDSA P-256), median per connection: "
           "full %.0f us (server side %.0f us), resumed %.0f us (server side %.0f us)\n",
           median(full_total, H), median(full_srv, H), median(res_total, H), median(res_srv, H));

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

    tls_server *srv = NULL;
    tls_client *cli = NULL;
    CHECK_EQ_INT(tls_server_create(crt1, key1, 0, &srv, err, sizeof err), TLS_OK);
    CHECK_EQ_INT(tls_client_create(crt1, NULL, &cli, err, sizeof err), TLS_OK);
    if (srv != NULL && cli != NULL) {
        test_verification(srv);
        test_garbage(srv, cli);
        test_tls12_and_old_versions(srv);
        measure(srv);
    }
    tls_client_free(cli);
    tls_server_free(srv);

    test_ticket_rotation();
    test_threads();

    remove_tree(dir);
    return check_summary();
}
