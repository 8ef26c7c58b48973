/* tests for the image section. */
static void tests_image(void) {}
