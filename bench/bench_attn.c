/*
 * bench_attn.c — tiled (flash) vs naive training attention, forward +
 * backward, at the 110M shape's heads (H=12, Hkv=12, D=64) over sequence
 * lengths; prints ms per call, the ratio flash/naive and the bytes each
 * keeps (naive: probabilities (B, H, T, T); flash: lse (B, H, T) + scratch).
 *
 * usage: bench_attn [--threads N] [--B B] [--H H] [--T T1,T2,...]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "puyu/pu_kernels.h"
#include "train/attn_flash.h"

static double best_of(int reps, void (*fn)(void *), void *ctx) {
    double best = 1e30;
    for (int i = 0; i < reps; i++) {
        double t0 = pu_time_now();
        fn(ctx);
        double t = pu_time_now() - t0;
        best = t < best ? t : best;
    }
    return best;
}

typedef struct {
    pu_pool *pool;
    const pu_kernels *k;
    pu_tws ws;
    int64_t B, T, H, Hkv, D;
    float *q, *kk, *v, *o, *saved, *dO, *dq, *dk, *dv;
} ctx;

static void run_naive(void *vc) {
    ctx *c = vc;
    pu_top_attn_fwd(c->pool, c->k, c->o, c->saved, c->q, c->kk, c->v, NULL, c->B, c->T, c->H,
                    c->Hkv, c->D);
    pu_top_attn_bwd(c->pool, c->k, c->dq, c->dk, c->dv, c->dO, c->saved, c->q, c->kk, c->v, c->B,
                    c->T, c->H, c->Hkv, c->D);
}

static void run_flash(void *vc) {
    ctx *c = vc;
    pu_top_attn_flash_fwd(c->pool, c->k, &c->ws, c->o, c->saved, c->q, c->kk, c->v, NULL, c->B,
                          c->T, c->H, c->Hkv, c->D);
    pu_top_attn_flash_bwd(c->pool, c->k, &c->ws, c->dq, c->dk, c->dv, c->dO, c->o, c->saved, c->q,
                          c->kk, c->v, NULL, c->B, c->T, c->H, c->Hkv, c->D);
}

static float *rnd(int64_t n, pu_rng *r) {
    float *x = pu_malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++)
        x[i] = (float)pu_rng_normal(r);
    return x;
}

int main(int argc, char **argv) {
    int threads = 0;
    int64_t B = 1, H = 12;
    const char *Ts = "128,256,512,1024";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--B") && i + 1 < argc)
            B = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--H") && i + 1 < argc)
            H = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--T") && i + 1 < argc)
            Ts = argv[++i];
        else {
            fprintf(stderr, "usage: bench_attn [--threads N] [--B B] [--H H] [--T T1,T2,...]\n");
            return 2;
        }
    }
    pu_pool *pool = pu_pool_create(threads);
    const pu_kernels *k = pu_kernels_get();
    printf("attention fwd+bwd, level %s, %d threads, B=%lld H=%lld D=64\n", k->name,
           pu_pool_size(pool), (long long)B, (long long)H);
    printf("%6s %12s %12s %8s %14s %14s\n", "T", "naive ms", "flash ms", "ratio", "naive saved MB",
           "flash saved MB");
    char *list = strdup(Ts), *save = NULL;
    for (char *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        int64_t T = atoll(tok), D = 64, nq = B * T * H * D;
        pu_rng r;
        pu_rng_seed(&r, 1);
        ctx c = {.pool = pool, .k = k, .B = B, .T = T, .H = H, .Hkv = H, .D = D};
        c.q = rnd(nq, &r), c.kk = rnd(nq, &r), c.v = rnd(nq, &r), c.dO = rnd(nq, &r);
        c.o = pu_malloc((size_t)nq * 4), c.dq = pu_calloc((size_t)nq, 4);
        c.dk = pu_calloc((size_t)nq, 4), c.dv = pu_calloc((size_t)nq, 4);
        double nbytes = (double)(B * H * T * T) * 4;
        double tn = -1;
        if (nbytes < 4e9) {
            c.saved = pu_malloc((size_t)nbytes);
            tn = best_of(3, run_naive, &c);
            pu_free(c.saved);
        }
        c.saved = pu_malloc((size_t)(B * H * T) * 4);
        double tf = best_of(3, run_flash, &c);
        double fb = (double)(B * H * T) * 4 + (double)c.ws.cap * 4;
        printf("%6lld %12.2f %12.2f %8.2f %14.1f %14.3f\n", (long long)T, tn * 1e3, tf * 1e3,
               tn > 0 ? tf / tn : 0.0, nbytes / 1e6, fb / 1e6);
        pu_free(c.saved), pu_free(c.q), pu_free(c.kk), pu_free(c.v), pu_free(c.dO), pu_free(c.o);
        pu_free(c.dq), pu_free(c.dk), pu_free(c.dv);
        pu_tws_free(&c.ws);
    }
    free(list);
    pu_pool_destroy(pool);
    return 0;
}
