/*
 * echo_load.c — a WebSocket echo load generator on aegis_wsc (the
 * transport's client), for measuring the gateway in echo mode.
 *
 * It opens --connections connections (at most RAMP_WINDOW opening at a
 * time), then for --seconds keeps --inflight messages of --size bytes in
 * flight on each: each echo is checked byte for byte and answered with the
 * next message. Round trips (send → echo) go into a log-linear histogram;
 * what is printed is the throughput over the window and the percentiles,
 * as a line for people and a JSON line for scripts.
 *
 * Bounded: the ramp gets RAMP_LIMIT_S, the run --seconds, and closing the
 * connections a GRACE_S grace; then it exits whatever happened.
 *
 * Build (from the repository root):
 *   cc -std=gnu17 -O2 -D_GNU_SOURCE -I CSources/AegisCore/include -I CSources/AegisCore/src \
 *      -I CSources/AegisIO/include -I CSources/AegisIO/src CSources/AegisCore/src/?*.c \
 *      CSources/AegisIO/src/?*.c Benchmarks/tools/echo_load.c \
 *      -lsodium -lssl -lcrypto -luring -lpthread -o /tmp/echo_load
 *
 *   /tmp/echo_load --port 8443 --connections 1000 --size 64 --seconds 10
 *
 * Clock: one CLOCK_MONOTONIC read per batch of events. Echoes in a batch
 * arrived together, and the messages sent in answer are submitted by the
 * next aegis_wsc_run, so a round trip includes the client's own turn
 * through its loop, as an application would see it.
 */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "aegis_wsc.h"

#define RAMP_WINDOW 256        /* connections opening at once */
#define RAMP_LIMIT_S 10
#define GRACE_S 10
#define EVENTS 1024
#define PATTERN_SLACK 256      /* payloads are windows of a random pattern */

/* ------------------------------------------------------------------------ */
/* Histogram: HdrHistogram's layout, values in microseconds                  */
/*
 * Values below 2^SUB_BITS are counted exactly (1 µs resolution); above,
 * each power-of-two range [2^k, 2^(k+1)) is cut into HALF equal buckets, so
 * a value is known to within 1/HALF (1.6 %). Up to MAX_US (10 s, larger
 * values are clamped): 1216 counters, fixed.
 */
#define SUB_BITS 7
#define SUB (1u << SUB_BITS)
#define HALF (SUB / 2)
#define MAX_US UINT64_C(10000000)
#define H_BUCKETS (SUB + (24 - SUB_BITS + 1) * HALF)   /* 2^24 µs > 10 s */

typedef struct histogram {
    uint64_t counts[H_BUCKETS];
    uint64_t total, max, sum;
} histogram;

static unsigned h_index(uint64_t v) {
    if (v < SUB) return (unsigned)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    unsigned shift = msb - (SUB_BITS - 1);          /* ≥ 1: v >> shift is in [HALF, SUB) */
    return SUB + (shift - 1) * HALF + (unsigned)((v >> shift) - HALF);
}

/* The largest value counted in bucket i (what a percentile reports, as
 * HdrHistogram's highestEquivalentValue: never below the truth). */
static uint64_t h_upper(unsigned i) {
    if (i < SUB) return i;
    unsigned k = i - SUB, shift = k / HALF + 1;
    uint64_t sub = k % HALF + HALF;
    return ((sub + 1) << shift) - 1;
}

static void h_record(histogram *h, uint64_t us) {
    if (us > MAX_US) us = MAX_US;
    h->counts[h_index(us)]++;
    h->total++;
    h->sum += us;
    if (us > h->max) h->max = us;
}

static uint64_t h_percentile(const histogram *h, double p) {
    if (h->total == 0) return 0;
    double want = p / 100.0 * (double)h->total;
    uint64_t rank = (uint64_t)want;
    if ((double)rank < want || rank == 0) rank++;   /* ceil, without libm */
    uint64_t seen = 0;
    for (unsigned i = 0; i < H_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= rank) {
            uint64_t v = h_upper(i);
            return v < h->max ? v : h->max;
        }
    }
    return h->max;
}

