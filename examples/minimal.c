/* examples/minimal.c - the smallest complete kosmos2.h program: caption an image.
 * Build: cc -O2 -fopenmp -I. examples/minimal.c -lm -o minimal   (make build/minimal)
 * Run:   ./minimal MODEL_DIR IMAGE                                  */
#define KOSMOS2_IMPLEMENTATION
#include "kosmos2.h"
#include <stdio.h>

int main(int argc, char **argv) {
    kosmos2_model *model = NULL;
    kosmos2_context *ctx = NULL;
    kosmos2_image image = {0, 0, NULL};
    kosmos2_result result;
    int e, b, rc = 1;
    if (argc != 3) {
        fprintf(stderr, "usage: %s MODEL_DIR IMAGE\n", argv[0]);
        return 2;
    }
    if (kosmos2_model_load(argv[1], NULL, &model) || kosmos2_context_new(model, NULL, &ctx) ||
        kosmos2_image_load_file(argv[2], 0, &image)) {
        fprintf(stderr, "error: %s\n", kosmos2_last_error());
        goto done;
    }
    /* NULL prompt = "<grounding>An image of"; NULL params = greedy, 128 new tokens */
    if (kosmos2_generate(ctx, &image, NULL, NULL, 0, NULL, &result) == 0) {
        printf("caption: %s\n", result.grounding.caption);
        for (e = 0; e < result.grounding.n_entities; e++) {
            const kosmos2_entity *en = &result.grounding.entities[e];
            printf("entity: \"%s\" chars %d..%d", en->phrase, en->start, en->end);
            for (b = 0; b < en->n_boxes; b++)
                printf(" box (%.4f, %.4f, %.4f, %.4f)", en->boxes[b].x1, en->boxes[b].y1, en->boxes[b].x2, en->boxes[b].y2);
            printf("\n");
        }
        rc = 0;
    } else {
        fprintf(stderr, "error: %s\n", kosmos2_last_error());
    }
    kosmos2_result_free(&result);
done:
    kosmos2_image_free(&image);
    kosmos2_context_free(ctx);
    kosmos2_model_free(model);
    return rc;
}
