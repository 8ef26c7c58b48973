# kosmos2.h build: `make` builds build/kosmos2 (the CLI) and build/minimal, `make test` runs the tests.
#   make test | asan | ubsan    unit + CLI tests (asan/ubsan also build the CLI with the sanitizer);
#                               each runs the kernel/model tests again with AVX-512 emulated (SIMDe)
#   make test-clang             the same tests built by clang
#   make demo [MODEL=DIR]       download the official checkpoint (or use DIR) and annotate snowman.jpg
#   make bench [FULLSIZE=DIR]   per-stage speed on a full-size random checkpoint, vs the machine's limits
#   make check-fullsize         the model tests on that checkpoint (against its transformers references)
#   make test-libjpeg           the image tests with JPEG decoded by libjpeg-turbo (Pillow-exact)
#   make fuzz [FUZZ_SECONDS=N]  every libFuzzer target for N seconds;  make tsan: ThreadSanitizer
CC      ?= cc
CFLAGS  ?= -O2 -g
WARN    = -std=c99 -Wall -Wextra -Werror -D_POSIX_C_SOURCE=200809L
OMP     = -fopenmp
LDLIBS  = -lm
HDRS    = kosmos2.h
TESTSRC = $(wildcard tests/*.c tests/*.h tests/fuzz/*.c tests/fuzz/*.h)
ASAN    = -O1 -g -fsanitize=address -fno-omit-frame-pointer
UBSAN   = -O1 -g -fsanitize=undefined -fno-sanitize-recover=undefined
MODEL   ?= models/kosmos-2-patch14-224
FULLSIZE ?= build/fullsize
THREADS ?= 0

all: build/kosmos2 build/minimal

build:
	mkdir -p build

build/kosmos2: examples/kosmos2.c $(HDRS) | build
	$(CC) $(WARN) $(CFLAGS) $(OMP) -I. -o $@ examples/kosmos2.c $(LDLIBS)

build/minimal: examples/minimal.c $(HDRS) | build
	$(CC) $(WARN) $(CFLAGS) $(OMP) -I. -o $@ examples/minimal.c $(LDLIBS)

build/test: $(TESTSRC) $(HDRS) | build
	$(CC) $(WARN) $(CFLAGS) $(OMP) -I. -o $@ tests/test_main.c $(LDLIBS)

# the header must also compile as C++
build/cxx_check.o: $(HDRS) | build
	printf '#define KOSMOS2_IMPLEMENTATION\n#include "kosmos2.h"\n' > build/cxx_check.cpp
	$(CXX) -std=c++11 -Wall -Wextra -Werror -fopenmp -I. -c build/cxx_check.cpp -o $@

# tests/test_cli.c runs the programs named by KOSMOS2_CLI and KOSMOS2_MINIMAL (default build/kosmos2,
# build/minimal); the sanitizer runs point them at sanitized builds.
# and without OpenMP (the loops then run serially)
build/noomp_check.o: $(HDRS) | build
	printf '#define KOSMOS2_IMPLEMENTATION\n#include "kosmos2.h"\n' > build/noomp_check.c
	$(CC) $(WARN) -O2 -I. -c build/noomp_check.c -o $@
# and with KOSMOS2_NO_SIMD (the scalar kernels only)
build/nosimd_check.o: $(HDRS) | build
	printf '#define KOSMOS2_IMPLEMENTATION\n#define KOSMOS2_NO_SIMD\n#include "kosmos2.h"\n' > build/nosimd_check.c
	$(CC) $(WARN) -O2 $(OMP) -I. -c build/nosimd_check.c -o $@

# The AVX-512 kernels on any AVX2 CPU: AVX-512 intrinsics from SIMDe (Debian libsimde-dev, tests
# only) over native AVX2; build/test runs it (test_kernels_avx512_emulated). See tests/avx512_emu.h.
EMU = -mavx2 -mfma -mf16c -Wno-psabi
build/test-avx512emu: $(TESTSRC) $(HDRS) | build
	$(CC) $(WARN) $(CFLAGS) $(EMU) $(OMP) -I. -o $@ tests/test_avx512_emu.c $(LDLIBS)

test: build/test build/test-avx512emu build/kosmos2 build/minimal build/cxx_check.o build/noomp_check.o build/nosimd_check.o
	./build/test

build/test-asan: $(TESTSRC) $(HDRS) | build
	$(CC) $(WARN) $(ASAN) $(OMP) -I. -o $@ tests/test_main.c $(LDLIBS)

build/test-avx512emu-asan: $(TESTSRC) $(HDRS) | build
	$(CC) $(WARN) $(ASAN) $(EMU) $(OMP) -I. -o $@ tests/test_avx512_emu.c $(LDLIBS)

build/kosmos2-asan: examples/kosmos2.c $(HDRS) | build
	$(CC) $(WARN) $(ASAN) $(OMP) -I. -o $@ examples/kosmos2.c $(LDLIBS)

build/minimal-asan: examples/minimal.c $(HDRS) | build
	$(CC) $(WARN) $(ASAN) $(OMP) -I. -o $@ examples/minimal.c $(LDLIBS)

build/test-ubsan: $(TESTSRC) $(HDRS) | build
	$(CC) $(WARN) $(UBSAN) $(OMP) -I. -o $@ tests/test_main.c $(LDLIBS)

build/test-avx512emu-ubsan: $(TESTSRC) $(HDRS) | build
	$(CC) $(WARN) $(UBSAN) $(EMU) $(OMP) -I. -o $@ tests/test_avx512_emu.c $(LDLIBS)

build/kosmos2-ubsan: examples/kosmos2.c $(HDRS) | build
	$(CC) $(WARN) $(UBSAN) $(OMP) -I. -o $@ examples/kosmos2.c $(LDLIBS)

build/minimal-ubsan: examples/minimal.c $(HDRS) | build
	$(CC) $(WARN) $(UBSAN) $(OMP) -I. -o $@ examples/minimal.c $(LDLIBS)

asan: build/test-asan build/test-avx512emu-asan build/kosmos2-asan build/minimal-asan
	ASAN_OPTIONS=detect_leaks=1 KOSMOS2_CLI=build/kosmos2-asan KOSMOS2_MINIMAL=build/minimal-asan KOSMOS2_AVX512EMU=build/test-avx512emu-asan ./build/test-asan

ubsan: build/test-ubsan build/test-avx512emu-ubsan build/kosmos2-ubsan build/minimal-ubsan
	KOSMOS2_CLI=build/kosmos2-ubsan KOSMOS2_MINIMAL=build/minimal-ubsan KOSMOS2_AVX512EMU=build/test-avx512emu-ubsan ./build/test-ubsan

# the unit + CLI tests built by clang (the kernels' pragmas and intrinsics meet another compiler)
CLANG ?= clang
build/test-clang: $(TESTSRC) $(HDRS) | build
	$(CLANG) $(WARN) $(CFLAGS) $(OMP) -I. -o $@ tests/test_main.c $(LDLIBS)

build/test-avx512emu-clang: $(TESTSRC) $(HDRS) | build
	$(CLANG) $(WARN) $(CFLAGS) $(EMU) $(OMP) -I. -o $@ tests/test_avx512_emu.c $(LDLIBS)

build/kosmos2-clang: examples/kosmos2.c $(HDRS) | build
	$(CLANG) $(WARN) $(CFLAGS) $(OMP) -I. -o $@ examples/kosmos2.c $(LDLIBS)

build/minimal-clang: examples/minimal.c $(HDRS) | build
	$(CLANG) $(WARN) $(CFLAGS) $(OMP) -I. -o $@ examples/minimal.c $(LDLIBS)

test-clang: build/test-clang build/test-avx512emu-clang build/kosmos2-clang build/minimal-clang
	KOSMOS2_CLI=build/kosmos2-clang KOSMOS2_MINIMAL=build/minimal-clang KOSMOS2_AVX512EMU=build/test-avx512emu-clang ./build/test-clang

# Fetch microsoft/kosmos-2-patch14-224 into MODEL (skipping complete files) and draw snowman.jpg's
# entities into snowman_annotated.png. Offline: make demo MODEL=/path/to/a/local/copy
demo: build/kosmos2
	scripts/download_model.sh $(MODEL)

# JPEG through libjpeg-turbo with Pillow's settings (Debian: libjpeg62-turbo-dev): bit-exact pixels
build/test-libjpeg: $(TESTSRC) $(HDRS) | build
	$(CC) $(WARN) $(CFLAGS) $(OMP) -DKOSMOS2_USE_LIBJPEG -I. -o $@ tests/test_main.c $(LDLIBS) -ljpeg

test-libjpeg: build/test-libjpeg
	./build/test-libjpeg image

build/bench: tests/bench.c tests/bench_kernels.c $(HDRS) | build
	$(CC) -std=gnu11 -Wall -Wextra -Werror $(CFLAGS) $(OMP) -I. -o $@ tests/bench.c $(LDLIBS)

build/bench_kernels: tests/bench_kernels.c $(HDRS) | build
	$(CC) -std=gnu11 -Wall -Wextra -Werror $(CFLAGS) $(OMP) -I. -o $@ tests/bench_kernels.c $(LDLIBS)

# FULLSIZE: a checkpoint made by `scripts/make_fullsize.py DIR` (random weights, real shapes,
# 6.7 GB; needs the transformers reference environment, see the script). The GGUF conversions are
# made once next to it.
bench: build/bench build/kosmos2
	@test -f $(FULLSIZE)/config.json || { echo "make bench: no full-size checkpoint in $(FULLSIZE); make one with scripts/make_fullsize.py $(FULLSIZE) or pass FULLSIZE=DIR"; exit 1; }
	@for t in bf16 q8_0 q4_0; do test -f $(FULLSIZE)/kosmos2-$$t.gguf || ./build/kosmos2 quantize $(FULLSIZE) $(FULLSIZE)/kosmos2-$$t.gguf --type $$t 2>/dev/null || exit 1; done
	./build/bench -t $(THREADS) $(FULLSIZE) $(FULLSIZE)/kosmos2-bf16.gguf $(FULLSIZE)/kosmos2-q8_0.gguf $(FULLSIZE)/kosmos2-q4_0.gguf

check-fullsize: build/test
	KOSMOS2_FULLSIZE=$(FULLSIZE) ./build/test model_fullsize

# libFuzzer targets (clang + libclang-rt-14-dev), FUZZ_SECONDS each, one at a time; see tests/fuzz/README.md
FUZZ_SECONDS ?= 60
fuzz:
	tests/fuzz/run.sh $(FUZZ_SECONDS)

# ThreadSanitizer on the model tests (contexts on threads), without OpenMP (TSan cannot see its barriers)
build/test-tsan: $(TESTSRC) $(HDRS) | build
	clang $(WARN) -Wno-unknown-pragmas -O1 -g -fsanitize=thread -I. -o $@ tests/test_main.c $(LDLIBS) -lpthread

tsan: build/test-tsan
	./build/test-tsan test_model_

clean:
	rm -rf build

.PHONY: all test test-clang asan ubsan tsan fuzz demo bench check-fullsize test-libjpeg clean
