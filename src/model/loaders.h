/*
 * loaders.h — private interfaces of the weight-file parsers (safetensors,
 * GGUF, llama2.c) and helpers shared by the loaders in src/model/. Not a
 * public header; the fuzz harnesses and tests/test_loaders.c include it to
 * reach the in-memory entry points.
 *
 * Every parser works on an untrusted (buf, len): all counts, lengths and
 * offsets are checked against len before use, no allocation is sized by an
 * unchecked count, and errors name `path` and the record at fault.
 */
#ifndef PU_MODEL_LOADERS_H
#define PU_MODEL_LOADERS_H

#include <stddef.h>
#include <stdint.h>

#include "model/model_impl.h"

/* ------------------------------------------------------------------------ */
/* shared helpers (load.c)                                                  */

/* Sanity limits for dimensions read from files (products stay in int64). */
#define PU_MAX_DIM    (INT64_C(1) << 24) /* vocab, hidden, ffn, positions */
#define PU_MAX_LAYERS 4096
#define PU_MAX_HEADS  65536

/* Fill *t as a view of `data` (dtype, shape of ndim dims). If `data` is not
 * aligned for the dtype, an owned aligned copy is made (owned by m). */
void pu_model_view_(pu_model *m, pu_tensor *t, pu_dtype dt, int ndim, const int64_t *shape,
                    const void *data);
/* "(4096, 2048)" into buf */
const char *pu_shape_str_(char *buf, size_t cap, int ndim, const int64_t *shape);
/* Validate the numeric fields of a config (sizes > 0 and within limits,
 * divisibility, eps, act...). `what` names the source ("x/config.json"). */
pu_status pu_config_check_(const pu_config *c, const char *what);

/* ------------------------------------------------------------------------ */
/* safetensors (safetensors.c)                                              */

typedef struct pu_st_tensor {
    char *name; /* owned */
    int dtype;  /* pu_dtype, or -1 when the dtype is not F32/F16/BF16 */
    char dtype_name[8];
    int ndim;
    int64_t shape[8];
    uint64_t begin, end; /* byte range relative to the data section */
} pu_st_tensor;

typedef struct pu_st_file {
    pu_st_tensor *t; /* sorted by name */
    int64_t n;
    const uint8_t *data; /* start of the data section (inside the buffer) */
    uint64_t data_len;
} pu_st_file;

/* Parse and fully validate a safetensors file image (buf, len): header length,
 * JSON, dtypes, shapes, offsets (in range, size == numel * elsize, no overlap),
 * duplicate names. `__metadata__` is ignored. On error *out is left empty. */
pu_status pu_safetensors_parse_(const void *buf, size_t len, const char *path, pu_st_file *out);
void pu_safetensors_free_(pu_st_file *f);
/* Binary search by name; NULL if absent. */
const pu_st_tensor *pu_safetensors_find_(const pu_st_file *f, const char *name);

/* ------------------------------------------------------------------------ */
/* GGUF (gguf.c)                                                            */

typedef enum {
    PU_GGUF_U8 = 0,
    PU_GGUF_I8 = 1,
    PU_GGUF_U16 = 2,
    PU_GGUF_I16 = 3,
    PU_GGUF_U32 = 4,
    PU_GGUF_I32 = 5,
    PU_GGUF_F32 = 6,
    PU_GGUF_BOOL = 7,
    PU_GGUF_STRING = 8,
    PU_GGUF_ARRAY = 9,
    PU_GGUF_U64 = 10,
    PU_GGUF_I64 = 11,
    PU_GGUF_F64 = 12,
} pu_gguf_type;

typedef struct pu_gguf_kv {
    const char *key; /* points into the buffer, NOT NUL-terminated */
    uint64_t key_len;
    uint32_t type;
    /* scalars */
    int64_t i;       /* integer types and bool */
    uint64_t u;      /* unsigned view of integer types */
    double f;        /* float types (and integers converted) */
    const char *str; /* STRING: into the buffer, str_len bytes */
    uint64_t str_len;
    /* ARRAY */
    uint32_t arr_type;
    uint64_t arr_n;
} pu_gguf_kv;

typedef struct pu_gguf_tensor {
    const char *name; /* into the buffer, name_len bytes */
    uint64_t name_len;
    uint32_t n_dims;
    int64_t ne[4];   /* ne[0] innermost */
    uint32_t type;   /* ggml type */
    uint64_t offset; /* relative to the data section */
    int64_t nbytes;  /* -1 when the type's size is unknown */
} pu_gguf_tensor;

typedef struct pu_gguf_file {
    uint32_t version;
    pu_gguf_kv *kv;
    int64_t n_kv;
    pu_gguf_tensor *t;
    int64_t n_tensors;
    uint64_t alignment;
    const uint8_t *data; /* data section */
    uint64_t data_len;
} pu_gguf_file;

/* Parse and validate a GGUF image: header, every KV (types, string/array
 * lengths), tensor infos (dims, known type sizes, aligned in-range offsets,
 * no duplicate names/keys). */
pu_status pu_gguf_parse_(const void *buf, size_t len, const char *path, pu_gguf_file *out);
void pu_gguf_free_(pu_gguf_file *f);
const pu_gguf_kv *pu_gguf_find_kv_(const pu_gguf_file *f, const char *key);
const pu_gguf_tensor *pu_gguf_find_tensor_(const pu_gguf_file *f, const char *name);
/* Build m->cfg and m->w from a GGUF image that stays alive as long as m
 * (views point into buf). Used by the file loader and the fuzz harness. */
pu_status pu_gguf_load_mem_(pu_model *m, const void *buf, size_t len, const char *path);

/* ------------------------------------------------------------------------ */
/* llama2.c (llama2c.c)                                                     */

/* Build m->cfg and m->w from a llama2.c checkpoint image (legacy 28-byte
 * header or version-1 "ak42" 256-byte header, fp32); views point into buf. */
pu_status pu_llama2c_load_mem_(pu_model *m, const void *buf, size_t len, const char *path);

/* ------------------------------------------------------------------------ */
/* HF directory (safetensors.c)                                             */

/* Build m->w from already-parsed safetensors files (shard k is files[k],
 * named file_names[k] in errors). Every tensor must be in exactly one shard;
 * unknown tensors (other than *rotary_emb*) are an error. m->cfg must be set.
 * Used by pu_model_load_hf_dir_. */
pu_status pu_hf_bind_weights_(pu_model *m, const pu_st_file *files, char *const *file_names,
                              int n_files, const char *dir);
/* The same for an AWQ checkpoint of group size awq_group (> 0): a missing
 * X.weight matrix is read from X.qweight / X.qzeros / X.scales (awq.c). */
pu_status pu_hf_bind_weights_awq_(pu_model *m, const pu_st_file *files, char *const *file_names,
                                  int n_files, const char *dir, int64_t awq_group);

/* ------------------------------------------------------------------------ */
/* AWQ (awq.c)                                                              */

/* group_size of config.json's quantization_config when it declares awq
 * (4 bits, zero point, gemm packing), else 0; other quant_methods / bits /
 * packings are PU_ERR_UNSUPPORTED naming the field. */
pu_status pu_awq_read_config_(const char *cfg_path, int64_t *group_size);
/* dst (out, in) F32 = (q - z) * s from AutoAWQ gemm-packed qweight (in,
 * out/8 int32), qzeros (in/group, out/8 int32) and scales (in/group, out
 * f16); little-endian byte buffers, sizes checked by the caller. */
void pu_awq_dequant_(float *dst, const uint8_t *qweight, const uint8_t *qzeros,
                     const uint8_t *scales, int64_t out, int64_t in, int64_t group);

#endif