/* ------------------------------------------------------------------------ */
/* Connections, found by id through an open-addressing table                  */

typedef struct lconn {
    uint64_t id;
    bool open, gone;
    uint64_t tx_seq, rx_seq;   /* next to send, next expected back */
} lconn;

typedef struct idmap {
    uint64_t *keys;
    uint32_t *vals;
    size_t mask;
} idmap;

static size_t id_hash(uint64_t id) {
    id ^= id >> 33;
    id *= UINT64_C(0xff51afd7ed558ccd);
    return (size_t)(id ^ (id >> 33));
}

static bool idmap_init(idmap *m, size_t n) {
    size_t cap = 16;
    while (cap < n * 2) cap *= 2;
    m->keys = calloc(cap, sizeof *m->keys);
    m->vals = calloc(cap, sizeof *m->vals);
    m->mask = cap - 1;
    return m->keys && m->vals;
}

/* Ids are never 0 (aegis_wsc.h: generations start at 1), so 0 is "empty";
 * entries are never removed (a run opens each connection once). */
static void idmap_put(idmap *m, uint64_t id, uint32_t v) {
    size_t i = id_hash(id) & m->mask;
    while (m->keys[i] != 0 && m->keys[i] != id) i = (i + 1) & m->mask;
    m->keys[i] = id;
    m->vals[i] = v;
}

static long idmap_get(const idmap *m, uint64_t id) {
    size_t i = id_hash(id) & m->mask;
    while (m->keys[i] != 0) {
        if (m->keys[i] == id) return m->vals[i];
        i = (i + 1) & m->mask;
    }
    return -1;
}

/* ------------------------------------------------------------------------ */
/* The run                                                                   */

typedef struct options {
    const char *host, *path, *pin, *ca, *server_name;
    uint16_t port;
    bool tls;
    unsigned connections, inflight, sources;
    size_t size;
    double seconds;
    aegis_io_backend backend;
} options;

typedef struct load {
    options o;
    aegis_wsc *ep;
    lconn *conns;
    idmap ids;
    uint64_t *sent_ns;         /* [conn * inflight + seq % inflight] */
    uint8_t *pattern;          /* size + PATTERN_SLACK random bytes */
    uint8_t *scratch;          /* a payload being built */
    histogram hist;
    uint64_t now_ns, window_end_ns;
    bool sending;              /* inside the measured window */
    uint64_t received_in_window, sent, errors, mismatches, conn_errors;
    unsigned opening, opened, failed, connected_total, live;
} load;

static uint64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Message seq of connection idx: a window into the pattern chosen by both,
 * with the sequence number (and the index) in its first 8 bytes. */
static size_t payload_offset(uint32_t idx, uint64_t seq) {
    return (size_t)((seq * 131u + idx) & (PATTERN_SLACK - 1));
}

static uint64_t payload_tag(uint32_t idx, uint64_t seq) {
    return seq ^ ((uint64_t)idx << 40);
}

static void build_payload(const load *L, uint32_t idx, uint64_t seq, uint8_t *out) {
    memcpy(out, L->pattern + payload_offset(idx, seq), L->o.size);
    if (L->o.size >= 8) {
        uint64_t tag = payload_tag(idx, seq);
        memcpy(out, &tag, 8);
    }
}

static bool payload_ok(const load *L, uint32_t idx, uint64_t seq, const uint8_t *p, size_t len) {
    if (len != L->o.size) return false;
    const uint8_t *want = L->pattern + payload_offset(idx, seq);
    if (L->o.size < 8) return memcmp(p, want, len) == 0;
    uint64_t tag;
    memcpy(&tag, p, 8);
    return tag == payload_tag(idx, seq) && memcmp(p + 8, want + 8, len - 8) == 0;
}

static void send_next(load *L, uint32_t idx) {
    lconn *c = &L->conns[idx];
    uint64_t seq = c->tx_seq++;
    build_payload(L, idx, seq, L->scratch);
    L->sent_ns[(size_t)idx * L->o.inflight + seq % L->o.inflight] = L->now_ns;
    int r = aegis_wsc_send(L->ep, c->id, false, L->scratch, L->o.size);
    if (r != 0) {
        L->errors++;
        c->tx_seq--;
        return;
    }
    L->sent++;
}

