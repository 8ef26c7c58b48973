/* tests/fuzz/fuzz.h - shared by the libFuzzer targets in this directory.
 * Each target is one .c file defining LLVMFuzzerTestOneInput; it includes the whole library (so the
 * static parser entry points are callable) and must leave nothing allocated when it returns (libFuzzer
 * runs with LeakSanitizer). Build and run: tests/fuzz/run.sh [SECONDS_PER_TARGET]. */
#ifndef KOSMOS2_FUZZ_H
#define KOSMOS2_FUZZ_H
#define KOSMOS2_IMPLEMENTATION
#include "../../kosmos2.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Each target is `static int fuzz_<name>(data, size)`; LLVMFuzzerTestOneInput calls it unless
 * FUZZ_NO_MAIN is defined (tests/test_hostile.c includes every target to replay the committed
 * corpus and regression inputs in the ordinary test run). */

/* A heap copy of the input, exactly `size` bytes (so AddressSanitizer sees any over-read), plus an
 * optional NUL when `nul` (for APIs that take C strings). */
static unsigned char *fuzz_copy(const uint8_t *data, size_t size, int nul) {
    unsigned char *p = (unsigned char *)malloc(size + (nul ? 1 : 0) + (size == 0 && !nul));
    if (!p) abort();
    if (size) memcpy(p, data, size);
    if (nul) p[size] = 0;
    return p;
}

/* The tiny architecture the checkpoint targets bind weights against (tests/fuzz/make_seeds.c writes
 * checkpoints of exactly this shape: the seeds are valid models). */
#define FUZZ_TINY_CONFIG                                                                                     \
    "{\"model_type\": \"kosmos-2\", \"latent_query_num\": 2,"                                                 \
    " \"vision_config\": {\"hidden_size\": 4, \"intermediate_size\": 8, \"num_hidden_layers\": 1,"            \
    " \"num_attention_heads\": 2, \"image_size\": 4, \"patch_size\": 2},"                                     \
    " \"text_config\": {\"vocab_size\": 8, \"embed_dim\": 4, \"layers\": 1, \"attention_heads\": 2,"          \
    " \"ffn_dim\": 8, \"max_position_embeddings\": 16}}"

#endif
