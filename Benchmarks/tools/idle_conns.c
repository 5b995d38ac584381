/*
 * idle_conns.c — opens --connections WebSocket connections (TLS or plain)
 * on aegis_wsc, completes the upgrade on each, holds them idle for --hold
 * seconds and exits: what a server pays per idle connection is measured
 * on the server's side (its VmRSS before and after) while this holds.
 *
 * Prints "idle_conns: opened N/M …" as soon as the ramp is over (flushed,
 * so a script can wait for that line before measuring), then a JSON line
 * at the end. Connections are spread over --sources loopback addresses
 * (127.0.0.1 … 127.0.0.K) as one source address has ~28k ephemeral ports.
 * RLIMIT_NOFILE is raised to its hard limit first.
 *
 * Bounded: the ramp gets RAMP_LIMIT_S, then --hold seconds.
 *
 * Build (from the repository root):
 *   cc -std=gnu17 -O2 -D_GNU_SOURCE -I CSources/AegisCore/include -I CSources/AegisCore/src \
 *      -I CSources/AegisIO/include -I CSources/AegisIO/src CSources/AegisCore/src/?*.c \
 *      CSources/AegisIO/src/?*.c Benchmarks/tools/idle_conns.c \
 *      -lsodium -lssl -lcrypto -luring -lpthread -o /tmp/idle_conns
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

#define RAMP_WINDOW 512        /* connections opening at once */
#define RAMP_LIMIT_S 60
#define EVENTS 1024

typedef struct options {
    const char *host, *path, *pin, *ca, *server_name;
    uint16_t port;
    bool tls;
    unsigned connections, sources;
    double hold;
    aegis_io_backend backend;
} options;

static uint64_t mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void usage(void) {
    fprintf(stderr,
            "usage: idle_conns [--host H] [--port P] [--path /p] [--tls [--pin SHA256HEX | --ca FILE]]\n"
            "                  [--server-name NAME] [--connections N] [--hold S]\n"
            "                  [--backend auto|uring|epoll] [--sources K]\n");
}

static int parse_options(int argc, char **argv, options *o) {
    *o = (options){ .host = "127.0.0.1", .path = "/", .port = 8443, .connections = 10000,
                    .hold = 5, .sources = 1 };
    static const struct option longs[] = {
        { "host", required_argument, NULL, 'h' },   { "port", required_argument, NULL, 'p' },
        { "path", required_argument, NULL, 'P' },   { "tls", no_argument, NULL, 't' },
        { "pin", required_argument, NULL, 'k' },    { "ca", required_argument, NULL, 'c' },
        { "server-name", required_argument, NULL, 'n' },
        { "connections", required_argument, NULL, 'C' },
        { "hold", required_argument, NULL, 'H' },   { "backend", required_argument, NULL, 'b' },
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
        case 'H': o->hold = atof(optarg); break;
        case 'r': o->sources = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'b':
            if (strcmp(optarg, "auto") == 0) o->backend = AEGIS_IO_AUTO;
            else if (strcmp(optarg, "uring") == 0 || strcmp(optarg, "io_uring") == 0)
                o->backend = AEGIS_IO_URING;
            else if (strcmp(optarg, "epoll") == 0) o->backend = AEGIS_IO_EPOLL;
            else {
                usage();
                return -1;
            }
            break;
        default: usage(); return -1;
        }
    }
    if (o->connections == 0 || o->hold < 0 || o->sources > 254) {
        usage();
        return -1;
    }
    return 0;
}

