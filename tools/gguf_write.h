/* GGUF writer (pure): collects metadata and tensor infos and renders the
 * header bytes; the caller writes tensor data after it. Used to generate test
 * models and the headers the parser's tests feed it. */
#ifndef CR_TOOLS_GGUF_WRITE_H
#define CR_TOOLS_GGUF_WRITE_H

#include <stddef.h>
#include <stdint.h>

#include "sched/gguf.h"

struct cr_gguf_writer;

/* A new writer for GGUF version 2 or 3 with alignment 32 (general.alignment
 * written with cr_gguf_w_u32 changes the layout accordingly). */
struct cr_gguf_writer *cr_gguf_writer_new(uint32_t version);

/* Free a writer; NULL is fine. */
void cr_gguf_writer_free(struct cr_gguf_writer *w);

/* Metadata, in the order added (keys are copied). */
void cr_gguf_w_str(struct cr_gguf_writer *w, const char *key, const char *val);
void cr_gguf_w_u32(struct cr_gguf_writer *w, const char *key, uint32_t val);
void cr_gguf_w_i32(struct cr_gguf_writer *w, const char *key, int32_t val);
void cr_gguf_w_u64(struct cr_gguf_writer *w, const char *key, uint64_t val);
void cr_gguf_w_f32(struct cr_gguf_writer *w, const char *key, float val);
void cr_gguf_w_bool(struct cr_gguf_writer *w, const char *key, int val);
/* A scalar of any type given as its raw little-endian bits. */
void cr_gguf_w_scalar(struct cr_gguf_writer *w, const char *key, enum cr_gguf_type type, uint64_t bits);
/* Arrays: strings, or n scalars of elem_type stored in val (host order). */
void cr_gguf_w_arr_str(struct cr_gguf_writer *w, const char *key, const char *const *val, size_t n);
void cr_gguf_w_arr(struct cr_gguf_writer *w, const char *key, enum cr_gguf_type elem_type, const void *val, size_t n);

/* A tensor info with n_dims sizes (ne[0] contiguous) of ggml type. Offsets
 * are assigned in order, each aligned. Returns the tensor's data size in
 * bytes, or 0 when the type is unknown or the row not a whole block. */
uint64_t cr_gguf_w_tensor(struct cr_gguf_writer *w, const char *name, uint32_t n_dims, const uint64_t *ne,
			  uint32_t type);

/* Render the header, padded to the alignment, in a new buffer (*len bytes,
 * caller frees). Tensor i's data then goes at header + offset(i), and the
 * file is header + cr_gguf_writer_data_size bytes long. */
uint8_t *cr_gguf_writer_header(struct cr_gguf_writer *w, size_t *len);

/* Bytes of tensor data, each tensor padded to the alignment. */
uint64_t cr_gguf_writer_data_size(const struct cr_gguf_writer *w);

/* Tensor i's offset from the data start and its size; false past the end. */
int cr_gguf_writer_tensor_at(const struct cr_gguf_writer *w, size_t i, uint64_t *offset, uint64_t *bytes);

#endif
