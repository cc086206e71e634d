/*
 * cpu_x86.c — x86 feature detection from CPUID with the OS-enabled state
 * checks (XGETBV of XCR0), and Linux's AMX permission request.
 *
 *   avx512_bf16   CPUID.(7,1):EAX[5]   + XCR0 opmask/ZMM state (bits 1,2,5,6,7)
 *   avx512_vnni   CPUID.(7,0):ECX[11]  + the same
 *   amx_bf16      CPUID.(7,0):EDX[22]  + XCR0 XTILECFG|XTILEDATA (bits 17,18)
 *   amx_tile      CPUID.(7,0):EDX[24]  + the same
 *   amx_int8      CPUID.(7,0):EDX[25]  + the same
 * (also avx512bf16 / avx512vnni / amx-tile ... spellings). All require
 * CPUID.1:ECX.OSXSAVE. AMX also needs the process's permission for the
 * XTILEDATA state (Linux >= 5.16): pu_cpu_amx_enable() asks for it once with
 * arch_prctl(ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18) and
 * checks it with ARCH_GET_XCOMP_PERM (0x1022).
 */
#include "core/cpu_x86.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "puyu/pu_core.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

typedef struct {
    bool osxsave, avx512_os, amx_os;
    uint32_t l7b, l7c, l7d, l71a;
} cpu_info;

static cpu_info g_cpu;
static pthread_once_t g_cpu_once = PTHREAD_ONCE_INIT;

static uint64_t xgetbv0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

static void cpu_probe(void) {
    unsigned a, b, c, d, max = __get_cpuid_max(0, NULL);
    if (max >= 1 && __get_cpuid(1, &a, &b, &c, &d))
        g_cpu.osxsave = (c >> 27) & 1u;
    if (g_cpu.osxsave) {
        uint64_t x = xgetbv0();
        g_cpu.avx512_os = (x & 0xE6u) == 0xE6u;
        g_cpu.amx_os = (x & (3u << 17)) == (3u << 17);
    }
    if (max >= 7) {
        __cpuid_count(7, 0, a, b, c, d);
        g_cpu.l7b = b, g_cpu.l7c = c, g_cpu.l7d = d;
        if (a >= 1) {
            __cpuid_count(7, 1, a, b, c, d);
            g_cpu.l71a = a;
        }
    }
}

int pu_cpu_x86_feature(const char *f) {
    pthread_once(&g_cpu_once, cpu_probe);
    const cpu_info *ci = &g_cpu;
    if (!strcmp(f, "avx512_bf16") || !strcmp(f, "avx512bf16"))
        return ci->avx512_os && ((ci->l7b >> 16) & 1u) && ((ci->l71a >> 5) & 1u);
    if (!strcmp(f, "avx512_vnni") || !strcmp(f, "avx512vnni"))
        return ci->avx512_os && ((ci->l7b >> 16) & 1u) && ((ci->l7c >> 11) & 1u);
    if (!strcmp(f, "amx_bf16") || !strcmp(f, "amx-bf16"))
        return ci->amx_os && ((ci->l7d >> 22) & 1u);
    if (!strcmp(f, "amx_tile") || !strcmp(f, "amx-tile"))
        return ci->amx_os && ((ci->l7d >> 24) & 1u);
    if (!strcmp(f, "amx_int8") || !strcmp(f, "amx-int8"))
        return ci->amx_os && ((ci->l7d >> 25) & 1u);
    return -1;
}

static bool g_amx_ok;
static pthread_once_t g_amx_once = PTHREAD_ONCE_INIT;

static void amx_request(void) {
    if (pu_cpu_x86_feature("amx_tile") != 1)
        return;
#if defined(__linux__)
    enum { ARCH_GET_XCOMP_PERM = 0x1022, ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18 };
    if (syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) != 0) {
        pu_log_debug("cpu: arch_prctl(ARCH_REQ_XCOMP_PERM, XTILEDATA) refused: AMX off");
        return;
    }
    uint64_t mask = 0;
    if (syscall(SYS_arch_prctl, ARCH_GET_XCOMP_PERM, &mask) == 0 &&
        (mask & (1ull << XFEATURE_XTILEDATA)))
        g_amx_ok = true;
#endif
}

bool pu_cpu_amx_enable(void) {
    pthread_once(&g_amx_once, amx_request);
    return g_amx_ok;
}

#else
int pu_cpu_x86_feature(const char *f) {
    (void)f;
    return -1;
}
bool pu_cpu_amx_enable(void) {
    return false;
}
#endif
