/* hmap.h - a string-keyed hash map of void pointers.
 *
 * Open addressing with linear probing and backward-shift deletion (no
 * tombstones, so lookups stay short however many removals happen).  The
 * map copies each key and owns the copy; values are the caller's.  The
 * stored key of an entry never moves while the entry exists, so callers
 * may keep a pointer to it (xa_hmap_key()) instead of their own copy.
 *
 * Not thread-safe: the owner does its own locking.  Iteration
 * (XA_HMAP_FOR_EACH) must not insert or remove. */
#ifndef XA_HMAP_H
#define XA_HMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct xa_hmap_slot {
    char *key; /* owned; NULL when the slot is empty */
    uint64_t hash;
    void *val;
};

struct xa_hmap {
    struct xa_hmap_slot *slots; /* NULL until the first insert */
    size_t cap;                 /* power of two, or 0 */
    size_t n;                   /* entries in use */
};

/* A zeroed struct ({0}) is an empty map too. */
void xa_hmap_init(struct xa_hmap *m);
/* Frees the keys and the table; calls 'free_val' (if not NULL) on each
 * value.  The map is empty and reusable afterwards. */
void xa_hmap_clear(struct xa_hmap *m, void (*free_val)(void *val));
/* Makes room for 'n' entries in total without growing again. */
void xa_hmap_reserve(struct xa_hmap *m, size_t n);

/* The value stored for 'key', or NULL. */
void *xa_hmap_get(const struct xa_hmap *m, const char *key);
bool xa_hmap_contains(const struct xa_hmap *m, const char *key);
/* The map's own copy of 'key' (stable while the entry exists), or NULL. */
const char *xa_hmap_key(const struct xa_hmap *m, const char *key);
/* Sets 'key' to 'val'.  Returns the value it replaces (NULL if the key was
 * new); the caller disposes of it. */
void *xa_hmap_put(struct xa_hmap *m, const char *key, void *val);
/* Removes 'key'; returns its value (NULL if absent). */
void *xa_hmap_remove(struct xa_hmap *m, const char *key);

static inline size_t
xa_hmap_count(const struct xa_hmap *m)
{
    return m->n;
}

/* The hash function used by the map, exposed for callers that keep their
 * own tables of strings. */
uint64_t xa_hash_str(const char *s, size_t len);

/* for each occupied slot 's' (struct xa_hmap_slot *) of map 'm' */
#define XA_HMAP_FOR_EACH(s, m)                                                \
    for (struct xa_hmap_slot *s = (m)->slots; s && s < (m)->slots + (m)->cap; \
         s++)                                                                 \
        if (!s->key) {                                                        \
        } else

#endif
