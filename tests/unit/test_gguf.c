/* Unit tests of the GGUF header parser, fed headers from the project's own
 * writer, every ggml type, and hand-made malformed files. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sched/gguf.h"
#include "gguf_write.h"

/* A byte builder for hand-made headers. */
struct hb {
	uint8_t p[4096];
	size_t n;
};

static void le(struct hb *b, uint64_t v, unsigned size)
{
	for (unsigned i = 0; i < size; i++)
		b->p[b->n++] = (uint8_t)(v >> (8 * i));
}

static void str(struct hb *b, const char *s)
{
	le(b, strlen(s), 8);
	memcpy(b->p + b->n, s, strlen(s));
	b->n += strlen(s);
}

static void head(struct hb *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv)
{
	b->n = 0;
	le(b, CR_GGUF_MAGIC, 4);
	le(b, version, 4);
	le(b, n_tensors, 8);
	le(b, n_kv, 8);
}

/* Parse a complete file of b->n bytes plus extra data bytes; expect failure
 * with a message containing want. */
static void expect_error(const uint8_t *p, size_t n, uint64_t file_size, const char *want)
{
	struct cr_gguf *g = NULL;
	struct cr_err err = CR_ERR_INIT;
	int rc = cr_gguf_parse(p, n, file_size, &g, NULL, &err);
	cr_assert_eq(rc, CR_EINPUT, "want CR_EINPUT for '%s', got %d (%s)", want, rc, err.message);
	cr_assert_null(g);
	cr_assert(strstr(err.message, want), "message '%s' should contain '%s'", err.message, want);
	cr_assert(err.fix[0], "every refusal carries a fix");
}

static struct cr_gguf *parse_ok(const uint8_t *p, size_t n, uint64_t file_size)
{
	struct cr_gguf *g = NULL;
	struct cr_err err = CR_ERR_INIT;
	int rc = cr_gguf_parse(p, n, file_size, &g, NULL, &err);
	cr_assert_eq(rc, 0, "parse failed: %s", err.message);
	return g;
}

Test(gguf, writer_roundtrip_every_value_type)
{
	struct cr_gguf_writer *w = cr_gguf_writer_new(3);
	cr_gguf_w_scalar(w, "t.u8", CR_GGUF_U8, 200);
	cr_gguf_w_scalar(w, "t.i8", CR_GGUF_I8, (uint8_t)-5);
	cr_gguf_w_scalar(w, "t.u16", CR_GGUF_U16, 65000);
	cr_gguf_w_scalar(w, "t.i16", CR_GGUF_I16, (uint16_t)-300);
	cr_gguf_w_u32(w, "t.u32", 4000000000u);
	cr_gguf_w_i32(w, "t.i32", -70000);
	cr_gguf_w_f32(w, "t.f32", 1.5f);
	cr_gguf_w_bool(w, "t.bool", 1);
	cr_gguf_w_str(w, "t.str", "llama");
	cr_gguf_w_u64(w, "t.u64", 1ULL << 40);
	cr_gguf_w_scalar(w, "t.i64", CR_GGUF_I64, (uint64_t)-9);
	double d = 2.25;
	uint64_t bits;
	memcpy(&bits, &d, 8);
	cr_gguf_w_scalar(w, "t.f64", CR_GGUF_F64, bits);
	const char *toks[] = { "a", "bb", "" };
	cr_gguf_w_arr_str(w, "t.arr_str", toks, 3);
	int32_t ints[] = { 1, -2, 3, 4 };
	cr_gguf_w_arr(w, "t.arr_i32", CR_GGUF_I32, ints, 4);
	size_t len;
	uint8_t *h = cr_gguf_writer_header(w, &len);
	cr_assert_eq(len % 32, 0, "header padded to the alignment");
	struct cr_gguf *g = parse_ok(h, len, len);
	cr_assert_eq(g->version, 3);
	cr_assert_eq(g->n_kv, 14);
	uint64_t u;
	cr_assert(cr_gguf_get_u64(g, "t.u8", &u) && u == 200);
	cr_assert_eq(cr_gguf_find(g, "t.i8")->i, -5);
	cr_assert(cr_gguf_get_u64(g, "t.u16", &u) && u == 65000);
	cr_assert_eq(cr_gguf_find(g, "t.i16")->i, -300);
	cr_assert(cr_gguf_get_u64(g, "t.u32", &u) && u == 4000000000u);
	cr_assert_eq(cr_gguf_find(g, "t.i32")->i, -70000);
	cr_assert_not(cr_gguf_get_u64(g, "t.i32", &u), "a negative value is not a u64");
	cr_assert_float_eq(cr_gguf_find(g, "t.f32")->f, 1.5, 1e-9);
	cr_assert_eq(cr_gguf_find(g, "t.bool")->u, 1);
	cr_assert_str_eq(cr_gguf_get_str(g, "t.str"), "llama");
	cr_assert(cr_gguf_get_u64(g, "t.u64", &u) && u == 1ULL << 40);
	cr_assert_eq(cr_gguf_find(g, "t.i64")->i, -9);
	cr_assert_float_eq(cr_gguf_find(g, "t.f64")->f, 2.25, 1e-12);
	const struct cr_gguf_kv *a = cr_gguf_find(g, "t.arr_str");
	cr_assert_eq(a->type, CR_GGUF_ARRAY);
	cr_assert_eq(a->arr_type, CR_GGUF_STRING);
	cr_assert_eq(a->arr_len, 3);
	cr_assert_eq(cr_gguf_find(g, "t.arr_i32")->arr_len, 4);
	cr_assert_null(cr_gguf_find(g, "t.absent"));
	cr_assert_null(cr_gguf_get_str(g, "t.u32"), "a number is not a string");
	cr_gguf_free(g);
	free(h);
	cr_gguf_writer_free(w);
}

