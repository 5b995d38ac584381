/*
 * tls.h — TLS 1.2/1.3 with OpenSSL over memory BIOs (internal to AegisIO).
 *
 * The event loop owns the sockets; OpenSSL never touches them. Ciphertext
 * received is fed in, plaintext comes out; plaintext to send goes in and
 * ciphertext to send comes out. So the same code runs under io_uring and
 * epoll, and a connection costs no thread and no blocking call.
 *
 * (The "memory BIO" is a small one of tls.c's own, over two byte queues.)
 *
 * Memory: connections use SSL_MODE_RELEASE_BUFFERS, and the ciphertext
 * queues between the socket and OpenSSL are freed as soon as they empty, so
 * an idle connection holds no buffer, only OpenSSL's per-connection state:
 * about 14 KiB for an established server connection with OpenSSL 3.0
 * (9 KiB of it SSL_new's alone), measured by test_tls.c. One exception is
 * OpenSSL's: a post-handshake message (a client's KeyUpdate; on a client,
 * the server's NewSessionTicket) leaves its 16 KiB handshake buffer
 * allocated until the connection is freed.
 *
 * Threads: a tls_server or tls_client may be shared by any number of
 * threads, and tls_server_reload() may run on any of them; a tls_conn is
 * used by one thread at a time. A tls_server or tls_client must outlive the
 * connections made from it (free every tls_conn first).
 *
 * OpenSSL's per-thread error queue is always left empty on return.
 */
#ifndef AEGIS_TLS_H
#define AEGIS_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct tls_server tls_server;   /* certificate, key, ticket keys (and their file) */
typedef struct tls_client tls_client;   /* trust: CA file or pinned SHA-256 */
typedef struct tls_conn tls_conn;

/* Errors are returned as negative numbers with a message written to err
 * (for the tls_conn calls, which have no err: see tls_conn_error()). */
enum {
    TLS_OK = 0,
    TLS_WANT_MORE = 1,      /* tls_read: no plaintext until more ciphertext arrives */
    TLS_ERR_CONFIG = -1,    /* files missing, unreadable, key does not match the certificate */
    TLS_ERR_HANDSHAKE = -2, /* the peer's handshake failed (bad version, no shared cipher…) */
    TLS_ERR_PROTOCOL = -3,  /* a record failed to decrypt, or the peer misbehaved */
    TLS_ERR_CLOSED = -4,    /* the peer sent close_notify */
    TLS_ERR_VERIFY = -5,    /* client: the server's certificate is not trusted / pin differs */
    TLS_ERR_NOMEM = -6,
};

/*
 * A server context from PEM files. TLS 1.2 and 1.3 only; session resumption
 * by stateless tickets whose keys rotate every `ticket_rotate_seconds`
 * (0: 3600; the previous key still decrypts, so a ticket lives up to twice
 * that). The ticket keys are random and belong to the server, not to a
 * certificate: tickets stay valid across tls_server_reload(). TLS 1.3
 * resumption may skip (EC)DHE (psk_ke) when the client offers it: see
 * SERVER_PSK_KE in tls.c for when that happens and what it trades.
 *
 * With `ticket_key_path` NULL the keys live in memory only, and a restart
 * invalidates every ticket (each client then makes a full handshake).
 * Otherwise they are kept in that file (aegis_io: <data_dir>/tls-tickets.key)
 * so that tickets survive a restart:
 *  - read at start; created if absent. It must be a regular file with no
 *    access for group or others (0600): anything else is TLS_ERR_CONFIG
 *    and the message says so (as does a file that is not one we wrote:
 *    remove it to start with new keys);
 *  - it holds the current and the previous key with their creation times
 *    (wall clock, Unix ms; ages within a run use the monotonic clock). A
 *    start less than one period after the current key was made keeps it; a
 *    later start rotates (a new current key, the old one kept as previous
 *    while younger than two periods), so a ticket issued up to two periods
 *    ago still resumes, whether or not the server restarted meanwhile;
 *  - rewritten whenever the keys rotate, by the thread whose ticket
 *    operation found them due: a temporary file (0600) in the same
 *    directory, fsync, rename over the old one, fsync of the directory, so
 *    a crash leaves the old keys or the new, never a torn file. A failed
 *    rewrite (disk full…) keeps the new keys in memory and the file stale;
 *    the next rotation writes again.
 * The file is as secret as the certificate's private key: whoever holds it
 * can decrypt tickets issued under its keys, pose as this server to clients
 * resuming with them and, for psk_ke resumptions, read recorded traffic.
 * Keep it out of backups and images; deleting it (then restarting) only
 * costs one full handshake per client. One server per file: two processes
 * sharing it would each rotate and overwrite the other's keys.
 * `err` may be NULL.
 */
int tls_server_create(const char *cert_path, const char *key_path, unsigned ticket_rotate_seconds,
                      const char *ticket_key_path, tls_server **out, char *err, size_t err_len);
