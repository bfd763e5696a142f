/* mkmodel: write a small LLaMA-architecture GGUF with seeded random weights,
 * for tests and benchmarks (real llama-server loads and runs it; the output
 * is gibberish). A "bias channel" in dimension 0 keeps generated text to
 * printable ASCII and suppresses end-of-sequence, so every request runs to
 * max_tokens with valid UTF-8. Shape, tensor type and GGUF version are options. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/mem.h"
#include "base/util.h"
#include "gguf_write.h"

struct opts {
	const char *out;
	long long layers, embd, heads, kv_heads, ff, ctx, words, version, seed;
	int type;
	int tied, reranker;
	long long split;
};

static uint32_t rng_state;

static uint32_t mulberry32(void)
{
	uint32_t z = (rng_state += 0x6D2B79F5u);
	z = (z ^ (z >> 15)) * (z | 1u);
	z ^= z + (z ^ (z >> 7)) * (z | 61u);
	return z ^ (z >> 14);
}

static float uniform(float scale)
{
	return ((float)mulberry32() / 4294967296.0f * 2.0f - 1.0f) * scale;
}

static uint16_t to_f16(float f)
{
	/* enough for small weights: no NaN/inf inputs, subnormals flushed */
	uint32_t x;
	memcpy(&x, &f, sizeof(x));
	uint32_t sign = (x >> 16) & 0x8000u;
	int exp = (int)((x >> 23) & 0xff) - 127 + 15;
	uint32_t mant = (x >> 13) & 0x3ffu;
	if (exp <= 0)
		return (uint16_t)sign;
	if (exp >= 31)
		return (uint16_t)(sign | 0x7bffu);
	return (uint16_t)(sign | ((uint32_t)exp << 10) | mant);
}

enum fill { FILL_ONE, FILL_RAND, FILL_RAND_BIG };

struct tensor {
	char name[64];
	uint64_t ne[2];
	uint32_t n_dims;
	uint32_t type;
	enum fill fill;
	int zero_row0;    /* first row (ne[0] elements) all zero */
	int embd_bias;    /* element 0 of every row = 4 */
	int out_bias;     /* element 0 of suppressed tokens' rows = -20 */
};

static int n_vocab;
static char **vocab;
static int32_t *token_type;
static float *scores;

static void add_token(int *n, const char *s, int type)
{
	vocab[*n] = cr_xstrdup(s);
	token_type[*n] = type;
	scores[*n] = -(float)*n;
	(*n)++;
}

static const char *const words[] = {
	"the", "a", "and", "of", "to", "in", "is", "it", "you", "that", "he", "was", "for", "on", "are", "as",
	"with", "his", "they", "at", "be", "this", "have", "from", "or", "one", "had", "by", "word", "but",
	"not", "what", "all", "were", "we", "when", "your", "can", "said", "there", "use", "an", "each",
	"which", "she", "do", "how", "their", "if", "will", "up", "other", "about", "out", "many", "then",
	"them", "these", "so", "some", "her", "would", "make", "like", "him", "into", "time", "has", "look",
	"two", "more", "write", "go", "see", "number", "no", "way", "could", "people", "my", "than", "first",
	"water", "been", "call", "who", "oil", "its", "now", "find", "long", "down", "day", "did", "get",
	"come", "made", "may", "part", "hello", "world", "model", "cluster", "server",
};

