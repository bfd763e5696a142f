/* GGUF writer: metadata is serialised as it is added; tensor infos are kept
 * until the header is rendered, when the alignment is known. */
#include "gguf_write.h"

#include <stdlib.h>
#include <string.h>

#include "base/mem.h"

struct bytes {
	uint8_t *p;
	size_t len, alloc;
};

struct cr_gguf_writer {
	uint32_t version;
	uint32_t alignment;
	uint64_t n_kv;
	struct bytes kv;
	struct cr_gguf_tensor *t;
	size_t n_t, alloc_t;
};

static void put(struct bytes *b, const void *p, size_t n)
{
	if (b->len + n > b->alloc) {
		b->alloc = (b->len + n) * 2 + 64;
		b->p = cr_xrealloc(b->p, b->alloc);
	}
	memcpy(b->p + b->len, p, n);
	b->len += n;
}

static void put_le(struct bytes *b, uint64_t v, unsigned size)
{
	uint8_t tmp[8];
	for (unsigned i = 0; i < size; i++)
		tmp[i] = (uint8_t)(v >> (8 * i));
	put(b, tmp, size);
}

static void put_str(struct bytes *b, const char *s)
{
	size_t n = strlen(s);
	put_le(b, n, 8);
	put(b, s, n);
}

static const unsigned scalar_size[CR_GGUF_TYPE_COUNT] = { 1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8 };

struct cr_gguf_writer *cr_gguf_writer_new(uint32_t version)
{
	struct cr_gguf_writer *w = cr_xcalloc(1, sizeof(*w));
	w->version = version;
	w->alignment = CR_GGUF_DEFAULT_ALIGNMENT;
	return w;
}

void cr_gguf_writer_free(struct cr_gguf_writer *w)
{
	if (!w)
		return;
	for (size_t i = 0; i < w->n_t; i++)
		free(w->t[i].name);
	free(w->t);
	free(w->kv.p);
	free(w);
}

static void key(struct cr_gguf_writer *w, const char *k, enum cr_gguf_type type)
{
	w->n_kv++;
	put_str(&w->kv, k);
	put_le(&w->kv, type, 4);
}

void cr_gguf_w_scalar(struct cr_gguf_writer *w, const char *k, enum cr_gguf_type type, uint64_t bits)
{
	key(w, k, type);
	put_le(&w->kv, bits, scalar_size[type]);
	if (strcmp(k, "general.alignment") == 0 && type == CR_GGUF_U32 && bits && !(bits & (bits - 1)))
		w->alignment = (uint32_t)bits;
}

void cr_gguf_w_str(struct cr_gguf_writer *w, const char *k, const char *val)
{
	key(w, k, CR_GGUF_STRING);
	put_str(&w->kv, val);
}

void cr_gguf_w_u32(struct cr_gguf_writer *w, const char *k, uint32_t val)
{
	cr_gguf_w_scalar(w, k, CR_GGUF_U32, val);
}

void cr_gguf_w_i32(struct cr_gguf_writer *w, const char *k, int32_t val)
{
	cr_gguf_w_scalar(w, k, CR_GGUF_I32, (uint32_t)val);
}

void cr_gguf_w_u64(struct cr_gguf_writer *w, const char *k, uint64_t val)
{
	cr_gguf_w_scalar(w, k, CR_GGUF_U64, val);
}

void cr_gguf_w_f32(struct cr_gguf_writer *w, const char *k, float val)
{
	uint32_t bits;
	memcpy(&bits, &val, sizeof(bits));
	cr_gguf_w_scalar(w, k, CR_GGUF_F32, bits);
}

void cr_gguf_w_bool(struct cr_gguf_writer *w, const char *k, int val)
{
	cr_gguf_w_scalar(w, k, CR_GGUF_BOOL, val ? 1 : 0);
}

void cr_gguf_w_arr_str(struct cr_gguf_writer *w, const char *k, const char *const *val, size_t n)
{
	key(w, k, CR_GGUF_ARRAY);
	put_le(&w->kv, CR_GGUF_STRING, 4);
	put_le(&w->kv, n, 8);
	for (size_t i = 0; i < n; i++)
		put_str(&w->kv, val[i]);
}

