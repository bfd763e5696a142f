/* GGUF header parser (pure: bytes in, structure out; no I/O). Reads the
 * metadata and tensor infos of GGUF v2/v3 files, never the tensor data, and
 * rejects malformed or hostile headers with a message naming what is wrong.
 * Callers feed a prefix of the file and grow it when asked (-EAGAIN). */
#ifndef CR_SCHED_GGUF_H
#define CR_SCHED_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

#define CR_GGUF_MAGIC 0x46554747u /* "GGUF" little-endian */
#define CR_GGUF_MAX_DIMS 4
#define CR_GGUF_DEFAULT_ALIGNMENT 32

/* Metadata value types, as numbered in the file. */
enum cr_gguf_type {
	CR_GGUF_U8 = 0, CR_GGUF_I8, CR_GGUF_U16, CR_GGUF_I16, CR_GGUF_U32, CR_GGUF_I32,
	CR_GGUF_F32, CR_GGUF_BOOL, CR_GGUF_STRING, CR_GGUF_ARRAY, CR_GGUF_U64, CR_GGUF_I64,
	CR_GGUF_F64, CR_GGUF_TYPE_COUNT
};

/* One metadata entry. Scalars are widened into u/i/f; strings are owned
 * copies; arrays keep their element type and count (elements are skipped,
 * except that the parser validates every string element's length). */
struct cr_gguf_kv {
	char *key;
	enum cr_gguf_type type;
	enum cr_gguf_type arr_type; /* element type when type is CR_GGUF_ARRAY */
	uint64_t arr_len;
	uint64_t u;  /* unsigned ints and bool */
	int64_t i;   /* signed ints (and unsigned ones that fit) */
	double f;    /* floats */
	char *str;   /* CR_GGUF_STRING */
};

/* One tensor: ne[0] is the contiguous dimension; bytes is computed from the
 * ggml type's block size and block bytes. offset is relative to data_offset. */
struct cr_gguf_tensor {
	char *name;
	uint32_t n_dims;
	uint64_t ne[CR_GGUF_MAX_DIMS];
	uint32_t type;
	uint64_t offset;
	uint64_t bytes;
};

struct cr_gguf {
	uint32_t version;
	uint64_t n_kv;
	uint64_t n_tensors;
	struct cr_gguf_kv *kv;         /* n_kv entries */
	struct cr_gguf_tensor *tensors; /* n_tensors entries */
	uint32_t alignment;  /* general.alignment or 32 */
	uint64_t data_offset; /* where tensor data starts (header end, aligned) */
	uint64_t data_bytes;  /* sum of tensor sizes */
	/* private to gguf.c: slots allocated so far. The arrays grow as items are
	 * read, never from the counts a header claims. */
	size_t kv_cap, tensors_cap;
};

/* Parse the header from buf, which holds the first len bytes of a file of
 * file_size bytes (len <= file_size). On success stores a new struct in *out
 * (free with cr_gguf_free) and returns 0. Returns -EAGAIN with *need set to
 * the prefix length worth reading next when buf ends before the header does;
 * CR_EINPUT with a message for anything malformed (bad magic, unsupported
 * version, counts or lengths past the end of the file, unknown types,
 * overflow, tensors outside the file). */
int cr_gguf_parse(const uint8_t *buf, size_t len, uint64_t file_size, struct cr_gguf **out,
		  uint64_t *need, struct cr_err *err);

/* Free a parsed header; NULL is fine. */
void cr_gguf_free(struct cr_gguf *g);

/* The name of a metadata value type ("u32", "string"), "?" when unknown. */
const char *cr_gguf_type_name(enum cr_gguf_type t);

/* The entry for key, or NULL. */
const struct cr_gguf_kv *cr_gguf_find(const struct cr_gguf *g, const char *key);

/* Integer value of key (any integer type or bool) in *out; false when the key
 * is absent, negative or not an integer. */
bool cr_gguf_get_u64(const struct cr_gguf *g, const char *key, uint64_t *out);

/* String value of key (borrowed), or NULL. */
const char *cr_gguf_get_str(const struct cr_gguf *g, const char *key);

/* The first tensor called name, or NULL. */
const struct cr_gguf_tensor *cr_gguf_tensor(const struct cr_gguf *g, const char *name);

/* ggml type facts: name ("Q4_K"), elements per block and bytes per block.
 * Returns false for an unknown or removed type number. */
bool cr_ggml_type_info(uint32_t type, const char **name, uint32_t *block, uint32_t *block_bytes);

/* The ggml type number for a name such as "f16" or "q8_0" (case-insensitive);
 * -1 when unknown. */
int cr_ggml_type_from_name(const char *name);

/* Bytes of a tensor of n elements of type; false when the type is unknown,
 * n is not a whole number of blocks, or the size overflows. */
bool cr_ggml_row_bytes(uint32_t type, uint64_t n, uint64_t *bytes);

/* Split GGUF (llama-gguf-split): files named PREFIX-00001-of-00003.gguf.
 * True when name ends so, with *no (1-based) and *count set. */
bool cr_gguf_split_name(const char *name, unsigned *no, unsigned *count);

/* name (a split part's path or URL) with the part number no instead of its
 * own (caller frees); NULL when name is not a split part. */
char *cr_gguf_split_sibling(const char *name, unsigned no);

#endif