Test(gguf, every_ggml_type_has_its_block_size)
{
	/* (type, block, bytes per block) from ggml's type traits */
	static const struct { const char *name; uint32_t block, bytes; } want[] = {
		{ "F32", 1, 4 }, { "F16", 1, 2 }, { "BF16", 1, 2 }, { "Q4_0", 32, 18 }, { "Q4_1", 32, 20 },
		{ "Q5_0", 32, 22 }, { "Q5_1", 32, 24 }, { "Q8_0", 32, 34 }, { "Q8_1", 32, 36 }, { "Q2_K", 256, 84 },
		{ "Q3_K", 256, 110 }, { "Q4_K", 256, 144 }, { "Q5_K", 256, 176 }, { "Q6_K", 256, 210 },
		{ "Q8_K", 256, 292 }, { "IQ2_XXS", 256, 66 }, { "IQ2_XS", 256, 74 }, { "IQ2_S", 256, 82 },
		{ "IQ3_XXS", 256, 98 }, { "IQ3_S", 256, 110 }, { "IQ1_S", 256, 50 }, { "IQ1_M", 256, 56 },
		{ "IQ4_NL", 32, 18 }, { "IQ4_XS", 256, 136 }, { "TQ1_0", 256, 54 }, { "TQ2_0", 256, 66 },
		{ "MXFP4", 32, 17 }, { "I8", 1, 1 }, { "I16", 1, 2 }, { "I32", 1, 4 }, { "I64", 1, 8 }, { "F64", 1, 8 },
	};
	struct cr_gguf_writer *w = cr_gguf_writer_new(3);
	cr_gguf_w_str(w, "general.architecture", "llama");
	size_t n = sizeof(want) / sizeof(want[0]);
	for (size_t i = 0; i < n; i++) {
		int t = cr_ggml_type_from_name(want[i].name);
		cr_assert_geq(t, 0, "%s known", want[i].name);
		uint64_t ne[2] = { 512, 3 };
		char name[32];
		snprintf(name, sizeof(name), "t.%s", want[i].name);
		cr_assert_eq(cr_gguf_w_tensor(w, name, 2, ne, (uint32_t)t), 512 / want[i].block * want[i].bytes * 3,
			     "%s size", want[i].name);
	}
	size_t len;
	uint8_t *h = cr_gguf_writer_header(w, &len);
	uint64_t data = cr_gguf_writer_data_size(w);
	struct cr_gguf *g = parse_ok(h, len, len + data);
	cr_assert_eq(g->n_tensors, n);
	cr_assert_eq(g->data_offset, len);
	for (size_t i = 0; i < n; i++) {
		const struct cr_gguf_tensor *t = &g->tensors[i];
		cr_assert_eq(t->bytes, 512 / want[i].block * want[i].bytes * 3, "%s parsed size", want[i].name);
		cr_assert_eq(t->offset % 32, 0);
		cr_assert_eq(t->ne[0], 512);
		cr_assert_eq(t->ne[1], 3);
	}
	cr_assert_not(cr_ggml_type_info(4, NULL, NULL, NULL), "Q4_2 was removed");
	cr_assert_eq(cr_ggml_type_from_name("q4_k"), 12);
	cr_gguf_free(g);
	free(h);
	cr_gguf_writer_free(w);
}

