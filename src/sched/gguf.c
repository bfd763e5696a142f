/* GGUF header parser: a bounds-checked cursor over a prefix of the file.
 * Every length and count is checked against the file size before anything is
 * allocated, so a hostile header costs at most its own size in memory. */
#include "sched/gguf.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/map.h"
#include "base/mem.h"

struct ggml_type_row {
	const char *name;
	uint32_t block;
	uint32_t bytes;
};

/* Block sizes and bytes per block, as in ggml's type traits. Types removed
 * from the format (4, 5, 31-33, 36-38) have no entry. */
static const struct ggml_type_row ggml_types[] = {
	[0] = { "F32", 1, 4 },         [1] = { "F16", 1, 2 },
	[2] = { "Q4_0", 32, 18 },      [3] = { "Q4_1", 32, 20 },
	[6] = { "Q5_0", 32, 22 },      [7] = { "Q5_1", 32, 24 },
	[8] = { "Q8_0", 32, 34 },      [9] = { "Q8_1", 32, 36 },
	[10] = { "Q2_K", 256, 84 },    [11] = { "Q3_K", 256, 110 },
	[12] = { "Q4_K", 256, 144 },   [13] = { "Q5_K", 256, 176 },
	[14] = { "Q6_K", 256, 210 },   [15] = { "Q8_K", 256, 292 },
	[16] = { "IQ2_XXS", 256, 66 }, [17] = { "IQ2_XS", 256, 74 },
	[18] = { "IQ3_XXS", 256, 98 }, [19] = { "IQ1_S", 256, 50 },
	[20] = { "IQ4_NL", 32, 18 },   [21] = { "IQ3_S", 256, 110 },
	[22] = { "IQ2_S", 256, 82 },   [23] = { "IQ4_XS", 256, 136 },
	[24] = { "I8", 1, 1 },         [25] = { "I16", 1, 2 },
	[26] = { "I32", 1, 4 },        [27] = { "I64", 1, 8 },
	[28] = { "F64", 1, 8 },        [29] = { "IQ1_M", 256, 56 },
	[30] = { "BF16", 1, 2 },       [34] = { "TQ1_0", 256, 54 },
	[35] = { "TQ2_0", 256, 66 },   [39] = { "MXFP4", 32, 17 },
	[40] = { "NVFP4", 64, 36 },    [41] = { "Q1_0", 128, 18 },
	[42] = { "Q2_0", 64, 18 },
};
#define GGML_TYPE_ROWS (sizeof(ggml_types) / sizeof(ggml_types[0]))

/* Scalar sizes of metadata value types (0 for string and array). */
static const uint8_t value_sizes[CR_GGUF_TYPE_COUNT] = {
	1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8,
};

static const char *const value_names[CR_GGUF_TYPE_COUNT] = {
	"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64",
};

bool cr_ggml_type_info(uint32_t type, const char **name, uint32_t *block, uint32_t *block_bytes)
{
	if (type >= GGML_TYPE_ROWS || !ggml_types[type].name)
		return false;
	if (name)
		*name = ggml_types[type].name;
	if (block)
		*block = ggml_types[type].block;
	if (block_bytes)
		*block_bytes = ggml_types[type].bytes;
	return true;
}

int cr_ggml_type_from_name(const char *name)
{
	for (size_t t = 0; t < GGML_TYPE_ROWS; t++)
		if (ggml_types[t].name && strcasecmp(ggml_types[t].name, name) == 0)
			return (int)t;
	return -1;
}

bool cr_ggml_row_bytes(uint32_t type, uint64_t n, uint64_t *bytes)
{
	uint32_t block, block_bytes;
	if (!cr_ggml_type_info(type, NULL, &block, &block_bytes) || n % block)
		return false;
	uint64_t blocks = n / block;
	if (blocks > UINT64_MAX / block_bytes)
		return false;
	*bytes = blocks * block_bytes;
	return true;
}

/* The cursor: buf holds [0, len) of a file of file_size bytes. */
struct cursor {
	const uint8_t *buf;
	size_t len;
	uint64_t file_size;
	uint64_t pos;
	uint64_t need;
	struct cr_err *err;
	char what[64]; /* what is being read, for messages */
};

