/*
 * gemm.c — the training GEMM: C (M, N) (+)= A (M, K) · B (K, N) with arbitrary
 * element strides for A and B, so the three products of a linear layer
 * (y = x·W^T, dx += dy·W, dW += dy^T·x) run without transposed copies and
 * accumulate in place.
 *
 * BLIS-style blocking: for each NC-column block of B and KC-deep slice, B is
 * packed into NR-wide panels and A into MR-high panels, and an MR x NR
 * register-tile microkernel (AVX-512 in gemm_avx512.c, portable C here)
 * runs over them. Threads split the rows of C in MR-aligned ranges; each
 * thread packs what it needs. The sum for every C element runs over K in the
 * same order (KC slices in order, p ascending inside) whatever the thread
 * count: results are bitwise identical for 1 and n threads.
 */
#include <string.h>

#include "train/train_impl.h"

#define MR  12
#define NR  32
#define KC  384  /* max depth of a K slice; slices are balanced: K=288 is one slice */
#define MCB 1536 /* rows of A packed at once */
#define NC  256

/* portable microkernel: c (mr x nr valid) (+)= ap (kc x MR) · bp (kc x NR) */
static void ukernel_ref(int64_t kc, const float *ap, int64_t ri, int64_t pi, const float *bp,
                        float *c, int64_t ldc, int mr, int nr, bool acc) {
    float t[MR][NR];
    memset(t, 0, sizeof t);
    for (int64_t p = 0; p < kc; p++) {
        const float *a = ap + p * pi, *b = bp + p * NR;
        for (int i = 0; i < MR; i++)
            for (int j = 0; j < NR; j++)
                t[i][j] += a[i * ri] * b[j];
    }
    for (int i = 0; i < mr; i++)
        for (int j = 0; j < nr; j++)
            c[i * ldc + j] = acc ? c[i * ldc + j] + t[i][j] : t[i][j];
}

typedef void (*ukernel_fn)(int64_t kc, const float *ap, int64_t ri, int64_t pi, const float *bp,
                           float *c, int64_t ldc, int mr, int nr, bool acc);

typedef struct {
    float *c;
    int64_t ldc;
    const float *a, *b;
    int64_t ars, acs, brs, bcs, M, N, K;
    bool accumulate;
    ukernel_fn uk;
    const pu_tmat *bw; /* B from a weight matrix of any storage (NULL: b, brs, bcs) */
    bool bt;           /* B = W^T */
} gemm_ctx;

void pu_tmat_get(const pu_tmat *w, int64_t r, int64_t c0, int64_t n, float *dst) {
    int64_t off = r * w->cols + c0;
    if (w->f32)
        memcpy(dst, w->f32 + off, (size_t)n * sizeof(float));
    else if (w->nf4)
        pu_nf4_dequant(w->nf4, off, n, dst);
    else
        w->cvt(dst, (const char *)w->data + off * (int64_t)pu_dtype_size(w->dtype), n);
}

/* B panels from a converted weight: every read is a contiguous run of a row */
static void pack_b_w(float *bp, const gemm_ctx *g, int64_t j0, int64_t nc, int64_t p0, int64_t kc) {
    float tmp[KC];
    for (int64_t jp = 0; jp < nc; jp += NR) {
        float *dst = bp + jp * kc;
        int64_t nr = nc - jp < NR ? nc - jp : NR;
        if (g->bt) { /* B(p, j) = W[j][p]: row j, columns p0 .. p0+kc */
            for (int64_t j = 0; j < nr; j++) {
                pu_tmat_get(g->bw, j0 + jp + j, p0, kc, tmp);
                for (int64_t p = 0; p < kc; p++)
                    dst[p * NR + j] = tmp[p];
            }
        } else { /* B(p, j) = W[p][j]: row p, columns j0+jp .. +nr */
            for (int64_t p = 0; p < kc; p++)
                pu_tmat_get(g->bw, p0 + p, j0 + jp, nr, dst + p * NR);
        }
        if (nr < NR)
            for (int64_t p = 0; p < kc; p++)
                memset(dst + p * NR + nr, 0, (size_t)(NR - nr) * sizeof(float));
    }
}

