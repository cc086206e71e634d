/*
 * util.c — time, CPU features, RNG, hashing, half-precision conversions and
 * strict number parsing.
 */
#include "puyu/pu_core.h"

#include "core/cpu_x86.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

double pu_time_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---------------------------------------------------------------- CPU */

bool pu_cpu_has(const char *f) {
    int x86 = pu_cpu_x86_feature(f); /* CPUID + XCR0: avx512_bf16, amx_*, avx512_vnni */
    if (x86 >= 0)
        return x86 == 1;
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (!strcmp(f, "avx2"))
        return __builtin_cpu_supports("avx2");
    if (!strcmp(f, "fma"))
        return __builtin_cpu_supports("fma");
    if (!strcmp(f, "f16c"))
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); /* all AVX2+FMA x86 CPUs have F16C */
    if (!strcmp(f, "avx512f"))
        return __builtin_cpu_supports("avx512f");
    if (!strcmp(f, "avx512bw"))
        return __builtin_cpu_supports("avx512bw");
    if (!strcmp(f, "avx512vl"))
        return __builtin_cpu_supports("avx512vl");
    if (!strcmp(f, "avx512dq"))
        return __builtin_cpu_supports("avx512dq");
    if (!strcmp(f, "avx512vnni"))
        return __builtin_cpu_supports("avx512vnni");
    if (!strcmp(f, "avx512bf16"))
        return __builtin_cpu_supports("avx512bf16");
#endif
    (void)f;
    return false;
}

pu_simd pu_cpu_simd_best(void) {
    if (pu_cpu_has("avx512f") && pu_cpu_has("avx512bw") && pu_cpu_has("avx512vl") &&
        pu_cpu_has("avx512dq") && pu_cpu_has("fma"))
        return PU_SIMD_AVX512;
    if (pu_cpu_has("avx2") && pu_cpu_has("fma") && pu_cpu_has("f16c"))
        return PU_SIMD_AVX2;
    return PU_SIMD_REF;
}

const char *pu_simd_name(pu_simd s) {
    switch (s) {
    case PU_SIMD_REF: return "ref";
    case PU_SIMD_AVX2: return "avx2";
    case PU_SIMD_AVX512: return "avx512";
    }
    return "?";
}

pu_simd pu_cpu_simd_active(void) {
    pu_simd best = pu_cpu_simd_best();
    const char *e = getenv("PUYU_SIMD");
    if (!e || !*e)
        return best;
    pu_simd want;
    if (!strcmp(e, "ref") || !strcmp(e, "scalar"))
        want = PU_SIMD_REF;
    else if (!strcmp(e, "avx2"))
        want = PU_SIMD_AVX2;
    else if (!strcmp(e, "avx512"))
        want = PU_SIMD_AVX512;
    else {
        pu_log_warn("PUYU_SIMD='%s' unknown (expected ref|avx2|avx512); using %s", e,
                    pu_simd_name(best));
        return best;
    }
    if (want > best) {
        pu_log_warn("PUYU_SIMD=%s not supported by this CPU; using %s", e, pu_simd_name(best));
        return best;
    }
    return want;
}

/* ---------------------------------------------------------------- RNG */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void pu_rng_seed(pu_rng *r, uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&x);
}

static inline uint64_t rotl(uint64_t x, int k) {
    return (x << k) | (x >> (64 - k));
}

