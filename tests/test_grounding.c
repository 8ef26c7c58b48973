/* tests for the grounding section. */
static void tests_grounding(void) {}
