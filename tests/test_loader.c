/* tests for the loader. */
static void tests_loader(void) {}