Test(gguf, version_2_and_custom_alignment)
{
	struct cr_gguf_writer *w = cr_gguf_writer_new(2);
	cr_gguf_w_u32(w, "general.alignment", 64);
	uint64_t ne[1] = { 10 };
	cr_gguf_w_tensor(w, "a", 1, ne, 0);
	cr_gguf_w_tensor(w, "b", 1, ne, 0);
	size_t len;
	uint8_t *h = cr_gguf_writer_header(w, &len);
	cr_assert_eq(len % 64, 0);
	struct cr_gguf *g = parse_ok(h, len, len + cr_gguf_writer_data_size(w));
	cr_assert_eq(g->version, 2);
	cr_assert_eq(g->alignment, 64);
	cr_assert_eq(g->tensors[1].offset, 64, "second tensor starts at the next 64-byte boundary");
	cr_assert_eq(g->data_bytes, 80);
	cr_gguf_free(g);
	free(h);
	cr_gguf_writer_free(w);
}

Test(gguf, a_short_prefix_asks_for_more)
{
	struct cr_gguf_writer *w = cr_gguf_writer_new(3);
	const char *toks[300];
	for (int i = 0; i < 300; i++)
		toks[i] = "token";
	cr_gguf_w_arr_str(w, "tokenizer.ggml.tokens", toks, 300);
	uint64_t ne[2] = { 64, 300 };
	cr_gguf_w_tensor(w, "token_embd.weight", 2, ne, 1);
	size_t len;
	uint8_t *h = cr_gguf_writer_header(w, &len);
	uint64_t file = len + cr_gguf_writer_data_size(w);
	size_t have = 16;
	int rounds = 0;
	struct cr_gguf *g = NULL;
	for (;;) {
		uint64_t need = 0;
		struct cr_err err = CR_ERR_INIT;
		int rc = cr_gguf_parse(h, have, file, &g, &need, &err);
		if (rc == 0)
			break;
		cr_assert_eq(rc, -EAGAIN, "%s", err.message);
		cr_assert_gt(need, have);
		have = need > len ? len : need;
		cr_assert_lt(++rounds, 1000);
	}
	cr_assert_gt(rounds, 1);
	cr_assert_eq(g->tensors[0].bytes, 64 * 300 * 2);
	cr_gguf_free(g);
	free(h);
	cr_gguf_writer_free(w);
}

Test(gguf, refuses_wrong_magic_and_versions)
{
	struct hb b;
	head(&b, 3, 0, 0);
	memcpy(b.p, "GGML", 4);
	expect_error(b.p, b.n, b.n, "not a GGUF file");
	head(&b, 1, 0, 0);
	expect_error(b.p, b.n, b.n, "version 1 is not supported");
	head(&b, 0x03000000, 0, 0);
	expect_error(b.p, b.n, b.n, "big-endian");
	head(&b, 7, 0, 0);
	expect_error(b.p, b.n, b.n, "version 7 is not supported");
	expect_error(b.p, 6, 6, "the file ends at byte 6");
}

Test(gguf, refuses_counts_past_the_end)
{
	struct hb b;
	head(&b, 3, 0, 1ULL << 60);
	expect_error(b.p, b.n, b.n, "metadata count 1152921504606846976 is impossible");
	head(&b, 3, UINT64_MAX, 0);
	expect_error(b.p, b.n, b.n, "tensor count");
	head(&b, 3, 0, 1);
	le(&b, UINT64_MAX - 3, 8); /* key length that overflows pos + n */
	expect_error(b.p, b.n, 1ULL << 40, "metadata key #0");
	head(&b, 3, 0, 1);
	str(&b, "k");
	le(&b, CR_GGUF_STRING, 4);
	le(&b, 1000, 8);
	expect_error(b.p, b.n, b.n, "needs 1000 bytes but the file ends");
	head(&b, 3, 0, 1);
	str(&b, "k");
	le(&b, CR_GGUF_ARRAY, 4);
	le(&b, CR_GGUF_U32, 4);
	le(&b, 1ULL << 62, 8);
	expect_error(b.p, b.n, b.n, "array length 4611686018427387904 is impossible");
	head(&b, 3, 0, 1);
	str(&b, "k");
	le(&b, CR_GGUF_ARRAY, 4);
	le(&b, CR_GGUF_STRING, 4);
	le(&b, 2, 8);
	str(&b, "a");
	le(&b, 50, 8);
	expect_error(b.p, b.n, b.n, "needs 50 bytes");
}

