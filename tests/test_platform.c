/* tests for [1] PLATFORM: error reporting. */
static void test_error_strings(void) {
    CHECK(strcmp(kosmos2_strerror(KOSMOS2_E_FORMAT), "format error") == 0, "strerror");
    CHECK(kosmos2__fail(KOSMOS2_E_IO, "x %d", 5) == KOSMOS2_E_IO, "fail returns its code");
    CHECK(strcmp(kosmos2_last_error(), "x 5") == 0, "last error is '%s'", kosmos2_last_error());
    kosmos2__wrap(KOSMOS2_E_IO, "file.json: ");
    CHECK(strcmp(kosmos2_last_error(), "file.json: x 5") == 0, "wrapped: '%s'", kosmos2_last_error());
}

static void tests_platform(void) { RUN(test_error_strings); }