static void build_vocab(long long extra)
{
	size_t nw = sizeof(words) / sizeof(words[0]);
	n_vocab = 3 + 256 + (int)nw + (int)extra;
	vocab = cr_xcalloc((size_t)n_vocab, sizeof(*vocab));
	token_type = cr_xcalloc((size_t)n_vocab, sizeof(*token_type));
	scores = cr_xcalloc((size_t)n_vocab, sizeof(*scores));
	int n = 0;
	add_token(&n, "<unk>", 2);
	add_token(&n, "<s>", 3);
	add_token(&n, "</s>", 3);
	for (int b = 0; b < 256; b++) {
		char s[8];
		snprintf(s, sizeof(s), "<0x%02X>", b);
		add_token(&n, s, 6);
	}
	for (size_t i = 0; i < nw; i++) {
		char s[64];
		snprintf(s, sizeof(s), "\xe2\x96\x81%s", words[i]);
		add_token(&n, s, 1);
	}
	for (long long i = 0; i < extra; i++) {
		char s[32];
		snprintf(s, sizeof(s), "\xe2\x96\x81w%lld", i);
		add_token(&n, s, 1);
	}
}

/* Tokens the bias channel keeps out of generated text. */
static int suppressed(int tok)
{
	if (tok < 3)
		return 1;
	if (tok < 3 + 256) {
		int b = tok - 3;
		return !(b == '\n' || (b >= 0x20 && b < 0x7f));
	}
	return 0;
}

static void write_tensor(FILE *f, const struct tensor *t)
{
	uint64_t rows = t->n_dims > 1 ? t->ne[1] : 1, cols = t->ne[0];
	/* 1/sqrt(fan-in) keeps activations from growing layer after layer, so the
	 * bias channel below stays dominant in deep or wide shapes too */
	float scale = 1.6f / sqrtf((float)cols);
	uint32_t block = 1, block_bytes = 4;
	cr_ggml_type_info(t->type, NULL, &block, &block_bytes);
	float *row = cr_xmalloc(cols * sizeof(float));
	uint8_t *out = cr_xmalloc(cols / block * block_bytes + 64);
	for (uint64_t r = 0; r < rows; r++) {
		for (uint64_t c = 0; c < cols; c++)
			row[c] = t->fill == FILL_ONE ? 1.0f : uniform(t->fill == FILL_RAND_BIG ? 1.0f : scale);
		if (t->zero_row0 && r == 0)
			memset(row, 0, cols * sizeof(float));
		if (t->embd_bias)
			row[0] = 4.0f;
		if (t->out_bias)
			row[0] = suppressed((int)r) ? -20.0f : 0.0f;
		size_t n = 0;
		if (t->type == 0) {
			memcpy(out, row, cols * 4);
			n = cols * 4;
		} else if (t->type == 1) {
			for (uint64_t c = 0; c < cols; c++) {
				uint16_t h = to_f16(row[c]);
				memcpy(out + 2 * c, &h, 2);
			}
			n = cols * 2;
		} else if (t->type == 8) { /* Q8_0: f16 scale + 32 int8 */
			for (uint64_t b = 0; b < cols / 32; b++) {
				float amax = 0;
				for (int i = 0; i < 32; i++)
					amax = row[b * 32 + i] > amax ? row[b * 32 + i] : (-row[b * 32 + i] > amax ? -row[b * 32 + i] : amax);
				float d = amax / 127.0f;
				uint16_t h = to_f16(d);
				memcpy(out + n, &h, 2);
				for (int i = 0; i < 32; i++)
					out[n + 2 + i] = (uint8_t)(int8_t)(d ? row[b * 32 + i] / d : 0);
				n += 34;
			}
		} else { /* other quantised types: scale-like bytes, loadable, not meaningful */
			n = cols / block * block_bytes;
			for (size_t i = 0; i < n; i++)
				out[i] = (uint8_t)(mulberry32() & 0x3f);
		}
		fwrite(out, 1, n, f);
	}
	free(row);
	free(out);
}