uint64_t pu_rng_u64(pu_rng *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

float pu_rng_float(pu_rng *r) {
    return (float)(pu_rng_u64(r) >> 40) * (1.0f / 16777216.0f);
}

double pu_rng_double(pu_rng *r) {
    return (double)(pu_rng_u64(r) >> 11) * (1.0 / 9007199254740992.0);
}

double pu_rng_normal(pu_rng *r) {
    double u1 = pu_rng_double(r), u2 = pu_rng_double(r);
    if (u1 < 1e-300)
        u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

uint64_t pu_hash64(const void *data, size_t n) {
    const unsigned char *p = data;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

/* ---------------------------------------------------------------- halves */

uint16_t pu_f32_to_bf16(float f) {
    union {
        float f;
        uint32_t u;
    } v = {f};
    if ((v.u & 0x7FFFFFFFu) > 0x7F800000u) /* NaN: keep quiet NaN with sign */
        return (uint16_t)((v.u >> 16) | 0x40);
    uint32_t rounding = 0x7FFFu + ((v.u >> 16) & 1u);
    return (uint16_t)((v.u + rounding) >> 16);
}

float pu_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1Fu;
    uint32_t man = h & 0x3FFu;
    uint32_t bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: normalise */
            int e = -1;
            do {
                e++;
                man <<= 1;
            } while ((man & 0x400u) == 0);
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3FFu) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7F800000u | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    union {
        uint32_t u;
        float f;
    } v = {bits};
    return v.f;
}

uint16_t pu_f32_to_f16(float f) {
    union {
        float f;
        uint32_t u;
    } v = {f};
    uint32_t x = v.u;
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t ax = x & 0x7FFFFFFFu;
    if (ax > 0x7F800000u)
        return sign | 0x7E00u; /* NaN */
    if (ax >= 0x477FF000u)     /* rounds to >= 65520 -> inf */
        return sign | 0x7C00u;
    if (ax < 0x38800000u) { /* subnormal or zero in half */
        if (ax < 0x33000000u)
            return sign; /* < 2^-25 rounds to 0 */
        uint32_t e = ax >> 23;
        uint32_t m = (ax & 0x7FFFFFu) | 0x800000u;
        int shift = (int)(126 - e); /* 14..24 */
        uint32_t half = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1);
        uint32_t mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1)))
            half++;
        return sign | (uint16_t)half;
    }
    uint32_t h = ((ax >> 13) - ((127 - 15) << 10));
    uint32_t rem = ax & 0x1FFFu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1)))
        h++;
    return sign | (uint16_t)h;
}

/* ---------------------------------------------------------------- parsing */

pu_status pu_parse_i64(const char *s, int64_t *out, const char *what) {
    if (!s || !*s)
        return pu_err_set(PU_ERR_INVALID, "%s: expected an integer, got an empty string", what);
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno == ERANGE)
        return pu_err_set(PU_ERR_RANGE, "%s: integer '%s' out of range", what, s);
    if (*end != 0)
        return pu_err_set(PU_ERR_INVALID, "%s: expected an integer, got '%s'", what, s);
    *out = v;
    return PU_OK;
}

pu_status pu_parse_double(const char *s, double *out, const char *what) {
    if (!s || !*s)
        return pu_err_set(PU_ERR_INVALID, "%s: expected a number, got an empty string", what);
    errno = 0;
    char *end;
    double v = strtod(s, &end);
    if (errno == ERANGE || *end != 0 || isnan(v))
        return pu_err_set(PU_ERR_INVALID, "%s: expected a number, got '%s'", what, s);
    *out = v;
    return PU_OK;
}

pu_status pu_parse_ids(const char *s, int32_t **ids, int64_t *n) {
    *ids = NULL;
    *n = 0;
    int64_t cap = 0;
    const char *p = s;
    while (*p) {
        while (*p == ' ' || *p == ',' || *p == '\t' || *p == '\n' || *p == '\r' || *p == '[' ||
               *p == ']')
            p++;
        if (!*p)
            break;
        errno = 0;
        char *end;
        long long v = strtoll(p, &end, 10);
        if (end == p || errno == ERANGE || v < INT32_MIN || v > INT32_MAX ||
            !(*end == 0 || *end == ' ' || *end == ',' || *end == '\t' || *end == '\n' ||
              *end == '\r' || *end == ']')) {
            pu_free(*ids);
            *ids = NULL;
            *n = 0;
            return pu_err_set(PU_ERR_INVALID, "token ids: cannot parse '%.20s' as an integer id",
                              p);
        }
        if (*n == cap) {
            cap = cap ? cap * 2 : 64;
            *ids = pu_realloc(*ids, (size_t)cap * sizeof(int32_t));
        }
        (*ids)[(*n)++] = (int32_t)v;
        p = end;
    }
    return PU_OK;
}
