/*
 * test_keys.c — the key schedule of §3.3 checked step by step against the
 * golden values of vectors.json (handshake "with_ephemeral_key"): HKDF on
 * libsodium's HMAC, the Ed25519→X25519 maps, both DH outputs, enc().
 */
#include <sodium.h>

#include "check.h"
#include "internal.h"

static void test_hkdf(void) {
    /* RFC 5869 test case 3 (empty salt and info); our info is always an
     * ASCII label, so the RFC's binary-info cases do not apply. */
    uint8_t ikm[22], empty[1] = { 0 }, okm3[42], want3[42];
    memset(ikm, 0x0b, sizeof ikm);
    hex_decode("8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d"
               "9d201395faa4b61a96c8", want3, sizeof want3);
    hkdf_sha256(okm3, sizeof okm3, empty, 0, ikm, sizeof ikm, "");
    CHECK_EQ_MEM(okm3, want3, sizeof want3);

    /* The vectors' session keys: okm = HKDF(dh1‖dh2, th2, "aegis-v1/session-keys"). */
    uint8_t ikm2[64], th2[32], okm2[64], want2[64];
    hex_decode("3255ed7023adc38f272574103f31bf6d3c244068decddf4ccc9578f7645a0739"
               "e7fea204ab8440d108fb86571024e74c23a3905adfb023ffa8dcbdda856cd64d", ikm2, 64);
    hex_decode("75b50211f0ce929e267c447a1321806724eff70b333404fe44a3133910aad4aa", th2, 32);
    hex_decode("4f0044dc8e30e12c5ed2c856ec127301aaa396b79de093e940c8cc83f10b5684"
               "b5f73163590876d93e91f1719b81908aaee0841faf1c5d85a26646b87dfd318b", want2, 64);
    hkdf_sha256(okm2, 64, th2, 32, ikm2, 64, "aegis-v1/session-keys");
    CHECK_EQ_MEM(okm2, want2, 64);
}

static void test_dh(void) {
    uint8_t pk[32], sk[64], seed[32], ax[32], want_ax[32], a_x[32], want_a_x[32];
    hex_decode("2482a9945ca14a74dd81af9e34abf863e3e51f2ed0d1e0d91e6b1f35d57a3efd", seed, 32);
    crypto_sign_seed_keypair(pk, sk, seed);
    hex_decode("e362700afae60797cb7d87b761e8c2bb14267fcabdcbb2f1e7d1054b63e9de39", want_ax, 32);
    hex_decode("28dd22f1db8ec6dad0b5974902863a5dae97dc07e82c0b357e70a7e47afde673", want_a_x, 32);
    CHECK_EQ_INT(crypto_sign_ed25519_pk_to_curve25519(ax, pk), 0);
    CHECK_EQ_MEM(ax, want_ax, 32);
    CHECK_EQ_INT(crypto_sign_ed25519_sk_to_curve25519(a_x, sk), 0);
    CHECK_EQ_MEM(a_x, want_a_x, 32);

    uint8_t b[32], dh1[32], want_dh1[32], eph[32], dh2[32], want_dh2[32];
    hex_decode("abba6bdf713951b31b0b9180c187966088d241df81fbc80dda5b26051845d169", b, 32);
    hex_decode("3255ed7023adc38f272574103f31bf6d3c244068decddf4ccc9578f7645a0739", want_dh1, 32);
    hex_decode("6b1bd1a425a0506779c36ad3f3cedcd0456cf6951a77504ff33fb4814e47fd77", eph, 32);
    hex_decode("e7fea204ab8440d108fb86571024e74c23a3905adfb023ffa8dcbdda856cd64d", want_dh2, 32);
    CHECK_EQ_INT(crypto_scalarmult(dh1, b, ax), 0);
    CHECK_EQ_MEM(dh1, want_dh1, 32);
    CHECK_EQ_INT(crypto_scalarmult(dh2, b, eph), 0);
    CHECK_EQ_MEM(dh2, want_dh2, 32);

    /* A low-order point gives an all-zero output, which libsodium refuses:
     * the handshake turns that into AEGIS_E_KEY_EXCHANGE (§3.3). */
    uint8_t zero[32] = { 0 }, out[32];
    CHECK(crypto_scalarmult(out, b, zero) != 0);
}