/* One GGUF file: the writer's header, then the tensors' data in order. */
static int write_part(const char *path, struct cr_gguf_writer *w, const struct tensor *ts, size_t n)
{
	size_t hlen;
	uint8_t *hdr = cr_gguf_writer_header(w, &hlen);
	FILE *f = fopen(path, "wb");
	if (!f) {
		perror(path);
		free(hdr);
		return 1;
	}
	fwrite(hdr, 1, hlen, f);
	static const uint8_t zeros[64];
	for (size_t i = 0; i < n; i++) {
		uint64_t off, bytes;
		cr_gguf_writer_tensor_at(w, i, &off, &bytes);
		long here = ftell(f);
		if ((uint64_t)here < hlen + off)
			fwrite(zeros, 1, hlen + off - (uint64_t)here, f);
		write_tensor(f, &ts[i]);
	}
	long end = ftell(f);
	uint64_t total = hlen + cr_gguf_writer_data_size(w);
	if ((uint64_t)end < total)
		fwrite(zeros, 1, total - (uint64_t)end, f);
	free(hdr);
	if (fclose(f)) {
		perror(path);
		return 1;
	}
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: mkmodel --out FILE [--layers N] [--embd N] [--heads N] [--kv-heads N] [--ff N]\n"
		   "               [--ctx N] [--extra-vocab N] [--type f32|f16|q8_0|q4_0|q4_k|...] [--tied]\n"
		   "               [--version 2|3] [--seed N] [--reranker] [--split N]\n"
		   "Writes a LLaMA-architecture GGUF with random weights (defaults: 2 layers, 64 dims,\n"
		   "4 heads, 2 KV heads, FFN 128, ctx 2048, F32, GGUF v3). --reranker writes a Qwen3\n"
		   "model with a one-score classifier head (cls.output), which llama-server serves\n"
		   "with --reranking. --split N writes N parts as llama-gguf-split does:\n"
		   "OUT-00001-of-0000N.gguf (all metadata) to OUT-0000N-of-0000N.gguf.\n");
}

