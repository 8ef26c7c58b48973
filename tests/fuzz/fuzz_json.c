/* Fuzz target: the JSON parser, config.json and preprocessor_config.json interpretation. */
#include "fuzz.h"

static int fuzz_json(const uint8_t *data, size_t size) {
    unsigned char *text = fuzz_copy(data, size, 0);
    kosmos2__json js;
    if (kosmos2__json_parse((const char *)text, size, &js) == 0) {
        kosmos2_config cfg;
        kosmos2_preprocess_config pp = kosmos2_preprocess_default_config();
        const kosmos2__json *t = kosmos2__json_get(&js, "text_config");
        (void)t;
        kosmos2__config_from_json(&js, &cfg);
        kosmos2__preprocess_from_json(&js, &pp);
        kosmos2__json_free(&js);
    }
    free(text);
    return 0;
}

#ifndef FUZZ_NO_MAIN /* tests/test_hostile.c includes the targets to replay their inputs */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_json(data, size); }
#endif
