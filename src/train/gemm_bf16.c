/*
 * gemm_bf16.c — the BF16 GEMM's scalar reference, level choice, packing and
 * blocked driver (see gemm_bf16.h). Microkernels live in gemm_bf16_avx2.c,
 * gemm_bf16_avx512.c (vdpbf16ps) and gemm_bf16_amx.c (AMX tiles).
 *
 * Blocking (BLIS order): columns of C in NC blocks, K in KC blocks (B block
 * packed per thread), rows of the thread's share in MC blocks (A packed),
 * then MR x NR microkernel calls. A K block continues the accumulators left
 * in C by the previous one, so the avx2 level keeps the reference's exact
 * FMA chain; the split of rows over threads never changes a result.
 */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "train/gemm_bf16.h"

#define MC 96 /* multiple of every MR (6, 12, 32) */
#define KC 256
#define NC 512 /* multiple of every NR (16, 32) */

static const char *const g_names[PU_BF16_NLEVELS] = {"ref", "avx2", "avx512bf16", "amx"};

const char *pu_bf16_level_name(pu_bf16_level l) {
    return (unsigned)l < PU_BF16_NLEVELS ? g_names[l] : "?";
}

bool pu_bf16_level_available(pu_bf16_level l) {
    switch (l) {
    case PU_BF16_REF: return true;
    case PU_BF16_AVX2: return pu_cpu_has("avx2") && pu_cpu_has("fma");
    case PU_BF16_AVX512BF16:
        return pu_cpu_has("avx512f") && pu_cpu_has("avx512bw") && pu_cpu_has("avx512vl") &&
               pu_cpu_has("avx512_bf16");
    case PU_BF16_AMX:
        return pu_cpu_has("amx_tile") && pu_cpu_has("amx_bf16") && pu_cpu_amx_enable();
    case PU_BF16_NLEVELS: break;
    }
    return false;
}

pu_bf16_level pu_bf16_level_best(void) {
    for (int l = PU_BF16_NLEVELS - 1; l > 0; l--)
        if (pu_bf16_level_available((pu_bf16_level)l))
            return (pu_bf16_level)l;
    return PU_BF16_REF;
}

pu_bf16_level pu_bf16_level_active(void) {
    pu_bf16_level best = pu_bf16_level_best();
    const char *e = getenv("PUYU_BF16");
    if (!e || !*e)
        return best;
    for (int l = 0; l < PU_BF16_NLEVELS; l++)
        if (!strcmp(e, g_names[l])) {
            if (pu_bf16_level_available((pu_bf16_level)l))
                return (pu_bf16_level)l;
            pu_log_warn("PUYU_BF16=%s: this CPU cannot run it; using %s", e, g_names[best]);
            return best;
        }
    pu_log_warn("PUYU_BF16='%s' unknown (expected ref|avx2|avx512bf16|amx); using %s", e,
                g_names[best]);
    return best;
}

/* ---------------------------------------------------------------- reference */

void pu_bf16_gemm_ref(float *c, int64_t ldc, const uint16_t *a, int64_t ars, int64_t acs,
                      const uint16_t *b, int64_t brs, int64_t bcs, int64_t M, int64_t N, int64_t K,
                      bool accumulate) {
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            float acc = accumulate ? c[i * ldc + j] : 0.0f;
            for (int64_t p = 0; p < K; p++)
                acc = fmaf(pu_bf16_to_f32(a[i * ars + p * acs]),
                           pu_bf16_to_f32(b[p * brs + j * bcs]), acc);
            c[i * ldc + j] = acc;
        }
}

/* ---------------------------------------------------------------- packing */

typedef struct {
    const uint16_t *a, *b;
    int64_t ars, acs, brs, bcs;
} mats;

typedef struct {
    int MR, NR, kmul;
    size_t esz;
    /* one micro-panel: rows i0..i0+mr (cols j0..j0+nr) of K range p0..p0+kc,
     * zero padded to MR (NR) and to kcp */
    void (*pack_a)(void *dst, const mats *m, int64_t i0, int mr, int64_t p0, int64_t kc,
                   int64_t kcp);
    void (*pack_b)(void *dst, const mats *m, int64_t j0, int nr, int64_t p0, int64_t kc,
                   int64_t kcp);
} level_desc;