Test(gguf, refuses_unknown_and_nested_types)
{
	struct hb b;
	head(&b, 3, 0, 1);
	str(&b, "k");
	le(&b, 13, 4);
	le(&b, 0, 8);
	expect_error(b.p, b.n, b.n, "key 'k' has unknown value type 13");
	head(&b, 3, 0, 1);
	str(&b, "k");
	le(&b, CR_GGUF_ARRAY, 4);
	le(&b, CR_GGUF_ARRAY, 4);
	le(&b, 0, 8);
	expect_error(b.p, b.n, b.n, "nested arrays");
	head(&b, 3, 0, 2);
	str(&b, "k");
	le(&b, CR_GGUF_U8, 4);
	le(&b, 1, 1);
	str(&b, "k");
	le(&b, CR_GGUF_U8, 4);
	le(&b, 2, 1);
	expect_error(b.p, b.n, b.n, "duplicate metadata key 'k'");
	head(&b, 3, 0, 1);
	str(&b, "general.alignment");
	le(&b, CR_GGUF_U32, 4);
	le(&b, 48, 4);
	expect_error(b.p, b.n, b.n, "power of two");
}

static void tensor(struct hb *b, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type, uint64_t off)
{
	str(b, name);
	le(b, n_dims, 4);
	for (uint32_t d = 0; d < n_dims; d++)
		le(b, ne[d], 8);
	le(b, type, 4);
	le(b, off, 8);
}

Test(gguf, refuses_bad_tensor_infos)
{
	struct hb b;
	uint64_t ne[5] = { 32, 2, 1, 1, 1 };
	head(&b, 3, 1, 0);
	tensor(&b, "w", 5, ne, 0, 0);
	expect_error(b.p, b.n, b.n + 4096, "tensor 'w' has 5 dimensions");
	head(&b, 3, 1, 0);
	tensor(&b, "w", 2, ne, 99, 0);
	expect_error(b.p, b.n, b.n + 4096, "unknown ggml type 99");
	head(&b, 3, 1, 0);
	tensor(&b, "w", 2, ne, 4, 0);
	expect_error(b.p, b.n, b.n + 4096, "unknown ggml type 4");
	uint64_t odd[2] = { 33, 2 };
	head(&b, 3, 1, 0);
	tensor(&b, "w", 2, odd, 8, 0);
	expect_error(b.p, b.n, b.n + 4096, "not a multiple of the Q8_0 block size 32");
	uint64_t huge[3] = { 1ULL << 32, 1ULL << 31, 4 };
	head(&b, 3, 1, 0);
	tensor(&b, "w", 3, huge, 0, 0);
	expect_error(b.p, b.n, b.n + 4096, "overflowing shape");
	uint64_t zero[2] = { 32, 0 };
	head(&b, 3, 1, 0);
	tensor(&b, "w", 2, zero, 0, 0);
	expect_error(b.p, b.n, b.n + 4096, "invalid or overflowing shape");
	head(&b, 3, 1, 0);
	tensor(&b, "w", 2, ne, 0, 0);
	expect_error(b.p, b.n, b.n + 100, "not within the file bounds");
	head(&b, 3, 1, 0);
	tensor(&b, "w", 2, ne, 0, 16);
	expect_error(b.p, b.n, b.n + 4096, "not a multiple of the alignment 32");
	head(&b, 3, 2, 0);
	tensor(&b, "w", 2, ne, 0, 0);
	tensor(&b, "w", 2, ne, 0, 256);
	expect_error(b.p, b.n, b.n + 4096, "duplicate tensor 'w'");
	head(&b, 3, 1, 0);
	tensor(&b, "this-name-is-far-too-long-for-ggml-which-allows-sixty-three-bytes", 2, ne, 0, 0);
	expect_error(b.p, b.n, b.n + 4096, "at most 63");
	head(&b, 3, 1, 0);
	tensor(&b, "w", 2, ne, 0, 0);
	expect_error(b.p, b.n - 3, b.n - 3, "tensor info #0");
}

/* A server that claims a huge file (or a sparse file) used to make the
 * parser allocate for the claimed counts and abort: a header costs at most
 * what was read of it. */
Test(gguf, a_huge_claimed_size_costs_only_the_bytes_read)
{
	struct hb b;
	head(&b, 3, 1ull << 36, 1ull << 36); /* 68 billion tensors and keys "fit" in 1 PiB */
	str(&b, "general.architecture");
	le(&b, CR_GGUF_STRING, 4);
	str(&b, "llama");
	uint64_t need = 0;
	struct cr_gguf *g = NULL;
	struct cr_err err = CR_ERR_INIT;
	int rc = cr_gguf_parse(b.p, b.n, 1ull << 50, &g, &need, &err);
	cr_assert_eq(rc, -EAGAIN, "the parser asks for more bytes: %s", err.message);
	cr_assert_gt(need, b.n);
	cr_assert_lt(need, b.n + 64, "one item at a time, not the claimed counts");
	cr_assert_null(g);
}
