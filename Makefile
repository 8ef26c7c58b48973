# kosmos2.h build: `make` builds build/kosmos2, `make test` runs the tests.
CC      ?= cc
CFLAGS  ?= -O2 -g
WARN    = -std=c99 -Wall -Wextra -Werror -D_POSIX_C_SOURCE=200809L
OMP     = -fopenmp
LDLIBS  = -lm
HDRS    = kosmos2.h $(wildcard parts/*.h)
TESTSRC = $(wildcard tests/*.c tests/*.h)

all: build/kosmos2

build:
	mkdir -p build

build/kosmos2: examples/kosmos2.c $(HDRS) | build
	$(CC) $(WARN) $(CFLAGS) $(OMP) -I. -o $@ examples/kosmos2.c $(LDLIBS)

build/test: $(TESTSRC) $(HDRS) | build
	$(CC) $(WARN) $(CFLAGS) $(OMP) -I. -o $@ tests/test_main.c $(LDLIBS)

# the header must also compile as C++
build/cxx_check.o: $(HDRS) | build
	printf '#define KOSMOS2_IMPLEMENTATION\n#include "kosmos2.h"\n' > build/cxx_check.cpp
	$(CXX) -std=c++11 -Wall -Wextra -Werror -fopenmp -I. -c build/cxx_check.cpp -o $@

test: build/test build/kosmos2 build/cxx_check.o
	./build/test

build/test-asan: $(TESTSRC) $(HDRS) | build
	$(CC) $(WARN) -O1 -g -fsanitize=address -fno-omit-frame-pointer $(OMP) -I. -o $@ tests/test_main.c $(LDLIBS)

build/test-ubsan: $(TESTSRC) $(HDRS) | build
	$(CC) $(WARN) -O1 -g -fsanitize=undefined -fno-sanitize-recover=undefined $(OMP) -I. -o $@ tests/test_main.c $(LDLIBS)

asan: build/test-asan
	ASAN_OPTIONS=detect_leaks=1 ./build/test-asan

ubsan: build/test-ubsan
	./build/test-ubsan

clean:
	rm -rf build

.PHONY: all test asan ubsan clean