static inline uint16_t A_(const mats *m, int64_t i, int64_t p) {
    return m->a[i * m->ars + p * m->acs];
}
static inline uint16_t B_(const mats *m, int64_t p, int64_t j) {
    return m->b[p * m->brs + j * m->bcs];
}

/* avx2: fp32 [kcp][6] / [kcp][16] */
static void pack_a_f32(void *dst, const mats *m, int64_t i0, int mr, int64_t p0, int64_t kc,
                       int64_t kcp) {
    float *d = dst;
    for (int64_t p = 0; p < kcp; p++)
        for (int r = 0; r < 6; r++)
            d[p * 6 + r] = (r < mr && p < kc) ? pu_bf16_to_f32(A_(m, i0 + r, p0 + p)) : 0.0f;
}
static void pack_b_f32(void *dst, const mats *m, int64_t j0, int nr, int64_t p0, int64_t kc,
                       int64_t kcp) {
    float *d = dst;
    for (int64_t p = 0; p < kcp; p++)
        for (int c = 0; c < 16; c++)
            d[p * 16 + c] = (c < nr && p < kc) ? pu_bf16_to_f32(B_(m, p0 + p, j0 + c)) : 0.0f;
}
/* avx512bf16: pairs of K interleaved, [kcp/2][12][2] / [kcp/2][32][2] */
static void pack_a_pair(void *dst, const mats *m, int64_t i0, int mr, int64_t p0, int64_t kc,
                        int64_t kcp) {
    uint16_t *d = dst;
    for (int64_t p = 0; p < kcp; p++)
        for (int r = 0; r < 12; r++)
            d[(p / 2) * 24 + r * 2 + (p & 1)] = (r < mr && p < kc) ? A_(m, i0 + r, p0 + p) : 0;
}
static void pack_b_pair(void *dst, const mats *m, int64_t j0, int nr, int64_t p0, int64_t kc,
                        int64_t kcp) {
    uint16_t *d = dst;
    for (int64_t p = 0; p < kcp; p++)
        for (int c = 0; c < 32; c++)
            d[(p / 2) * 64 + c * 2 + (p & 1)] = (c < nr && p < kc) ? B_(m, p0 + p, j0 + c) : 0;
}
/* amx: A [kcp/32][32 rows][32]; B [kcp/32][2 col tiles][16 pair rows][16 cols][2] */
static void pack_a_amx(void *dst, const mats *m, int64_t i0, int mr, int64_t p0, int64_t kc,
                       int64_t kcp) {
    uint16_t *d = dst;
    for (int64_t p = 0; p < kcp; p++)
        for (int r = 0; r < 32; r++)
            d[(p / 32) * 1024 + r * 32 + p % 32] = (r < mr && p < kc) ? A_(m, i0 + r, p0 + p) : 0;
}
static void pack_b_amx(void *dst, const mats *m, int64_t j0, int nr, int64_t p0, int64_t kc,
                       int64_t kcp) {
    uint16_t *d = dst;
    for (int64_t p = 0; p < kcp; p++)
        for (int c = 0; c < 32; c++)
            d[(p / 32) * 1024 + (c / 16) * 512 + ((p % 32) / 2) * 32 + (c % 16) * 2 + (p & 1)] =
                (c < nr && p < kc) ? B_(m, p0 + p, j0 + c) : 0;
}

static const level_desc g_desc[PU_BF16_NLEVELS] = {
    [PU_BF16_AVX2] = {6, 16, 1, sizeof(float), pack_a_f32, pack_b_f32},
    [PU_BF16_AVX512BF16] = {12, 32, 2, sizeof(uint16_t), pack_a_pair, pack_b_pair},
    [PU_BF16_AMX] = {32, 32, 32, sizeof(uint16_t), pack_a_amx, pack_b_amx},
};

