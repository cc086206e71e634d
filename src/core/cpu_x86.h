/*
 * cpu_x86.h — private to src/core: CPUID + XCR0 feature detection behind
 * pu_cpu_has (util.c) and the Linux AMX permission request.
 */
#ifndef PU_CPU_X86_H
#define PU_CPU_X86_H

/* 1 / 0 for a feature name this file knows, -1 for an unknown name */
int pu_cpu_x86_feature(const char *f);

#endif