static void pack_a(float *ap, const gemm_ctx *g, int64_t i0, int64_t mc, int64_t p0, int64_t kc) {
    for (int64_t ip = 0; ip < mc; ip += MR) {
        float *dst = ap + ip * kc;
        int64_t mr = mc - ip < MR ? mc - ip : MR;
        if (g->acs == 1) {
            for (int64_t i = 0; i < mr; i++) {
                const float *src = g->a + (i0 + ip + i) * g->ars + p0;
                for (int64_t p = 0; p < kc; p++)
                    dst[p * MR + i] = src[p];
            }
        } else {
            for (int64_t p = 0; p < kc; p++) {
                const float *src = g->a + (p0 + p) * g->acs + (i0 + ip) * g->ars;
                if (g->ars == 1)
                    memcpy(dst + p * MR, src, (size_t)mr * sizeof(float));
                else
                    for (int64_t i = 0; i < mr; i++)
                        dst[p * MR + i] = src[i * g->ars];
            }
        }
        for (int64_t i = mr; i < MR; i++)
            for (int64_t p = 0; p < kc; p++)
                dst[p * MR + i] = 0.0f;
    }
}

static void pack_b(float *bp, const gemm_ctx *g, int64_t j0, int64_t nc, int64_t p0, int64_t kc) {
    if (g->bw) {
        pack_b_w(bp, g, j0, nc, p0, kc);
        return;
    }
    for (int64_t jp = 0; jp < nc; jp += NR) {
        float *dst = bp + jp * kc;
        int64_t nr = nc - jp < NR ? nc - jp : NR;
        if (g->brs == 1) {
            for (int64_t j = 0; j < nr; j++) {
                const float *src = g->b + (j0 + jp + j) * g->bcs + p0;
                for (int64_t p = 0; p < kc; p++)
                    dst[p * NR + j] = src[p];
            }
        } else {
            for (int64_t p = 0; p < kc; p++) {
                const float *src = g->b + (p0 + p) * g->brs + (j0 + jp) * g->bcs;
                float *d = dst + p * NR;
                if (g->bcs == 1)
                    memcpy(d, src, (size_t)nr * sizeof(float));
                else
                    for (int64_t j = 0; j < nr; j++)
                        d[j] = src[j * g->bcs];
            }
        }
        if (nr < NR)
            for (int64_t p = 0; p < kc; p++)
                memset(dst + p * NR + nr, 0, (size_t)(NR - nr) * sizeof(float));
    }
}

/* Per thread: for each K slice, pack a chunk of up to MCB rows of A once,
 * then for each NC block of columns pack B (kc x nc, L2-sized) and run the
 * microkernel over all A micro-panels of the chunk (each MR x kc panel stays
 * in L1 while the B panels stream from L2). Every operand is packed about
 * once per call. */
