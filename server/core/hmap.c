/* hmap.c - see hmap.h. */
#include "hmap.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

/* Folded 64x64->128 multiply: cheap and mixes every input bit into both
 * halves, so the low bits used for the slot index are good. */
static inline uint64_t
mix(uint64_t a, uint64_t b)
{
    __uint128_t r = (__uint128_t)a * b;
    return (uint64_t)r ^ (uint64_t)(r >> 64);
}

uint64_t
xa_hash_str(const char *s, size_t len)
{
    uint64_t h = 0x9e3779b97f4a7c15ULL ^ len;
    /* Eight bytes at a time: keys are mostly 46-character refs and
     * 36-character uuids, where byte-wise FNV would dominate lookups. */
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = mix(h ^ w, 0xbf58476d1ce4e5b9ULL);
        s += 8;
        len -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, s, len);
    h = mix(h ^ w, 0x94d049bb133111ebULL);
    return mix(h, 0x2545f4914f6cdd1dULL);
}

void
xa_hmap_init(struct xa_hmap *m)
{
    m->slots = NULL;
    m->cap = 0;
    m->n = 0;
}

void
xa_hmap_clear(struct xa_hmap *m, void (*free_val)(void *val))
{
    for (size_t i = 0; i < m->cap; i++) {
        if (m->slots[i].key) {
            free(m->slots[i].key);
            if (free_val) {
                free_val(m->slots[i].val);
            }
        }
    }
    free(m->slots);
    xa_hmap_init(m);
}

/* Index of the slot holding 'key', or of the empty slot where it would
 * go.  The table must have at least one empty slot. */
static size_t
find_slot(const struct xa_hmap *m, const char *key, uint64_t h)
{
    size_t mask = m->cap - 1;
    size_t i = h & mask;
    for (;;) {
        const struct xa_hmap_slot *s = &m->slots[i];
        if (!s->key || (s->hash == h && strcmp(s->key, key) == 0)) {
            return i;
        }
        i = (i + 1) & mask;
    }
}

static void
rehash(struct xa_hmap *m, size_t new_cap)
{
    struct xa_hmap_slot *old = m->slots;
    size_t old_cap = m->cap;
    m->slots = xa_calloc(new_cap, sizeof *m->slots);
    m->cap = new_cap;
    size_t mask = new_cap - 1;
    for (size_t i = 0; i < old_cap; i++) {
        if (old[i].key) {
            size_t j = old[i].hash & mask;
            while (m->slots[j].key) {
                j = (j + 1) & mask;
            }
            m->slots[j] = old[i];
        }
    }
    free(old);
}

void
xa_hmap_reserve(struct xa_hmap *m, size_t n)
{
    size_t cap = m->cap ? m->cap : 8;
    /* Keep the load at or under 3/4: linear probing degrades fast above. */
    while (n + 1 > cap - cap / 4) {
        cap *= 2;
    }
    if (cap != m->cap) {
        rehash(m, cap);
    }
}

void *
xa_hmap_get(const struct xa_hmap *m, const char *key)
{
    if (!m->n) {
        return NULL;
    }
    size_t i = find_slot(m, key, xa_hash_str(key, strlen(key)));
    return m->slots[i].key ? m->slots[i].val : NULL;
}

bool
xa_hmap_contains(const struct xa_hmap *m, const char *key)
{
    return xa_hmap_key(m, key) != NULL;
}

const char *
xa_hmap_key(const struct xa_hmap *m, const char *key)
{
    if (!m->n) {
        return NULL;
    }
    return m->slots[find_slot(m, key, xa_hash_str(key, strlen(key)))].key;
}

void *
xa_hmap_put(struct xa_hmap *m, const char *key, void *val)
{
    size_t len = strlen(key);
    uint64_t h = xa_hash_str(key, len);
    if (m->cap) {
        size_t i = find_slot(m, key, h);
        if (m->slots[i].key) {
            void *old = m->slots[i].val;
            m->slots[i].val = val;
            return old;
        }
    }
    xa_hmap_reserve(m, m->n + 1);
    size_t i = find_slot(m, key, h);
    m->slots[i].key = xa_strndup(key, len);
    m->slots[i].hash = h;
    m->slots[i].val = val;
    m->n++;
    return NULL;
}

void *
xa_hmap_remove(struct xa_hmap *m, const char *key)
{
    if (!m->n) {
        return NULL;
    }
    size_t mask = m->cap - 1;
    size_t i = find_slot(m, key, xa_hash_str(key, strlen(key)));
    if (!m->slots[i].key) {
        return NULL;
    }
    void *val = m->slots[i].val;
    free(m->slots[i].key);
    m->n--;
    /* Backward shift: pull later members of the probe run into the hole
     * unless their home slot lies cyclically in (hole, member]. */
    size_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (!m->slots[j].key) {
            break;
        }
        size_t k = m->slots[j].hash & mask;
        bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
        if (!stays) {
            m->slots[i] = m->slots[j];
            i = j;
        }
    }
    m->slots[i].key = NULL;
    m->slots[i].val = NULL;
    return val;
}
