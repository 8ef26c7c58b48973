# kosmos2.h build: `make` builds build/kosmos2 (the CLI) and build/minimal, `make test` runs the tests.
#   make test | asan | ubsan    unit + CLI tests (asan/ubsan also build the CLI with the sanitizer)
#   make demo [MODEL=DIR]       download the official checkpoint (or use DIR) and annotate snowman.jpg
CC      ?= cc
CFLAGS  ?= -O2 -g
WARN    = -std=c99 -Wall -Wextra -Werror -D_POSIX_C_SOURCE=200809L
OMP     = -fopenmp
LDLIBS  = -lm
HDRS    = kosmos2.h $(wildcard parts/*.h)
TESTSRC = $(wildcard tests/*.c tests/*.h)
ASAN    = -O1 -g -fsanitize=address -fno-omit-frame-pointer
UBSAN   = -O1 -g -fsanitize=undefined -fno-sanitize-recover=undefined
MODEL   ?= models/kosmos-2-patch14-224

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
test: build/test build/kosmos2 build/minimal build/cxx_check.o
	./build/test

build/test-asan: $(TESTSRC) $(HDRS) | build
	$(CC) $(WARN) $(ASAN) $(OMP) -I. -o $@ tests/test_main.c $(LDLIBS)

build/kosmos2-asan: examples/kosmos2.c $(HDRS) | build
	$(CC) $(WARN) $(ASAN) $(OMP) -I. -o $@ examples/kosmos2.c $(LDLIBS)

build/minimal-asan: examples/minimal.c $(HDRS) | build
	$(CC) $(WARN) $(ASAN) $(OMP) -I. -o $@ examples/minimal.c $(LDLIBS)

build/test-ubsan: $(TESTSRC) $(HDRS) | build
	$(CC) $(WARN) $(UBSAN) $(OMP) -I. -o $@ tests/test_main.c $(LDLIBS)

build/kosmos2-ubsan: examples/kosmos2.c $(HDRS) | build
	$(CC) $(WARN) $(UBSAN) $(OMP) -I. -o $@ examples/kosmos2.c $(LDLIBS)

build/minimal-ubsan: examples/minimal.c $(HDRS) | build
	$(CC) $(WARN) $(UBSAN) $(OMP) -I. -o $@ examples/minimal.c $(LDLIBS)

asan: build/test-asan build/kosmos2-asan build/minimal-asan
	ASAN_OPTIONS=detect_leaks=1 KOSMOS2_CLI=build/kosmos2-asan KOSMOS2_MINIMAL=build/minimal-asan ./build/test-asan

ubsan: build/test-ubsan build/kosmos2-ubsan build/minimal-ubsan
	KOSMOS2_CLI=build/kosmos2-ubsan KOSMOS2_MINIMAL=build/minimal-ubsan ./build/test-ubsan

# Fetch microsoft/kosmos-2-patch14-224 into MODEL (skipping complete files) and draw snowman.jpg's
# entities into snowman_annotated.png. Offline: make demo MODEL=/path/to/a/local/copy
demo: build/kosmos2
	scripts/download_model.sh $(MODEL)

clean:
	rm -rf build

.PHONY: all test asan ubsan demo clean
