/* xxh64.h - XXH64, the 64-bit xxHash, written from its public
 * specification (Yann Collet, "xxHash fast digest algorithm", v0.1.1):
 * XVA files carry one per 1 MiB disk chunk. */
#ifndef XA_XXH64_H
#define XA_XXH64_H

#include <stddef.h>
#include <stdint.h>

/* Incremental state: xa_xxh64_init, any number of updates, digest. */
struct xa_xxh64 {
    uint64_t v[4];
    uint64_t total;
    unsigned char buf[32];
    size_t buffered;
    uint64_t seed;
};

void xa_xxh64_init(struct xa_xxh64 *s, uint64_t seed);
void xa_xxh64_update(struct xa_xxh64 *s, const void *data, size_t len);
uint64_t xa_xxh64_digest(const struct xa_xxh64 *s);
/* One shot. */
uint64_t xa_xxh64(const void *data, size_t len, uint64_t seed);

#endif