static int start_connection(load *L, uint32_t idx) {
    char src[32];
    const char *source = NULL;
    if (L->o.sources > 0) {
        snprintf(src, sizeof src, "127.0.0.%u", 1 + idx % L->o.sources);
        source = src;
    }
    uint64_t id;
    int r = aegis_wsc_connect(L->ep, L->o.host, L->o.port, L->o.path, NULL, 0, source, &id);
    if (r != 0) return r;
    L->conns[idx].id = id;
    idmap_put(&L->ids, id, idx);
    L->opening++;
    return 0;
}

static void on_event(load *L, const aegis_wsc_event *ev) {
    long found = idmap_get(&L->ids, ev->conn);
    if (found < 0) return;
    uint32_t idx = (uint32_t)found;
    lconn *c = &L->conns[idx];
    switch (ev->kind) {
    case AEGIS_WSC_EV_OPEN:
        c->open = true;
        L->opening--;
        L->opened++;
        L->live++;
        return;
    case AEGIS_WSC_EV_MESSAGE: {
        uint64_t seq = c->rx_seq++;
        if (ev->text || !payload_ok(L, idx, seq, ev->data, ev->len)) {
            L->mismatches++;
            L->errors++;
        }
        uint64_t sent = L->sent_ns[(size_t)idx * L->o.inflight + seq % L->o.inflight];
        if (L->sending) {
            h_record(&L->hist, (L->now_ns - sent + 500) / 1000);
            L->received_in_window++;
            send_next(L, idx);
        }
        return;
    }
    case AEGIS_WSC_EV_PONG:
        return;
    case AEGIS_WSC_EV_REFUSED:
    case AEGIS_WSC_EV_ERROR:
    case AEGIS_WSC_EV_CLOSED:
        if (c->gone) return;
        c->gone = true;
        if (c->open) {
            L->live--;
            /* The close we asked for at the end is no error; anything else is. */
            if (ev->kind != AEGIS_WSC_EV_CLOSED || ev->close_code != 1000) {
                L->errors++;
                L->conn_errors++;
            }
        } else {
            L->opening--;
            L->failed++;
            L->errors++;
            L->conn_errors++;
            if (L->failed <= 5)
                fprintf(stderr, "echo_load: connection %u failed: %s %d (HTTP %d)\n", idx,
                        ev->kind == AEGIS_WSC_EV_REFUSED ? "refused" : "error", ev->error,
                        ev->status);
        }
        c->open = false;
        return;
    }
}

/* One turn of the loop: events, then the clock. */
static int pump(load *L, aegis_wsc_event *evs, int timeout_ms) {
    int n = aegis_wsc_run(L->ep, evs, EVENTS, timeout_ms);
    if (n < 0) {
        fprintf(stderr, "echo_load: aegis_wsc_run: %s\n", strerror(-n));
        return n;
    }
    L->now_ns = mono_ns();
    if (L->sending && L->now_ns >= L->window_end_ns) L->sending = false;
    for (int i = 0; i < n; i++) on_event(L, &evs[i]);
    return n;
}

static void usage(void) {
    fprintf(stderr,
            "usage: echo_load [--host H] [--port P] [--path /p] [--tls [--pin SHA256HEX | --ca FILE]]\n"
            "                 [--server-name NAME] [--connections N] [--size BYTES] [--seconds S]\n"
            "                 [--inflight K] [--backend auto|uring|epoll] [--sources K]\n");
}

static bool parse_backend(const char *s, aegis_io_backend *b) {
    if (strcmp(s, "auto") == 0) *b = AEGIS_IO_AUTO;
    else if (strcmp(s, "uring") == 0 || strcmp(s, "io_uring") == 0) *b = AEGIS_IO_URING;
    else if (strcmp(s, "epoll") == 0) *b = AEGIS_IO_EPOLL;
    else return false;
    return true;
}

