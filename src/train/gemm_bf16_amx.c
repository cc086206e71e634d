/*
 * gemm_bf16_amx.c — AMX microkernel of the BF16 GEMM: a 32 x 32 block of C
 * in tiles 0-3 (2 x 2 tiles of 16 x 16 fp32), per 32-wide K step tiles 4-5
 * hold A (16 rows x 32 bf16 each) and 6-7 hold B (16 pair rows x 16 columns
 * x 2), four _tile_dpbf16ps. The hardware's order and rounding (denormals
 * flushed): within the fp32 summation bound of pu_bf16_gemm_ref. Also the
 * register-only tile loop that is the AMX roofline. Needs the permission of
 * pu_cpu_amx_enable() (checked by pu_bf16_level_available) and a tile
 * configuration on the calling thread (pu_bf16_amx_begin).
 */
#include <immintrin.h>
#include <string.h>

#include "train/gemm_bf16.h"

#if defined(__x86_64__) && defined(__GNUC__)

#define AMX_TARGET __attribute__((target("amx-tile,amx-bf16")))
/* the tile load/store intrinsics are asm without a memory operand: keep
 * the compiler from moving buffer writes across them */
#define MEM_BARRIER() __asm__ volatile("" ::: "memory")

typedef struct {
    uint8_t palette_id;
    uint8_t start_row;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tile_cfg;

AMX_TARGET
void pu_bf16_amx_begin(void) {
    tile_cfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette_id = 1;
    for (int t = 0; t < 8; t++) {
        cfg.colsb[t] = 64; /* 16 fp32 or 32 bf16 */
        cfg.rows[t] = 16;
    }
    /* GCC 12's _tile_loadconfig is asm whose operand is 8 bytes wide: without
     * the barrier the stores of colsb/rows are dead to it and dropped, and
     * ldtilecfg faults (#GP) on the half-written configuration */
    MEM_BARRIER();
    _tile_loadconfig(&cfg);
    MEM_BARRIER();
}

AMX_TARGET
void pu_bf16_amx_end(void) {
    _tile_release();
}

AMX_TARGET
void pu_bf16_ukernel_amx(int64_t kc, const uint16_t *ap, const uint16_t *bp, float *c, int64_t ldc,
                         int mr, int nr, bool acc) {
    if (mr == 32 && nr == 32) { /* full block: tiles straight from/to C */
        int64_t ld = ldc * (int64_t)sizeof(float);
        MEM_BARRIER();
        if (acc) {
            _tile_loadd(0, c, ld);
            _tile_loadd(1, c + 16, ld);
            _tile_loadd(2, c + 16 * ldc, ld);
            _tile_loadd(3, c + 16 * ldc + 16, ld);
        } else {
            _tile_zero(0);
            _tile_zero(1);
            _tile_zero(2);
            _tile_zero(3);
        }
        for (int64_t q = 0; q < kc / 32; q++) {
            const uint16_t *a = ap + q * 1024, *b = bp + q * 1024;
            _tile_loadd(4, a, 64);
            _tile_loadd(5, a + 512, 64);
            _tile_loadd(6, b, 64);
            _tile_loadd(7, b + 512, 64);
            _tile_dpbf16ps(0, 4, 6);
            _tile_dpbf16ps(1, 4, 7);
            _tile_dpbf16ps(2, 5, 6);
            _tile_dpbf16ps(3, 5, 7);
        }
        _tile_stored(0, c, ld);
        _tile_stored(1, c + 16, ld);
        _tile_stored(2, c + 16 * ldc, ld);
        _tile_stored(3, c + 16 * ldc + 16, ld);
        MEM_BARRIER();
        return;
    }
    /* edge block: through a zero-padded 32 x 32 buffer */
    float cb[32 * 32] __attribute__((aligned(64)));
    for (int r = 0; r < 32; r++)
        for (int j = 0; j < 32; j++)
            cb[r * 32 + j] = (acc && r < mr && j < nr) ? c[r * ldc + j] : 0.0f;
    MEM_BARRIER();
    _tile_loadd(0, cb, 128);
    _tile_loadd(1, cb + 16, 128);
    _tile_loadd(2, cb + 16 * 32, 128);
    _tile_loadd(3, cb + 16 * 32 + 16, 128);
    for (int64_t q = 0; q < kc / 32; q++) {
        const uint16_t *a = ap + q * 1024, *b = bp + q * 1024;
        _tile_loadd(4, a, 64);
        _tile_loadd(5, a + 512, 64);
        _tile_loadd(6, b, 64);
        _tile_loadd(7, b + 512, 64);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
    _tile_stored(0, cb, 128);
    _tile_stored(1, cb + 16, 128);
    _tile_stored(2, cb + 16 * 32, 128);
    _tile_stored(3, cb + 16 * 32 + 16, 128);
    MEM_BARRIER();
    for (int r = 0; r < mr; r++)
        for (int j = 0; j < nr; j++)
            c[r * ldc + j] = cb[r * 32 + j];
}

AMX_TARGET
float pu_bf16_amx_peak_loop(int64_t n) {
    uint16_t ab[16 * 32] __attribute__((aligned(64)));
    float cb[16 * 16] __attribute__((aligned(64)));
    for (int i = 0; i < 16 * 32; i++)
        ab[i] = 0x3380; /* tiny values: no overflow over long loops */
    pu_bf16_amx_begin();
    MEM_BARRIER();
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    _tile_loadd(4, ab, 64);
    _tile_loadd(5, ab, 64);
    _tile_loadd(6, ab, 64);
    _tile_loadd(7, ab, 64);
    for (int64_t i = 0; i < n; i++) {
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
    _tile_stored(0, cb, 64);
    MEM_BARRIER();
    pu_bf16_amx_end();
    float s = 0;
    for (int i = 0; i < 256; i++)
        s += cb[i];
    return s;
}

#else /* no x86: never selected (pu_bf16_level_available is false) */
void pu_bf16_amx_begin(void) {
}
void pu_bf16_amx_end(void) {
}
void pu_bf16_ukernel_amx(int64_t kc, const uint16_t *ap, const uint16_t *bp, float *c, int64_t ldc,
                         int mr, int nr, bool acc) {
    (void)kc, (void)ap, (void)bp, (void)c, (void)ldc, (void)mr, (void)nr, (void)acc;
}
float pu_bf16_amx_peak_loop(int64_t n) {
    (void)n;
    return 0.0f;
}
#endif
