# puyu — one non-recursive Makefile.
#
#   make                     libpuyu.a + ./puyu (release: -O2 -g)
#   make test                build and run the test suite (tests/puyu_tests)
#   make test SAN=address,undefined   the same suite under sanitizers
#   make MODE=debug          -O0 -g3
#   make fuzz                libFuzzer harnesses (clang) in build/fuzz/
#   make fuzz-run FUZZ_TIME=600   run every harness for FUZZ_TIME seconds
#   make bench               benchmark programs in build/<cfg>/bench_*
#   make format / format-check / headers-check / clean
#
# Objects go to build/<mode>[-<san>]/; a stamp of the effective flags forces
# a rebuild when flags change.

MODE ?= release
SAN  ?=
CC   ?= cc
ifeq ($(CC),cc)
CC := gcc
endif

CFG := $(MODE)$(if $(SAN),-$(subst $(comma),-,$(SAN)))
comma := ,
CFG := $(MODE)$(if $(SAN),-$(subst $(comma),-,$(SAN)))$(if $(MPI),-mpi)
B := build/$(CFG)

WARN := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
        -Wpointer-arith -Wvla -Wno-unused-parameter
BASE := -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -pthread -fno-omit-frame-pointer \
        -Iinclude -Isrc -MMD -MP

ifeq ($(MODE),debug)
OPT := -O0 -g3 -DPU_DEBUG
else
OPT := -O2 -g
endif

ifneq ($(SAN),)
OPT += -fsanitize=$(SAN) -fno-sanitize-recover=all
LDSAN := -fsanitize=$(SAN)
endif

# External libraries (see README "Dependencies").
LIBS := -ljansson -lpcre2-8 -lm -lpthread -lgumbo -lcld2 -lutf8proc -lz -lstdc++ -lmicrohttpd -lseccomp

# make MPI=1: data-parallel training over MPI (OpenMPI: libopenmpi-dev openmpi-bin);
# objects in build/<mode>-mpi/, src/train/dp.c is compiled with -DPU_MPI.
MPI ?=
ifneq ($(MPI),)
ifeq ($(shell command -v mpicc 2>/dev/null),)
$(error MPI=1 needs mpicc: apt-get install libopenmpi-dev openmpi-bin)
endif
OPT  += -DPU_MPI $(patsubst -I%,-isystem %,$(shell mpicc --showme:compile))
LIBS += $(shell mpicc --showme:link)
endif

CFLAGS_ALL := $(BASE) $(WARN) $(OPT) $(CFLAGS)
LDFLAGS_ALL := -pthread $(LDSAN) $(LDFLAGS)

# Per-ISA flags: only files named *_avx2.c / *_avx512.c get them, so the rest
# of the code stays portable and runtime dispatch picks the variant.
AVX2_FLAGS   := -mavx2 -mfma -mf16c -O3
AVX512_FLAGS := -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx2 -mfma -mf16c -O3

LIB_SRC   := $(sort $(wildcard src/*/*.c))
LIB_SRC   := $(filter-out src/cli/%,$(LIB_SRC))
CLI_SRC   := $(sort $(wildcard src/cli/*.c))
TEST_SRC  := $(sort $(wildcard tests/*.c))
BENCH_SRC := $(sort $(wildcard bench/*.c))
FUZZ_SRC  := $(sort $(wildcard fuzz/fuzz_*.c))

LIB_OBJ  := $(LIB_SRC:%.c=$(B)/%.o)
# C++ shims over C++-only libraries (src/data/langid_cld2.cc: CLD2)
LIB_CXX_SRC := $(sort $(wildcard src/*/*.cc))
LIB_OBJ  += $(LIB_CXX_SRC:%.cc=$(B)/%.o)
CXX ?= g++
CXXFLAGS_ALL := -std=c++17 -pthread -fno-omit-frame-pointer -Iinclude -Isrc -MMD -MP \
                -Wall -Wextra -Werror -Wno-unused-parameter $(OPT) $(CXXFLAGS)
CLI_OBJ  := $(CLI_SRC:%.c=$(B)/%.o)
TEST_OBJ := $(TEST_SRC:%.c=$(B)/%.o)
LIB      := $(B)/libpuyu.a
BIN      := $(B)/puyu
TESTBIN  := $(B)/puyu_tests
BENCHES  := $(BENCH_SRC:bench/%.c=$(B)/%)

.PHONY: all deps test test-slow bench fuzz fuzz-run format format-check headers-check clean

# Debian packages the build needs (the list lives in .ci/run, used by CI too).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
deps:
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	  $$(sed -n 's/^PKGS="\(.*\)"/\1/p' .ci/run)
.DEFAULT_GOAL := all