static int parse_options(int argc, char **argv, options *o) {
    *o = (options){ .host = "127.0.0.1", .path = "/", .port = 8443, .connections = 1000,
                    .size = 64, .seconds = 10, .inflight = 1 };
    static const struct option longs[] = {
        { "host", required_argument, NULL, 'h' },   { "port", required_argument, NULL, 'p' },
        { "path", required_argument, NULL, 'P' },   { "tls", no_argument, NULL, 't' },
        { "pin", required_argument, NULL, 'k' },    { "ca", required_argument, NULL, 'c' },
        { "server-name", required_argument, NULL, 'n' },
        { "connections", required_argument, NULL, 'C' },
        { "size", required_argument, NULL, 's' },   { "seconds", required_argument, NULL, 'S' },
        { "inflight", required_argument, NULL, 'i' },
        { "backend", required_argument, NULL, 'b' },
        { "sources", required_argument, NULL, 'r' }, { "help", no_argument, NULL, '?' },
        { NULL, 0, NULL, 0 },
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        switch (ch) {
        case 'h': o->host = optarg; break;
        case 'p': o->port = (uint16_t)atoi(optarg); break;
        case 'P': o->path = optarg; break;
        case 't': o->tls = true; break;
        case 'k': o->pin = optarg; break;
        case 'c': o->ca = optarg; break;
        case 'n': o->server_name = optarg; break;
        case 'C': o->connections = (unsigned)strtoul(optarg, NULL, 10); break;
        case 's': o->size = (size_t)strtoull(optarg, NULL, 10); break;
        case 'S': o->seconds = atof(optarg); break;
        case 'i': o->inflight = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'r': o->sources = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'b':
            if (!parse_backend(optarg, &o->backend)) {
                usage();
                return -1;
            }
            break;
        default: usage(); return -1;
        }
    }
    if (o->connections == 0 || o->inflight == 0 || o->seconds <= 0 || o->sources > 254 ||
        o->size > (64u << 20)) {
        usage();
        return -1;
    }
    return 0;
}