/* Scalar stand-ins for the avx512bf16 / amx microkernels on the same packed
 * panels (pu_bf16_gemm_emulated): each pair of a step is added even element
 * first, one fmaf per product, so they reproduce the reference exactly and
 * check the packing and blocking of those levels on any CPU. */
static void emu_pair(int64_t kcp, const uint16_t *ap, const uint16_t *bp, float *c, int64_t ldc,
                     int mr, int nr, bool acc) {
    for (int r = 0; r < mr; r++)
        for (int j = 0; j < nr; j++) {
            float s = acc ? c[r * ldc + j] : 0.0f;
            for (int64_t q = 0; q < kcp / 2; q++)
                for (int e = 0; e < 2; e++)
                    s = fmaf(pu_bf16_to_f32(ap[q * 24 + r * 2 + e]),
                             pu_bf16_to_f32(bp[q * 64 + j * 2 + e]), s);
            c[r * ldc + j] = s;
        }
}

static void emu_amx(int64_t kcp, const uint16_t *ap, const uint16_t *bp, float *c, int64_t ldc,
                    int mr, int nr, bool acc) {
    for (int r = 0; r < mr; r++)
        for (int j = 0; j < nr; j++) {
            float s = acc ? c[r * ldc + j] : 0.0f;
            for (int64_t q = 0; q < kcp / 32; q++) /* tile (r/16, j/16), K step q */
                for (int kk = 0; kk < 16; kk++)
                    for (int e = 0; e < 2; e++) {
                        uint16_t av = ap[q * 1024 + (r / 16) * 512 + (r % 16) * 32 + kk * 2 + e];
                        uint16_t bv = bp[q * 1024 + (j / 16) * 512 + kk * 32 + (j % 16) * 2 + e];
                        s = fmaf(pu_bf16_to_f32(av), pu_bf16_to_f32(bv), s);
                    }
            c[r * ldc + j] = s;
        }
}

static void ukernel(pu_bf16_level l, bool emulate, int64_t kcp, const void *ap, const void *bp,
                    float *c, int64_t ldc, int mr, int nr, bool acc) {
    if (emulate) {
        if (l == PU_BF16_AMX)
            emu_amx(kcp, ap, bp, c, ldc, mr, nr, acc);
        else
            emu_pair(kcp, ap, bp, c, ldc, mr, nr, acc);
        return;
    }
    switch (l) {
    case PU_BF16_AVX2: pu_bf16_ukernel_avx2(kcp, ap, bp, c, ldc, mr, nr, acc); break;
    case PU_BF16_AVX512BF16: pu_bf16_ukernel_avx512bf16(kcp, ap, bp, c, ldc, mr, nr, acc); break;
    case PU_BF16_AMX: pu_bf16_ukernel_amx(kcp, ap, bp, c, ldc, mr, nr, acc); break;
    default: break;
    }
}

/* ---------------------------------------------------------------- driver */

typedef struct {
    pu_bf16_level level;
    float *c;
    int64_t ldc, M, N, K;
    mats m;
    bool accumulate, emulate;
} gemm_ctx;

static int64_t rup(int64_t x, int64_t m) {
    return (x + m - 1) / m * m;
}

