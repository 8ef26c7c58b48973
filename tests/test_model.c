/* tests for the model. */
static void tests_model(void) {}