# ./puyu and ./libpuyu.a are copies of the release build (MPI=1: the MPI one;
# copied whenever they differ, so switching between the two builds works;
# ./puyu is replaced by rename, so a running ./puyu does not block it)
ifeq ($(MODE)$(SAN),release)
all: puyu libpuyu.a
.PHONY: puyu libpuyu.a
puyu: $(BIN)
	@cmp -s $(BIN) puyu || { echo "cp $(BIN) puyu"; cp $(BIN) puyu.tmp && mv -f puyu.tmp puyu; }
libpuyu.a: $(LIB)
	@cmp -s $(LIB) libpuyu.a || { echo "cp $(LIB) libpuyu.a"; cp $(LIB) libpuyu.a; }
else
all: $(BIN) $(LIB)
endif

# flags stamp: rebuild everything in $(B) when the flags change
FLAGSTAMP := $(B)/.flags
$(shell mkdir -p $(B) && echo '$(CC) $(CFLAGS_ALL) $(LDFLAGS_ALL) $(LIBS)' | cmp -s - $(FLAGSTAMP) || echo '$(CC) $(CFLAGS_ALL) $(LDFLAGS_ALL) $(LIBS)' > $(FLAGSTAMP))

$(B)/%_avx2.o: %_avx2.c $(FLAGSTAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(AVX2_FLAGS) -c $< -o $@

$(B)/%_avx512.o: %_avx512.c $(FLAGSTAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(AVX512_FLAGS) -c $< -o $@

$(B)/%.o: %.c $(FLAGSTAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -c $< -o $@

$(B)/%.o: %.cc $(FLAGSTAMP)
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS_ALL) -c $< -o $@

$(LIB): $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BIN): $(CLI_OBJ) $(LIB)
	$(CC) $(LDFLAGS_ALL) -o $@ $(CLI_OBJ) $(LIB) $(LIBS)

# The test runner's suite table is generated from PT_SUITE(name) lines, so a
# new tests/test_x.c needs no edit elsewhere.
$(B)/tests/suites.h: $(TEST_SRC)
	@mkdir -p $(dir $@)
	@grep -h '^PT_SUITE(' $(TEST_SRC) | sed 's/^PT_SUITE(\([a-z0-9_]*\)).*/PT_X(\1)/' > $@.tmp
	@cmp -s $@.tmp $@ || mv $@.tmp $@; rm -f $@.tmp

$(B)/tests/pt_main.o: $(B)/tests/suites.h
$(B)/tests/pt_main.o: CFLAGS_ALL += -I$(B)/tests

$(TESTBIN): $(TEST_OBJ) $(LIB)
	$(CC) $(LDFLAGS_ALL) -o $@ $(TEST_OBJ) $(LIB) $(LIBS)

# PUYU_BIN: the CLI under test; PUYU_SHARED: shared data (tests skip without it)
test: $(TESTBIN) $(BIN)
	PUYU_BIN=$(BIN) PUYU_SHARED=$${PUYU_SHARED:-../shared/data} $(TESTBIN) $(TESTARGS)

test-slow: $(TESTBIN) $(BIN)
	PUYU_BIN=$(BIN) PUYU_SHARED=$${PUYU_SHARED:-../shared/data} $(TESTBIN) --slow $(TESTARGS)

# Data parallel (make MPI=1 test-mpi): the train_dp suite once as one process
# (it runs `puyu train` alone and under `mpirun -np 2`, same global batch, and
# compares every step's loss and the final weights), then under mpirun -np 2
# (bucketed gradient all-reduce against the single-process gradient).
MPIRUN ?= mpirun --oversubscribe $(if $(filter 0,$(shell id -u)),--allow-run-as-root)
.PHONY: test-mpi
test-mpi: $(TESTBIN) $(BIN)
ifeq ($(MPI),)
	$(error test-mpi needs an MPI build: make MPI=1 test-mpi)
endif
	PUYU_BIN=$(BIN) PUYU_MPIRUN="$(MPIRUN)" PUYU_SHARED=$${PUYU_SHARED:-../shared/data} \
	  $(TESTBIN) train_dp
	PUYU_THREADS=1 $(MPIRUN) -x PUYU_THREADS -np 2 $(TESTBIN) train_dp

$(B)/bench_%: bench/bench_%.c $(LIB)
	$(CC) $(CFLAGS_ALL) $(LDFLAGS_ALL) -o $@ $< $(LIB) $(LIBS)

# bench programs that need ISA flags are named bench_*_avx512.c
$(B)/bench_%_avx512: bench/bench_%_avx512.c $(LIB)
	$(CC) $(CFLAGS_ALL) $(AVX512_FLAGS) $(LDFLAGS_ALL) -o $@ $< $(LIB) $(LIBS)

bench: $(BENCHES)

# accuracy next to llama.cpp's own library (bench/lcpp/README.md): built only
# when $(LCPP)/build/bin/libllama.so exists
LCPP ?= /tmp/llama.cpp
.PHONY: bench-lcpp
ifneq ($(wildcard $(LCPP)/build/bin/libllama.so),)
$(B)/bench_lcpp_acc: bench/lcpp/bench_lcpp_acc.c $(LIB)
	$(CC) $(CFLAGS_ALL) -isystem $(LCPP)/include -isystem $(LCPP)/ggml/include $(LDFLAGS_ALL) \
	  -o $@ $< $(LIB) $(LIBS) -L$(LCPP)/build/bin -lllama -lggml -lggml-base \
	  -Wl,-rpath,$(LCPP)/build/bin
bench-lcpp: $(B)/bench_lcpp_acc
else
bench-lcpp:
	@echo "bench-lcpp: $(LCPP)/build/bin/libllama.so not found (bench/lcpp/README.md)"
endif

# tokenizer throughput vs SentencePiece's own C++ library (libsentencepiece-dev)
.PHONY: bench-tok
$(B)/sp_encode: bench/sp_encode.cc
	g++ -O2 -std=c++17 -o $@ $< -lsentencepiece
bench-tok: $(B)/bench_tok $(B)/sp_encode
	$(B)/bench_tok --sp-bin $(B)/sp_encode $(BENCHARGS)

# ---------------------------------------------------------------- fuzzing
FUZZ_B   := build/fuzz
FUZZ_CC  := clang
FUZZ_CFLAGS := -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -pthread -Iinclude -Isrc \
               -g -O1 -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all \
               -Wall -Wextra -Werror -Wno-unused-parameter
FUZZ_LIB_OBJ := $(LIB_SRC:%.c=$(FUZZ_B)/%.o) $(LIB_CXX_SRC:%.cc=$(FUZZ_B)/%.o)
$(FUZZ_B)/%.o: %.cc
	@mkdir -p $(dir $@)
	clang++ -std=c++17 -Iinclude -Isrc -g -O1 -fsanitize=fuzzer-no-link,address,undefined -c $< -o $@
FUZZ_BINS := $(FUZZ_SRC:fuzz/%.c=$(FUZZ_B)/%)
FUZZ_TIME ?= 600

# the quantized kernels of the AVX-512 table also use vpdpbusd (dispatched
# only where the CPU has AVX512-VNNI)
$(B)/src/kernels/quant_vnni_avx512.o $(FUZZ_B)/src/kernels/quant_vnni_avx512.o: \
	AVX512_FLAGS += -mavx512vnni

$(FUZZ_B)/%_avx2.o: %_avx2.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(AVX2_FLAGS) -c $< -o $@
$(FUZZ_B)/%_avx512.o: %_avx512.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(AVX512_FLAGS) -c $< -o $@
$(FUZZ_B)/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -c $< -o $@
$(FUZZ_B)/libpuyu_fuzz.a: $(FUZZ_LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^
$(FUZZ_B)/fuzz_%: fuzz/fuzz_%.c $(FUZZ_B)/libpuyu_fuzz.a
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< $(FUZZ_B)/libpuyu_fuzz.a $(LIBS)

fuzz: $(FUZZ_BINS)

fuzz-run: fuzz
	@for f in $(FUZZ_BINS); do n=$$(basename $$f); mkdir -p build/fuzz/corpus/$$n; \
	  echo "== $$n ($(FUZZ_TIME)s)"; \
	  $$f -max_total_time=$(FUZZ_TIME) -print_final_stats=1 build/fuzz/corpus/$$n fuzz/seeds/$$n \
	    2>&1 | tail -5 || exit 1; done

# ---------------------------------------------------------------- hygiene
FMT_FILES := $(wildcard include/puyu/*.h src/*/*.c src/*/*.h tests/*.c tests/*.h bench/*.c fuzz/*.c)

format:
	clang-format -i $(FMT_FILES)

format-check:
	clang-format --dry-run -Werror $(FMT_FILES)

headers-check:
	@for h in include/puyu/*.h; do \
	  echo '#include "'$$h'"' | $(CC) $(BASE) $(WARN) -x c -fsyntax-only -I. - || exit 1; done
	@echo headers ok

clean:
	rm -rf build puyu libpuyu.a

-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(TEST_OBJ:.o=.d)