static void gemm_worker(void *vc, int ith, int nth) {
    const gemm_ctx *g = vc;
    const level_desc *d = &g_desc[g->level];
    int64_t lo, hi;
    pu_split((g->M + MC - 1) / MC, ith, nth, &lo, &hi);
    if (lo >= hi)
        return;
    int64_t i_lo = lo * MC, i_hi = hi * MC < g->M ? hi * MC : g->M;
    int64_t kcmax = rup(KC, d->kmul);
    char *bp = pu_malloc_aligned((size_t)(NC * kcmax) * d->esz, 64);
    char *ap = pu_malloc_aligned((size_t)(MC * kcmax) * d->esz, 64);
    if (g->level == PU_BF16_AMX && !g->emulate)
        pu_bf16_amx_begin();
    for (int64_t jc = 0; jc < g->N; jc += NC) {
        int64_t nc = g->N - jc < NC ? g->N - jc : NC;
        for (int64_t pc = 0; pc < g->K; pc += KC) {
            int64_t kc = g->K - pc < KC ? g->K - pc : KC, kcp = rup(kc, d->kmul);
            size_t bpanel = (size_t)(kcp * d->NR) * d->esz, apanel = (size_t)(kcp * d->MR) * d->esz;
            for (int64_t jr = 0; jr < nc; jr += d->NR) {
                int nr = (int)(nc - jr < d->NR ? nc - jr : d->NR);
                d->pack_b(bp + (size_t)(jr / d->NR) * bpanel, &g->m, jc + jr, nr, pc, kc, kcp);
            }
            bool acc = g->accumulate || pc > 0;
            for (int64_t ic = i_lo; ic < i_hi; ic += MC) {
                int64_t mc = i_hi - ic < MC ? i_hi - ic : MC;
                for (int64_t ir = 0; ir < mc; ir += d->MR) {
                    int mr = (int)(mc - ir < d->MR ? mc - ir : d->MR);
                    d->pack_a(ap + (size_t)(ir / d->MR) * apanel, &g->m, ic + ir, mr, pc, kc, kcp);
                }
                for (int64_t jr = 0; jr < nc; jr += d->NR) {
                    int nr = (int)(nc - jr < d->NR ? nc - jr : d->NR);
                    for (int64_t ir = 0; ir < mc; ir += d->MR) {
                        int mr = (int)(mc - ir < d->MR ? mc - ir : d->MR);
                        ukernel(g->level, g->emulate, kcp, ap + (size_t)(ir / d->MR) * apanel,
                                bp + (size_t)(jr / d->NR) * bpanel,
                                g->c + (ic + ir) * g->ldc + jc + jr, g->ldc, mr, nr, acc);
                    }
                }
            }
        }
    }
    if (g->level == PU_BF16_AMX && !g->emulate)
        pu_bf16_amx_end();
    pu_free_aligned(ap);
    pu_free_aligned(bp);
}

static void ref_worker(void *vc, int ith, int nth) {
    const gemm_ctx *g = vc;
    int64_t lo, hi;
    pu_split(g->M, ith, nth, &lo, &hi);
    if (lo < hi)
        pu_bf16_gemm_ref(g->c + lo * g->ldc, g->ldc, g->m.a + lo * g->m.ars, g->m.ars, g->m.acs,
                         g->m.b, g->m.brs, g->m.bcs, hi - lo, g->N, g->K, g->accumulate);
}

void pu_bf16_gemm(pu_pool *pool, pu_bf16_level level, float *c, int64_t ldc, const uint16_t *a,
                  int64_t ars, int64_t acs, const uint16_t *b, int64_t brs, int64_t bcs, int64_t M,
                  int64_t N, int64_t K, bool accumulate) {
    if (M <= 0 || N <= 0)
        return;
    if ((unsigned)level >= PU_BF16_NLEVELS || !pu_bf16_level_available(level))
        level = PU_BF16_REF;
    gemm_ctx g = {level, c, ldc, M, N, K, {a, b, ars, acs, brs, bcs}, accumulate, false};
    if (K <= 0) {
        if (!accumulate)
            for (int64_t i = 0; i < M; i++)
                memset(c + i * ldc, 0, (size_t)N * sizeof(float));
        return;
    }
    pu_pool_run(pool, level == PU_BF16_REF ? ref_worker : gemm_worker, &g);
}

void pu_bf16_gemm_emulated(pu_pool *pool, pu_bf16_level level, float *c, int64_t ldc,
                           const uint16_t *a, int64_t ars, int64_t acs, const uint16_t *b,
                           int64_t brs, int64_t bcs, int64_t M, int64_t N, int64_t K,
                           bool accumulate) {
    if (level != PU_BF16_AVX512BF16 && level != PU_BF16_AMX) {
        pu_bf16_gemm(pool, level, c, ldc, a, ars, acs, b, brs, bcs, M, N, K, accumulate);
        return;
    }
    if (M <= 0 || N <= 0 || K <= 0) {
        pu_bf16_gemm(pool, PU_BF16_REF, c, ldc, a, ars, acs, b, brs, bcs, M, N, K, accumulate);
        return;
    }
    gemm_ctx g = {level, c, ldc, M, N, K, {a, b, ars, acs, brs, bcs}, accumulate, true};
    pu_pool_run(pool, gemm_worker, &g);
}

