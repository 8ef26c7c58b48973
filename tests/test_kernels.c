/* tests for the kernels section. */
static void tests_kernels(void) {}
