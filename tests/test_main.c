/* tests/test_main.c - the test runner: one binary, every test file included (a unity build).
 * Run from the repository root: build/test [NAME_FILTER] (comma-separated substrings of
 * test names: build/test kernels,model). Closing line: "N passed, N failed". */
#define KOSMOS2_IMPLEMENTATION
#include "../kosmos2.h"
#include "test.h"

#include "test_platform.c"
#include "test_tokenizer.c"
#include "test_image.c"
#include "test_kernels.c"
#include "test_loader.c"
#include "test_model.c"
#include "test_grounding.c"
#include "test_hostile.c"
#include "test_cli.c"

int main(int argc, char **argv) {
    if (argc > 1) test__filter = argv[1];
    tests_platform();
    tests_tokenizer();
    tests_image();
    tests_kernels();
    tests_loader();
    tests_model();
    tests_grounding();
    tests_hostile();
    tests_cli();
    printf("%d passed, %d failed\n", test__passed, test__failed);
    return test__failed ? 1 : 0;
}
