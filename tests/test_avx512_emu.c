/* tests/test_avx512_emu.c - the test suite with the AVX-512 kernels emulated (tests/avx512_emu.h):
 * build/test-avx512emu [NAME_FILTER]. build/test runs it on the kernel and model tests. */
#include "avx512_emu.h"
#include "test_main.c"
