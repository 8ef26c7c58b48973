/* Fuzz target: image decoding through the loader's pixel limit (stb_image: PNG, JPEG, BMP, GIF,
 * PNM, TGA), then a Pillow-exact resize and the CLIP preprocessing at a small size. */
#include "fuzz.h"

#define FUZZ_MAX_PIXELS ((size_t)1 << 18) /* 512x512: decompression bombs must be refused early */

static int fuzz_image(const uint8_t *data, size_t size) {
    unsigned char *bytes = fuzz_copy(data, size, 0);
    kosmos2_image img, small;
    memset(&small, 0, sizeof small);
    if (kosmos2_image_load_memory(bytes, size, FUZZ_MAX_PIXELS, &img) == 0) {
        kosmos2_preprocess_config pp = kosmos2_preprocess_default_config();
        float px[3 * 12 * 10];
        if (img.width < 1 || img.height < 1 || (size_t)img.width * (size_t)img.height > FUZZ_MAX_PIXELS || !img.rgb) abort();
        pp.width = 12; pp.height = 10;
        kosmos2_image_preprocess(&img, &pp, px);
        if (kosmos2_image_resize(&img, 1 + (int)(size % 7), 1 + (int)(size % 5), &small) == 0) kosmos2_image_free(&small);
        kosmos2_image_free(&img);
    }
    free(bytes);
    return 0;
}

#ifndef FUZZ_NO_MAIN /* tests/test_hostile.c includes the targets to replay their inputs */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_image(data, size); }
#endif