void cr_gguf_w_arr(struct cr_gguf_writer *w, const char *k, enum cr_gguf_type elem_type, const void *val, size_t n)
{
	key(w, k, CR_GGUF_ARRAY);
	put_le(&w->kv, elem_type, 4);
	put_le(&w->kv, n, 8);
	unsigned sz = scalar_size[elem_type];
	const uint8_t *p = val;
	for (size_t i = 0; i < n; i++) {
		uint64_t v = 0;
		memcpy(&v, p + i * sz, sz); /* host order is little-endian on supported targets */
		put_le(&w->kv, v, sz);
	}
}

static uint64_t align_up(uint64_t v, uint32_t a)
{
	return (v + a - 1) / a * a;
}

uint64_t cr_gguf_w_tensor(struct cr_gguf_writer *w, const char *name, uint32_t n_dims, const uint64_t *ne,
			  uint32_t type)
{
	uint64_t n = 1;
	for (uint32_t d = 0; d < n_dims; d++)
		n *= ne[d];
	uint64_t bytes;
	if (n_dims < 1 || n_dims > CR_GGUF_MAX_DIMS || !cr_ggml_row_bytes(type, ne[0], &bytes) ||
	    !cr_ggml_row_bytes(type, n, &bytes))
		return 0;
	if (w->n_t == w->alloc_t) {
		w->alloc_t = w->alloc_t ? w->alloc_t * 2 : 16;
		w->t = cr_xrealloc(w->t, w->alloc_t * sizeof(*w->t));
	}
	struct cr_gguf_tensor *t = &w->t[w->n_t++];
	memset(t, 0, sizeof(*t));
	t->name = cr_xstrdup(name);
	t->n_dims = n_dims;
	memcpy(t->ne, ne, n_dims * sizeof(*ne));
	t->type = type;
	t->bytes = bytes;
	return bytes;
}

static void layout(struct cr_gguf_writer *w)
{
	uint64_t off = 0;
	for (size_t i = 0; i < w->n_t; i++) {
		w->t[i].offset = off;
		off = align_up(off + w->t[i].bytes, w->alignment);
	}
}

uint8_t *cr_gguf_writer_header(struct cr_gguf_writer *w, size_t *len)
{
	struct bytes b = { 0 };
	layout(w);
	put_le(&b, CR_GGUF_MAGIC, 4);
	put_le(&b, w->version, 4);
	put_le(&b, w->n_t, 8);
	put_le(&b, w->n_kv, 8);
	put(&b, w->kv.p, w->kv.len);
	for (size_t i = 0; i < w->n_t; i++) {
		struct cr_gguf_tensor *t = &w->t[i];
		put_str(&b, t->name);
		put_le(&b, t->n_dims, 4);
		for (uint32_t d = 0; d < t->n_dims; d++)
			put_le(&b, t->ne[d], 8);
		put_le(&b, t->type, 4);
		put_le(&b, t->offset, 8);
	}
	static const uint8_t zeros[256];
	size_t pad = (size_t)(align_up(b.len, w->alignment) - b.len);
	while (pad) {
		size_t n = pad < sizeof(zeros) ? pad : sizeof(zeros);
		put(&b, zeros, n);
		pad -= n;
	}
	*len = b.len;
	return b.p;
}

uint64_t cr_gguf_writer_data_size(const struct cr_gguf_writer *w)
{
	uint64_t off = 0;
	for (size_t i = 0; i < w->n_t; i++)
		off = align_up(off + w->t[i].bytes, w->alignment);
	return off;
}

int cr_gguf_writer_tensor_at(const struct cr_gguf_writer *w, size_t i, uint64_t *offset, uint64_t *bytes)
{
	if (i >= w->n_t)
		return 0;
	uint64_t off = 0;
	for (size_t j = 0; j < i; j++)
		off = align_up(off + w->t[j].bytes, w->alignment);
	*offset = off;
	*bytes = w->t[i].bytes;
	return 1;
}
