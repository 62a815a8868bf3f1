/* xxh64.c - see xxh64.h.  Little-endian reads are spelt out byte by byte
 * so the result does not depend on the host's byte order. */
#include "data/xxh64.h"

#include <string.h>

#define P1 0x9E3779B185EBCA87ULL
#define P2 0xC2B2AE3D27D4EB4FULL
#define P3 0x165667B19E3779F9ULL
#define P4 0x85EBCA77C2B2AE63ULL
#define P5 0x27D4EB2F165667C5ULL

static uint64_t
rotl(uint64_t x, int r)
{
    return (x << r) | (x >> (64 - r));
}

static uint64_t
le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) {
        v = v << 8 | p[i];
    }
    return v;
}

static uint32_t
le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static uint64_t
round1(uint64_t acc, uint64_t lane)
{
    acc += lane * P2;
    acc = rotl(acc, 31);
    return acc * P1;
}

static uint64_t
merge(uint64_t acc, uint64_t v)
{
    acc ^= round1(0, v);
    return acc * P1 + P4;
}

void
xa_xxh64_init(struct xa_xxh64 *s, uint64_t seed)
{
    memset(s, 0, sizeof *s);
    s->seed = seed;
    s->v[0] = seed + P1 + P2;
    s->v[1] = seed + P2;
    s->v[2] = seed;
    s->v[3] = seed - P1;
}

static void
stripe(struct xa_xxh64 *s, const unsigned char *p)
{
    for (int i = 0; i < 4; i++) {
        s->v[i] = round1(s->v[i], le64(p + 8 * i));
    }
}

void
xa_xxh64_update(struct xa_xxh64 *s, const void *data, size_t len)
{
    const unsigned char *p = data;
    s->total += len;
    if (s->buffered) {
        size_t take = 32 - s->buffered < len ? 32 - s->buffered : len;
        memcpy(s->buf + s->buffered, p, take);
        s->buffered += take;
        p += take;
        len -= take;
        if (s->buffered < 32) {
            return;
        }
        stripe(s, s->buf);
        s->buffered = 0;
    }
    while (len >= 32) {
        stripe(s, p);
        p += 32;
        len -= 32;
    }
    memcpy(s->buf, p, len);
    s->buffered = len;
}

uint64_t
xa_xxh64_digest(const struct xa_xxh64 *s)
{
    uint64_t acc;
    if (s->total >= 32) {
        acc = rotl(s->v[0], 1) + rotl(s->v[1], 7) + rotl(s->v[2], 12) +
              rotl(s->v[3], 18);
        for (int i = 0; i < 4; i++) {
            acc = merge(acc, s->v[i]);
        }
    } else {
        acc = s->seed + P5;
    }
    acc += s->total;
    const unsigned char *p = s->buf;
    size_t len = s->buffered;
    while (len >= 8) {
        acc ^= round1(0, le64(p));
        acc = rotl(acc, 27) * P1 + P4;
        p += 8;
        len -= 8;
    }
    if (len >= 4) {
        acc ^= (uint64_t)le32(p) * P1;
        acc = rotl(acc, 23) * P2 + P3;
        p += 4;
        len -= 4;
    }
    while (len > 0) {
        acc ^= (uint64_t)*p * P5;
        acc = rotl(acc, 11) * P1;
        p++;
        len--;
    }
    acc ^= acc >> 33;
    acc *= P2;
    acc ^= acc >> 29;
    acc *= P3;
    acc ^= acc >> 32;
    return acc;
}

uint64_t
xa_xxh64(const void *data, size_t len, uint64_t seed)
{
    struct xa_xxh64 s;
    xa_xxh64_init(&s, seed);
    xa_xxh64_update(&s, data, len);
    return xa_xxh64_digest(&s);
}
