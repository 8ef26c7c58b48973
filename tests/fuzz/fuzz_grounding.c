/* Fuzz target: the grounding post-processing (processor.post_process_generation re-implemented):
 * <phrase>/<object>/<patch_index_N> markup, entity spans in code points, boxes. */
#include "fuzz.h"

static int fuzz_grounding(const uint8_t *data, size_t size) {
    char *text = (char *)fuzz_copy(data, size, 1);
    kosmos2_grounding g;
    const char *raw = kosmos2_grounding_raw_caption(text);
    if (!raw || raw < text || raw > text + size) abort();
    memset(&g, 0x5a, sizeof g); /* the function must fill it whatever it holds */
    if (kosmos2_grounding_parse(text, &g) == 0) {
        int i, j;
        size_t clen = strlen(g.caption);
        for (i = 0; i < g.n_entities; i++) {
            const kosmos2_entity *e = &g.entities[i];
            if (e->byte_start < 0 || e->byte_start > e->byte_end || (size_t)e->byte_end > clen || e->n_boxes < 1) abort();
            for (j = 0; j < e->n_boxes; j++) {
                int ul, lr;
                kosmos2_box_to_patch_indices(&e->boxes[j], &ul, &lr);
            }
        }
    }
    kosmos2_grounding_free(&g);
    kosmos2_grounding_free(&g); /* freeing twice is documented as fine (the struct is zeroed) */
    free(text);
    return 0;
}

#ifndef FUZZ_NO_MAIN /* tests/test_hostile.c includes the targets to replay their inputs */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_grounding(data, size); }
#endif
