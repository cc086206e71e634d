/*
 * dispatch.c — picks the kernel table: pu_kernels_for(level) checks the CPU
 * features each ISA file was compiled for; pu_kernels_get() resolves the level
 * in force (pu_cpu_simd_active: PUYU_SIMD or the best) once, via pthread_once.
 * Also the dtype helpers.
 */
#include <pthread.h>
#include <strings.h>

#include "kernels/kernels_impl.h"

/* name, block size, bytes per block, ggml type id (ggml-common.h / gguf) */
static const struct {
    const char *name;
    int64_t blck, bytes;
    uint32_t ggml;
} dtypes[PU_DTYPE_COUNT] = {
    [PU_DTYPE_F32] = {"F32", 1, 4, 0},        [PU_DTYPE_F16] = {"F16", 1, 2, 1},
    [PU_DTYPE_BF16] = {"BF16", 1, 2, 30},     [PU_DTYPE_Q8_0] = {"Q8_0", 32, 34, 8},
    [PU_DTYPE_Q4_0] = {"Q4_0", 32, 18, 2},    [PU_DTYPE_Q4_1] = {"Q4_1", 32, 20, 3},
    [PU_DTYPE_Q5_0] = {"Q5_0", 32, 22, 6},    [PU_DTYPE_Q5_1] = {"Q5_1", 32, 24, 7},
    [PU_DTYPE_Q4_K] = {"Q4_K", 256, 144, 12}, [PU_DTYPE_Q5_K] = {"Q5_K", 256, 176, 13},
    [PU_DTYPE_Q6_K] = {"Q6_K", 256, 210, 14},
};

static bool dt_ok(pu_dtype t) {
    return (int)t >= 0 && t < PU_DTYPE_COUNT;
}

const char *pu_dtype_name(pu_dtype t) {
    return dt_ok(t) ? dtypes[t].name : "?";
}

size_t pu_dtype_size(pu_dtype t) {
    return dt_ok(t) && dtypes[t].blck == 1 ? (size_t)dtypes[t].bytes : 0;
}

bool pu_dtype_is_quant(pu_dtype t) {
    return dt_ok(t) && dtypes[t].blck > 1;
}

int64_t pu_dtype_block(pu_dtype t) {
    return dt_ok(t) ? dtypes[t].blck : 0;
}

int64_t pu_dtype_block_bytes(pu_dtype t) {
    return dt_ok(t) ? dtypes[t].bytes : 0;
}

int64_t pu_dtype_nbytes(pu_dtype t, int64_t n) {
    if (!dt_ok(t) || n < 0 || n % dtypes[t].blck != 0)
        return -1;
    return n / dtypes[t].blck * dtypes[t].bytes;
}

bool pu_dtype_parse(const char *s, pu_dtype *out) {
    for (int i = 0; i < PU_DTYPE_COUNT; i++)
        if (strcasecmp(s, dtypes[i].name) == 0) {
            *out = (pu_dtype)i;
            return true;
        }
    return false;
}

uint32_t pu_dtype_to_ggml(pu_dtype t) {
    return dt_ok(t) ? dtypes[t].ggml : UINT32_MAX;
}

bool pu_dtype_from_ggml(uint32_t g, pu_dtype *out) {
    for (int i = 0; i < PU_DTYPE_COUNT; i++)
        if (dtypes[i].ggml == g) {
            *out = (pu_dtype)i;
            return true;
        }
    return false;
}

static bool cpu_avx2_ok(void) {
    return pu_cpu_has("avx2") && pu_cpu_has("fma") && pu_cpu_has("f16c");
}

static bool cpu_avx512_ok(void) {
    return cpu_avx2_ok() && pu_cpu_has("avx512f") && pu_cpu_has("avx512bw") &&
           pu_cpu_has("avx512vl") && pu_cpu_has("avx512dq");
}

const pu_kernels *pu_kernels_for(pu_simd level) {
    switch (level) {
    case PU_SIMD_REF: return &pu_kernels_ref_table;
    case PU_SIMD_AVX2: return cpu_avx2_ok() ? &pu_kernels_avx2_table : NULL;
    case PU_SIMD_AVX512: return cpu_avx512_ok() ? &pu_kernels_avx512_table : NULL;
    default: return NULL;
    }
}

static const pu_kernels *g_active;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void init_active(void) {
    int s = (int)pu_cpu_simd_active();
    const pu_kernels *k = NULL;
    for (; s >= (int)PU_SIMD_REF && !k; s--)
        k = pu_kernels_for((pu_simd)s);
    g_active = k ? k : &pu_kernels_ref_table;
}

const pu_kernels *pu_kernels_get(void) {
    pthread_once(&g_once, init_active);
    return g_active;
}
