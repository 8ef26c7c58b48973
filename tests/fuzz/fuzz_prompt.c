/* Fuzz target: boxes -> prompt markup (kosmos2_prompt_attach_boxes, kosmos2_phrase_markup) and the
 * box <-> patch index conversions. Input: byte 0 = number of phrase groups (low 3 bits) and flags;
 * one byte per group = its box count (low 2 bits) and whether it uses patch pairs; then 32 bytes
 * (4 doubles) per box or 8 bytes (2 ints) per patch pair; the rest is the prompt text. */
#include "fuzz.h"

typedef struct { const uint8_t *p; size_t n; } fuzz_rd;
static void fuzz_take(fuzz_rd *r, void *out, size_t k) { /* zero-filled past the end */
    size_t m = r->n < k ? r->n : k;
    memset(out, 0, k);
    memcpy(out, r->p, m);
    r->p += m; r->n -= m;
}

static int fuzz_prompt(const uint8_t *data, size_t size) {
    fuzz_rd r;
    uint8_t head = 0, counts[8];
    int n_groups, i, j;
    kosmos2_phrase_boxes groups[8];
    kosmos2_box boxes[8][3];
    int pairs[8][6];
    char *prompt, *out = NULL;
    r.p = data; r.n = size;
    fuzz_take(&r, &head, 1);
    n_groups = head & 7;
    fuzz_take(&r, counts, (size_t)n_groups);
    for (i = 0; i < n_groups; i++) {
        groups[i].n_boxes = counts[i] & 3;
        groups[i].boxes = NULL;
        groups[i].patch_pairs = NULL;
        for (j = 0; j < groups[i].n_boxes; j++) {
            if (counts[i] & 4) fuzz_take(&r, &pairs[i][2 * j], 2 * sizeof(int));
            else fuzz_take(&r, &boxes[i][j], sizeof(kosmos2_box));
        }
        if (counts[i] & 4) groups[i].patch_pairs = pairs[i];
        else groups[i].boxes = boxes[i];
    }
    prompt = (char *)fuzz_copy(r.p, r.n, 1);
    if (kosmos2_prompt_attach_boxes(prompt, n_groups ? groups : NULL, n_groups, &out) == 0) {
        if (!out) abort();
        kosmos2_free(out);
    } else if (out) abort();
    out = NULL;
    if (kosmos2_phrase_markup(prompt, n_groups ? boxes[0] : NULL, n_groups && !(counts[0] & 4) ? groups[0].n_boxes : 0, &out) == 0) kosmos2_free(out);
    for (i = 0; i < n_groups; i++)
        for (j = 0; j < groups[i].n_boxes && !(counts[i] & 4); j++) {
            int ul, lr;
            double px[4];
            kosmos2_box b;
            if (kosmos2_box_to_patch_indices(&boxes[i][j], &ul, &lr) == 0) b = kosmos2_patch_indices_to_box(ul, lr);
            kosmos2_box_to_pixels(&boxes[i][j], 640, 480, px);
            b = kosmos2_box_from_pixels(px[0], px[1], px[2], px[3], (int)(counts[i] >> 3) - 3, 480);
            (void)b;
        }
    for (i = 0; i < n_groups; i++)
        if (counts[i] & 4) for (j = 0; j < groups[i].n_boxes; j++) kosmos2_patch_indices_to_box(pairs[i][2 * j], pairs[i][2 * j + 1]);
    free(prompt);
    return 0;
}

#ifndef FUZZ_NO_MAIN /* tests/test_hostile.c includes the targets to replay their inputs */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_prompt(data, size); }
#endif
