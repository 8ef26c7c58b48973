/* tests for the hostile. */
static void tests_hostile(void) {}