static void gemm_worker(void *vc, int ith, int nth) {
    const gemm_ctx *g = vc;
    int64_t lo, hi, np = (g->M + MR - 1) / MR;
    pu_split(np, ith, nth, &lo, &hi);
    int64_t m0 = lo * MR, m1 = hi * MR < g->M ? hi * MR : g->M;
    if (m0 >= m1)
        return;
    int64_t nks = (g->K + KC - 1) / KC, kstep = (g->K + nks - 1) / nks;
    int64_t mcb = m1 - m0 < MCB ? (m1 - m0 + MR - 1) / MR * MR : MCB;
    float *ap = pu_malloc_aligned((size_t)(mcb * kstep) * sizeof(float), 64);
    float *bp = pu_malloc_aligned((size_t)(NC * kstep) * sizeof(float), 64);
    for (int64_t p0 = 0; p0 < g->K; p0 += kstep) {
        int64_t kc = g->K - p0 < kstep ? g->K - p0 : kstep;
        bool acc = g->accumulate || p0 > 0;
        for (int64_t i0 = m0; i0 < m1; i0 += MCB) {
            int64_t mc = m1 - i0 < MCB ? m1 - i0 : MCB;
            /* row-major A is read in place (the 12 rows x kc stay in L1);
             * other layouts, and a last partial micro-panel, are packed */
            bool direct = g->acs == 1;
            if (!direct)
                pack_a(ap, g, i0, mc, p0, kc);
            else if (mc % MR)
                pack_a(ap, g, i0 + mc / MR * MR, mc % MR, p0, kc);
            for (int64_t j0 = 0; j0 < g->N; j0 += NC) {
                int64_t nc = g->N - j0 < NC ? g->N - j0 : NC;
                pack_b(bp, g, j0, nc, p0, kc);
                for (int64_t ip = 0; ip < mc; ip += MR) {
                    int mr = mc - ip < MR ? (int)(mc - ip) : MR;
                    for (int64_t jp = 0; jp < nc; jp += NR) {
                        int nr = nc - jp < NR ? (int)(nc - jp) : NR;
                        float *cc = g->c + (i0 + ip) * g->ldc + j0 + jp;
                        if (direct && mr == MR)
                            g->uk(kc, g->a + (i0 + ip) * g->ars + p0, g->ars, 1, bp + jp * kc, cc,
                                  g->ldc, mr, nr, acc);
                        else
                            g->uk(kc, ap + (direct ? 0 : ip * kc), 1, MR, bp + jp * kc, cc, g->ldc,
                                  mr, nr, acc);
                    }
                }
            }
        }
    }
    pu_free_aligned(ap);
    pu_free_aligned(bp);
}

static void run_gemm(pu_pool *pool, gemm_ctx *g) {
    if (pu_cpu_simd_active() >= PU_SIMD_AVX512)
        g->uk = pu_top_ukernel_avx512;
    else if (pu_cpu_simd_active() >= PU_SIMD_AVX2)
        g->uk = pu_top_ukernel_avx2;
    if ((double)g->M * (double)g->N * (double)g->K < 65536.0 || g->M <= MR)
        gemm_worker(g, 0, 1);
    else
        pu_pool_run(pool, gemm_worker, g);
}

void pu_top_gemm(pu_pool *pool, float *c, int64_t ldc, const float *a, int64_t ars, int64_t acs,
                 const float *b, int64_t brs, int64_t bcs, int64_t M, int64_t N, int64_t K,
                 bool accumulate) {
    if (M <= 0 || N <= 0)
        return;
    if (K <= 0) {
        if (!accumulate)
            for (int64_t i = 0; i < M; i++)
                memset(c + i * ldc, 0, (size_t)N * sizeof(float));
        return;
    }
    gemm_ctx g = {c, ldc, a, b, ars, acs, brs, bcs, M, N, K, accumulate, ukernel_ref, NULL, false};
    run_gemm(pool, &g);
}

void pu_top_gemm_w(pu_pool *pool, float *c, int64_t ldc, const float *a, int64_t ars, int64_t acs,
                   const pu_tmat *w, bool wt, int64_t M, int64_t N, int64_t K, bool accumulate) {
    if (w->f32) { /* the fp32 path, unchanged */
        if (wt)
            pu_top_gemm(pool, c, ldc, a, ars, acs, w->f32, 1, w->cols, M, N, K, accumulate);
        else
            pu_top_gemm(pool, c, ldc, a, ars, acs, w->f32, w->cols, 1, M, N, K, accumulate);
        return;
    }
    if (M <= 0 || N <= 0)
        return;
    if (K <= 0) {
        if (!accumulate)
            for (int64_t i = 0; i < M; i++)
                memset(c + i * ldc, 0, (size_t)N * sizeof(float));
        return;
    }
    gemm_ctx g = {c, ldc, a, NULL, ars, acs, 0, 0, M, N, K, accumulate, ukernel_ref, w, wt};
    run_gemm(pool, &g);
}