static void test_enc_and_syntax(void) {
    uint8_t buf[32];
    CHECK_EQ_INT(aegis_enc_u64(buf, sizeof buf, 1764211200), 12);
    uint8_t want[12];
    hex_decode("00000008000000006927ba00", want, 12);
    CHECK_EQ_MEM(buf, want, 12);
    CHECK_EQ_INT(aegis_enc_bytes(buf, 3, "abc", 3), 0); /* does not fit */
    CHECK(aegis_is_valid_id("a.b_c:d-e", 9));
    CHECK(!aegis_is_valid_id("a/b", 3));
    CHECK(!aegis_is_valid_id("", 0));
    CHECK(aegis_is_valid_agent_id("host@site", 9));
    CHECK(!aegis_is_valid_id("host@site", 9));
    CHECK(aegis_is_valid_channel("jobs/run", 8));
    CHECK(!aegis_is_valid_channel("jobs run", 8));
    char long_id[300];
    memset(long_id, 'a', sizeof long_id);
    CHECK(aegis_is_valid_id(long_id, 64) && !aegis_is_valid_id(long_id, 65));
    CHECK(aegis_is_valid_channel(long_id, 255) && !aegis_is_valid_channel(long_id, 256));
    CHECK(is_lower_uuid("c3a8f2d1-4e5b-4a69-8d7c-0b1e2f3a4b5c", 36));
    CHECK(!is_lower_uuid("C3A8F2D1-4E5B-4A69-8D7C-0B1E2F3A4B5C", 36));
}

/* The one-step check+map must classify keys exactly as libsodium's
 * crypto_core_ed25519_is_valid_point does. */
static void test_point_check_equivalence(void) {
    uint8_t pk[32], sk[64], x[32], order2[32], mixed[32];
    int disagree = 0, valid = 0;
    /* (0, −1), the point of order 2 */
    memset(order2, 0xff, 32);
    order2[0] = 0xec;
    order2[31] = 0x7f;
    for (int i = 0; i < 3000; i++) {
        switch (i % 4) {
        case 0: randombytes_buf(pk, 32); break;                 /* mostly off-curve */
        case 1: crypto_sign_keypair(pk, sk); break;             /* valid */
        case 2:                                                 /* valid + torsion */
            crypto_sign_keypair(pk, sk);
            crypto_core_ed25519_add(mixed, pk, order2);
            memcpy(pk, mixed, 32);
            break;
        case 3:                                                 /* y ≥ p, small orders */
            memset(pk, 0xff, 32);
            pk[31] = (uint8_t)(0x7f | ((i & 8) << 4));
            pk[0] = (uint8_t)(0xec + (i / 4) % 20);
            if (i % 16 == 3) memcpy(pk, order2, 32);
            if (i % 16 == 7) { memset(pk, 0, 32); pk[0] = 1; }  /* identity */
            break;
        }
        bool a = aegis_is_valid_public_key(pk), b = public_key_to_x25519(pk, x);
        disagree += a != b;
        valid += a;
    }
    CHECK_EQ_INT(disagree, 0);
    CHECK(valid >= 750);
}

static void test_status_table(void) {
    CHECK_EQ_INT(aegis_status_handshake_close_code(AEGIS_E_KEY_MISMATCH), 4003);
    CHECK_EQ_INT(aegis_status_handshake_close_code(AEGIS_E_RATE_LIMITED), 4029);
    CHECK(strcmp(aegis_status_auth_code(AEGIS_E_KEY_EXCHANGE), "malformed") == 0);
    CHECK(strcmp(aegis_status_message_reason(AEGIS_E_DECRYPT), "decrypt") == 0);
    CHECK_EQ_INT(aegis_status_message_close_code(AEGIS_E_JSON_DUPLICATE_KEY), 4004);
    CHECK_EQ_INT(aegis_status_message_close_code(AEGIS_E_BUFFER_TOO_SMALL), 0);
    CHECK(strcmp(aegis_status_name((aegis_status)999), "AEGIS_E_UNKNOWN_STATUS") == 0);
}

int main(void) {
    CHECK_STATUS(aegis_core_init(), AEGIS_OK);
    test_hkdf();
    test_dh();
    test_enc_and_syntax();
    test_point_check_equivalence();
    test_status_table();
    return check_summary();
}