/* ---------------------------------------------------------------- helpers */

typedef struct {
    uint16_t *dst;
    const float *src;
    int64_t n;
} cvt_ctx;

static void cvt_worker(void *vc, int ith, int nth) {
    const cvt_ctx *c = vc;
    int64_t lo, hi;
    pu_split(c->n, ith, nth, &lo, &hi);
    for (int64_t i = lo; i < hi; i++)
        c->dst[i] = pu_f32_to_bf16(c->src[i]);
}

void pu_bf16_from_f32(pu_pool *pool, uint16_t *dst, const float *src, int64_t n) {
    cvt_ctx c = {dst, src, n};
    pu_pool_run(pool, cvt_worker, &c);
}

void pu_bf16_matmul_fwd(pu_pool *pool, pu_bf16_level level, float *y, const uint16_t *x,
                        const uint16_t *w, int64_t N, int64_t M, int64_t K) {
    pu_bf16_gemm(pool, level, y, M, x, K, 1, w, 1, K, N, M, K, false);
}

void pu_bf16_matmul_bwd(pu_pool *pool, pu_bf16_level level, float *dx, float *dw,
                        const uint16_t *dy, const uint16_t *x, const uint16_t *w, int64_t N,
                        int64_t M, int64_t K) {
    if (dx)
        pu_bf16_gemm(pool, level, dx, K, dy, M, 1, w, K, 1, N, K, M, true);
    if (dw)
        pu_bf16_gemm(pool, level, dw, K, dy, 1, M, x, K, 1, M, K, N, true);
}

/* ---------------------------------------------------------------- mixed precision */

bool pu_precision_parse(const char *s, pu_precision *out) {
    if (s && !strcmp(s, "fp32")) {
        *out = PU_PREC_FP32;
        return true;
    }
    if (s && !strcmp(s, "bf16")) {
        *out = PU_PREC_BF16;
        return true;
    }
    return false;
}

const char *pu_precision_name(pu_precision p) {
    return p == PU_PREC_BF16 ? "bf16" : "fp32";
}

static pu_bf16_level g_mp_level;
static pthread_once_t g_mp_once = PTHREAD_ONCE_INIT;
static void mp_level_init(void) {
    g_mp_level = pu_bf16_level_active();
}

static pu_bf16_level mp_level(void) {
    pthread_once(&g_mp_once, mp_level_init);
    return g_mp_level;
}

pu_bf16_level pu_top_matmul_mp_level(void) {
    return mp_level();
}

void pu_top_matmul_mp_fwd(pu_pool *pool, const pu_kernels *k, pu_precision prec, float *y,
                          const float *x, uint16_t *xb, const float *w, const uint16_t *wb,
                          int64_t N, int64_t M, int64_t K) {
    if (prec != PU_PREC_BF16) {
        pu_top_matmul_fwd(pool, k, y, x, w, N, M, K);
        return;
    }
    pu_bf16_from_f32(pool, xb, x, N * K);
    pu_bf16_matmul_fwd(pool, mp_level(), y, xb, wb, N, M, K);
}

void pu_top_matmul_mp_bwd(pu_pool *pool, const pu_kernels *k, pu_precision prec, pu_tws *ws,
                          float *dx, float *dw, const float *dy, const float *x, const uint16_t *xb,
                          const float *w, const uint16_t *wb, int64_t N, int64_t M, int64_t K) {
    if (prec != PU_PREC_BF16) {
        pu_top_matmul_bwd(pool, k, ws, dx, dw, dy, x, w, N, M, K);
        return;
    }
    uint16_t *dyb = (uint16_t *)pu_tws_get(ws, (size_t)(N * M + 1) / 2);
    pu_bf16_from_f32(pool, dyb, dy, N * M);
    pu_bf16_matmul_bwd(pool, mp_level(), dx, dw, dyb, xb, wb, N, M, K);
}