/* Rereads the files (SIGHUP). New handshakes use them; established
 * connections keep theirs. On failure the old certificate stays in use. */
int tls_server_reload(tls_server *s, char *err, size_t err_len);
void tls_server_free(tls_server *s);
/* SHA-256 of the certificate new handshakes get (changes with a reload). */
void tls_server_fingerprint(tls_server *s, char fingerprint_hex[65]);

/* With no certificate configured: creates `dir`/tls.crt and `dir`/tls.key
 * (0600) for CN=localhost, SAN DNS:localhost, IP:127.0.0.1, ::1 (EC P-256,
 * 10 years) unless both exist, and writes the certificate's SHA-256
 * fingerprint as 64 lower-case hex characters. `dir` is created (0700) if
 * missing; each file is written to a temporary name, synced and renamed, so
 * a crash never leaves a half-written key. The paths written to cert_path
 * and key_path (each path_cap bytes) are those to give tls_server_create. */
int tls_ensure_self_signed(const char *dir, char *cert_path, char *key_path, size_t path_cap,
                           char fingerprint_hex[65], char *err, size_t err_len);

/* SHA-256 of a PEM certificate's DER (the file's first), hex (for pinning).
 * TLS_OK or TLS_ERR_CONFIG (unreadable, not a certificate). */
int tls_cert_fingerprint(const char *cert_path, char fingerprint_hex[65]);

/* A client context: verify against ca_path (PEM), or, when pin_sha256_hex
 * is given, accept exactly the certificate with that fingerprint; with
 * neither, verify against the system store. A pin (64 hex digits) replaces
 * chain, date and name checks (ca_path is then ignored): it is how a client
 * trusts a self-signed gateway.
 *
 * The context keeps the newest session per server name (up to 16 names,
 * the least recently stored replaced first), and tls_conn_client() offers
 * it: the next connection to that name resumes (TLS 1.3 ticket or TLS 1.2
 * ticket). A session whose handshake fails is forgotten. */
int tls_client_create(const char *ca_path, const char *pin_sha256_hex, tls_client **out, char *err,
                      size_t err_len);
void tls_client_free(tls_client *c);

/* NULL when out of memory. */
tls_conn *tls_conn_server(tls_server *s);
/* server_name is sent as SNI (unless an IP literal) and the certificate
 * must match it (DNS name or IP address); it may be NULL only with a pin.
 * The ClientHello is waiting in tls_pending() on return. NULL when out of
 * memory or when server_name is missing or unusable. */
tls_conn *tls_conn_client(tls_client *c, const char *server_name);
void tls_conn_free(tls_conn *c);

/* Ciphertext from the socket (copied: the buffer may be reused at once).
 * TLS_OK or TLS_ERR_NOMEM. */
int tls_feed(tls_conn *c, const uint8_t *in, size_t len);
/* Drives the handshake and decrypts: writes up to cap plaintext bytes into
 * out and their count into *n. Returns TLS_OK (*n > 0), TLS_WANT_MORE
 * (*n == 0: feed more ciphertext), or an error. Call tls_pending() /
 * tls_take() afterwards: handshake messages or alerts may be due. Call it
 * again while it returns TLS_OK: more records may be buffered. With cap 0
 * it only drives the handshake. Errors are final for the connection (send
 * what tls_pending() holds, the alert, then close); TLS_ERR_CLOSED is the
 * peer's close_notify (answer with tls_shutdown()). tls_conn_error() says
 * what failed. */
int tls_read(tls_conn *c, uint8_t *out, size_t cap, size_t *n);
/* Plaintext to send (after the handshake completed); all of it is taken
 * and its ciphertext is in tls_pending() on return. TLS_ERR_PROTOCOL before
 * the handshake completed or after a failure or tls_shutdown(). */
int tls_write(tls_conn *c, const uint8_t *in, size_t len);
/* Ciphertext waiting to go to the socket, and taking it. */
size_t tls_pending(const tls_conn *c);
size_t tls_take(tls_conn *c, uint8_t *out, size_t cap);
/* Queues close_notify (nothing during the handshake: just close then). */
void tls_shutdown(tls_conn *c);
/* True once the handshake completed (and still after a later error). */
bool tls_handshake_done(const tls_conn *c);
/* Was this handshake a resumption (a ticket)? */
bool tls_resumed(const tls_conn *c);
/* "TLSv1.3" or "TLSv1.2", once the handshake is done. */
const char *tls_version(const tls_conn *c);
/* Why the last call failed, for the log: OpenSSL's reason, and for a
 * client TLS_ERR_VERIFY the certificate check that failed. Keeps only
 * OpenSSL's error code in the connection, formatted here. */
void tls_conn_error(const tls_conn *c, char *err, size_t err_len);

#endif /* AEGIS_TLS_H */