static void raise_nofile(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int main(int argc, char **argv) {
    options o;
    if (parse_options(argc, argv, &o) != 0) return 2;
    raise_nofile();
    aegis_wsc_config cfg = {
        .backend = o.backend, .tls = o.tls, .ca_file = o.ca, .pin_sha256 = o.pin,
        .server_name = o.server_name, .max_connections = o.connections,
    };
    aegis_wsc *ep = NULL;
    char err[256] = "";
    int r = aegis_wsc_create(&cfg, &ep, err, sizeof err);
    if (r != 0) {
        fprintf(stderr, "idle_conns: %s\n", err);
        return 1;
    }
    aegis_wsc_event *evs = calloc(EVENTS, sizeof *evs);
    if (evs == NULL) return 1;

    /* Every event is about one of ours: OPEN counts it in, anything final
     * (before or after OPEN) counts it out. Ids need not be told apart. */
    unsigned next = 0, opening = 0, opened = 0, failed = 0, lost = 0, reported = 0;
    uint64_t start = mono_ms(), ramp_end = start + RAMP_LIMIT_S * 1000u;
    while ((next < o.connections || opening > 0) && mono_ms() < ramp_end) {
        while (next < o.connections && opening < RAMP_WINDOW) {
            char src[32];
            const char *source = NULL;
            if (o.sources > 0) {
                snprintf(src, sizeof src, "127.0.0.%u", 1 + next % o.sources);
                source = src;
            }
            uint64_t id;
            r = aegis_wsc_connect(ep, o.host, o.port, o.path, NULL, 0, source, &id);
            next++;
            if (r == 0) {
                opening++;
            } else {
                failed++;
                if (reported++ < 5) fprintf(stderr, "idle_conns: connect: %s\n", strerror(-r));
            }
        }
        int n = aegis_wsc_run(ep, evs, EVENTS, 100);
        if (n < 0) {
            fprintf(stderr, "idle_conns: aegis_wsc_run: %s\n", strerror(-n));
            break;
        }
        for (int i = 0; i < n; i++) {
            if (evs[i].kind == AEGIS_WSC_EV_OPEN) {
                opening--;
                opened++;
            } else if (evs[i].kind == AEGIS_WSC_EV_ERROR || evs[i].kind == AEGIS_WSC_EV_REFUSED ||
                       evs[i].kind == AEGIS_WSC_EV_CLOSED) {
                /* CLOSED before the ramp ends: an opened one was dropped. */
                if (evs[i].kind == AEGIS_WSC_EV_CLOSED) {
                    opened--;
                    lost++;
                } else {
                    opening--;
                    failed++;
                    if (reported++ < 5)
                        fprintf(stderr, "idle_conns: connection failed: error %d, HTTP %d\n",
                                evs[i].error, evs[i].status);
                }
            }
        }
    }
    double ramp_s = (double)(mono_ms() - start) / 1000.0;
    printf("idle_conns: opened %u/%u in %.2f s (%u failed) on %s%s; holding %.0f s\n", opened,
           o.connections, ramp_s, failed + opening, aegis_wsc_backend_name(ep),
           o.tls ? ", TLS" : "", o.hold);
    fflush(stdout);

    /* Hold: the loop keeps running (pings get their pongs), and a
     * connection the server drops is counted. */
    uint64_t hold_end = mono_ms() + (uint64_t)(o.hold * 1000);
    unsigned held_open = opened;
    for (uint64_t t = mono_ms(); t < hold_end; t = mono_ms()) {
        int n = aegis_wsc_run(ep, evs, EVENTS, (int)(hold_end - t));
        if (n < 0) break;
        for (int i = 0; i < n; i++)
            if (evs[i].kind == AEGIS_WSC_EV_CLOSED || evs[i].kind == AEGIS_WSC_EV_ERROR) {
                held_open--;
                lost++;
            }
    }
    printf("{\"connections\":%u,\"opened\":%u,\"failed\":%u,\"still_open_at_end\":%u,"
           "\"dropped\":%u,\"ramp_s\":%.3f,\"hold_s\":%.1f,\"tls\":%s,\"backend\":\"%s\"}\n",
           o.connections, opened, failed + opening, held_open, lost, ramp_s, o.hold,
           o.tls ? "true" : "false", aegis_wsc_backend_name(ep));
    fflush(stdout);
    /* The sockets close with the endpoint (the server sees them go). */
    aegis_wsc_free(ep);
    free(evs);
    return opened == o.connections && lost == 0 ? 0 : 3;
}