/* Thousands of sockets need more than the usual 1024 descriptors. */
static void raise_nofile(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int main(int argc, char **argv) {
    load L;
    memset(&L, 0, sizeof L);
    if (parse_options(argc, argv, &L.o) != 0) return 2;
    raise_nofile();
    options *o = &L.o;

    aegis_wsc_config cfg = {
        .backend = o->backend, .tls = o->tls, .ca_file = o->ca, .pin_sha256 = o->pin,
        .server_name = o->server_name, .max_message = o->size > (1u << 20) ? (uint32_t)o->size : 0,
        .max_connections = o->connections,
    };
    char err[256] = "";
    int r = aegis_wsc_create(&cfg, &L.ep, err, sizeof err);
    if (r != 0) {
        fprintf(stderr, "echo_load: %s\n", err);
        return 1;
    }
    L.conns = calloc(o->connections, sizeof *L.conns);
    L.sent_ns = calloc((size_t)o->connections * o->inflight, sizeof *L.sent_ns);
    L.pattern = malloc(o->size + PATTERN_SLACK);
    L.scratch = malloc(o->size + 1);
    aegis_wsc_event *evs = calloc(EVENTS, sizeof *evs);
    if (!L.conns || !L.sent_ns || !L.pattern || !L.scratch || !evs ||
        !idmap_init(&L.ids, o->connections)) {
        fprintf(stderr, "echo_load: out of memory\n");
        return 1;
    }
    uint64_t x = UINT64_C(0x9e3779b97f4a7c15);
    for (size_t i = 0; i < o->size + PATTERN_SLACK; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        L.pattern[i] = (uint8_t)(x >> 32);
    }

    /* Ramp: every connection opened (or failed), RAMP_WINDOW at a time. */
    uint64_t ramp_start = mono_ns(), ramp_end = ramp_start + (uint64_t)RAMP_LIMIT_S * 1000000000u;
    unsigned next = 0;
    L.now_ns = ramp_start;
    while ((next < o->connections || L.opening > 0) && L.now_ns < ramp_end) {
        while (next < o->connections && L.opening < RAMP_WINDOW) {
            if ((r = start_connection(&L, next)) != 0) {
                if (L.failed++ < 5)
                    fprintf(stderr, "echo_load: connect %u: %s\n", next, strerror(-r));
                L.errors++;
                L.conn_errors++;
            }
            next++;
        }
        if (pump(&L, evs, 100) < 0) break;
    }
    double ramp_s = (double)(mono_ns() - ramp_start) / 1e9;
    if (L.opened == 0) {
        fprintf(stderr, "echo_load: no connection opened (%u failed)\n", L.failed);
        return 1;
    }

    /* The window: inflight messages on every open connection, each echo
     * answered by the next message until the window ends. */
    L.now_ns = mono_ns();
    uint64_t t0 = L.now_ns;
    L.window_end_ns = t0 + (uint64_t)(o->seconds * 1e9);
    L.sending = true;
    for (uint32_t i = 0; i < o->connections; i++)
        if (L.conns[i].open)
            for (unsigned k = 0; k < o->inflight; k++) send_next(&L, i);
    while (L.sending && L.live > 0)
        if (pump(&L, evs, 50) < 0) break;
    double window_s = (double)(L.now_ns - t0) / 1e9;
    if (L.now_ns > L.window_end_ns) window_s = o->seconds;

    /* Drain: the last echoes are still checked; then the close handshakes. */
    uint64_t grace_end = mono_ns() + (uint64_t)GRACE_S * 1000000000u;
    uint64_t outstanding;
    do {
        outstanding = 0;
        for (uint32_t i = 0; i < o->connections; i++)
            if (L.conns[i].open) outstanding += L.conns[i].tx_seq - L.conns[i].rx_seq;
        if (outstanding == 0 || pump(&L, evs, 50) < 0) break;
    } while (L.now_ns < grace_end);
    uint64_t lost = outstanding;
    for (uint32_t i = 0; i < o->connections; i++)
        if (L.conns[i].open) aegis_wsc_close(L.ep, L.conns[i].id, 1000, "done");
    while (L.live > 0 && L.now_ns < grace_end)
        if (pump(&L, evs, 50) < 0) break;
    L.errors += lost;

    double mps = (double)L.received_in_window / window_s;
    uint64_t p50 = h_percentile(&L.hist, 50), p99 = h_percentile(&L.hist, 99),
             p999 = h_percentile(&L.hist, 99.9);
    double mean = L.hist.total ? (double)L.hist.sum / (double)L.hist.total : 0;
    const char *backend = aegis_wsc_backend_name(L.ep);
    printf("echo_load: %u/%u connections (ramp %.2f s), %zu B, inflight %u, %.1f s, %s%s: "
           "%.0f msg/s, p50 %llu us, p99 %llu us, p99.9 %llu us, mean %.0f us, max %llu us, "
           "errors %llu (mismatches %llu, connections %llu, unanswered %llu)\n",
           L.opened, o->connections, ramp_s, o->size, o->inflight, window_s, backend,
           o->tls ? ", TLS" : "", mps, (unsigned long long)p50, (unsigned long long)p99,
           (unsigned long long)p999, mean, (unsigned long long)L.hist.max,
           (unsigned long long)L.errors, (unsigned long long)L.mismatches,
           (unsigned long long)L.conn_errors, (unsigned long long)lost);
    printf("{\"connections\":%u,\"opened\":%u,\"size\":%zu,\"inflight\":%u,\"seconds\":%.3f,"
           "\"tls\":%s,\"messages\":%llu,\"messages_per_s\":%.0f,\"p50_us\":%llu,\"p99_us\":%llu,"
           "\"p999_us\":%llu,\"mean_us\":%.1f,\"max_us\":%llu,\"errors\":%llu,\"backend\":\"%s\"}\n",
           o->connections, L.opened, o->size, o->inflight, window_s, o->tls ? "true" : "false",
           (unsigned long long)L.received_in_window, mps, (unsigned long long)p50,
           (unsigned long long)p99, (unsigned long long)p999, mean,
           (unsigned long long)L.hist.max, (unsigned long long)L.errors, backend);
    fflush(stdout);

    aegis_wsc_free(L.ep);
    free(L.conns);
    free(L.sent_ns);
    free(L.pattern);
    free(L.scratch);
    free(L.ids.keys);
    free(L.ids.vals);
    free(evs);
    return L.errors ? 3 : 0;
}
