/*
 * ws.h — RFC 6455 framing, sans-IO (internal to AegisIO).
 *
 * A ws_reader turns received bytes into whole messages and control frames,
 * for either end (a server requires masked frames, a client unmasked ones).
 * It never allocates: message payloads are unmasked into a buffer the
 * caller owns; when that buffer is too small the reader says how large it
 * must be and waits. Every protocol violation is reported with the close
 * code RFC 6455 §7.4 assigns it:
 *   1002 protocol error: RSV bits (no extension is negotiated), unknown
 *        opcode, unmasked client frame / masked server frame, a control
 *        frame fragmented or over 125 bytes, a continuation with no message
 *        open or a new message inside a fragmented one, a non-minimal or
 *        63-bit-overflowing length, a close payload of 1 byte, an invalid
 *        close code (< 1000, 1004–1006, 1015, 1016–2999, ≥ 5000);
 *   1007 invalid UTF-8 in a text message (checked incrementally across
 *        fragments; ASCII runs take a fast path) or in a close reason;
 *   1009 a message (after reassembly) larger than max_message.
 */
#ifndef AEGIS_WS_H
#define AEGIS_WS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum {
    WS_OP_CONTINUATION = 0x0,
    WS_OP_TEXT = 0x1,
    WS_OP_BINARY = 0x2,
    WS_OP_CLOSE = 0x8,
    WS_OP_PING = 0x9,
    WS_OP_PONG = 0xA,
};

enum {
    WS_CLOSE_NORMAL = 1000,
    WS_CLOSE_GOING_AWAY = 1001,
    WS_CLOSE_PROTOCOL = 1002,
    WS_CLOSE_UNSUPPORTED = 1003,
    WS_CLOSE_NO_STATUS = 1005,     /* never sent: a close frame without a code */
    WS_CLOSE_INVALID_DATA = 1007,
    WS_CLOSE_POLICY = 1008,
    WS_CLOSE_TOO_BIG = 1009,
    WS_CLOSE_INTERNAL = 1011,
    WS_CLOSE_TRY_AGAIN = 1013,
};

typedef enum ws_event_kind {
    WS_EV_NONE = 0,        /* all input consumed, nothing complete yet */
    WS_EV_MESSAGE,         /* a whole text or binary message is in msg_buf[0..len) */
    WS_EV_PING,            /* data/len: the ping payload (≤ 125 bytes, inside the reader) */
    WS_EV_PONG,
    WS_EV_CLOSE,           /* close_code (1005 if none), reason/reason_len */
    WS_EV_NEED_BUFFER,     /* grow msg_buf to at least `needed` bytes (contents kept) and call again */
    WS_EV_ERROR,           /* error_code: the close code to send; the reader is done */
} ws_event_kind;

typedef struct ws_event {
    ws_event_kind kind;
    uint8_t opcode;        /* WS_OP_TEXT or WS_OP_BINARY for MESSAGE */
    const uint8_t *data;   /* MESSAGE: == msg_buf; PING/PONG/CLOSE (whole payload): inside the reader */
    size_t len;
    uint16_t close_code;
    const uint8_t *reason;
    size_t reason_len;
    size_t needed;         /* NEED_BUFFER */
    uint16_t error_code;   /* ERROR */
} ws_event;

typedef struct ws_reader {
    /* configuration, set before use and changeable between messages */
    bool server;           /* true: frames must be masked (we are the server) */
    uint64_t max_message;  /* 1009 above this many bytes after reassembly */
    /* state: private */
    uint8_t hdr[14];       /* the current frame's header as it arrives */
    uint8_t hdr_len;       /* bytes of it so far */
    uint8_t hdr_need;      /* its full size, once its first two bytes are in */
    uint8_t opcode, msg_opcode;
    bool fin, masked, in_payload, in_message, failed;
    uint8_t mask[4];
    uint8_t mask_off;      /* payload bytes of the frame done, mod 4 (mask phase) */
    uint16_t error;        /* the close code of the failure, once failed */
    uint64_t remaining;    /* payload bytes left in the current frame */
    size_t msg_len;        /* bytes of the current message in msg_buf */
    uint32_t utf8_state;   /* incremental validator state for text messages */
    uint8_t ctrl[125];
    uint8_t ctrl_len;
} ws_reader;

/* Resets a reader for a new connection. */
void ws_reader_init(ws_reader *r, bool server, uint64_t max_message);

/*
 * Consumes bytes of `in` until one event is complete or the input is used
 * up. Returns the number of bytes consumed (possibly 0 with WS_EV_NEED_BUFFER
 * or WS_EV_ERROR); call again with the rest. A MESSAGE event's payload lies
 * in msg_buf and is the caller's until the next call, which starts the next
 * message at msg_buf[0]. After WS_EV_ERROR the reader returns the same error.
 */
size_t ws_read(ws_reader *r, const uint8_t *in, size_t len, uint8_t *msg_buf, size_t msg_cap,
               ws_event *ev);

/* Writes a frame header (2–14 bytes) into out and returns its length. With
 * mask (client side) the payload must then be masked with ws_mask(). */
size_t ws_frame_header(uint8_t out[14], uint8_t opcode, bool fin, uint64_t payload_len,
                       const uint8_t mask[4]);

/* XORs p[0..n) with the mask, starting at mask offset `offset` (mod 4). */
void ws_mask(uint8_t *p, size_t n, const uint8_t mask[4], size_t offset);

/* A close payload: 2-byte code and the reason truncated to fit 125 bytes at a
 * UTF-8 boundary. Returns its length. */
size_t ws_close_payload(uint8_t out[125], uint16_t code, const char *reason, size_t reason_len);

/* True for a code an endpoint may send in a close frame (RFC 6455 §7.4). */
bool ws_close_code_valid(uint16_t code);

/* Whole-buffer UTF-8 check (ASCII fast path). */
bool ws_utf8_valid(const uint8_t *p, size_t n);

#endif /* AEGIS_WS_H */
