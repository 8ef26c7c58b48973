/* tests for the cli. */
static void tests_cli(void) {}
