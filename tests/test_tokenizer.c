/* tests for the tokenizer section. */
static void tests_tokenizer(void) {}
