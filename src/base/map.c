/* Open-addressing string map, see map.h. */
#include "base/map.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/mem.h"

static uint64_t hash(const char *s)
{
	uint64_t h = 1469598103934665603ULL; /* FNV-1a */
	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ULL;
	}
	return h;
}

static struct cr_map_slot *find(const struct cr_map *m, const char *key)
{
	if (!m->cap)
		return NULL;
	size_t mask = m->cap - 1;
	for (size_t i = hash(key) & mask;; i = (i + 1) & mask) {
		struct cr_map_slot *s = &m->slots[i];
		if (!s->key && !s->tomb)
			return NULL;
		if (s->key && !strcmp(s->key, key))
			return s;
	}
}

static void grow(struct cr_map *m)
{
	struct cr_map old = *m;
	m->cap = old.cap ? old.cap * 2 : 16;
	if (old.count * 4 < old.cap)
		m->cap = old.cap; /* mostly tombstones: rehash at the same size */
	m->slots = cr_xcalloc(m->cap, sizeof(*m->slots));
	m->count = m->used = 0;
	for (size_t i = 0; i < old.cap; i++) {
		if (!old.slots[i].key)
			continue;
		size_t mask = m->cap - 1;
		size_t j = hash(old.slots[i].key) & mask;
		while (m->slots[j].key)
			j = (j + 1) & mask;
		m->slots[j] = old.slots[i];
		m->count++;
		m->used++;
	}
	free(old.slots);
}

void *cr_map_get(const struct cr_map *m, const char *key)
{
	struct cr_map_slot *s = find(m, key);
	return s ? s->value : NULL;
}

void *cr_map_put(struct cr_map *m, const char *key, void *value)
{
	struct cr_map_slot *s = find(m, key);
	if (s) {
		void *old = s->value;
		s->value = value;
		return old;
	}
	if ((m->used + 1) * 4 > m->cap * 3)
		grow(m);
	size_t mask = m->cap - 1;
	size_t i = hash(key) & mask;
	while (m->slots[i].key)
		i = (i + 1) & mask;
	if (!m->slots[i].tomb)
		m->used++;
	m->slots[i].key = cr_xstrdup(key);
	m->slots[i].value = value;
	m->slots[i].tomb = 0;
	m->count++;
	return NULL;
}

void *cr_map_del(struct cr_map *m, const char *key)
{
	struct cr_map_slot *s = find(m, key);
	if (!s)
		return NULL;
	void *old = s->value;
	free(s->key);
	s->key = NULL;
	s->value = NULL;
	s->tomb = 1;
	m->count--;
	return old;
}

void cr_map_release(struct cr_map *m)
{
	for (size_t i = 0; i < m->cap; i++)
		free(m->slots[i].key);
	free(m->slots);
	m->slots = NULL;
	m->cap = m->count = m->used = 0;
}

int cr_map_next(const struct cr_map *m, size_t *iter, const char **key, void **value)
{
	while (*iter < m->cap) {
		struct cr_map_slot *s = &m->slots[(*iter)++];
		if (s->key) {
			if (key)
				*key = s->key;
			if (value)
				*value = s->value;
			return 1;
		}
	}
	return 0;
}