static int num(const char *s, long long max, long long *out)
{
	if (!cr_parse_int(s, 1, max, out)) {
		fprintf(stderr, "mkmodel: '%s' is not a number between 1 and %lld\n", s, max);
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct opts o = { .layers = 2, .embd = 64, .heads = 4, .kv_heads = 2, .ff = 128, .ctx = 2048, .words = 0,
			  .version = 3, .seed = 42, .type = 0, .split = 1 };
	static const struct option lo[] = {
		{ "out", 1, 0, 'o' },   { "layers", 1, 0, 'l' }, { "embd", 1, 0, 'e' },    { "heads", 1, 0, 'h' },
		{ "kv-heads", 1, 0, 'k' }, { "ff", 1, 0, 'f' },  { "ctx", 1, 0, 'c' },     { "extra-vocab", 1, 0, 'v' },
		{ "type", 1, 0, 't' },  { "tied", 0, 0, 'T' },   { "version", 1, 0, 'V' }, { "seed", 1, 0, 's' },
		{ "reranker", 0, 0, 'R' }, { "split", 1, 0, 'S' }, { "help", 0, 0, 'H' }, { 0, 0, 0, 0 },
	};
	int ch, rc = 0;
	while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (ch) {
		case 'o': o.out = optarg; break;
		case 'l': rc |= num(optarg, 1024, &o.layers); break;
		case 'e': rc |= num(optarg, 65536, &o.embd); break;
		case 'h': rc |= num(optarg, 1024, &o.heads); break;
		case 'k': rc |= num(optarg, 1024, &o.kv_heads); break;
		case 'f': rc |= num(optarg, 1 << 20, &o.ff); break;
		case 'c': rc |= num(optarg, 1 << 24, &o.ctx); break;
		case 'v': rc |= num(optarg, 1 << 22, &o.words); break;
		case 'V': rc |= num(optarg, 3, &o.version); break;
		case 's': rc |= num(optarg, 1LL << 31, &o.seed); break;
		case 'T': o.tied = 1; break;
		case 'R': o.reranker = 1; break;
		case 'S': rc |= num(optarg, 99, &o.split); break;
		case 't':
			o.type = cr_ggml_type_from_name(optarg);
			if (o.type < 0) {
				fprintf(stderr, "mkmodel: unknown tensor type '%s'\n", optarg);
				rc = -1;
			}
			break;
		case 'H': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (rc || !o.out) {
		usage(stderr);
		return 2;
	}
	if (o.embd % o.heads || o.heads % o.kv_heads) {
		fprintf(stderr, "mkmodel: --embd must divide by --heads and --heads by --kv-heads\n");
		return 2;
	}
	rng_state = (uint32_t)o.seed;
	build_vocab(o.words);
	uint64_t E = (uint64_t)o.embd, V = (uint64_t)n_vocab, F = (uint64_t)o.ff;
	uint64_t hd = E / (uint64_t)o.heads, KD = hd * (uint64_t)o.kv_heads;

	struct cr_gguf_writer *w = cr_gguf_writer_new((uint32_t)o.version);
	const char *arch = o.reranker ? "qwen3" : "llama";
	char key[96];
#define AK(suffix) (snprintf(key, sizeof(key), "%s.%s", arch, suffix), key)
	cr_gguf_w_str(w, "general.architecture", arch);
	cr_gguf_w_str(w, "general.name", "corral-test");
	cr_gguf_w_u32(w, "general.file_type", o.type == 0 ? 0 : o.type == 1 ? 1 : 7);
	cr_gguf_w_u32(w, AK("context_length"), (uint32_t)o.ctx);
	cr_gguf_w_u32(w, AK("embedding_length"), (uint32_t)E);
	cr_gguf_w_u32(w, AK("block_count"), (uint32_t)o.layers);
	cr_gguf_w_u32(w, AK("feed_forward_length"), (uint32_t)F);
	cr_gguf_w_u32(w, AK("attention.head_count"), (uint32_t)o.heads);
	cr_gguf_w_u32(w, AK("attention.head_count_kv"), (uint32_t)o.kv_heads);
	cr_gguf_w_u32(w, AK("rope.dimension_count"), (uint32_t)hd);
	cr_gguf_w_f32(w, AK("rope.freq_base"), 10000.0f);
	cr_gguf_w_f32(w, AK("attention.layer_norm_rms_epsilon"), 1e-5f);
	cr_gguf_w_u32(w, AK("vocab_size"), (uint32_t)V);
	cr_gguf_w_str(w, "tokenizer.ggml.model", "llama");
	cr_gguf_w_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)vocab, V);
	cr_gguf_w_arr(w, "tokenizer.ggml.scores", CR_GGUF_F32, scores, V);
	cr_gguf_w_arr(w, "tokenizer.ggml.token_type", CR_GGUF_I32, token_type, V);
	cr_gguf_w_u32(w, "tokenizer.ggml.bos_token_id", 1);
	cr_gguf_w_u32(w, "tokenizer.ggml.eos_token_id", 2);
	cr_gguf_w_u32(w, "tokenizer.ggml.unknown_token_id", 0);
	cr_gguf_w_bool(w, "tokenizer.ggml.add_bos_token", 1);
	cr_gguf_w_bool(w, "tokenizer.ggml.add_eos_token", 0);
	cr_gguf_w_str(w, "tokenizer.chat_template",
		      "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
		      "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}");

	if (o.reranker) {
		cr_gguf_w_u32(w, AK("attention.key_length"), (uint32_t)hd);
		cr_gguf_w_u32(w, AK("attention.value_length"), (uint32_t)hd);
		cr_gguf_w_u32(w, AK("pooling_type"), 4); /* rank */
	}
#undef AK
	size_t cap = 5 + (size_t)o.layers * 11, n = 0;
	struct tensor *ts = cr_xcalloc(cap, sizeof(*ts));
#define T2(nm, a, b, ty, fl) ts[n] = (struct tensor){ .ne = { a, b }, .n_dims = 2, .type = ty, .fill = fl }, \
	snprintf(ts[n].name, sizeof(ts[n].name), "%s", nm), n++
#define T1(nm, a) ts[n] = (struct tensor){ .ne = { a, 1 }, .n_dims = 1, .type = 0, .fill = FILL_ONE }, \
	snprintf(ts[n].name, sizeof(ts[n].name), "%s", nm), n++
	uint32_t mt = (uint32_t)o.type;
	T2("token_embd.weight", E, V, mt == 0 ? 0 : mt, FILL_RAND_BIG);
	ts[n - 1].embd_bias = 1;
	for (long long l = 0; l < o.layers; l++) {
		char nm[64];
#define BLK(suffix) (snprintf(nm, sizeof(nm), "blk.%lld.%s", l, suffix), nm)
		T1(BLK("attn_norm.weight"), E);
		T2(BLK("attn_q.weight"), E, E, mt, FILL_RAND);
		if (o.reranker) { /* Qwen3 normalises queries and keys per head */
			T1(BLK("attn_q_norm.weight"), hd);
			T1(BLK("attn_k_norm.weight"), hd);
		}
		T2(BLK("attn_k.weight"), E, KD, mt, FILL_RAND);
		T2(BLK("attn_v.weight"), E, KD, mt, FILL_RAND);
		T2(BLK("attn_output.weight"), E, E, mt, FILL_RAND);
		ts[n - 1].zero_row0 = 1;
		T1(BLK("ffn_norm.weight"), E);
		T2(BLK("ffn_gate.weight"), E, F, mt, FILL_RAND);
		T2(BLK("ffn_up.weight"), E, F, mt, FILL_RAND);
		T2(BLK("ffn_down.weight"), F, E, mt, FILL_RAND);
		ts[n - 1].zero_row0 = 1;
#undef BLK
	}
	T1("output_norm.weight", E);
	if (!o.tied) {
		T2("output.weight", E, V, mt == 0 ? 0 : mt, FILL_RAND_BIG);
		ts[n - 1].out_bias = 1;
	}
	if (o.reranker)
		T2("cls.output.weight", E, 1, 0, FILL_RAND);
	/* parts: the first holds every metadata key; each holds the split keys
	 * and its share of the tensors, in order */
	size_t parts = (size_t)o.split;
	struct cr_gguf_writer **pw = cr_xcalloc(parts, sizeof(*pw));
	pw[0] = w;
	for (size_t k = 1; k < parts; k++)
		pw[k] = cr_gguf_writer_new((uint32_t)o.version);
	for (size_t k = 0; parts > 1 && k < parts; k++) {
		cr_gguf_w_scalar(pw[k], "split.no", CR_GGUF_U16, k);
		cr_gguf_w_scalar(pw[k], "split.count", CR_GGUF_U16, parts);
		cr_gguf_w_i32(pw[k], "split.tensors.count", (int32_t)n);
	}
	for (size_t i = 0; i < n; i++) {
		if (!cr_gguf_w_tensor(pw[i * parts / n], ts[i].name, ts[i].n_dims, ts[i].ne, ts[i].type)) {
			fprintf(stderr, "mkmodel: tensor '%s' (%llu x %llu) does not fit type %d's block size\n", ts[i].name,
				(unsigned long long)ts[i].ne[0], (unsigned long long)ts[i].ne[1], (int)ts[i].type);
			return 2;
		}
	}
	for (size_t k = 0, first = 0; k < parts; k++) {
		size_t last = first;
		while (last < n && last * parts / n == k)
			last++;
		char *path = parts > 1 ? cr_xasprintf("%s-%05zu-of-%05zu.gguf", o.out, k + 1, parts) : cr_xstrdup(o.out);
		if (write_part(path, pw[k], ts + first, last - first))
			return 1;
		free(path);
		if (k)
			cr_gguf_writer_free(pw[k]);
		first = last;
	}
	free(pw);
	free(ts);
	cr_gguf_writer_free(w);
	for (int i = 0; i < n_vocab; i++)
		free(vocab[i]);
	free(vocab);
	free(token_type);
	free(scores);
	return 0;
}
