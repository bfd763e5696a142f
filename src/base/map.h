/* A string-keyed hash map of borrowed pointers (open addressing, linear
 * probing). Keys are copied; values are owned by the caller. */
#ifndef CR_BASE_MAP_H
#define CR_BASE_MAP_H

#include <stddef.h>

struct cr_map_slot {
	char *key; /* owned copy; NULL = empty */
	void *value;
	int tomb;
};

struct cr_map {
	struct cr_map_slot *slots;
	size_t cap;   /* power of two */
	size_t count; /* live entries */
	size_t used;  /* live + tombstones */
};

#define CR_MAP_INIT { NULL, 0, 0, 0 }

/* Look up key; NULL when absent. */
void *cr_map_get(const struct cr_map *m, const char *key);
/* Insert or replace; returns the previous value or NULL. */
void *cr_map_put(struct cr_map *m, const char *key, void *value);
/* Remove; returns the removed value or NULL. */
void *cr_map_del(struct cr_map *m, const char *key);
/* Free the map's own memory (not the values). */
void cr_map_release(struct cr_map *m);

/* Iterate: for (size_t i = 0; cr_map_next(m, &i, &k, &v);) ... Do not insert
 * while iterating; deleting the current entry is allowed. */
int cr_map_next(const struct cr_map *m, size_t *iter, const char **key, void **value);

#endif