/* Make n bytes at the cursor available: 0, -EAGAIN (need more of the
 * file) or CR_EINPUT (the file is not long enough). */
static int take(struct cursor *c, uint64_t n, const uint8_t **p)
{
	if (n > c->file_size || c->pos > c->file_size - n)
		return cr_err_set(c->err, CR_EINPUT, "the file is truncated or not a GGUF model; re-download or re-convert it",
				  "%s at byte %" PRIu64 " needs %" PRIu64 " bytes but the file ends at byte %" PRIu64,
				  c->what, c->pos, n, c->file_size);
	if (c->pos + n > c->len) {
		c->need = c->pos + n;
		return -EAGAIN;
	}
	*p = c->buf + c->pos;
	c->pos += n;
	return 0;
}

static int read_le(struct cursor *c, unsigned size, uint64_t *out)
{
	const uint8_t *p;
	int rc = take(c, size, &p);
	if (rc)
		return rc;
	uint64_t v = 0;
	for (unsigned i = 0; i < size; i++)
		v |= (uint64_t)p[i] << (8 * i);
	*out = v;
	return 0;
}

static int read_u32(struct cursor *c, uint32_t *out)
{
	uint64_t v = 0;
	int rc = read_le(c, 4, &v);
	*out = (uint32_t)v;
	return rc;
}

/* A string: u64 length then bytes. With out NULL the bytes are skipped. */
static int read_str(struct cursor *c, char **out)
{
	uint64_t n;
	const uint8_t *p;
	int rc = read_le(c, 8, &n);
	if (rc)
		return rc;
	rc = take(c, n, &p);
	if (rc)
		return rc;
	if (out)
		*out = cr_xstrndup((const char *)p, (size_t)n);
	return 0;
}

