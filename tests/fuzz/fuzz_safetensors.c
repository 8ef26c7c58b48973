/* Fuzz target: a safetensors file (header, offsets, dtypes, shapes), then binding its tensors to
 * the tiny architecture of fuzz.h (names, shapes, dtype conversions, misaligned data). */
#include "fuzz.h"

static int fuzz_safetensors(const uint8_t *data, size_t size) {
    kosmos2_model *m = (kosmos2_model *)calloc(1, sizeof *m);
    if (!m) abort();
    m->files[0].data = fuzz_copy(data, size, 0);   /* freed by kosmos2_model_free (mapped = 0) */
    m->files[0].size = size;
    m->files[0].mapped = 0;
    m->n_files = 1;
    if (kosmos2__safetensors_parse("fuzz.safetensors", &m->files[0], 0, &m->tensors, &m->n_tensors) == 0) {
        kosmos2__json js;
        if (kosmos2__json_parse(FUZZ_TINY_CONFIG, strlen(FUZZ_TINY_CONFIG), &js) != 0) abort();
        if (kosmos2__config_from_json(&js, &m->cfg) != 0) abort();
        kosmos2__json_free(&js);
        kosmos2__bind_weights(m);
    }
    kosmos2_model_free(m); /* frees the tensor table (names included) also after a failed parse */
    return 0;
}

#ifndef FUZZ_NO_MAIN /* tests/test_hostile.c includes the targets to replay their inputs */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_safetensors(data, size); }
#endif