static int bad(struct cursor *c, const char *fix, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int bad(struct cursor *c, const char *fix, const char *fmt, ...)
{
	char msg[CR_ERR_MSG_MAX];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return cr_err_set(c->err, CR_EINPUT, fix ? fix : "re-download or re-convert the model file", "%s", msg);
}

/* A count of items each at least min_size bytes must fit in the rest of the file. */
static int check_count(struct cursor *c, uint64_t count, uint64_t min_size, const char *what)
{
	uint64_t left = c->file_size - c->pos;
	if (count > left / min_size)
		return bad(c, NULL, "%s %" PRIu64 " is impossible: only %" PRIu64 " bytes follow at byte %" PRIu64,
			   what, count, left, c->pos);
	return 0;
}

static void widen(struct cr_gguf_kv *kv, uint64_t raw)
{
	switch (kv->type) {
	case CR_GGUF_I8: kv->i = (int8_t)raw; break;
	case CR_GGUF_I16: kv->i = (int16_t)raw; break;
	case CR_GGUF_I32: kv->i = (int32_t)raw; break;
	case CR_GGUF_I64: kv->i = (int64_t)raw; break;
	case CR_GGUF_F32: {
		uint32_t b = (uint32_t)raw;
		float f;
		memcpy(&f, &b, sizeof(f));
		kv->f = f;
		return;
	}
	case CR_GGUF_F64: memcpy(&kv->f, &raw, sizeof(kv->f)); return;
	default: kv->u = raw; kv->i = raw > INT64_MAX ? INT64_MAX : (int64_t)raw; return;
	}
	kv->u = kv->i < 0 ? 0 : (uint64_t)kv->i;
}

static int read_array(struct cursor *c, struct cr_gguf_kv *kv)
{
	uint32_t et;
	int rc = read_u32(c, &et);
	if (rc)
		return rc;
	if (et >= CR_GGUF_TYPE_COUNT)
		return bad(c, NULL, "key '%s': unknown array element type %" PRIu32, kv->key, et);
	if (et == CR_GGUF_ARRAY)
		return bad(c, NULL, "key '%s': nested arrays are not part of GGUF", kv->key);
	kv->arr_type = et;
	rc = read_le(c, 8, &kv->arr_len);
	if (rc)
		return rc;
	if (et != CR_GGUF_STRING) {
		rc = check_count(c, kv->arr_len, value_sizes[et], "array length");
		if (rc)
			return rc;
		const uint8_t *p;
		return take(c, kv->arr_len * value_sizes[et], &p);
	}
	rc = check_count(c, kv->arr_len, 8, "string array length");
	for (uint64_t i = 0; !rc && i < kv->arr_len; i++)
		rc = read_str(c, NULL);
	return rc;
}

/* The name that starts item idx of a kind ("metadata key", "tensor info"). */
static int read_name(struct cursor *c, const char *kind, uint64_t idx, char **name)
{
	snprintf(c->what, sizeof(c->what), "%s #%" PRIu64, kind, idx);
	return read_str(c, name);
}

static int read_kv(struct cursor *c, struct cr_gguf_kv *kv, uint64_t idx)
{
	int rc = read_name(c, "metadata key", idx, &kv->key);
	if (rc)
		return rc;
	uint32_t type;
	rc = read_u32(c, &type);
	if (rc)
		return rc;
	if (type >= CR_GGUF_TYPE_COUNT)
		return bad(c, NULL, "key '%s' has unknown value type %" PRIu32, kv->key, type);
	kv->type = type;
	if (type == CR_GGUF_STRING)
		return read_str(c, &kv->str);
	if (type == CR_GGUF_ARRAY)
		return read_array(c, kv);
	uint64_t raw;
	rc = read_le(c, value_sizes[type], &raw);
	if (rc)
		return rc;
	widen(kv, raw);
	return 0;
}

static int read_tensor(struct cursor *c, struct cr_gguf_tensor *t, uint64_t idx)
{
	int rc = read_name(c, "tensor info", idx, &t->name);
	if (rc)
		return rc;
	if (strlen(t->name) >= 64)
		return bad(c, NULL, "tensor #%" PRIu64 " has a name of %zu bytes; ggml allows at most 63", idx,
			   strlen(t->name));
	rc = read_u32(c, &t->n_dims);
	if (rc)
		return rc;
	if (t->n_dims < 1 || t->n_dims > CR_GGUF_MAX_DIMS)
		return bad(c, NULL, "tensor '%s' has %" PRIu32 " dimensions; GGUF allows 1 to %d", t->name, t->n_dims,
			   CR_GGUF_MAX_DIMS);
	uint64_t n = 1;
	for (uint32_t d = 0; d < CR_GGUF_MAX_DIMS; d++) {
		t->ne[d] = 1;
		if (d >= t->n_dims)
			continue;
		rc = read_le(c, 8, &t->ne[d]);
		if (rc)
			return rc;
		if (t->ne[d] == 0 || t->ne[d] > (uint64_t)INT64_MAX / n)
			return bad(c, NULL, "tensor '%s' has an invalid or overflowing shape (dimension %" PRIu32 " = %" PRIu64 ")",
				   t->name, d, t->ne[d]);
		n *= t->ne[d];
	}
	rc = read_u32(c, &t->type);
	if (rc)
		return rc;
	uint32_t block;
	if (!cr_ggml_type_info(t->type, NULL, &block, NULL))
		return bad(c, "update Corral, or re-quantise the model to a known type",
			   "tensor '%s' has unknown ggml type %" PRIu32, t->name, t->type);
	if (t->ne[0] % block)
		return bad(c, NULL, "tensor '%s': row of %" PRIu64 " elements is not a multiple of the %s block size %" PRIu32,
			   t->name, t->ne[0], ggml_types[t->type].name, block);
	if (!cr_ggml_row_bytes(t->type, n, &t->bytes))
		return bad(c, NULL, "tensor '%s': size overflows", t->name);
	return read_le(c, 8, &t->offset);
}

static int check_unique(struct cursor *c, struct cr_map *seen, const char *name, const char *kind)
{
	if (cr_map_get(seen, name))
		return bad(c, NULL, "duplicate %s '%s'", kind, name);
	cr_map_put(seen, name, (void *)name);
	return 0;
}

static int read_header(struct cursor *c, struct cr_gguf *g)
{
	uint64_t magic;
	snprintf(c->what, sizeof(c->what), "the GGUF header");
	int rc = read_le(c, 4, &magic);
	if (rc)
		return rc;
	if (magic != CR_GGUF_MAGIC)
		return bad(c, "give the path of a .gguf model file (safetensors directories need engine vllm or sglang)",
			   "not a GGUF file: magic is 0x%08" PRIx64 ", expected 0x%08x (\"GGUF\")", magic, CR_GGUF_MAGIC);
	rc = read_u32(c, &g->version);
	if (rc)
		return rc;
	if (g->version == 1)
		return bad(c, "re-convert the model with a current llama.cpp (convert_hf_to_gguf.py)",
			   "GGUF version 1 is not supported (it has 32-bit counts)");
	if (g->version > 0xffff)
		return bad(c, "convert the model on a little-endian machine",
			   "GGUF version 0x%08" PRIx32 " looks byte-swapped: big-endian GGUF files are not supported", g->version);
	if (g->version != 2 && g->version != 3)
		return bad(c, "update Corral or re-convert the model", "GGUF version %" PRIu32 " is not supported (2 and 3 are)",
			   g->version);
	rc = read_le(c, 8, &g->n_tensors);
	if (!rc)
		rc = read_le(c, 8, &g->n_kv);
	if (!rc)
		rc = check_count(c, g->n_kv, 13, "metadata count");
	if (!rc)
		rc = check_count(c, g->n_tensors, 32, "tensor count");
	return rc;
}

/* Room for item i in an array of *cap zeroed slots of size bytes: it
 * doubles, so memory follows the items read (each has bytes in the buffer),
 * not the count the header claims for a file that may be sparse or lie. */
static void *grow(void *v, size_t *cap, uint64_t i, size_t size)
{
	if (i < *cap)
		return v;
	size_t n = *cap ? *cap * 2 : 16;
	v = cr_xrealloc(v, n * size);
	memset((char *)v + *cap * size, 0, (n - *cap) * size);
	*cap = n;
	return v;
}

static int parse(struct cursor *c, struct cr_gguf *g)
{
	struct cr_map seen = CR_MAP_INIT;
	int rc = read_header(c, g);
	if (rc)
		goto out;
	for (uint64_t i = 0; !rc && i < g->n_kv; i++) {
		g->kv = grow(g->kv, &g->kv_cap, i, sizeof(*g->kv));
		rc = read_kv(c, &g->kv[i], i);
		if (!rc)
			rc = check_unique(c, &seen, g->kv[i].key, "metadata key");
	}
	if (rc)
		goto out;
	g->alignment = CR_GGUF_DEFAULT_ALIGNMENT;
	const struct cr_gguf_kv *al = cr_gguf_find(g, "general.alignment");
	if (al) {
		if (al->type != CR_GGUF_U32 || al->u == 0 || (al->u & (al->u - 1)))
			rc = bad(c, NULL, "general.alignment must be a u32 power of two");
		else
			g->alignment = (uint32_t)al->u;
	}
	cr_map_release(&seen);
	for (uint64_t i = 0; !rc && i < g->n_tensors; i++) {
		g->tensors = grow(g->tensors, &g->tensors_cap, i, sizeof(*g->tensors));
		rc = read_tensor(c, &g->tensors[i], i);
		if (!rc)
			rc = check_unique(c, &seen, g->tensors[i].name, "tensor");
	}
	if (rc)
		goto out;
	g->data_offset = (c->pos + g->alignment - 1) / g->alignment * g->alignment;
	uint64_t room = g->data_offset <= c->file_size ? c->file_size - g->data_offset : 0;
	for (uint64_t i = 0; i < g->n_tensors; i++) {
		const struct cr_gguf_tensor *t = &g->tensors[i];
		if (t->offset % g->alignment) {
			rc = bad(c, NULL, "tensor '%s' has offset %" PRIu64 ", not a multiple of the alignment %" PRIu32,
				   t->name, t->offset, g->alignment);
			goto out;
		}
		if (t->offset > room || t->bytes > room - t->offset) {
			rc = bad(c, "the file is truncated; re-download it",
				   "tensor '%s' data (%" PRIu64 " bytes at offset %" PRIu64 ") is not within the file bounds (%" PRIu64
				   " bytes of data)", t->name, t->bytes, t->offset, room);
			goto out;
		}
		g->data_bytes += t->bytes;
	}
out:
	cr_map_release(&seen);
	return rc;
}

int cr_gguf_parse(const uint8_t *buf, size_t len, uint64_t file_size, struct cr_gguf **out, uint64_t *need,
		  struct cr_err *err)
{
	if (len > file_size)
		len = (size_t)file_size;
	struct cursor c = { .buf = buf, .len = len, .file_size = file_size, .err = err };
	struct cr_gguf *g = cr_xcalloc(1, sizeof(*g));
	int rc = parse(&c, g);
	if (rc) {
		if (rc == -EAGAIN && need)
			*need = c.need;
		cr_gguf_free(g);
		return rc;
	}
	*out = g;
	return 0;
}

void cr_gguf_free(struct cr_gguf *g)
{
	if (!g)
		return;
	for (size_t i = 0; i < g->kv_cap; i++) {
		free(g->kv[i].key);
		free(g->kv[i].str);
	}
	for (size_t i = 0; i < g->tensors_cap; i++)
		free(g->tensors[i].name);
	free(g->kv);
	free(g->tensors);
	free(g);
}

const struct cr_gguf_kv *cr_gguf_find(const struct cr_gguf *g, const char *key)
{
	for (uint64_t i = 0; i < g->n_kv; i++)
		if (g->kv[i].key && strcmp(g->kv[i].key, key) == 0)
			return &g->kv[i];
	return NULL;
}

bool cr_gguf_get_u64(const struct cr_gguf *g, const char *key, uint64_t *out)
{
	const struct cr_gguf_kv *kv = cr_gguf_find(g, key);
	if (!kv || kv->type == CR_GGUF_STRING || kv->type == CR_GGUF_ARRAY || kv->type == CR_GGUF_F32 ||
	    kv->type == CR_GGUF_F64 || kv->i < 0 || kv->type == CR_GGUF_BOOL)
		return false;
	*out = kv->u;
	return true;
}

const char *cr_gguf_get_str(const struct cr_gguf *g, const char *key)
{
	const struct cr_gguf_kv *kv = cr_gguf_find(g, key);
	return kv && kv->type == CR_GGUF_STRING ? kv->str : NULL;
}

const struct cr_gguf_tensor *cr_gguf_tensor(const struct cr_gguf *g, const char *name)
{
	for (uint64_t i = 0; i < g->n_tensors; i++)
		if (strcmp(g->tensors[i].name, name) == 0)
			return &g->tensors[i];
	return NULL;
}

const char *cr_gguf_type_name(enum cr_gguf_type t)
{
	return (unsigned)t < CR_GGUF_TYPE_COUNT ? value_names[t] : "?";
}

/* "-NNNNN-of-NNNNN.gguf" at the end of name: where it starts, or NULL. */
static const char *split_tail(const char *name, unsigned *no, unsigned *count)
{
	size_t n = strlen(name), t = strlen("-00001-of-00003.gguf");
	if (n < t)
		return NULL;
	const char *p = name + n - t;
	unsigned a, b;
	char dot[6];
	int used = 0;
	if (p[0] != '-' || strncmp(p + 6, "-of-", 4) != 0 || strcmp(p + 15, ".gguf") != 0)
		return NULL;
	for (int i = 1; i <= 5; i++)
		if (p[i] < '0' || p[i] > '9' || p[10 + i - 1] < '0' || p[10 + i - 1] > '9')
			return NULL;
	if (sscanf(p, "-%5u-of-%5u%5s%n", &a, &b, dot, &used) != 3 || a == 0 || b == 0 || a > b)
		return NULL;
	*no = a;
	*count = b;
	return p;
}

bool cr_gguf_split_name(const char *name, unsigned *no, unsigned *count)
{
	return split_tail(name, no, count) != NULL;
}

char *cr_gguf_split_sibling(const char *name, unsigned no)
{
	unsigned mine, count;
	const char *p = split_tail(name, &mine, &count);
	if (!p || no == 0 || no > count)
		return NULL;
	return cr_xasprintf("%.*s-%05u-of-%05u.gguf", (int)(p - name), name, no, count);
}
