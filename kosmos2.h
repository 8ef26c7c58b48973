/* kosmos2.h - Microsoft Kosmos-2 (grounded multimodal LLM) in one C header.
 *
 * ============================================================================================
 *  USAGE
 * ============================================================================================
 *  This is an stb-style single-file library. In exactly ONE C or C++ file:
 *
 *      #define KOSMOS2_IMPLEMENTATION
 *      #include "kosmos2.h"
 *
 *  Everywhere else just #include "kosmos2.h". Link with -lm and -fopenmp (OpenMP is optional:
 *  without it everything runs on one thread). Image files are decoded with stb_image
 *  (Debian: libstb-dev, #include <stb/stb_image.h>); define KOSMOS2_NO_STB_IMAGE to leave image
 *  file decoding out (raw pixels still work).
 *
 *  The smallest program (examples/minimal.c is this, complete):
 *
 *      kosmos2_model *m; kosmos2_context *c; kosmos2_image img; kosmos2_result r;
 *      if (kosmos2_model_load("kosmos-2-patch14-224", NULL, &m) ||  // HF directory or .gguf
 *          kosmos2_context_new(m, NULL, &c) ||
 *          kosmos2_image_load_file("snowman.jpg", 0, &img) ||
 *          kosmos2_generate(c, &img, "<grounding>An image of", NULL, 0, NULL, &r))
 *          fprintf(stderr, "%s\n", kosmos2_last_error());
 *      else
 *          printf("%s (%d entities)\n", r.grounding.caption, r.grounding.n_entities);
 *      kosmos2_result_free(&r); kosmos2_image_free(&img); kosmos2_context_free(c); kosmos2_model_free(m);
 *
 *  The data flow, one section each below:
 *    image file -> decode -> RGB -> Pillow-exact bicubic squash -> normalise -> pixels [3,224,224]
 *      -> CLIP ViT -> post-LN, L2 -> resampler -> image embeddings [64, 2048]
 *    prompt (+ boxes -> <patch_index> markup) -> SentencePiece -> ids + image-slot mask
 *      -> decoder prefill (image embeddings spliced into the 64 slots) -> decode loop (KV cache,
 *      no-repeat n-gram, greedy/beam/sample) -> ids -> detokenize -> caption + entities + boxes
 *
 *  Contract:
 *   - Every function that can fail returns 0 (KOSMOS2_OK) or a negative KOSMOS2_E_* code, and
 *     kosmos2_last_error() (per thread) says what failed and where (file, tensor, byte offset).
 *   - The library never exits, never prints (unless a callback you pass prints), never aborts
 *     on bad input. Every file it reads is treated as hostile and bounds-checked.
 *   - A kosmos2_model is read-only after loading and may be shared by many threads; a
 *     kosmos2_context (KV cache, scratch) belongs to one thread at a time.
 *   - The KV cache is float32 for float checkpoints (exact) and float16 when the text decoder
 *     is quantized; kosmos2_context_params.kv_type = KOSMOS2_KV_F32 / KOSMOS2_KV_F16 overrides
 *     that (float16 halves the cache: 192 KiB instead of 384 KiB per position for Kosmos-2).
 *
 *  Configuration macros (define before the implementation include):
 *   KOSMOS2_MALLOC(n) / KOSMOS2_REALLOC(p,n) / KOSMOS2_FREE(p)   allocator (default: libc)
 *   KOSMOS2_NO_STB_IMAGE        do not include stb_image (no image file decoding)
 *   KOSMOS2_STB_IMAGE_INCLUDE   the header to include for stb_image (default <stb/stb_image.h>)
 *   KOSMOS2_STB_IMAGE_IMPLEMENTED  stb_image's implementation is already compiled elsewhere
 *   KOSMOS2_USE_LIBJPEG         decode JPEG with libjpeg(-turbo) as Pillow does (-ljpeg)
 *   KOSMOS2_NO_SIMD             build only the portable scalar kernels (same results, slower)
 *  Environment: KOSMOS2_ISA=scalar|avx2|avxvnni lowers the kernel path chosen at run time (the
 *  best the CPU has: AVX-512 with VNNI, AVX2 with AVX-VNNI, AVX2). Every path gives bit-identical
 *  results (see [5] KERNELS).
 *
 * ============================================================================================
 *  TABLE OF CONTENTS  (search for the banner text, e.g. "[7] VISION ENCODER")
 * ============================================================================================
 *   PUBLIC API
 *     errors, tokenizer, images, grounding, model & context, generation
 *   IMPLEMENTATION
 *     [1] PLATFORM        allocation, errors, files, mmap, timing
 *     [2] PARSERS         JSON, safetensors
 *     [3] TOKENIZER       SentencePiece protobuf, normaliser, unigram/BPE, XLM-R ids, decoding
 *     [4] IMAGE           decode (stb_image / libjpeg), Pillow-exact bicubic resize, normalise
 *     [5] KERNELS         weight types, quantization, matrix products, vector math (exp, GELU),
 *                         attention sums (scalar / AVX2 / AVX-512)
 *     [6] CHECKPOINT      config.json, tensors by name with shapes checked, GGUF read/write
 *     [7] MODEL OPS       layer norm, activations, softmax, attention
 *     [8] CONTEXT         KV cache, per-thread state
 *     [9] VISION ENCODER  CLIP ViT
 *     [10] RESAMPLER      image-to-text projection (64 latent queries)
 *     [11] TEXT DECODER   sub-LN transformer with KV cache
 *     [12] GENERATION     greedy / beam / sampling, no-repeat n-gram, the whole pipeline
 *     [13] GROUNDING      boxes -> markup, generated markup -> caption + entities
 *   LICENCE
 */
#ifndef KOSMOS2_H
#define KOSMOS2_H

#include <stddef.h>
#include <stdint.h>

#define KOSMOS2_VERSION "0.1.0"

#ifdef __cplusplus
extern "C" {
#endif

/* ============================================================================================
 *  PUBLIC API: errors
 * ============================================================================================ */
enum {
    KOSMOS2_OK = 0,
    KOSMOS2_E_INVALID = -1,     /* bad argument from the caller */
    KOSMOS2_E_IO = -2,          /* a file could not be opened / read / mapped */
    KOSMOS2_E_FORMAT = -3,      /* a file is malformed (JSON, safetensors, protobuf, image ...) */
    KOSMOS2_E_NOMEM = -4,       /* out of memory */
    KOSMOS2_E_LIMIT = -5,       /* a configured limit would be exceeded (pixels, context, ...) */
    KOSMOS2_E_ABORTED = -6,     /* the abort callback asked to stop */
    KOSMOS2_E_UNSUPPORTED = -7  /* valid input that this build does not handle */
};
/* What the last failing call on this thread said (never NULL; "" when nothing failed). */
const char *kosmos2_last_error(void);
/* A short name for an error code ("format error", ...). */
const char *kosmos2_strerror(int code);
/* Free memory the library returned to the caller (strings from kosmos2_prompt_attach_boxes,
 * kosmos2_phrase_markup, ...), with the library's allocator. */
void kosmos2_free(void *p);

/* ============================================================================================
 *  PUBLIC API: tokenizer
 * ============================================================================================
 *  The Kosmos-2 tokenizer = Hugging Face's XLMRobertaTokenizerFast built from a SentencePiece
 *  `.model` file (UNIGRAM or BPE), plus the 1035 Kosmos-2 tags that Kosmos2Processor adds.
 *  Ids:  0 <s>, 1 <pad>, 2 </s>, 3 <unk>, piece j >= 3 -> j + 1, <mask> = n_pieces + 1,
 *        then </doc> <image> </image> </chunk> </line> <phrase> </phrase> <object> </object>
 *        </delimiter_of_multi_objects/> <grounding> <patch_index_0000> .. <patch_index_1023>.
 *  A tokenizer is read-only after loading; any number of threads may use it at once. */
typedef struct kosmos2_tokenizer kosmos2_tokenizer;

/* Load a SentencePiece model file (e.g. <model_dir>/sentencepiece.bpe.model). */
int kosmos2_tokenizer_load_file(const char *spm_model_path, kosmos2_tokenizer **out);
/* Same, from bytes in memory (copied; `data` may be freed afterwards). */
int kosmos2_tokenizer_load_memory(const void *data, size_t size, kosmos2_tokenizer **out);
void kosmos2_tokenizer_free(kosmos2_tokenizer *tok);
/* Number of ids (65037 for Kosmos-2). */
int kosmos2_tokenizer_vocab_size(const kosmos2_tokenizer *tok);

/* UTF-8 text -> ids, as `tokenizer(text, add_special_tokens=False)` of the fast tokenizer
 * (tags and <s> </s> <pad> <unk> <mask> written in the text are matched as tokens).
 * Writes at most `cap` ids and returns how many there are in total (call again with a bigger
 * buffer if that is > cap; ids may be NULL when cap is 0), or a negative error code
 * (KOSMOS2_E_INVALID for invalid UTF-8). */
int kosmos2_tokenize(const kosmos2_tokenizer *tok, const char *utf8, int32_t *ids, int cap);

/* The input ids of Kosmos2Processor(text=prompt, images=image) (add_eos_token=False):
 * "<s>" + "<image>" + n x "<image>" + "</image>" + prompt.strip(), where the n placeholders
 * become ids 4 .. 4+n-1 and image_mask (may be NULL) is 1 exactly at those n positions.
 * n_image_tokens = 0: no image, just "<s>" + prompt.strip(). Returns the count like
 * kosmos2_tokenize (nothing beyond `cap` is written). Kosmos-2 uses n_image_tokens = 64. */
int kosmos2_prompt_ids(const kosmos2_tokenizer *tok, const char *prompt, int n_image_tokens,
                       int32_t *ids, uint8_t *image_mask, int cap);

/* ids -> text, as processor.batch_decode([ids], skip_special_tokens=skip_special)[0] with the
 * fast tokenizer (Metaspace decoding, clean_up_tokenization_spaces). Writes a NUL-terminated
 * string of at most cap - 1 bytes (out may be NULL when cap is 0) and returns the length of the
 * full result (snprintf style), or a negative error code (an id out of range is an error). */
int kosmos2_detokenize(const kosmos2_tokenizer *tok, const int32_t *ids, int n, int skip_special,
                       char *out, size_t cap);

/* The text of one id (a SentencePiece piece with its U+2581, or a tag); NULL if out of range. */
const char *kosmos2_token_text(const kosmos2_tokenizer *tok, int32_t id);
/* The id whose text is exactly `token_text` (tags first, then pieces); -1 if none. */
int32_t kosmos2_token_id(const kosmos2_tokenizer *tok, const char *token_text);
/* 1 for the special ids removed by skip_special (<s> <pad> </s> <unk> <mask>), else 0. */
int kosmos2_token_is_special(const kosmos2_tokenizer *tok, int32_t id);

/* The normalised text that the model segments for one piece of text between tags: the
 * precompiled charsmap, right strip, space runs -> U+2581 and the U+2581 prefix (empty text
 * stays empty). Returns strlen of the full result, snprintf style, or a negative error. Mainly
 * for tests and debugging. */
int kosmos2_tokenizer_normalize(const kosmos2_tokenizer *tok, const char *utf8, char *out, size_t cap);

/* ============================================================================================
 *  PUBLIC API: images
 * ============================================================================================
 *  An image is 8-bit RGB, row-major, 3 bytes per pixel, what Pillow's `image.convert("RGB")`
 *  gives: alpha is DROPPED (not composited on white), gray is replicated, palettes expanded.
 *  Decoding: stb_image for JPEG (baseline, progressive), PNG (1..16-bit, palette, gray, gray+alpha,
 *  RGBA), BMP, GIF (first frame), TGA; binary PNM (P4/P5/P6, any maxval) is decoded here the way
 *  Pillow does. Built with KOSMOS2_USE_LIBJPEG (link -ljpeg), JPEGs are decoded by libjpeg(-turbo)
 *  with Pillow's decoder settings and are then bit-identical to Pillow's (tested).
 *  Differences from Pillow 9.4 with stb_image (measured, see tests/test_image.c):
 *   - JPEG: stb_image's IDCT/upsampling differ from libjpeg-turbo's by up to 3 levels on ~5% of
 *     the pixels of two_dogs.jpg; after the 224x224 squash the pixel_values differ by at most 0.03
 *     on two_dogs.jpg and corgi.jpg. A truncated JPEG is an error for Pillow and for the libjpeg
 *     path; stb_image decodes what is there.
 *   - GIF: pixels of the transparent colour index become black; Pillow gives their palette colour.
 *   - Plain (ASCII) PNM P1-P3 is refused (KOSMOS2_E_UNSUPPORTED); Pillow reads it.
 *  Same as Pillow (tested): 16-bit gray PNG is Pillow mode "I", whose convert("RGB") CLIPS values
 *  to 255 (most pixels white); 16-bit RGB/RGBA/gray+alpha keep the high byte; CMYK JPEG (libjpeg
 *  path) uses Pillow's inverted-CMYK formula. EXIF orientation is ignored, as Pillow's Image.open
 *  and transformers do.
 */
typedef struct kosmos2_image {
    int width, height;
    uint8_t *rgb; /* [height, width, 3] RGB, row-major, owned (kosmos2_image_free) */
} kosmos2_image;

/* Default limit on width*height of decoded images (100 megapixels). */
#define KOSMOS2_IMAGE_DEFAULT_MAX_PIXELS ((size_t)100000000)

/* Decode an image file to RGB. max_pixels: refuse (KOSMOS2_E_LIMIT) images with more pixels,
 * checked from the header before decoding; 0 = KOSMOS2_IMAGE_DEFAULT_MAX_PIXELS. */
int kosmos2_image_load_file(const char *path, size_t max_pixels, kosmos2_image *out);
/* Same from an encoded image in memory (`size` bytes). */
int kosmos2_image_load_memory(const void *data, size_t size, size_t max_pixels, kosmos2_image *out);
/* Copy caller pixels: channels 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA (8-bit, row-major);
 * row_stride_bytes 0 = width*channels. Converted to RGB like Pillow's convert("RGB"). */
int kosmos2_image_from_pixels(const uint8_t *pixels, int width, int height, int channels,
                              size_t row_stride_bytes, kosmos2_image *out);
/* Free the pixels and zero the struct (safe on a zeroed or already freed image). */
void kosmos2_image_free(kosmos2_image *img);

/* Pillow's `Image.resize((out_width, out_height), Image.BICUBIC, reducing_gap=None)`,
 * bit-exact: separable, antialiased when shrinking, 8-bit fixed point. */
int kosmos2_image_resize(const kosmos2_image *in, int out_width, int out_height, kosmos2_image *out);

/* What CLIPImageProcessor does (preprocessor_config.json of the model). */
typedef struct kosmos2_preprocess_config {
    int width, height;  /* target size (the vision model's image size) */
    int do_convert_rgb; /* images are always RGB here; kept for the config's sake */
    int do_resize, do_rescale, do_normalize;
    int resample;       /* PIL filter id; 3 = bicubic is the only one supported */
    double rescale_factor;
    float mean[3], std[3];
} kosmos2_preprocess_config;

/* 224x224, bicubic, 1/255, OpenAI CLIP mean/std: microsoft/kosmos-2-patch14-224. */
kosmos2_preprocess_config kosmos2_preprocess_default_config(void);

/* img -> pixel_values: resize (squash, aspect not kept), x = float32(p * rescale_factor),
 * (x - mean[c]) / std[c] in float32. out: [3, cfg->height, cfg->width] float32, CHW, RGB. */
int kosmos2_image_preprocess(const kosmos2_image *img, const kosmos2_preprocess_config *cfg, float *out);

/* Write a little-endian float32 C-order .npy file (numpy.load reads it). shape: ndim sizes. */
int kosmos2_write_npy_f32(const char *path, const float *data, const int64_t *shape, int ndim);

/* ============================================================================================
 *  PUBLIC API: grounding (boxes -> prompt markup, generated markup -> caption + entities)
 * ============================================================================================
 *  Kosmos-2 writes a grounded phrase as
 *      <phrase> a snowman</phrase><object><patch_index_0044><patch_index_0863></object>
 *  where a patch index k = row*32 + col names a cell of a 32x32 grid over the (squashed) image; the
 *  first index is the upper-left cell of the box, the second the lower-right cell. These functions
 *  do exactly what transformers' Kosmos2Processor does with such text: pure string work, no model.
 *
 *  Coordinates are doubles because Python's are: a box read back from markup is an exact multiple
 *  of 1/64, and a box given to the referring functions is converted with the same double arithmetic
 *  as the processor (so 0.1 here is Python's 0.1, which a float could not promise). */

/* A box in normalised image coordinates: (x1, y1) upper-left, (x2, y2) lower-right, 0..1
 * (values outside 0..1 are possible for out-of-range patch indices). */
typedef struct kosmos2_box {
    double x1, y1, x2, y2;
} kosmos2_box;

/* One grounded entity of a caption. */
typedef struct kosmos2_entity {
    char *phrase;               /* UTF-8, whitespace-stripped; "<patch_index_A><patch_index_B>" (no zero
                                   padding) for an <object> that has no <phrase> before it */
    int start, end;             /* span in the caption in CODE POINTS, exactly what transformers returns
                                   (for odd markup it may be negative, past the end, or end < start) */
    int byte_start, byte_end;   /* the same span as UTF-8 byte offsets into `caption`, clamped so that
                                   0 <= byte_start <= byte_end <= strlen(caption) */
    int n_boxes;                /* >= 1 */
    kosmos2_box *boxes;         /* [n_boxes], normalised */
} kosmos2_entity;

/* The result of kosmos2_grounding_parse. Free with kosmos2_grounding_free. */
typedef struct kosmos2_grounding {
    char *caption;              /* UTF-8 caption, tags removed, whitespace-stripped */
    int n_entities;
    kosmos2_entity *entities;   /* [n_entities], in order of appearance */
} kosmos2_grounding;

/* = processor.post_process_generation(text, cleanup_and_extract=False): the part of `generated_text`
 * after the last "</image>" (all of it when there is none). Returns a pointer INTO generated_text
 * (nothing allocated); NULL only when generated_text is NULL. */
const char *kosmos2_grounding_raw_caption(const char *generated_text);

/* = processor.post_process_generation(text, cleanup_and_extract=True) on the NUL-terminated UTF-8
 * `generated_text` (prompt + generation as decoded, or just the generation): caption without any <...>
 * tag and the entities with their spans and boxes, character for character what transformers
 * returns (its regexes are re-implemented by hand, Unicode whitespace and digits as Python 3.11 /
 * Unicode 14.0 sees them; invalid UTF-8 bytes count as one code point each, as Python's
 * 'surrogateescape' decoding would, and are copied through unchanged).
 * Patch indices are not range-checked, as in transformers: <patch_index_5000> gives coordinates
 * beyond 1. Where transformers raises instead (an index of more than 4300 digits: ValueError;
 * one too large for a double: OverflowError) this returns KOSMOS2_E_INVALID. Inputs longer than
 * 256 MiB give KOSMOS2_E_LIMIT. On error *out is left empty (safe to free). */
int kosmos2_grounding_parse(const char *generated_text, kosmos2_grounding *out);

/* Free everything kosmos2_grounding_parse allocated and zero *g (NULL and empty structs are fine). */
void kosmos2_grounding_free(kosmos2_grounding *g);

/* The box transformers reads back from a pair of patch indices (patch_index_to_coordinate with 32
 * patches per side): cell edges when both cells share a row or a column (or are the same cell),
 * cell centres otherwise. Python's floor division/modulo are used for negative indices. */
kosmos2_box kosmos2_patch_indices_to_box(int ul, int lr);

/* The patch indices the processor writes for a normalised box (coordinate_to_patch_index):
 * ul = floor(y1*32)*32 + floor(x1*32), lr = ceil(y2*32-1)*32 + ceil(x2*32-1). Returns
 * KOSMOS2_E_INVALID unless x2 > x1 and y2 > y1 (the processor's ValueError), or when a coordinate
 * is not finite or beyond +-1e6 (where Python would build ever larger integers). */
int kosmos2_box_to_patch_indices(const kosmos2_box *box, int *ul, int *lr);

/* Pixel coordinates of a normalised box for an image of image_width x image_height pixels:
 * out_px = {x1*W, y1*H, x2*W, y2*H}. */
void kosmos2_box_to_pixels(const kosmos2_box *box, int image_width, int image_height, double out_px[4]);

/* A normalised box from pixel coordinates: {x1/W, y1/H, x2/W, y2/H} (zero box if W or H <= 0). */
kosmos2_box kosmos2_box_from_pixels(double x1, double y1, double x2, double y2, int image_width,
                                    int image_height);

/* The boxes of one <phrase>...</phrase> of a referring prompt. n_boxes == 0 inserts nothing (the
 * processor's None or []). Either `boxes` (normalised, converted as the processor converts a
 * 4-tuple of floats; for pixel boxes use kosmos2_box_from_pixels) or, when `patch_pairs` is not
 * NULL, n_boxes (ul, lr) pairs of patch indices used as they are (the processor's 2-tuples of
 * ints; not range-checked, as in Python). One phrase cannot mix the two kinds. */
typedef struct kosmos2_phrase_boxes {
    int n_boxes;
    const kosmos2_box *boxes;    /* [n_boxes] or NULL */
    const int *patch_pairs;      /* [2*n_boxes] (ul, lr, ul, lr, ...) or NULL */
} kosmos2_phrase_boxes;

/* = the processor's bboxes= handling (_insert_patch_index_tokens): after the i-th match of the
 * regex <phrase>.+?</phrase> in `prompt` (a match cannot span a newline), insert
 *   "<object> <patch_index_%04d> <patch_index_%04d> </object>"
 * with " </delimiter_of_multi_objects/> " between several boxes. n_phrases must equal the number of
 * matches (else KOSMOS2_E_INVALID), except that n_phrases == 0 returns the prompt unchanged, as
 * bboxes=None / [] does. The prompt is not stripped and gets no image tags: kosmos2_prompt_ids
 * does that afterwards (strip and insertion commute, so the ids are the processor's). Errors as
 * the processor raises them: a box without x2 > x1 and y2 > y1 (see kosmos2_box_to_patch_indices).
 * *out_prompt is malloc'd (free with kosmos2_free); NULL on error. */
int kosmos2_prompt_attach_boxes(const char *prompt, const kosmos2_phrase_boxes *per_phrase, int n_phrases,
                                char **out_prompt);

/* The markup for one phrase and its boxes: kosmos2_prompt_attach_boxes on the prompt
 * "<phrase>" phrase "</phrase>", i.e. "<phrase>" phrase "</phrase><object> <patch_index_...> ... </object>"
 * (no <object> part when n_boxes == 0). An empty phrase or one with a newline makes no <phrase>
 * match: KOSMOS2_E_INVALID. *out is malloc'd (free with kosmos2_free). */
int kosmos2_phrase_markup(const char *phrase, const kosmos2_box *boxes, int n_boxes, char **out);

/* ============================================================================================
 *  PUBLIC API: model, context, generation
 * ============================================================================================ */
typedef struct kosmos2_model kosmos2_model;     /* weights + tokenizer + config; read-only, shareable */
typedef struct kosmos2_context kosmos2_context; /* KV cache + scratch; one thread at a time */

/* The architecture, from config.json (HF defaults where a field is absent). */
typedef struct kosmos2_config {
    /* vision tower (CLIP ViT) */
    int vision_hidden;        /* hidden_size, 1024 */
    int vision_intermediate;  /* intermediate_size, 4096 */
    int vision_layers;        /* num_hidden_layers, 24 */
    int vision_heads;         /* num_attention_heads, 16 */
    int image_size;           /* 224 */
    int patch_size;           /* 14 */
    int num_channels;         /* 3 */
    float vision_eps;         /* layer_norm_eps, 1e-5 */
    char vision_act[24];      /* hidden_act, "quick_gelu" */
    /* text decoder */
    int vocab_size;           /* 65037 */
    int text_hidden;          /* embed_dim, 2048 */
    int text_layers;          /* layers, 24 */
    int text_heads;           /* attention_heads, 32 */
    int ffn_dim;              /* 8192 */
    int max_positions;        /* max_position_embeddings, 2048 */
    float text_eps;           /* layer_norm_eps, 1e-5 */
    int scale_embedding;      /* 1: embeddings x sqrt(embed_dim) */
    char text_act[24];        /* activation_function, "gelu" */
    int bos_id, eos_id, pad_id;   /* 0, 2, 1 */
    int no_repeat_ngram_size;     /* text_config's, 3 for the official checkpoint (0 = off) */
    /* connector */
    int latent_query_num;     /* 64 image tokens in the prompt */
} kosmos2_config;

typedef struct kosmos2_model_params {
    int use_mmap;   /* 1 (default): map weight files read-only instead of reading them */
    int n_threads;  /* default threads for contexts made from this model; 0 = all cores */
} kosmos2_model_params;

kosmos2_model_params kosmos2_model_default_params(void);
/* Load a Hugging Face checkpoint directory (config.json, model.safetensors or a sharded
 * model.safetensors.index.json, sentencepiece.bpe.model, preprocessor_config.json).
 * params may be NULL for the defaults. On failure *out is NULL and the error says which file. */
int kosmos2_model_load(const char *path, const kosmos2_model_params *params, kosmos2_model **out);
void kosmos2_model_free(kosmos2_model *model);
const kosmos2_config *kosmos2_model_config(const kosmos2_model *model);
const kosmos2_tokenizer *kosmos2_model_tokenizer(const kosmos2_model *model);
const kosmos2_preprocess_config *kosmos2_model_preprocess_config(const kosmos2_model *model);

/* Tensors as loaded (for tools and tests): index 0..n-1. `dtype` is the stored type: "F32", "F16",
 * "BF16", "Q8_0", "Q4_0" (ggml rows) or "Q8_0R8", "Q4_0R8" (8 rows interleaved; see save_gguf). */
typedef struct kosmos2_tensor_info {
    const char *name;
    const char *dtype;
    int ndim;
    int64_t shape[8];
    const void *data;     /* raw stored bytes */
    size_t nbytes;
} kosmos2_tensor_info;
int kosmos2_model_n_tensors(const kosmos2_model *model);
/* Progress of long operations: return nonzero to stop (KOSMOS2_E_ABORTED). */
typedef int (*kosmos2_progress_callback)(const char *tensor, const char *type, int done, int total, void *user_data);
/* Write the loaded model as one self-contained GGUF file (weights, config, tokenizer,
 * preprocessing), 64-byte aligned, with the large matrices in `type`: "f32", "f16", "bf16", "q8_0",
 * "q4_0", "q8_0_ggml" or "q4_0_ggml". Quantized files keep 1-D tensors and embeddings of positions
 * in float32 and rows that are not a multiple of 32 in float16; the token embedding (= lm_head)
 * is float16 with q8_0 and q8_0 with q4_0, as is the resampler. "q8_0" / "q4_0" store ggml's
 * blocks interleaved 8 rows at a time (GGUF tensor types 4104 / 4098, kosmos2.h's own; see [5]
 * DATA LAYOUTS), which the kernels read as they are; "q*_ggml" store ggml's rows (types 8 / 2:
 * readable by other GGUF tools), which the loader repacks every time (a copy in memory: 0.3-5 s
 * for the full model on the test VMs, whose fresh memory is slow). progress (may be NULL) is
 * told each tensor's chosen type. kosmos2_model_load(path.gguf) maps it back. */
int kosmos2_model_save_gguf(const kosmos2_model *model, const char *path, const char *type,
                            kosmos2_progress_callback progress, void *user_data);
int kosmos2_model_tensor(const kosmos2_model *model, int index, kosmos2_tensor_info *info);

/* The element type of the KV cache (kosmos2_context_params.kv_type). Per position it holds
 * text_layers x 2 x text_hidden values: 384 KiB in float32, 192 KiB in float16 for Kosmos-2.
 *   KOSMOS2_KV_AUTO  float32 when the text decoder's weights are float (f32/f16/bf16), so that
 *                    results stay exact (transformers' numbers); float16 when any of its matrices
 *                    is quantized (q8_0/q4_0), whose error is already far larger
 *   KOSMOS2_KV_F32   keys and values as computed
 *   KOSMOS2_KV_F16   rounded to IEEE float16 (nearest even) when stored, widened exactly to
 *                    float32 when read: half the memory, logits no longer exact (relative RMS
 *                    error 2e-5 .. 6e-5 vs float32 on the test models; values beyond +-65504
 *                    would become inf). Attention still computes in float32. */
enum { KOSMOS2_KV_AUTO = 0, KOSMOS2_KV_F32 = 1, KOSMOS2_KV_F16 = 2 };

typedef struct kosmos2_context_params {
    int n_threads;  /* 0 = the model's default (all cores) */
    int max_ctx;    /* cap on positions (prompt + generation); 0 = config max_position_embeddings */
    size_t max_kv_bytes; /* cap on the memory of this context's KV caches (beam search keeps
                          * 2 x num_beams of them); 0 = KOSMOS2_DEFAULT_MAX_KV_BYTES (4 GiB) */
    int kv_type;    /* KOSMOS2_KV_AUTO (default), KOSMOS2_KV_F32 or KOSMOS2_KV_F16 (see above) */
} kosmos2_context_params;
#define KOSMOS2_DEFAULT_MAX_KV_BYTES ((size_t)4 << 30)
kosmos2_context_params kosmos2_context_default_params(void);
/* A context holds one conversation's KV cache and scratch state. Many contexts may share one
 * model, each used by one thread at a time. params may be NULL. A kv_type other than the
 * KOSMOS2_KV_* values is KOSMOS2_E_INVALID. */
int kosmos2_context_new(const kosmos2_model *model, const kosmos2_context_params *params, kosmos2_context **out);
void kosmos2_context_free(kosmos2_context *ctx);
/* A callback polled before every layer of the vision encoder and of the text decoder, in every
 * call on ctx (encode_image, decode, generate): nonzero stops the call with KOSMOS2_E_ABORTED.
 * The KV cache and the image embeddings stay as they were before the aborted call (tokens that
 * generation had already produced are kept). NULL removes it. For long stages on slow machines
 * (the full vision encoder takes ~0.5 s with AVX-512, minutes on the scalar path). */
void kosmos2_context_set_abort_callback(kosmos2_context *ctx, int (*abort_callback)(void *user_data), void *user_data);
/* The KV cache type in effect: KOSMOS2_KV_F32 or KOSMOS2_KV_F16 (AUTO resolved); 0 for NULL. */
int kosmos2_context_kv_type(const kosmos2_context *ctx);
/* The number of threads this context runs on (0 in the params resolved); 0 for NULL. */
int kosmos2_context_n_threads(const kosmos2_context *ctx);

/* ---- the stages, one call each (for tools, teaching and tests) ---- */
/* pixels [3, S, S] (kosmos2_image_preprocess output) -> the vision encoder's last hidden state
 * [N = (S/P)^2 + 1, Dv] (before post-LN; NULL to skip) and the resampler's image embeddings
 * [64, D] (NULL to skip); the embeddings are also kept in ctx for the next prompt. */
int kosmos2_encode_image(kosmos2_context *ctx, const float *pixels, float *vision_hidden, float *image_embeds);
/* Use precomputed image embeddings [64, D] instead of encoding an image. */
int kosmos2_set_image_embeds(kosmos2_context *ctx, const float *image_embeds);
/* Append n tokens to the KV cache and compute the logits of the last one ([vocab_size], or NULL).
 * image_mask [n] (or NULL): 1 where the position takes the next image embedding. */
int kosmos2_decode(kosmos2_context *ctx, const int32_t *ids, int n, const uint8_t *image_mask, float *logits);
void kosmos2_kv_clear(kosmos2_context *ctx);
int kosmos2_kv_size(const kosmos2_context *ctx);

/* ---- generation ---- */
typedef struct kosmos2_generate_params {
    int max_new_tokens;        /* 128 */
    int num_beams;             /* 1: greedy (or sampling); >1: beam search as transformers */
    float length_penalty;      /* beam search: score = sum logprob / len^length_penalty (1.0) */
    int early_stopping;        /* beam search: stop once num_beams hypotheses are done (0) */
    int do_sample;             /* 0: greedy; 1: sample with temperature / top_k / top_p */
    float temperature;         /* 1.0 */
    int top_k;                 /* 0 = off */
    float top_p;               /* 1.0 = off */
    uint64_t seed;             /* sampling seed */
    int no_repeat_ngram_size;  /* -1: the model's text_config value (3 for Kosmos-2); 0: off */
    /* called with each new token as it is chosen (beam search: the final tokens at the end);
     * return nonzero to stop generating (not an error) */
    int (*on_token)(int32_t id, void *user_data);
    /* polled before each decode step; nonzero stops with KOSMOS2_E_ABORTED (tokens so far kept) */
    int (*abort_callback)(void *user_data);
    void *user_data;
} kosmos2_generate_params;
kosmos2_generate_params kosmos2_generate_default_params(void);

/* Generate after prompt ids [n_prompt] (from kosmos2_prompt_ids; encode the image first when
 * image_mask has ones). The KV cache is reset first. Writes up to cap generated ids (EOS
 * included when produced) to out_ids and their count to *n_out (also on error/abort). */
int kosmos2_generate_ids(kosmos2_context *ctx, const int32_t *prompt_ids, const uint8_t *image_mask, int n_prompt,
                         const kosmos2_generate_params *params, int32_t *out_ids, int cap, int *n_out);

/* ---- the whole pipeline in one call: image + prompt (+ boxes) -> text, caption, entities ---- */
typedef struct kosmos2_result {
    int32_t *prompt_ids;        /* [n_prompt] the prompt as the model saw it (<s>, image slots, ...) */
    int n_prompt;
    int32_t *ids;               /* [n_ids] generated ids (EOS included when produced) */
    int n_ids;
    char *prompt;               /* the prompt text after box markup was attached */
    char *text;                 /* prompt + generation decoded, special tokens skipped (HF batch_decode) */
    kosmos2_grounding grounding;/* caption + entities (processor.post_process_generation) */
    int image_width, image_height; /* of the input image (for boxes in pixels) */
    double t_preprocess_ms, t_vision_ms, t_resampler_ms, t_prefill_ms, t_decode_ms;
    int n_decode;               /* tokens generated (for tokens/s) */
} kosmos2_result;

/* Caption or answer for `image` (NULL: text only) and `prompt` (NULL: "<grounding>An image of").
 * boxes: per <phrase>...</phrase> of the prompt, in order (NULL/0: none), as the processor's
 * bboxes= argument. params may be NULL (greedy, 128 new tokens, the model's n-gram ban).
 * Free the result with kosmos2_result_free (also after a failure). */
int kosmos2_generate(kosmos2_context *ctx, const kosmos2_image *image, const char *prompt,
                     const kosmos2_phrase_boxes *boxes, int n_box_groups,
                     const kosmos2_generate_params *params, kosmos2_result *out);
void kosmos2_result_free(kosmos2_result *r);

/* ---- machine probes (for benchmarks: `kosmos2 bench`, `make bench`) -----------------------
 * What this machine can do, measured now, to show speeds as fractions of it. Each takes about a
 * second and runs on n_threads OpenMP threads (0 = all cores).
 *   kosmos2_bench_memory_read: bytes/s of a streaming read of a 1 GiB buffer (best of 4; 0 when
 *     the buffer cannot be allocated);
 *   kosmos2_bench_fma_peak:    float32 flop/s of independent fused multiply-adds in registers, at
 *     the vector width the kernels use (best of 4; a multiply-add counts 2);
 *   kosmos2_bench_int8_peak:   int8 multiply-adds/s (x 2) of the instruction the q8_0 / q4_0
 *     kernels build on: vpdpbusd (AVX-512 VNNI: 64 per instruction; AVX-VNNI: 32), vpmaddubsw
 *     (AVX2: 32 products summed in pairs), integer multiply-adds (scalar); independent chains,
 *     best of 4. The limit for quantized matrix products, whose int8 work exceeds the float one;
 *   kosmos2_kernels_name:      the kernels' instruction set: "avx512", "avxvnni", "avx2" or "scalar". */
double kosmos2_bench_memory_read(int n_threads);
double kosmos2_bench_fma_peak(int n_threads);
double kosmos2_bench_int8_peak(int n_threads);
const char *kosmos2_kernels_name(void);


#ifdef __cplusplus
}
#endif
#endif /* KOSMOS2_H */

/* ############################################################################################
 *  IMPLEMENTATION
 * ############################################################################################ */
#ifdef KOSMOS2_IMPLEMENTATION
#ifndef KOSMOS2_IMPLEMENTATION_DONE
#define KOSMOS2_IMPLEMENTATION_DONE

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <float.h>
#include <limits.h>
#include <errno.h>
#ifdef _OPENMP
#include <omp.h>
#elif defined(__GNUC__) || defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunknown-pragmas" /* OpenMP is optional: without it the loops run serially */
#define KOSMOS2__POP_PRAGMAS
#endif

/* ============================================================================================
 *  [1] PLATFORM: allocation, errors, files, mmap, threads
 * ============================================================================================ */
#ifndef KOSMOS2_MALLOC
#define KOSMOS2_MALLOC(n) malloc(n)
#define KOSMOS2_REALLOC(p, n) realloc(p, n)
#define KOSMOS2_FREE(p) free(p)
#endif

#if defined(__cplusplus) && __cplusplus >= 201103L
#define KOSMOS2__TLS thread_local
#elif defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L && !defined(__STDC_NO_THREADS__)
#define KOSMOS2__TLS _Thread_local
#elif defined(__GNUC__) || defined(__clang__)
#define KOSMOS2__TLS __thread
#elif defined(_MSC_VER)
#define KOSMOS2__TLS __declspec(thread)
#else
#define KOSMOS2__TLS /* no thread-local storage: last error shared between threads */
#endif

#if defined(__GNUC__) || defined(__clang__)
#define KOSMOS2__PRINTF(a, b) __attribute__((format(printf, a, b)))
#define KOSMOS2__UNUSED __attribute__((unused))
#define KOSMOS2__PREFETCH(p) __builtin_prefetch(p) /* a hint: read soon (no effect on results) */
#else
#define KOSMOS2__PRINTF(a, b)
#define KOSMOS2__UNUSED
#define KOSMOS2__PREFETCH(p) ((void)(p))
#endif

static KOSMOS2__TLS char kosmos2__errbuf[1024];

const char *kosmos2_last_error(void) { return kosmos2__errbuf; }

const char *kosmos2_strerror(int code) {
    switch (code) {
    case KOSMOS2_OK: return "ok";
    case KOSMOS2_E_INVALID: return "invalid argument";
    case KOSMOS2_E_IO: return "i/o error";
    case KOSMOS2_E_FORMAT: return "format error";
    case KOSMOS2_E_NOMEM: return "out of memory";
    case KOSMOS2_E_LIMIT: return "limit exceeded";
    case KOSMOS2_E_ABORTED: return "aborted";
    case KOSMOS2_E_UNSUPPORTED: return "unsupported";
    default: return "unknown error";
    }
}

/* Record an error message for this thread and return `code` (so: `return kosmos2__fail(...)`). */
static int kosmos2__fail(int code, const char *fmt, ...) KOSMOS2__PRINTF(2, 3);
static int kosmos2__fail(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(kosmos2__errbuf, sizeof kosmos2__errbuf, fmt, ap);
    va_end(ap);
    return code;
}

/* Prefix the current error message with more context ("file.json: " + message). */
static int kosmos2__wrap(int code, const char *fmt, ...) KOSMOS2__PRINTF(2, 3);
KOSMOS2__UNUSED static int kosmos2__wrap(int code, const char *fmt, ...) {
    char prefix[512], old[sizeof kosmos2__errbuf];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, kosmos2__errbuf, sizeof old);
    {   /* prefix + old message, cut to the buffer */
        size_t np = strlen(prefix), no = strlen(old);
        if (np > sizeof kosmos2__errbuf - 1) np = sizeof kosmos2__errbuf - 1;
        if (no > sizeof kosmos2__errbuf - 1 - np) no = sizeof kosmos2__errbuf - 1 - np;
        memcpy(kosmos2__errbuf, prefix, np);
        memcpy(kosmos2__errbuf + np, old, no);
        kosmos2__errbuf[np + no] = 0;
    }
    return code;
}

KOSMOS2__UNUSED static void kosmos2__clear_error(void) { kosmos2__errbuf[0] = 0; }

void kosmos2_free(void *p) { KOSMOS2_FREE(p); }

/* Wall-clock milliseconds (monotonic where available), for the timings reported to callers. */
#if defined(__unix__) || defined(__APPLE__)
#include <time.h>
static double kosmos2__now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}
#else
#include <time.h>
static double kosmos2__now_ms(void) { return (double)clock() * 1e3 / CLOCKS_PER_SEC; }
#endif

/* malloc that records an error; n == 0 allocates 1 byte so that NULL always means failure. */
KOSMOS2__UNUSED static void *kosmos2__alloc(size_t n) {
    void *p = KOSMOS2_MALLOC(n ? n : 1);
    if (!p) kosmos2__fail(KOSMOS2_E_NOMEM, "out of memory allocating %zu bytes", n);
    return p;
}
KOSMOS2__UNUSED static void *kosmos2__calloc(size_t count, size_t size) {
    void *p;
    if (size && count > SIZE_MAX / size) {
        kosmos2__fail(KOSMOS2_E_NOMEM, "allocation of %zu x %zu bytes overflows", count, size);
        return NULL;
    }
    p = kosmos2__alloc(count * size);
    if (p && count && size) memset(p, 0, count * size);
    return p;
}
KOSMOS2__UNUSED static char *kosmos2__strdup(const char *s) {
    size_t n;
    if (!s) s = ""; /* (never NULL in the library; keeps -O3's -Wnonnull quiet) */
    n = strlen(s) + 1;
    char *p = (char *)kosmos2__alloc(n);
    if (p) memcpy(p, s, n);
    return p;
}

/* ============================================================================================
 *  [2] PARSERS: JSON, safetensors
 * ============================================================================================
 *  Both parsers read untrusted bytes: every read is bounds-checked, nesting and sizes are
 *  limited, and a failure says what and at which byte offset. */

/* ---- JSON: a small DOM (config.json, preprocessor_config.json, safetensors headers) ---------- */
typedef enum { KOSMOS2__JNULL, KOSMOS2__JBOOL, KOSMOS2__JNUM, KOSMOS2__JSTR, KOSMOS2__JARR, KOSMOS2__JOBJ } kosmos2__jtype;

typedef struct kosmos2__json {
    kosmos2__jtype type;
    double num;                   /* JNUM, JBOOL (0/1) */
    char *str;                    /* JSTR: decoded UTF-8, NUL-terminated (may contain NUL via \u0000) */
    size_t len;                   /* JSTR: byte length; JARR/JOBJ: number of items */
    struct kosmos2__json *items;  /* JARR/JOBJ: [len] values */
    char **keys;                  /* JOBJ: [len] keys */
} kosmos2__json;

typedef struct {
    const char *s; /* the text [n] (not NUL-terminated) */
    size_t n, pos;
    int depth;
} kosmos2__jparser;

#define KOSMOS2__JSON_MAX_DEPTH 64

static void kosmos2__json_free(kosmos2__json *v) {
    size_t i;
    if (!v) return;
    if (v->type == KOSMOS2__JSTR) KOSMOS2_FREE(v->str);
    if (v->type == KOSMOS2__JARR || v->type == KOSMOS2__JOBJ) {
        for (i = 0; i < v->len; i++) {
            kosmos2__json_free(&v->items[i]);
            if (v->keys) KOSMOS2_FREE(v->keys[i]);
        }
        KOSMOS2_FREE(v->items);
        KOSMOS2_FREE(v->keys);
    }
    memset(v, 0, sizeof *v);
}

static int kosmos2__jerr(kosmos2__jparser *p, const char *what) {
    return kosmos2__fail(KOSMOS2_E_FORMAT, "invalid JSON at byte %zu: %s", p->pos, what);
}

static void kosmos2__jskip_ws(kosmos2__jparser *p) {
    while (p->pos < p->n && (p->s[p->pos] == ' ' || p->s[p->pos] == '\t' || p->s[p->pos] == '\n' || p->s[p->pos] == '\r')) p->pos++;
}

static int kosmos2__jhex4(kosmos2__jparser *p, unsigned *out) {
    unsigned v = 0;
    int i;
    if (p->n - p->pos < 4) return kosmos2__jerr(p, "truncated \\u escape");
    for (i = 0; i < 4; i++) {
        char c = p->s[p->pos++];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return kosmos2__jerr(p, "bad hex digit in \\u escape");
    }
    *out = v;
    return 0;
}

/* Append code point cp as UTF-8 to buf (which has room: at most 4 bytes per escape). */
static size_t kosmos2__utf8_put(char *buf, unsigned cp) {
    if (cp < 0x80) { buf[0] = (char)cp; return 1; }
    if (cp < 0x800) { buf[0] = (char)(0xC0 | (cp >> 6)); buf[1] = (char)(0x80 | (cp & 63)); return 2; }
    if (cp < 0x10000) {
        buf[0] = (char)(0xE0 | (cp >> 12)); buf[1] = (char)(0x80 | ((cp >> 6) & 63)); buf[2] = (char)(0x80 | (cp & 63));
        return 3;
    }
    buf[0] = (char)(0xF0 | (cp >> 18)); buf[1] = (char)(0x80 | ((cp >> 12) & 63));
    buf[2] = (char)(0x80 | ((cp >> 6) & 63)); buf[3] = (char)(0x80 | (cp & 63));
    return 4;
}

/* A string starting at the opening quote. The decoded form is never longer than the source. */
static int kosmos2__jstring(kosmos2__jparser *p, char **out, size_t *out_len) {
    size_t start = ++p->pos, end = start, o = 0;
    char *buf;
    while (end < p->n && p->s[end] != '"') end += (p->s[end] == '\\') ? 2 : 1;
    if (end >= p->n) return kosmos2__jerr(p, "unterminated string");
    buf = (char *)kosmos2__alloc(end - start + 1);
    if (!buf) return KOSMOS2_E_NOMEM;
    while (p->pos < end) {
        unsigned char c = (unsigned char)p->s[p->pos++];
        if (c < 0x20) { KOSMOS2_FREE(buf); return kosmos2__jerr(p, "control character in string"); }
        if (c != '\\') { buf[o++] = (char)c; continue; }
        c = (unsigned char)p->s[p->pos++];
        switch (c) {
        case '"': buf[o++] = '"'; break;
        case '\\': buf[o++] = '\\'; break;
        case '/': buf[o++] = '/'; break;
        case 'b': buf[o++] = '\b'; break;
        case 'f': buf[o++] = '\f'; break;
        case 'n': buf[o++] = '\n'; break;
        case 'r': buf[o++] = '\r'; break;
        case 't': buf[o++] = '\t'; break;
        case 'u': {
            unsigned cp, lo;
            if (p->pos + 4 > end || kosmos2__jhex4(p, &cp)) { KOSMOS2_FREE(buf); return kosmos2__jerr(p, "bad \\u escape"); }
            if (cp >= 0xD800 && cp < 0xDC00 && p->pos + 6 <= end && p->s[p->pos] == '\\' && p->s[p->pos + 1] == 'u') {
                size_t save = p->pos;
                p->pos += 2;
                if (kosmos2__jhex4(p, &lo)) { KOSMOS2_FREE(buf); return KOSMOS2_E_FORMAT; }
                if (lo >= 0xDC00 && lo < 0xE000) cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                else p->pos = save; /* lone high surrogate: kept as is, like Python */
            }
            o += kosmos2__utf8_put(buf + o, cp); /* 6 source bytes -> at most 3 (4 for a pair of 12) */
            break;
        }
        default: KOSMOS2_FREE(buf); return kosmos2__jerr(p, "bad escape in string");
        }
    }
    buf[o] = 0;
    p->pos = end + 1;
    *out = buf;
    *out_len = o;
    return 0;
}

static int kosmos2__jnumber(kosmos2__jparser *p, double *out) {
    size_t s = p->pos, n;
    char tmp[64], *e;
    if (p->pos < p->n && p->s[p->pos] == '-') p->pos++;
    if (p->pos >= p->n || p->s[p->pos] < '0' || p->s[p->pos] > '9') return kosmos2__jerr(p, "bad number");
    if (p->s[p->pos] == '0') p->pos++;
    else while (p->pos < p->n && p->s[p->pos] >= '0' && p->s[p->pos] <= '9') p->pos++;
    if (p->pos < p->n && p->s[p->pos] == '.') {
        p->pos++;
        if (p->pos >= p->n || p->s[p->pos] < '0' || p->s[p->pos] > '9') return kosmos2__jerr(p, "bad fraction");
        while (p->pos < p->n && p->s[p->pos] >= '0' && p->s[p->pos] <= '9') p->pos++;
    }
    if (p->pos < p->n && (p->s[p->pos] == 'e' || p->s[p->pos] == 'E')) {
        p->pos++;
        if (p->pos < p->n && (p->s[p->pos] == '+' || p->s[p->pos] == '-')) p->pos++;
        if (p->pos >= p->n || p->s[p->pos] < '0' || p->s[p->pos] > '9') return kosmos2__jerr(p, "bad exponent");
        while (p->pos < p->n && p->s[p->pos] >= '0' && p->s[p->pos] <= '9') p->pos++;
    }
    n = p->pos - s;
    if (n >= sizeof tmp) { /* absurdly long literal: keep its leading digits' magnitude via strtod on a copy */
        char *big = (char *)kosmos2__alloc(n + 1);
        if (!big) return KOSMOS2_E_NOMEM;
        memcpy(big, p->s + s, n);
        big[n] = 0;
        *out = strtod(big, &e);
        KOSMOS2_FREE(big);
        return 0;
    }
    memcpy(tmp, p->s + s, n);
    tmp[n] = 0;
    *out = strtod(tmp, &e);
    return 0;
}

static int kosmos2__jvalue(kosmos2__jparser *p, kosmos2__json *v);

/* Parse the items of an array or object; p->pos is just after the opening bracket. */
static int kosmos2__jcontainer(kosmos2__jparser *p, kosmos2__json *v, int is_obj) {
    size_t cap = 0;
    char close = is_obj ? '}' : ']';
    int rc;
    v->type = is_obj ? KOSMOS2__JOBJ : KOSMOS2__JARR;
    if (++p->depth > KOSMOS2__JSON_MAX_DEPTH) return kosmos2__jerr(p, "nesting too deep");
    kosmos2__jskip_ws(p);
    if (p->pos < p->n && p->s[p->pos] == close) { p->pos++; p->depth--; return 0; }
    for (;;) {
        char *key = NULL;
        size_t klen;
        if (v->len == cap) { /* grow items (and keys) */
            size_t ncap = cap ? cap * 2 : 8;
            kosmos2__json *ni = (kosmos2__json *)KOSMOS2_REALLOC(v->items, ncap * sizeof *ni);
            if (!ni) return kosmos2__fail(KOSMOS2_E_NOMEM, "out of memory parsing JSON");
            v->items = ni;
            if (is_obj) {
                char **nk = (char **)KOSMOS2_REALLOC(v->keys, ncap * sizeof *nk);
                if (!nk) return kosmos2__fail(KOSMOS2_E_NOMEM, "out of memory parsing JSON");
                v->keys = nk;
            }
            cap = ncap;
        }
        kosmos2__jskip_ws(p);
        if (is_obj) {
            if (p->pos >= p->n || p->s[p->pos] != '"') return kosmos2__jerr(p, "expected a string key");
            if ((rc = kosmos2__jstring(p, &key, &klen)) != 0) return rc;
            kosmos2__jskip_ws(p);
            if (p->pos >= p->n || p->s[p->pos] != ':') { KOSMOS2_FREE(key); return kosmos2__jerr(p, "expected ':'"); }
            p->pos++;
        }
        memset(&v->items[v->len], 0, sizeof v->items[0]);
        if (is_obj) v->keys[v->len] = key;
        v->len++; /* counted now so that a failure below frees the key and partial value */
        if ((rc = kosmos2__jvalue(p, &v->items[v->len - 1])) != 0) return rc;
        kosmos2__jskip_ws(p);
        if (p->pos < p->n && p->s[p->pos] == ',') { p->pos++; continue; }
        if (p->pos < p->n && p->s[p->pos] == close) { p->pos++; p->depth--; return 0; }
        return kosmos2__jerr(p, is_obj ? "expected ',' or '}'" : "expected ',' or ']'");
    }
}

static int kosmos2__jvalue(kosmos2__jparser *p, kosmos2__json *v) {
    kosmos2__jskip_ws(p);
    if (p->pos >= p->n) return kosmos2__jerr(p, "unexpected end of input");
    switch (p->s[p->pos]) {
    case '{': p->pos++; return kosmos2__jcontainer(p, v, 1);
    case '[': p->pos++; return kosmos2__jcontainer(p, v, 0);
    case '"': v->type = KOSMOS2__JSTR; return kosmos2__jstring(p, &v->str, &v->len);
    case 't':
        if (p->n - p->pos >= 4 && !memcmp(p->s + p->pos, "true", 4)) { p->pos += 4; v->type = KOSMOS2__JBOOL; v->num = 1; return 0; }
        break;
    case 'f':
        if (p->n - p->pos >= 5 && !memcmp(p->s + p->pos, "false", 5)) { p->pos += 5; v->type = KOSMOS2__JBOOL; v->num = 0; return 0; }
        break;
    case 'n':
        if (p->n - p->pos >= 4 && !memcmp(p->s + p->pos, "null", 4)) { p->pos += 4; v->type = KOSMOS2__JNULL; return 0; }
        break;
    default: v->type = KOSMOS2__JNUM; return kosmos2__jnumber(p, &v->num);
    }
    return kosmos2__jerr(p, "unexpected character");
}

/* Parse text[0..n-1] into *out (free with kosmos2__json_free). Trailing garbage is an error. */
static int kosmos2__json_parse(const char *text, size_t n, kosmos2__json *out) {
    kosmos2__jparser p;
    int rc;
    p.s = text; p.n = n; p.pos = 0; p.depth = 0;
    memset(out, 0, sizeof *out);
    rc = kosmos2__jvalue(&p, out);
    if (rc == 0) {
        kosmos2__jskip_ws(&p);
        if (p.pos != p.n) rc = kosmos2__jerr(&p, "trailing characters after the value");
    }
    if (rc) kosmos2__json_free(out);
    return rc;
}

/* Member `key` of object v, or NULL. */
static const kosmos2__json *kosmos2__json_get(const kosmos2__json *v, const char *key) {
    size_t i;
    if (!v || v->type != KOSMOS2__JOBJ) return NULL;
    for (i = 0; i < v->len; i++)
        if (strcmp(v->keys[i], key) == 0) return &v->items[i];
    return NULL;
}

/* ---- files: whole-file reads and read-only memory maps ---------------------------------- */
#if defined(__unix__) || defined(__APPLE__)
#include <sys/mman.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>
#define KOSMOS2__HAVE_MMAP 1
/* madvise() (2 MiB pages for weights and KV cache, giving back repacked weights' pages) is Linux
 * ABI, but a strict -D_POSIX_C_SOURCE hides it and its values from <sys/mman.h>: then it is
 * declared here (x86 and arm64, whose values are these). */
#if defined(__linux__) && defined(MADV_HUGEPAGE)
#define KOSMOS2__MADV_HUGEPAGE MADV_HUGEPAGE
#define KOSMOS2__MADV_DONTNEED MADV_DONTNEED
#elif defined(__linux__) && (defined(__x86_64__) || defined(__i386__) || defined(__aarch64__))
extern int madvise(void *addr, size_t length, int advice);
#define KOSMOS2__MADV_HUGEPAGE 14
#define KOSMOS2__MADV_DONTNEED 4
#endif
#endif

typedef struct {
    unsigned char *data; /* [size] bytes */
    size_t size;
    int mapped; /* 1: munmap on close, 0: KOSMOS2_FREE */
} kosmos2__file;

static void kosmos2__file_close(kosmos2__file *f) {
    if (!f->data) return;
#ifdef KOSMOS2__HAVE_MMAP
    if (f->mapped) munmap(f->data, f->size);
    else
#endif
        KOSMOS2_FREE(f->data);
    memset(f, 0, sizeof *f);
}

/* Open `path` read-only: memory-mapped when use_mmap and the platform allows, else read whole. */
static int kosmos2__file_open(const char *path, int use_mmap, kosmos2__file *f) {
    FILE *fp;
    long sz;
    memset(f, 0, sizeof *f);
#ifdef KOSMOS2__HAVE_MMAP
    if (use_mmap) {
        struct stat st;
        int fd = open(path, O_RDONLY);
        if (fd < 0) return kosmos2__fail(KOSMOS2_E_IO, "%s: cannot open: %s", path, strerror(errno));
        if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) { close(fd); return kosmos2__fail(KOSMOS2_E_IO, "%s: not a regular file", path); }
        f->size = (size_t)st.st_size;
        if (f->size == 0) { close(fd); f->data = (unsigned char *)kosmos2__alloc(1); return f->data ? 0 : KOSMOS2_E_NOMEM; }
        f->data = (unsigned char *)mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
        close(fd);
        if (f->data == (unsigned char *)MAP_FAILED) { f->data = NULL; return kosmos2__fail(KOSMOS2_E_IO, "%s: mmap failed: %s", path, strerror(errno)); }
        f->mapped = 1;
#ifdef KOSMOS2__MADV_HUGEPAGE
        /* Weights stream through every token: with 4 KiB pages that is a TLB miss every 4 KiB
         * (about 10% of the decoding time here). Where the kernel and file system allow, pages
         * read into the cache from now on come in 2 MiB pieces mapped by one entry. Advice only. */
        (void)madvise(f->data, f->size, KOSMOS2__MADV_HUGEPAGE);
#endif
        return 0;
    }
#endif
    (void)use_mmap;
#ifdef KOSMOS2__HAVE_MMAP
    {   /* a directory opens with fopen but has no size (ftell gives LONG_MAX): refuse it first */
        struct stat st;
        if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) return kosmos2__fail(KOSMOS2_E_IO, "%s: not a regular file", path);
    }
#endif
    fp = fopen(path, "rb");
    if (!fp) return kosmos2__fail(KOSMOS2_E_IO, "%s: cannot open: %s", path, strerror(errno));
    if (fseek(fp, 0, SEEK_END) != 0 || (sz = ftell(fp)) < 0 || fseek(fp, 0, SEEK_SET) != 0) {
        fclose(fp);
        return kosmos2__fail(KOSMOS2_E_IO, "%s: cannot determine the file size", path);
    }
    f->size = (size_t)sz;
    f->data = (unsigned char *)kosmos2__alloc(f->size + 1);
    if (!f->data) { fclose(fp); return KOSMOS2_E_NOMEM; }
#ifdef KOSMOS2__MADV_HUGEPAGE
    if (f->size >= ((size_t)64 << 20)) { /* weights stream per token: 2 MiB pages where the system allows */
        uintptr_t a = ((uintptr_t)f->data + 4095) & ~(uintptr_t)4095;
        (void)madvise((void *)a, ((uintptr_t)f->data + f->size - a) & ~(uintptr_t)4095, KOSMOS2__MADV_HUGEPAGE);
    }
#endif
    if (fread(f->data, 1, f->size, fp) != f->size) {
        fclose(fp);
        kosmos2__file_close(f);
        return kosmos2__fail(KOSMOS2_E_IO, "%s: read error", path);
    }
    fclose(fp);
    return 0;
}

static int kosmos2__file_exists(const char *path) {
    FILE *fp = fopen(path, "rb");
    if (fp) fclose(fp);
    return fp != NULL;
}

/* Read and parse a JSON file; errors are prefixed with the path. */
static int kosmos2__json_load(const char *path, kosmos2__json *out) {
    kosmos2__file f;
    int rc = kosmos2__file_open(path, 0, &f);
    memset(out, 0, sizeof *out);
    if (rc) return rc;
    if (f.size > ((size_t)64 << 20)) { kosmos2__file_close(&f); return kosmos2__fail(KOSMOS2_E_LIMIT, "%s: JSON file larger than 64 MiB", path); }
    rc = kosmos2__json_parse((const char *)f.data, f.size, out);
    kosmos2__file_close(&f);
    if (rc) return kosmos2__wrap(rc, "%s: ", path);
    return 0;
}

/* ---- safetensors ---------------------------------------------------------------------------
 *  File = u64 little-endian header length N, N bytes of JSON {name: {"dtype", "shape",
 *  "data_offsets": [begin, end]}, "__metadata__": {...}}, then the data section; offsets are
 *  relative to the data section. We check: N fits the file, every dtype is known, every shape is
 *  sane, end - begin == prod(shape) * dtype size, ranges inside the data section and not
 *  overlapping. */
typedef struct {
    char *name;
    char dtype[8];            /* "F32", "F16", "BF16", ... as stored */
    int ndim;
    int64_t shape[8];
    const unsigned char *data; /* into the mapped file */
    size_t nbytes;
    int file;                  /* index of the file it lives in */
} kosmos2__tensor;

static int kosmos2__dtype_size(const char *dt) {
    if (!strcmp(dt, "F32") || !strcmp(dt, "I32") || !strcmp(dt, "U32")) return 4;
    if (!strcmp(dt, "F16") || !strcmp(dt, "BF16") || !strcmp(dt, "I16") || !strcmp(dt, "U16")) return 2;
    if (!strcmp(dt, "F64") || !strcmp(dt, "I64") || !strcmp(dt, "U64")) return 8;
    if (!strcmp(dt, "I8") || !strcmp(dt, "U8") || !strcmp(dt, "BOOL") || !strcmp(dt, "F8_E4M3") || !strcmp(dt, "F8_E5M2")) return 1;
    return 0;
}

static int kosmos2__cmp_range(const void *a, const void *b) {
    const kosmos2__tensor *x = *(const kosmos2__tensor *const *)a, *y = *(const kosmos2__tensor *const *)b;
    return x->data < y->data ? -1 : x->data > y->data ? 1 : 0;
}

/* No two tensors of one file may share bytes. */
static int kosmos2__check_overlaps(const char *path, kosmos2__tensor *t, int n) {
    kosmos2__tensor **sorted;
    int i, rc = 0;
    if (n < 2) return 0;
    sorted = (kosmos2__tensor **)kosmos2__alloc((size_t)n * sizeof *sorted);
    if (!sorted) return KOSMOS2_E_NOMEM;
    for (i = 0; i < n; i++) sorted[i] = &t[i];
    qsort(sorted, (size_t)n, sizeof *sorted, kosmos2__cmp_range);
    for (i = 1; i < n && !rc; i++)
        if (sorted[i]->data < sorted[i - 1]->data + sorted[i - 1]->nbytes)
            rc = kosmos2__fail(KOSMOS2_E_FORMAT, "%s: tensors '%s' and '%s' overlap", path, sorted[i - 1]->name, sorted[i]->name);
    KOSMOS2_FREE(sorted);
    return rc;
}

/* Parse the tensors of one mapped safetensors file and append them to *tensors (grown). */
static int kosmos2__safetensors_parse(const char *path, const kosmos2__file *f, int file_index,
                                      kosmos2__tensor **tensors, int *n_tensors) {
    uint64_t hlen = 0;
    const unsigned char *data;
    size_t data_size, i, first = (size_t)*n_tensors;
    kosmos2__json root;
    int rc, k;
    if (f->size < 8) return kosmos2__fail(KOSMOS2_E_FORMAT, "%s: not a safetensors file (only %zu bytes)", path, f->size);
    for (k = 7; k >= 0; k--) hlen = (hlen << 8) | f->data[k];
    if (hlen > f->size - 8) return kosmos2__fail(KOSMOS2_E_FORMAT, "%s: header length %llu exceeds the file size %zu (truncated or not safetensors)", path, (unsigned long long)hlen, f->size);
    if (hlen > ((uint64_t)100 << 20)) return kosmos2__fail(KOSMOS2_E_LIMIT, "%s: header length %llu is over 100 MiB", path, (unsigned long long)hlen);
    if ((rc = kosmos2__json_parse((const char *)f->data + 8, (size_t)hlen, &root)) != 0) return kosmos2__wrap(rc, "%s: header: ", path);
    if (root.type != KOSMOS2__JOBJ) { kosmos2__json_free(&root); return kosmos2__fail(KOSMOS2_E_FORMAT, "%s: header is not a JSON object", path); }
    data = f->data + 8 + hlen;
    data_size = f->size - 8 - (size_t)hlen;
    for (i = 0; i < root.len; i++) {
        const kosmos2__json *t = &root.items[i], *dt, *sh, *off;
        kosmos2__tensor *ts;
        uint64_t count = 1, b, e;
        int esz, d;
        if (!strcmp(root.keys[i], "__metadata__")) continue;
        dt = kosmos2__json_get(t, "dtype"); sh = kosmos2__json_get(t, "shape"); off = kosmos2__json_get(t, "data_offsets");
        if (!dt || dt->type != KOSMOS2__JSTR || !sh || sh->type != KOSMOS2__JARR || !off || off->type != KOSMOS2__JARR || off->len != 2) {
            rc = kosmos2__fail(KOSMOS2_E_FORMAT, "%s: tensor '%s': missing or malformed dtype/shape/data_offsets", path, root.keys[i]);
            goto fail;
        }
        esz = strlen(dt->str) == dt->len ? kosmos2__dtype_size(dt->str) : 0; /* "F32\u0000x" is not F32 */
        if (!esz) { rc = kosmos2__fail(KOSMOS2_E_FORMAT, "%s: tensor '%s': unknown dtype '%.16s'", path, root.keys[i], dt->str); goto fail; }
        if (sh->len > 8) { rc = kosmos2__fail(KOSMOS2_E_FORMAT, "%s: tensor '%s': %zu dimensions (max 8)", path, root.keys[i], sh->len); goto fail; }
        if (*n_tensors % 64 == 0) {
            kosmos2__tensor *nt = (kosmos2__tensor *)KOSMOS2_REALLOC(*tensors, ((size_t)*n_tensors + 64) * sizeof *nt);
            if (!nt) { rc = kosmos2__fail(KOSMOS2_E_NOMEM, "out of memory"); goto fail; }
            *tensors = nt;
        }
        ts = &(*tensors)[*n_tensors];
        memset(ts, 0, sizeof *ts);
        for (d = 0; d < (int)sh->len; d++) {
            double v = sh->items[d].num;
            if (sh->items[d].type != KOSMOS2__JNUM || v < 0 || v > 4e12 || v != floor(v)) {
                rc = kosmos2__fail(KOSMOS2_E_FORMAT, "%s: tensor '%s': bad shape entry", path, root.keys[i]);
                goto fail;
            }
            ts->shape[d] = (int64_t)v;
            if (ts->shape[d] && count > UINT64_MAX / 16 / (uint64_t)ts->shape[d]) {
                rc = kosmos2__fail(KOSMOS2_E_FORMAT, "%s: tensor '%s': shape overflows", path, root.keys[i]);
                goto fail;
            }
            count *= (uint64_t)ts->shape[d];
        }
        if (off->items[0].type != KOSMOS2__JNUM || off->items[1].type != KOSMOS2__JNUM || off->items[0].num < 0 ||
            off->items[1].num < off->items[0].num || off->items[1].num > (double)data_size ||
            off->items[0].num != floor(off->items[0].num) || off->items[1].num != floor(off->items[1].num)) {
            rc = kosmos2__fail(KOSMOS2_E_FORMAT, "%s: tensor '%s': data_offsets outside the data section (%zu bytes)", path, root.keys[i], data_size);
            goto fail;
        }
        b = (uint64_t)off->items[0].num; e = (uint64_t)off->items[1].num;
        if (e - b != count * (uint64_t)esz) {
            rc = kosmos2__fail(KOSMOS2_E_FORMAT, "%s: tensor '%s': byte range %llu..%llu does not match shape x dtype (%llu bytes)", path,
                               root.keys[i], (unsigned long long)b, (unsigned long long)e, (unsigned long long)(count * (uint64_t)esz));
            goto fail;
        }
        ts->name = kosmos2__strdup(root.keys[i]);
        if (!ts->name) { rc = KOSMOS2_E_NOMEM; goto fail; }
        memcpy(ts->dtype, dt->str, strlen(dt->str) + 1);
        ts->ndim = (int)sh->len;
        ts->data = data + b;
        ts->nbytes = (size_t)(e - b);
        ts->file = file_index;
        (*n_tensors)++;
    }
    kosmos2__json_free(&root);
    return kosmos2__check_overlaps(path, *tensors + first, *n_tensors - (int)first);
fail:
    kosmos2__json_free(&root);
    return rc;
}


/* ============================================================================================
 *  [3] TOKENIZER: SentencePiece protobuf, normaliser, unigram/BPE, ids, decode
 * ============================================================================================
 *  Behaviour reproduced: transformers' XLMRobertaConverter/SpmConverter turns the `.model` file
 *  into a `tokenizers` pipeline, and Kosmos2Processor adds its tags as tokens:
 *    1. split the raw text on added tokens (leftmost-longest match; tokens with lstrip also
 *       take the whitespace on their left);
 *    2. every other segment: normaliser = Precompiled(charsmap) -> strip right -> " {2,}" -> "▁";
 *       pre-tokenizer = Metaspace(▁, prepend always, split): " " -> "▁", prefix "▁", cut
 *       before every "▁" into words;
 *    3. each word: Unigram Viterbi (unknown char = min score - 10, unknown runs fused into one
 *       <unk>) or BPE merges by rank (SentencePieceExtractor order), ids as in XLM-R.
 *  Decoding: drop specials if asked, "▁" -> " " (removed in the first token), concatenate,
 *  clean_up_tokenization.
 *  Matched against tokenizers 0.23.2 (Rust, via its npm bindings) on 3016 corpus lines and 6000
 *  random strings per model (scripts/make_tokenizer_refs.py), including two quirks of its
 *  Precompiled normaliser: a grapheme cluster under 6 bytes is looked up whole and replaced by
 *  the rule of its SHORTEST matching prefix (so "Ａ" + U+0301 -> "A"); longer clusters go
 *  character by character. The slow SentencePiece tokenizer differs on such text. */

#define KOSMOS2__TOK_MAX_FILE ((size_t)1 << 28) /* refuse .model files above 256 MiB */
#define KOSMOS2__TOK_MAX_PIECE 256              /* refuse pieces longer than this (bytes): bounds
                                                   the work per byte of text and per BPE merge */
#define KOSMOS2__TOK_MAX_PIECES 4000000         /* refuse more pieces than this */
#define KOSMOS2__TOK_N_TAGS 11                  /* </doc> .. <grounding> */
#define KOSMOS2__TOK_N_PATCH 1024               /* <patch_index_0000> .. <patch_index_1023> */

/* ------------------------------------------------------------------------------------------
 *  Growable byte / int32 buffers (scratch of one call)
 * ------------------------------------------------------------------------------------------ */
typedef struct {
    char *p;     /* [cap] bytes, p[n] == 0 is kept when p != NULL */
    size_t n, cap;
} kosmos2__buf;

static int kosmos2__buf_reserve(kosmos2__buf *b, size_t extra) {
    size_t need, cap;
    char *np;
    if (extra > SIZE_MAX - 1 - b->n) return kosmos2__fail(KOSMOS2_E_NOMEM, "text too large");
    need = b->n + extra + 1;
    if (need <= b->cap) return 0;
    cap = b->cap ? b->cap : 64;
    while (cap < need) cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    np = (char *)KOSMOS2_REALLOC(b->p, cap);
    if (!np) return kosmos2__fail(KOSMOS2_E_NOMEM, "out of memory (%zu bytes of text)", cap);
    b->p = np;
    b->cap = cap;
    return 0;
}
static int kosmos2__buf_put(kosmos2__buf *b, const char *s, size_t n) {
    int rc = kosmos2__buf_reserve(b, n);
    if (rc) return rc;
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
    return 0;
}

typedef struct {
    int32_t *p; /* [cap] ids */
    size_t n, cap;
} kosmos2__ids;

static int kosmos2__ids_push(kosmos2__ids *v, int32_t id) {
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 64;
        int32_t *np;
        if (cap > SIZE_MAX / sizeof(int32_t) || cap > (size_t)INT_MAX)
            return kosmos2__fail(KOSMOS2_E_LIMIT, "too many tokens");
        np = (int32_t *)KOSMOS2_REALLOC(v->p, cap * sizeof(int32_t));
        if (!np) return kosmos2__fail(KOSMOS2_E_NOMEM, "out of memory (%zu token ids)", cap);
        v->p = np;
        v->cap = cap;
    }
    v->p[v->n++] = id;
    return 0;
}

/* ------------------------------------------------------------------------------------------
 *  UTF-8 and Unicode character classes
 * ------------------------------------------------------------------------------------------ */
/* Decode one UTF-8 character of s[0..n) (n >= 1). Returns its byte length (1..4) and the code
 * point in *cp, or 0 if the bytes are not valid UTF-8 (overlong, surrogate, > U+10FFFF, cut). */
static int kosmos2__utf8_decode(const unsigned char *s, size_t n, uint32_t *cp) {
    uint32_t c = s[0];
    int len, i;
    if (c < 0x80) { *cp = c; return 1; }
    if (c >= 0xC2 && c <= 0xDF) { len = 2; c &= 0x1F; }
    else if (c >= 0xE0 && c <= 0xEF) { len = 3; c &= 0x0F; }
    else if (c >= 0xF0 && c <= 0xF4) { len = 4; c &= 0x07; }
    else return 0;
    if ((size_t)len > n) return 0;
    for (i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        c = (c << 6) | (s[i] & 0x3F);
    }
    if ((len == 3 && c < 0x800) || (len == 4 && (c < 0x10000 || c > 0x10FFFF)) ||
        (c >= 0xD800 && c <= 0xDFFF))
        return 0;
    *cp = c;
    return len;
}

/* Length in bytes of the UTF-8 character starting at s (s is known to be valid UTF-8). */
static int kosmos2__utf8_len(unsigned char c) {
    return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
}

/* 0 if s[0..n) is valid UTF-8, else the (1-based) byte offset of the first bad byte. */
static size_t kosmos2__utf8_check(const char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint32_t cp;
        int l = kosmos2__utf8_decode((const unsigned char *)s + i, n - i, &cp);
        if (!l) return i + 1;
        i += (size_t)l;
    }
    return 0;
}

/* Rust's char::is_whitespace (Unicode White_Space), used by lstrip and the right strip. */
static int kosmos2__is_white_space(uint32_t c) {
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}
/* Python's str.isspace (used by the processor's prompt.strip()): White_Space plus U+001C..1F. */
static int kosmos2__is_py_space(uint32_t c) {
    return kosmos2__is_white_space(c) || (c >= 0x1C && c <= 0x1F);
}

/* Characters that continue a grapheme cluster (UAX #29 Extend, SpacingMark, ZWJ): general
 * categories Mn, Me, Mc, plus U+200C, U+200D, U+FF9E, U+FF9F, U+1F3FB..1F3FF, U+E0020..E007F.
 * Ranges (first, last) from Unicode 14 (Python's unicodedata; see
 * scripts/make_tokenizer_refs.py marks). */
static const uint32_t kosmos2__grapheme_extend[] = {
    0x300,0x36F, 0x483,0x489, 0x591,0x5BD, 0x5BF,0x5BF, 0x5C1,0x5C2, 0x5C4,0x5C5, 0x5C7,0x5C7,
    0x610,0x61A, 0x64B,0x65F, 0x670,0x670, 0x6D6,0x6DC, 0x6DF,0x6E4, 0x6E7,0x6E8, 0x6EA,0x6ED,
    0x711,0x711, 0x730,0x74A, 0x7A6,0x7B0, 0x7EB,0x7F3, 0x7FD,0x7FD, 0x816,0x819, 0x81B,0x823,
    0x825,0x827, 0x829,0x82D, 0x859,0x85B, 0x898,0x89F, 0x8CA,0x8E1, 0x8E3,0x903, 0x93A,0x93C,
    0x93E,0x94F, 0x951,0x957, 0x962,0x963, 0x981,0x983, 0x9BC,0x9BC, 0x9BE,0x9C4, 0x9C7,0x9C8,
    0x9CB,0x9CD, 0x9D7,0x9D7, 0x9E2,0x9E3, 0x9FE,0x9FE, 0xA01,0xA03, 0xA3C,0xA3C, 0xA3E,0xA42,
    0xA47,0xA48, 0xA4B,0xA4D, 0xA51,0xA51, 0xA70,0xA71, 0xA75,0xA75, 0xA81,0xA83, 0xABC,0xABC,
    0xABE,0xAC5, 0xAC7,0xAC9, 0xACB,0xACD, 0xAE2,0xAE3, 0xAFA,0xAFF, 0xB01,0xB03, 0xB3C,0xB3C,
    0xB3E,0xB44, 0xB47,0xB48, 0xB4B,0xB4D, 0xB55,0xB57, 0xB62,0xB63, 0xB82,0xB82, 0xBBE,0xBC2,
    0xBC6,0xBC8, 0xBCA,0xBCD, 0xBD7,0xBD7, 0xC00,0xC04, 0xC3C,0xC3C, 0xC3E,0xC44, 0xC46,0xC48,
    0xC4A,0xC4D, 0xC55,0xC56, 0xC62,0xC63, 0xC81,0xC83, 0xCBC,0xCBC, 0xCBE,0xCC4, 0xCC6,0xCC8,
    0xCCA,0xCCD, 0xCD5,0xCD6, 0xCE2,0xCE3, 0xD00,0xD03, 0xD3B,0xD3C, 0xD3E,0xD44, 0xD46,0xD48,
    0xD4A,0xD4D, 0xD57,0xD57, 0xD62,0xD63, 0xD81,0xD83, 0xDCA,0xDCA, 0xDCF,0xDD4, 0xDD6,0xDD6,
    0xDD8,0xDDF, 0xDF2,0xDF3, 0xE31,0xE31, 0xE34,0xE3A, 0xE47,0xE4E, 0xEB1,0xEB1, 0xEB4,0xEBC,
    0xEC8,0xECD, 0xF18,0xF19, 0xF35,0xF35, 0xF37,0xF37, 0xF39,0xF39, 0xF3E,0xF3F, 0xF71,0xF84,
    0xF86,0xF87, 0xF8D,0xF97, 0xF99,0xFBC, 0xFC6,0xFC6, 0x102B,0x103E, 0x1056,0x1059, 0x105E,0x1060,
    0x1062,0x1064, 0x1067,0x106D, 0x1071,0x1074, 0x1082,0x108D, 0x108F,0x108F, 0x109A,0x109D,
    0x135D,0x135F, 0x1712,0x1715, 0x1732,0x1734, 0x1752,0x1753, 0x1772,0x1773, 0x17B4,0x17D3,
    0x17DD,0x17DD, 0x180B,0x180D, 0x180F,0x180F, 0x1885,0x1886, 0x18A9,0x18A9, 0x1920,0x192B,
    0x1930,0x193B, 0x1A17,0x1A1B, 0x1A55,0x1A5E, 0x1A60,0x1A7C, 0x1A7F,0x1A7F, 0x1AB0,0x1ACE,
    0x1B00,0x1B04, 0x1B34,0x1B44, 0x1B6B,0x1B73, 0x1B80,0x1B82, 0x1BA1,0x1BAD, 0x1BE6,0x1BF3,
    0x1C24,0x1C37, 0x1CD0,0x1CD2, 0x1CD4,0x1CE8, 0x1CED,0x1CED, 0x1CF4,0x1CF4, 0x1CF7,0x1CF9,
    0x1DC0,0x1DFF, 0x200C,0x200D, 0x20D0,0x20F0, 0x2CEF,0x2CF1, 0x2D7F,0x2D7F, 0x2DE0,0x2DFF,
    0x302A,0x302F, 0x3099,0x309A, 0xA66F,0xA672, 0xA674,0xA67D, 0xA69E,0xA69F, 0xA6F0,0xA6F1,
    0xA802,0xA802, 0xA806,0xA806, 0xA80B,0xA80B, 0xA823,0xA827, 0xA82C,0xA82C, 0xA880,0xA881,
    0xA8B4,0xA8C5, 0xA8E0,0xA8F1, 0xA8FF,0xA8FF, 0xA926,0xA92D, 0xA947,0xA953, 0xA980,0xA983,
    0xA9B3,0xA9C0, 0xA9E5,0xA9E5, 0xAA29,0xAA36, 0xAA43,0xAA43, 0xAA4C,0xAA4D, 0xAA7B,0xAA7D,
    0xAAB0,0xAAB0, 0xAAB2,0xAAB4, 0xAAB7,0xAAB8, 0xAABE,0xAABF, 0xAAC1,0xAAC1, 0xAAEB,0xAAEF,
    0xAAF5,0xAAF6, 0xABE3,0xABEA, 0xABEC,0xABED, 0xFB1E,0xFB1E, 0xFE00,0xFE0F, 0xFE20,0xFE2F,
    0xFF9E,0xFF9F, 0x101FD,0x101FD, 0x102E0,0x102E0, 0x10376,0x1037A, 0x10A01,0x10A03,
    0x10A05,0x10A06, 0x10A0C,0x10A0F, 0x10A38,0x10A3A, 0x10A3F,0x10A3F, 0x10AE5,0x10AE6,
    0x10D24,0x10D27, 0x10EAB,0x10EAC, 0x10F46,0x10F50, 0x10F82,0x10F85, 0x11000,0x11002,
    0x11038,0x11046, 0x11070,0x11070, 0x11073,0x11074, 0x1107F,0x11082, 0x110B0,0x110BA,
    0x110C2,0x110C2, 0x11100,0x11102, 0x11127,0x11134, 0x11145,0x11146, 0x11173,0x11173,
    0x11180,0x11182, 0x111B3,0x111C0, 0x111C9,0x111CC, 0x111CE,0x111CF, 0x1122C,0x11237,
    0x1123E,0x1123E, 0x112DF,0x112EA, 0x11300,0x11303, 0x1133B,0x1133C, 0x1133E,0x11344,
    0x11347,0x11348, 0x1134B,0x1134D, 0x11357,0x11357, 0x11362,0x11363, 0x11366,0x1136C,
    0x11370,0x11374, 0x11435,0x11446, 0x1145E,0x1145E, 0x114B0,0x114C3, 0x115AF,0x115B5,
    0x115B8,0x115C0, 0x115DC,0x115DD, 0x11630,0x11640, 0x116AB,0x116B7, 0x1171D,0x1172B,
    0x1182C,0x1183A, 0x11930,0x11935, 0x11937,0x11938, 0x1193B,0x1193E, 0x11940,0x11940,
    0x11942,0x11943, 0x119D1,0x119D7, 0x119DA,0x119E0, 0x119E4,0x119E4, 0x11A01,0x11A0A,
    0x11A33,0x11A39, 0x11A3B,0x11A3E, 0x11A47,0x11A47, 0x11A51,0x11A5B, 0x11A8A,0x11A99,
    0x11C2F,0x11C36, 0x11C38,0x11C3F, 0x11C92,0x11CA7, 0x11CA9,0x11CB6, 0x11D31,0x11D36,
    0x11D3A,0x11D3A, 0x11D3C,0x11D3D, 0x11D3F,0x11D45, 0x11D47,0x11D47, 0x11D8A,0x11D8E,
    0x11D90,0x11D91, 0x11D93,0x11D97, 0x11EF3,0x11EF6, 0x16AF0,0x16AF4, 0x16B30,0x16B36,
    0x16F4F,0x16F4F, 0x16F51,0x16F87, 0x16F8F,0x16F92, 0x16FE4,0x16FE4, 0x16FF0,0x16FF1,
    0x1BC9D,0x1BC9E, 0x1CF00,0x1CF2D, 0x1CF30,0x1CF46, 0x1D165,0x1D169, 0x1D16D,0x1D172,
    0x1D17B,0x1D182, 0x1D185,0x1D18B, 0x1D1AA,0x1D1AD, 0x1D242,0x1D244, 0x1DA00,0x1DA36,
    0x1DA3B,0x1DA6C, 0x1DA75,0x1DA75, 0x1DA84,0x1DA84, 0x1DA9B,0x1DA9F, 0x1DAA1,0x1DAAF,
    0x1E000,0x1E006, 0x1E008,0x1E018, 0x1E01B,0x1E021, 0x1E023,0x1E024, 0x1E026,0x1E02A,
    0x1E130,0x1E136, 0x1E2AE,0x1E2AE, 0x1E2EC,0x1E2EF, 0x1E8D0,0x1E8D6, 0x1E944,0x1E94A,
    0x1F3FB,0x1F3FF, 0xE0020,0xE007F, 0xE0100,0xE01EF,
};

static int kosmos2__is_grapheme_extend(uint32_t c) {
    size_t lo = 0, hi = sizeof kosmos2__grapheme_extend / sizeof kosmos2__grapheme_extend[0] / 2;
    if (c < 0x300) return 0;
    while (lo < hi) { /* binary search over the ranges */
        size_t mid = (lo + hi) / 2;
        if (c < kosmos2__grapheme_extend[2 * mid]) hi = mid;
        else if (c > kosmos2__grapheme_extend[2 * mid + 1]) lo = mid + 1;
        else return 1;
    }
    return 0;
}
/* Grapheme_Cluster_Break=Control (approximately: Cc, Zl, Zp and the Cf format characters that
 * are not ZWNJ/ZWJ, prepend marks or tags). Nothing joins to or after them. */
static int kosmos2__is_grapheme_control(uint32_t c) {
    return c < 0x20 || (c >= 0x7F && c <= 0x9F) || c == 0xAD || c == 0x61C || c == 0x180E ||
           c == 0x200B || c == 0x200E || c == 0x200F || (c >= 0x2028 && c <= 0x202E) ||
           (c >= 0x2060 && c <= 0x206F) || c == 0xFEFF || (c >= 0xFFF0 && c <= 0xFFFB) ||
           (c >= 0x13430 && c <= 0x1343F) || (c >= 0x1BCA0 && c <= 0x1BCA3) ||
           (c >= 0x1D173 && c <= 0x1D17A) || c == 0xE0000 || c == 0xE0001 ||
           (c >= 0xE0080 && c <= 0xE00FF) || (c >= 0xE01F0 && c <= 0xE0FFF);
}
/* Grapheme_Cluster_Break=Prepend (joins with the character after it). */
static int kosmos2__is_grapheme_prepend(uint32_t c) {
    return (c >= 0x600 && c <= 0x605) || c == 0x6DD || c == 0x70F || c == 0x890 || c == 0x891 ||
           c == 0x8E2 || c == 0xD4E || c == 0x110BD || c == 0x110CD || c == 0x111C2 ||
           c == 0x111C3 || c == 0x1193F || c == 0x11941 || c == 0x11A3A ||
           (c >= 0x11A84 && c <= 0x11A89) || c == 0x11D46;
}

/* Byte length of the grapheme cluster starting at s[0] (s[0..n) valid UTF-8, n >= 1).
 * Simplified UAX #29: CR LF; Prepend x any; any x (Extend | SpacingMark | ZWJ); never across
 * a Control. Hangul and emoji sequences are not joined: the charsmap treats clusters of 6 or
 * more bytes character by character, and those are always that long. */
static size_t kosmos2__grapheme_len(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    uint32_t c, next;
    size_t i;
    int l = kosmos2__utf8_decode(u, n, &c);
    i = (size_t)l;
    if (c == '\r') return (n > 1 && u[1] == '\n') ? 2 : 1;
    if (kosmos2__is_grapheme_control(c)) return i;
    while (i < n) {
        int l2 = kosmos2__utf8_decode(u + i, n - i, &next);
        if (kosmos2__is_grapheme_control(next)) break;
        if (!kosmos2__is_grapheme_extend(next) && !kosmos2__is_grapheme_prepend(c)) break;
        c = next;
        i += (size_t)l2;
    }
    return i;
}

/* ------------------------------------------------------------------------------------------
 *  Hash map uint64 -> (int32, int32)  (trie edges, BPE merges)
 * ------------------------------------------------------------------------------------------ */
typedef struct {
    uint64_t key;   /* key + 1; 0 = empty slot */
    int32_t v0, v1; /* the two values */
} kosmos2__map_entry;

typedef struct {
    kosmos2__map_entry *e; /* [cap] open addressing, linear probing (one cache line per probe) */
    size_t cap, n;         /* cap is a power of two, kept at most half full */
    int bits;
} kosmos2__map;

static size_t kosmos2__map_slot(const kosmos2__map *m, uint64_t key) {
    return (size_t)((key * 0x9E3779B97F4A7C15ull) >> (64 - m->bits));
}

static void kosmos2__map_free(kosmos2__map *m) {
    KOSMOS2_FREE(m->e);
    memset(m, 0, sizeof *m);
}

/* Find `key`; returns 1 and the values if present. */
static int kosmos2__map_get(const kosmos2__map *m, uint64_t key, int32_t *v0, int32_t *v1) {
    size_t i;
    if (!m->cap) return 0;
    i = kosmos2__map_slot(m, key);
    for (;;) {
        const kosmos2__map_entry *e = &m->e[i];
        if (e->key == key + 1) {
            if (v0) *v0 = e->v0;
            if (v1) *v1 = e->v1;
            return 1;
        }
        if (e->key == 0) return 0;
        i = (i + 1) & (m->cap - 1);
    }
}

static int kosmos2__map_put(kosmos2__map *m, uint64_t key, int32_t v0, int32_t v1);

static int kosmos2__map_grow(kosmos2__map *m) {
    kosmos2__map big;
    size_t i;
    memset(&big, 0, sizeof big);
    big.bits = m->bits ? m->bits + 1 : 10;
    if (big.bits > 40) return kosmos2__fail(KOSMOS2_E_LIMIT, "hash table too large");
    big.cap = (size_t)1 << big.bits;
    big.e = (kosmos2__map_entry *)kosmos2__calloc(big.cap, sizeof(kosmos2__map_entry));
    if (!big.e) return KOSMOS2_E_NOMEM;
    for (i = 0; i < m->cap; i++)
        if (m->e[i].key) kosmos2__map_put(&big, m->e[i].key - 1, m->e[i].v0, m->e[i].v1);
    kosmos2__map_free(m);
    *m = big;
    return 0;
}

/* Insert or overwrite. */
static int kosmos2__map_put(kosmos2__map *m, uint64_t key, int32_t v0, int32_t v1) {
    size_t i;
    if ((m->n + 1) * 2 > m->cap) {
        int rc = kosmos2__map_grow(m);
        if (rc) return rc;
    }
    i = kosmos2__map_slot(m, key);
    while (m->e[i].key != 0 && m->e[i].key != key + 1) i = (i + 1) & (m->cap - 1);
    if (m->e[i].key == 0) m->n++;
    m->e[i].key = key + 1;
    m->e[i].v0 = v0;
    m->e[i].v1 = v1;
    return 0;
}

/* ------------------------------------------------------------------------------------------
 *  Byte trie: string -> id (model vocabulary, added tokens). Node 0 is the root; an edge
 *  (node, byte) -> child lives in a hash map keyed node << 8 | byte.
 * ------------------------------------------------------------------------------------------ */
typedef struct {
    kosmos2__map edges;
    int32_t *value;            /* [n_nodes] id ending at the node, -1 if none */
    size_t n_nodes, cap_nodes;
    int32_t root[256];         /* children of the root (every lookup starts there), 0 = none */
} kosmos2__trie;

static void kosmos2__trie_free(kosmos2__trie *t) {
    kosmos2__map_free(&t->edges);
    KOSMOS2_FREE(t->value);
    memset(t, 0, sizeof *t);
}

static int kosmos2__trie_new_node(kosmos2__trie *t, int32_t *node) {
    if (t->n_nodes == t->cap_nodes) {
        size_t cap = t->cap_nodes ? t->cap_nodes * 2 : 1024;
        int32_t *nv;
        if (cap > (size_t)INT32_MAX) return kosmos2__fail(KOSMOS2_E_LIMIT, "vocabulary trie too large");
        nv = (int32_t *)KOSMOS2_REALLOC(t->value, cap * sizeof(int32_t));
        if (!nv) return kosmos2__fail(KOSMOS2_E_NOMEM, "out of memory (vocabulary trie)");
        t->value = nv;
        t->cap_nodes = cap;
    }
    t->value[t->n_nodes] = -1;
    *node = (int32_t)t->n_nodes++;
    return 0;
}

/* The child of `node` along `byte`, or -1. */
static int32_t kosmos2__trie_step(const kosmos2__trie *t, int32_t node, unsigned char byte) {
    int32_t child;
    if (node == 0) return t->root[byte] > 0 ? t->root[byte] : -1;
    if (!kosmos2__map_get(&t->edges, ((uint64_t)(uint32_t)node << 8) | byte, &child, NULL)) return -1;
    return child;
}

/* Map s[0..n) to id (a later insert of the same string overwrites, like a Rust HashMap). */
static int kosmos2__trie_insert(kosmos2__trie *t, const char *s, size_t n, int32_t id) {
    int32_t node = 0;
    size_t i;
    int rc;
    if (!t->n_nodes && (rc = kosmos2__trie_new_node(t, &node)) != 0) return rc;
    for (i = 0; i < n; i++) {
        int32_t child = kosmos2__trie_step(t, node, (unsigned char)s[i]);
        if (child < 0) {
            if ((rc = kosmos2__trie_new_node(t, &child)) != 0) return rc;
            if (node == 0) t->root[(unsigned char)s[i]] = child;
            rc = kosmos2__map_put(&t->edges, ((uint64_t)(uint32_t)node << 8) | (unsigned char)s[i], child, 0);
            if (rc) return rc;
        }
        node = child;
    }
    t->value[node] = id;
    return 0;
}

/* The id of exactly s[0..n), or -1. */
static int32_t kosmos2__trie_find(const kosmos2__trie *t, const char *s, size_t n) {
    int32_t node = 0;
    size_t i;
    if (!t->n_nodes) return -1;
    for (i = 0; i < n && node >= 0; i++) node = kosmos2__trie_step(t, node, (unsigned char)s[i]);
    return node >= 0 ? t->value[node] : -1;
}

/* ------------------------------------------------------------------------------------------
 *  The tokenizer object
 * ------------------------------------------------------------------------------------------ */
enum { KOSMOS2__SPM_UNIGRAM = 1, KOSMOS2__SPM_BPE = 2 };
enum { KOSMOS2__TOK_SPECIAL = 1, KOSMOS2__TOK_ADDED = 2, KOSMOS2__TOK_LSTRIP = 4 };

struct kosmos2_tokenizer {
    int model_type;          /* KOSMOS2__SPM_UNIGRAM or KOSMOS2__SPM_BPE (trainer_spec.model_type) */
    int n_pieces;            /* SentencePiece pieces in the file (64000) */
    int n_model;             /* ids known to the model: n_pieces + 2 (fairseq specials, <mask>) */
    int n_vocab;             /* n_model + 1035 Kosmos-2 tags */
    int unk_id;              /* 3 */
    char *blob;              /* all token strings, NUL-separated */
    const char **text;       /* [n_vocab] token strings (pointers into blob) */
    uint32_t *text_len;      /* [n_vocab] their byte lengths */
    double *score;           /* [n_model] unigram log-probabilities (0 for specials and <mask>) */
    double unk_score;        /* unigram score of an unknown character: min score - 10 */
    uint8_t *flags;          /* [n_vocab] KOSMOS2__TOK_* bits */
    uint8_t added_first[256];/* 1 for bytes that start some added token */
    kosmos2__trie vocab;     /* model vocabulary: string -> id (last duplicate wins) */
    kosmos2__trie added;     /* added tokens (specials, <mask>, tags): string -> id */
    kosmos2__map merges;     /* BPE: (left id << 32 | right id) -> (rank, merged id) */
    /* normaliser: precompiled charsmap = darts-clone double array + replacement strings */
    uint32_t *darts;         /* [n_darts] double-array units */
    size_t n_darts;
    char *norm_strings;      /* [n_norm_strings] NUL-separated replacement strings */
    size_t n_norm_strings;
    char norm_name[64];      /* normalizer_spec.name, informational ("nmt_nfkc") */
    int32_t ascii_rule[128]; /* charsmap result for each ASCII character: offset into
                                norm_strings, -1 = no rule (a cache of kosmos2__charsmap_lookup) */
    uint32_t ascii_rule_len[128];
};

void kosmos2_tokenizer_free(kosmos2_tokenizer *tok) {
    if (!tok) return;
    KOSMOS2_FREE(tok->blob);
    KOSMOS2_FREE((void *)tok->text);
    KOSMOS2_FREE(tok->text_len);
    KOSMOS2_FREE(tok->score);
    KOSMOS2_FREE(tok->flags);
    kosmos2__trie_free(&tok->vocab);
    kosmos2__trie_free(&tok->added);
    kosmos2__map_free(&tok->merges);
    KOSMOS2_FREE(tok->darts);
    KOSMOS2_FREE(tok->norm_strings);
    KOSMOS2_FREE(tok);
}

int kosmos2_tokenizer_vocab_size(const kosmos2_tokenizer *tok) { return tok ? tok->n_vocab : 0; }

const char *kosmos2_token_text(const kosmos2_tokenizer *tok, int32_t id) {
    if (!tok || id < 0 || id >= tok->n_vocab) return NULL;
    return tok->text[id];
}

int32_t kosmos2_token_id(const kosmos2_tokenizer *tok, const char *token_text) {
    int32_t id;
    if (!tok || !token_text) return -1;
    id = kosmos2__trie_find(&tok->added, token_text, strlen(token_text));
    return id >= 0 ? id : kosmos2__trie_find(&tok->vocab, token_text, strlen(token_text));
}

int kosmos2_token_is_special(const kosmos2_tokenizer *tok, int32_t id) {
    if (!tok || id < 0 || id >= tok->n_vocab) return 0;
    return (tok->flags[id] & KOSMOS2__TOK_SPECIAL) != 0;
}

/* ------------------------------------------------------------------------------------------
 *  Protobuf reader (the subset of the wire format that sentencepiece_model.proto uses)
 * ------------------------------------------------------------------------------------------ */
typedef struct {
    const unsigned char *base; /* start of the whole file, for error offsets */
    const unsigned char *p;    /* read position */
    const unsigned char *end;  /* end of the current message */
} kosmos2__pb;

typedef struct {
    uint32_t field, wire;       /* field number, wire type (0 varint, 1 fixed64, 2 bytes, 5 fixed32) */
    uint64_t v;                 /* value of varint / fixed fields */
    const unsigned char *data;  /* wire type 2: the bytes */
    size_t len;
    size_t offset;              /* file offset of the field key, for messages */
} kosmos2__pb_field;

static int kosmos2__pb_varint(kosmos2__pb *r, uint64_t *v) {
    uint64_t x = 0;
    int shift = 0;
    size_t at = (size_t)(r->p - r->base);
    while (r->p < r->end) {
        unsigned char b = *r->p++;
        if (shift == 63 && b > 1)
            return kosmos2__fail(KOSMOS2_E_FORMAT, "protobuf: varint too long at byte %zu", at);
        x |= (uint64_t)(b & 0x7F) << shift;
        if (!(b & 0x80)) { *v = x; return 0; }
        shift += 7;
        if (shift > 63) return kosmos2__fail(KOSMOS2_E_FORMAT, "protobuf: varint too long at byte %zu", at);
    }
    return kosmos2__fail(KOSMOS2_E_FORMAT, "protobuf: truncated varint at byte %zu", at);
}

/* Read the next field of the current message into *f. Returns 1 for a field, 0 at the end of
 * the message, or a negative error code. */
static int kosmos2__pb_next(kosmos2__pb *r, kosmos2__pb_field *f) {
    uint64_t key;
    int rc, i;
    if (r->p >= r->end) return 0;
    f->offset = (size_t)(r->p - r->base);
    if ((rc = kosmos2__pb_varint(r, &key)) != 0) return rc;
    f->field = (uint32_t)(key >> 3);
    f->wire = (uint32_t)(key & 7);
    f->data = NULL;
    f->len = 0;
    f->v = 0;
    if (key >> 3 == 0 || key >> 3 > 0x1FFFFFFF)
        return kosmos2__fail(KOSMOS2_E_FORMAT, "protobuf: bad field number at byte %zu", f->offset);
    switch (f->wire) {
    case 0: return (rc = kosmos2__pb_varint(r, &f->v)) != 0 ? rc : 1;
    case 1:
    case 5: {
        int n = f->wire == 1 ? 8 : 4;
        if (r->end - r->p < n)
            return kosmos2__fail(KOSMOS2_E_FORMAT, "protobuf: truncated fixed%d at byte %zu", n * 8, f->offset);
        for (i = n - 1; i >= 0; i--) f->v = (f->v << 8) | r->p[i];
        r->p += n;
        return 1;
    }
    case 2: {
        uint64_t len;
        if ((rc = kosmos2__pb_varint(r, &len)) != 0) return rc;
        if (len > (uint64_t)(r->end - r->p))
            return kosmos2__fail(KOSMOS2_E_FORMAT, "protobuf: field %u at byte %zu: length %llu past the end",
                                 f->field, f->offset, (unsigned long long)len);
        f->data = r->p;
        f->len = (size_t)len;
        r->p += len;
        return 1;
    }
    default:
        return kosmos2__fail(KOSMOS2_E_FORMAT, "protobuf: unsupported wire type %u at byte %zu", f->wire, f->offset);
    }
}

/* A reader over the bytes of a length-delimited field (a sub-message). */
static kosmos2__pb kosmos2__pb_sub(const kosmos2__pb *parent, const kosmos2__pb_field *f) {
    kosmos2__pb r;
    r.base = parent->base;
    r.p = f->data;
    r.end = f->data + f->len;
    return r;
}

/* Check that field `f` has wire type `wire`. */
static int kosmos2__pb_want(const kosmos2__pb_field *f, uint32_t wire, const char *what) {
    if (f->wire == wire) return 0;
    return kosmos2__fail(KOSMOS2_E_FORMAT, "protobuf: %s at byte %zu has wire type %u, expected %u", what,
                         f->offset, f->wire, wire);
}

/* ------------------------------------------------------------------------------------------
 *  Loading: ModelProto { pieces = 1, trainer_spec = 2, normalizer_spec = 3 }
 * ------------------------------------------------------------------------------------------ */
typedef struct {
    const unsigned char *piece; /* UTF-8 bytes in the file */
    size_t len;
    float score;
} kosmos2__spm_piece;

/* SentencePiece { piece = 1 (string), score = 2 (float), type = 3 (enum) } */
static int kosmos2__spm_read_piece(const kosmos2__pb *r, const kosmos2__pb_field *pf, kosmos2__spm_piece *out) {
    kosmos2__pb sub = kosmos2__pb_sub(r, pf);
    kosmos2__pb_field f;
    int rc, have_piece = 0;
    out->score = 0.0f;
    while ((rc = kosmos2__pb_next(&sub, &f)) > 0) {
        if (f.field == 1) {
            if ((rc = kosmos2__pb_want(&f, 2, "piece text")) != 0) return rc;
            out->piece = f.data;
            out->len = f.len;
            have_piece = 1;
        } else if (f.field == 2) {
            uint32_t bits = (uint32_t)f.v;
            if ((rc = kosmos2__pb_want(&f, 5, "piece score")) != 0) return rc;
            memcpy(&out->score, &bits, sizeof bits);
            if (!(out->score == out->score) || out->score > FLT_MAX || out->score < -FLT_MAX)
                return kosmos2__fail(KOSMOS2_E_FORMAT, "piece at byte %zu: score is not finite", pf->offset);
        }
    }
    if (rc < 0) return rc;
    if (!have_piece || out->len == 0)
        return kosmos2__fail(KOSMOS2_E_FORMAT, "piece at byte %zu has no text", pf->offset);
    if (out->len > KOSMOS2__TOK_MAX_PIECE)
        return kosmos2__fail(KOSMOS2_E_FORMAT, "piece at byte %zu is %zu bytes long (limit %d)", pf->offset, out->len,
                             KOSMOS2__TOK_MAX_PIECE);
    if (memchr(out->piece, 0, out->len) || kosmos2__utf8_check((const char *)out->piece, out->len))
        return kosmos2__fail(KOSMOS2_E_FORMAT, "piece at byte %zu is not valid UTF-8 text", pf->offset);
    return 0;
}

/* TrainerSpec: model_type = 3 (1 UNIGRAM, 2 BPE, 3 WORD, 4 CHAR; default UNIGRAM). */
static int kosmos2__spm_read_trainer(const kosmos2__pb *r, const kosmos2__pb_field *tf, int *model_type) {
    kosmos2__pb sub = kosmos2__pb_sub(r, tf);
    kosmos2__pb_field f;
    int rc;
    *model_type = KOSMOS2__SPM_UNIGRAM;
    while ((rc = kosmos2__pb_next(&sub, &f)) > 0) {
        if (f.field == 3) {
            if ((rc = kosmos2__pb_want(&f, 0, "trainer_spec.model_type")) != 0) return rc;
            *model_type = f.v > 100 ? 100 : (int)f.v;
        }
    }
    return rc;
}

/* NormalizerSpec: name = 1, precompiled_charsmap = 2. */
static int kosmos2__spm_read_normalizer(const kosmos2__pb *r, const kosmos2__pb_field *nf, kosmos2_tokenizer *tok,
                                        const unsigned char **charsmap, size_t *charsmap_len) {
    kosmos2__pb sub = kosmos2__pb_sub(r, nf);
    kosmos2__pb_field f;
    int rc;
    while ((rc = kosmos2__pb_next(&sub, &f)) > 0) {
        if (f.field == 1) {
            size_t n;
            if ((rc = kosmos2__pb_want(&f, 2, "normalizer_spec.name")) != 0) return rc;
            n = f.len < sizeof tok->norm_name - 1 ? f.len : sizeof tok->norm_name - 1;
            memcpy(tok->norm_name, f.data, n);
            tok->norm_name[n] = 0;
        } else if (f.field == 2) {
            if ((rc = kosmos2__pb_want(&f, 2, "normalizer_spec.precompiled_charsmap")) != 0) return rc;
            *charsmap = f.data;
            *charsmap_len = f.len;
        }
    }
    return rc;
}

/* The precompiled charsmap blob: uint32 LE trie size in bytes, the darts-clone units, then the
 * replacement strings. Copied so the tokenizer owns it. */
static int kosmos2__charsmap_load(kosmos2_tokenizer *tok, const unsigned char *p, size_t n) {
    uint32_t trie_bytes;
    size_t i;
    if (n == 0) return 0; /* no charsmap: identity normalisation */
    if (n < 4) return kosmos2__fail(KOSMOS2_E_FORMAT, "precompiled_charsmap: %zu bytes, too short", n);
    trie_bytes = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    if (trie_bytes % 4 != 0 || trie_bytes < 4 || trie_bytes > n - 4)
        return kosmos2__fail(KOSMOS2_E_FORMAT, "precompiled_charsmap: bad trie size %u (blob %zu bytes)", trie_bytes, n);
    tok->n_darts = trie_bytes / 4;
    tok->darts = (uint32_t *)kosmos2__calloc(tok->n_darts, sizeof(uint32_t));
    tok->n_norm_strings = n - 4 - trie_bytes;
    tok->norm_strings = (char *)kosmos2__alloc(tok->n_norm_strings + 1);
    if (!tok->darts || !tok->norm_strings) return KOSMOS2_E_NOMEM;
    for (i = 0; i < tok->n_darts; i++) {
        const unsigned char *u = p + 4 + 4 * i;
        tok->darts[i] = (uint32_t)u[0] | (uint32_t)u[1] << 8 | (uint32_t)u[2] << 16 | (uint32_t)u[3] << 24;
    }
    memcpy(tok->norm_strings, p + 4 + trie_bytes, tok->n_norm_strings);
    tok->norm_strings[tok->n_norm_strings] = 0;
    return 0;
}

/* Fill the id tables: fairseq specials, pieces 3.., <mask>, the Kosmos-2 tags. */
static int kosmos2__tok_build_vocab(kosmos2_tokenizer *tok, const kosmos2__spm_piece *pieces) {
    static const char *specials[4] = {"<s>", "<pad>", "</s>", "<unk>"};
    static const char *tags[KOSMOS2__TOK_N_TAGS] = {
        "</doc>", "<image>", "</image>", "</chunk>", "</line>", "<phrase>", "</phrase>", "<object>",
        "</object>", "</delimiter_of_multi_objects/>", "<grounding>"};
    size_t blob_size = 0, at = 0;
    int id, j, rc;
    double min_score = 0.0;
    tok->n_model = tok->n_pieces + 2;
    tok->n_vocab = tok->n_model + KOSMOS2__TOK_N_TAGS + KOSMOS2__TOK_N_PATCH;
    tok->unk_id = 3;
    /* sizes of all strings (+ NUL each) */
    for (j = 3; j < tok->n_pieces; j++) blob_size += pieces[j].len + 1;
    blob_size += 64 + 16 + 40 * KOSMOS2__TOK_N_TAGS + 20 * KOSMOS2__TOK_N_PATCH;
    tok->blob = (char *)kosmos2__alloc(blob_size);
    tok->text = (const char **)kosmos2__calloc((size_t)tok->n_vocab, sizeof(char *));
    tok->text_len = (uint32_t *)kosmos2__calloc((size_t)tok->n_vocab, sizeof(uint32_t));
    tok->score = (double *)kosmos2__calloc((size_t)tok->n_model, sizeof(double));
    tok->flags = (uint8_t *)kosmos2__calloc((size_t)tok->n_vocab, 1);
    if (!tok->blob || !tok->text || !tok->text_len || !tok->score || !tok->flags) return KOSMOS2_E_NOMEM;
    for (id = 0; id < tok->n_vocab; id++) {
        char tmp[32];
        const char *s;
        size_t len;
        if (id < 4) s = specials[id], len = strlen(s);
        else if (id < tok->n_model - 1) s = (const char *)pieces[id - 1].piece, len = pieces[id - 1].len;
        else if (id == tok->n_model - 1) s = "<mask>", len = 6;
        else if (id < tok->n_model + KOSMOS2__TOK_N_TAGS) s = tags[id - tok->n_model], len = strlen(s);
        else {
            len = (size_t)snprintf(tmp, sizeof tmp, "<patch_index_%04d>", id - tok->n_model - KOSMOS2__TOK_N_TAGS);
            s = tmp;
        }
        memcpy(tok->blob + at, s, len);
        tok->blob[at + len] = 0;
        tok->text[id] = tok->blob + at;
        tok->text_len[id] = (uint32_t)len;
        at += len + 1;
        if (id < tok->n_model) {
            tok->score[id] = (id >= 4 && id < tok->n_model - 1) ? (double)pieces[id - 1].score : 0.0;
            if (tok->score[id] < min_score) min_score = tok->score[id];
            if ((rc = kosmos2__trie_insert(&tok->vocab, s, len, id)) != 0) return rc;
        }
        if (id < 4 || id >= tok->n_model - 1) { /* added tokens */
            tok->flags[id] = KOSMOS2__TOK_ADDED;
            if (id < tok->n_model) tok->flags[id] |= KOSMOS2__TOK_SPECIAL;
            if (id >= tok->n_model - 1) tok->flags[id] |= KOSMOS2__TOK_LSTRIP;
            if ((rc = kosmos2__trie_insert(&tok->added, s, len, id)) != 0) return rc;
            tok->added_first[(unsigned char)s[0]] = 1;
        }
    }
    tok->unk_score = min_score - 10.0;
    return 0;
}

/* BPE merges as transformers' SentencePieceExtractor lists them: for every piece in file order,
 * every split into two pieces (at character boundaries) that both exist, sorted by the file
 * indices of (left, right); rank = position in that list. Keyed by model ids. */
static int kosmos2__tok_build_merges(kosmos2_tokenizer *tok, const kosmos2__spm_piece *pieces) {
    kosmos2__trie spm; /* piece text -> file index (the extractor's dict: last duplicate wins) */
    int32_t rank = 0;
    int j, rc = 0;
    typedef struct { int32_t l, r; } kosmos2__pair; /* (left, right) file indices */
    kosmos2__pair *local = NULL;
    size_t cap_local = 0;
    memset(&spm, 0, sizeof spm);
    for (j = 0; j < tok->n_pieces && !rc; j++) rc = kosmos2__trie_insert(&spm, (const char *)pieces[j].piece, pieces[j].len, j);
    for (j = 0; j < tok->n_pieces && !rc; j++) {
        const char *s = (const char *)pieces[j].piece;
        size_t len = pieces[j].len, cut, n_local = 0, a, b;
        int32_t merged_id;
        /* the merged piece's model id (the converter's vocab: pieces 0..2 are replaced) */
        merged_id = kosmos2__trie_find(&tok->vocab, s, len);
        for (cut = (size_t)kosmos2__utf8_len((unsigned char)s[0]); cut < len;
             cut += (size_t)kosmos2__utf8_len((unsigned char)s[cut])) {
            int32_t l = kosmos2__trie_find(&spm, s, cut), r = kosmos2__trie_find(&spm, s + cut, len - cut);
            if (l < 0 || r < 0) continue;
            if (n_local == cap_local) {
                size_t nc = cap_local ? cap_local * 2 : 16;
                kosmos2__pair *np = (kosmos2__pair *)KOSMOS2_REALLOC(local, nc * sizeof(kosmos2__pair));
                if (!np) { rc = kosmos2__fail(KOSMOS2_E_NOMEM, "out of memory (BPE merges)"); break; }
                local = np;
                cap_local = nc;
            }
            local[n_local].l = l;
            local[n_local].r = r;
            n_local++;
        }
        /* insertion sort by (left index, right index): a handful of entries */
        for (a = 1; a < n_local; a++)
            for (b = a; b > 0 && (local[b].l < local[b - 1].l || (local[b].l == local[b - 1].l && local[b].r < local[b - 1].r)); b--) {
                kosmos2__pair t = local[b]; local[b] = local[b - 1]; local[b - 1] = t;
            }
        for (a = 0; a < n_local && !rc; a++) {
            const kosmos2__spm_piece *pl = &pieces[local[a].l], *pr = &pieces[local[a].r];
            int32_t lid = kosmos2__trie_find(&tok->vocab, (const char *)pl->piece, pl->len);
            int32_t rid = kosmos2__trie_find(&tok->vocab, (const char *)pr->piece, pr->len);
            if (lid < 0 || rid < 0 || merged_id < 0) continue; /* cannot happen for a sane file */
            rc = kosmos2__map_put(&tok->merges, (uint64_t)(uint32_t)lid << 32 | (uint32_t)rid, rank++, merged_id);
        }
    }
    KOSMOS2_FREE(local);
    kosmos2__trie_free(&spm);
    return rc;
}

static void kosmos2__charsmap_cache_ascii(kosmos2_tokenizer *tok); /* in the normaliser below */

int kosmos2_tokenizer_load_memory(const void *data, size_t size, kosmos2_tokenizer **out) {
    kosmos2__pb r;
    kosmos2__pb_field f;
    kosmos2_tokenizer *tok;
    kosmos2__spm_piece *pieces = NULL;
    const unsigned char *charsmap = NULL;
    size_t charsmap_len = 0, n_pieces = 0, k = 0;
    int rc;
    if (!out) return kosmos2__fail(KOSMOS2_E_INVALID, "kosmos2_tokenizer_load_memory: out is NULL");
    *out = NULL;
    if (!data && size) return kosmos2__fail(KOSMOS2_E_INVALID, "kosmos2_tokenizer_load_memory: data is NULL");
    if (size > KOSMOS2__TOK_MAX_FILE) return kosmos2__fail(KOSMOS2_E_LIMIT, "SentencePiece model of %zu bytes is too large", size);
    tok = (kosmos2_tokenizer *)kosmos2__calloc(1, sizeof *tok);
    if (!tok) return KOSMOS2_E_NOMEM;
    tok->model_type = KOSMOS2__SPM_UNIGRAM;
    /* pass 1: count pieces, read the specs */
    r.base = r.p = (const unsigned char *)data;
    r.end = r.base + size;
    while ((rc = kosmos2__pb_next(&r, &f)) > 0) {
        if (f.field == 1) {
            if ((rc = kosmos2__pb_want(&f, 2, "ModelProto.pieces")) != 0) break;
            n_pieces++;
        } else if (f.field == 2) {
            if ((rc = kosmos2__pb_want(&f, 2, "ModelProto.trainer_spec")) != 0) break;
            if ((rc = kosmos2__spm_read_trainer(&r, &f, &tok->model_type)) != 0) break;
        } else if (f.field == 3) {
            if ((rc = kosmos2__pb_want(&f, 2, "ModelProto.normalizer_spec")) != 0) break;
            if ((rc = kosmos2__spm_read_normalizer(&r, &f, tok, &charsmap, &charsmap_len)) != 0) break;
        }
    }
    if (rc < 0) goto fail;
    if (tok->model_type != KOSMOS2__SPM_UNIGRAM && tok->model_type != KOSMOS2__SPM_BPE) {
        rc = kosmos2__fail(KOSMOS2_E_UNSUPPORTED, "SentencePiece model_type %d (only 1 UNIGRAM and 2 BPE)", tok->model_type);
        goto fail;
    }
    if (n_pieces < 3 || n_pieces > KOSMOS2__TOK_MAX_PIECES) {
        rc = kosmos2__fail(KOSMOS2_E_FORMAT, "SentencePiece model has %zu pieces (expected 3..%d)", n_pieces, KOSMOS2__TOK_MAX_PIECES);
        goto fail;
    }
    /* pass 2: the pieces */
    pieces = (kosmos2__spm_piece *)kosmos2__calloc(n_pieces, sizeof *pieces);
    if (!pieces) { rc = KOSMOS2_E_NOMEM; goto fail; }
    r.p = r.base;
    while ((rc = kosmos2__pb_next(&r, &f)) > 0)
        if (f.field == 1 && (rc = kosmos2__spm_read_piece(&r, &f, &pieces[k++])) != 0) break;
    if (rc < 0) goto fail;
    tok->n_pieces = (int)n_pieces;
    if ((rc = kosmos2__charsmap_load(tok, charsmap, charsmap_len)) != 0) goto fail;
    kosmos2__charsmap_cache_ascii(tok);
    if ((rc = kosmos2__tok_build_vocab(tok, pieces)) != 0) goto fail;
    if (tok->model_type == KOSMOS2__SPM_BPE && (rc = kosmos2__tok_build_merges(tok, pieces)) != 0) goto fail;
    KOSMOS2_FREE(pieces);
    *out = tok;
    return 0;
fail:
    KOSMOS2_FREE(pieces);
    kosmos2_tokenizer_free(tok);
    return rc ? rc : KOSMOS2_E_FORMAT;
}

int kosmos2_tokenizer_load_file(const char *spm_model_path, kosmos2_tokenizer **out) {
    FILE *fp;
    long n;
    unsigned char *buf;
    int rc;
    if (!out || !spm_model_path) return kosmos2__fail(KOSMOS2_E_INVALID, "kosmos2_tokenizer_load_file: NULL argument");
    *out = NULL;
    fp = fopen(spm_model_path, "rb");
    if (!fp) return kosmos2__fail(KOSMOS2_E_IO, "%s: cannot open: %s", spm_model_path, strerror(errno));
    if (fseek(fp, 0, SEEK_END) != 0 || (n = ftell(fp)) < 0 || fseek(fp, 0, SEEK_SET) != 0) {
        fclose(fp);
        return kosmos2__fail(KOSMOS2_E_IO, "%s: cannot determine the size", spm_model_path);
    }
    if ((unsigned long)n > KOSMOS2__TOK_MAX_FILE) {
        fclose(fp);
        return kosmos2__fail(KOSMOS2_E_LIMIT, "%s: %ld bytes, too large for a SentencePiece model", spm_model_path, n);
    }
    buf = (unsigned char *)kosmos2__alloc((size_t)n);
    if (!buf) { fclose(fp); return KOSMOS2_E_NOMEM; }
    if (fread(buf, 1, (size_t)n, fp) != (size_t)n) {
        KOSMOS2_FREE(buf);
        fclose(fp);
        return kosmos2__fail(KOSMOS2_E_IO, "%s: read error", spm_model_path);
    }
    fclose(fp);
    rc = kosmos2_tokenizer_load_memory(buf, (size_t)n, out);
    KOSMOS2_FREE(buf);
    if (rc) return kosmos2__wrap(rc, "%s: ", spm_model_path);
    return 0;
}

/* ------------------------------------------------------------------------------------------
 *  Normaliser
 * ------------------------------------------------------------------------------------------ */
/* Darts-clone double-array unit fields. */
static uint32_t kosmos2__darts_offset(uint32_t u) { return (u >> 10) << ((u & (1u << 9)) >> 6); }
static uint32_t kosmos2__darts_label(uint32_t u) { return u & ((1u << 31) | 0xFF); }
static int kosmos2__darts_has_leaf(uint32_t u) { return (u >> 8) & 1; }
static uint32_t kosmos2__darts_value(uint32_t u) { return u & ((1u << 31) - 1); }

/* The replacement of the SHORTEST charsmap key that is a prefix of s[0..n) (this is what
 * tokenizers' Precompiled does: the first common-prefix-search result), or NULL. */
static const char *kosmos2__charsmap_lookup(const kosmos2_tokenizer *tok, const char *s, size_t n, size_t *out_len) {
    size_t pos = 0, i;
    uint32_t u;
    if (!tok->n_darts) return NULL;
    u = tok->darts[0];
    pos ^= kosmos2__darts_offset(u);
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == 0) return NULL;
        pos ^= c;
        if (pos >= tok->n_darts) return NULL;
        u = tok->darts[pos];
        if (kosmos2__darts_label(u) != c) return NULL;
        pos ^= kosmos2__darts_offset(u);
        if (pos >= tok->n_darts) return NULL;
        if (kosmos2__darts_has_leaf(u)) {
            size_t v = kosmos2__darts_value(tok->darts[pos]), e;
            if (v >= tok->n_norm_strings) return NULL; /* hostile value: treat as no rule */
            for (e = v; e < tok->n_norm_strings && tok->norm_strings[e]; e++) {}
            *out_len = e - v;
            return tok->norm_strings + v;
        }
    }
    return NULL;
}

/* Fill tok->ascii_rule: the lookups of the 127 ASCII characters, done once. */
static void kosmos2__charsmap_cache_ascii(kosmos2_tokenizer *tok) {
    int c;
    for (c = 0; c < 128; c++) {
        char ch = (char)c;
        size_t len = 0;
        const char *rep = c ? kosmos2__charsmap_lookup(tok, &ch, 1, &len) : NULL;
        tok->ascii_rule[c] = rep ? (int32_t)(rep - tok->norm_strings) : -1;
        tok->ascii_rule_len[c] = (uint32_t)len;
    }
}

/* Apply the charsmap to s[0..n) (valid UTF-8), appending to out. Grapheme clusters shorter than
 * 6 bytes are looked up whole first (a match replaces the whole cluster); otherwise each
 * character is looked up on its own. */
static int kosmos2__charsmap_apply(const kosmos2_tokenizer *tok, const char *s, size_t n, kosmos2__buf *out) {
    size_t i = 0;
    int rc;
    if (!tok->n_darts) return kosmos2__buf_put(out, s, n);
    while (i < n) {
        size_t g, j, rl;
        const char *rep;
        unsigned char c = (unsigned char)s[i];
        if (c < 0x80 && c != '\r' && (i + 1 == n || (unsigned char)s[i + 1] < 0x80)) {
            /* fast path: an ASCII character that is a grapheme cluster on its own */
            rc = tok->ascii_rule[c] >= 0 ? kosmos2__buf_put(out, tok->norm_strings + tok->ascii_rule[c], tok->ascii_rule_len[c])
                                         : kosmos2__buf_put(out, s + i, 1);
            if (rc) return rc;
            i++;
            continue;
        }
        g = kosmos2__grapheme_len(s + i, n - i);
        if (g < 6 && (rep = kosmos2__charsmap_lookup(tok, s + i, g, &rl)) != NULL) {
            if ((rc = kosmos2__buf_put(out, rep, rl)) != 0) return rc;
            i += g;
            continue;
        }
        for (j = i; j < i + g;) {
            size_t cl = (size_t)kosmos2__utf8_len((unsigned char)s[j]);
            rep = kosmos2__charsmap_lookup(tok, s + j, cl, &rl);
            rc = rep ? kosmos2__buf_put(out, rep, rl) : kosmos2__buf_put(out, s + j, cl);
            if (rc) return rc;
            j += cl;
        }
        i += g;
    }
    return 0;
}

/* Length of s[0..n) without trailing White_Space characters (valid UTF-8). */
static size_t kosmos2__rstrip_len(const char *s, size_t n) {
    while (n > 0) {
        size_t start = n - 1;
        uint32_t cp;
        while (start > 0 && ((unsigned char)s[start] & 0xC0) == 0x80) start--;
        if (!kosmos2__utf8_decode((const unsigned char *)s + start, n - start, &cp) || !kosmos2__is_white_space(cp)) break;
        n = start;
    }
    return n;
}

/* One text segment -> the Metaspace string: charsmap, strip right, every run of ' ' -> one "▁",
 * "▁" prepended when missing (empty stays empty). `tmp` is scratch. */
static int kosmos2__normalize_segment(const kosmos2_tokenizer *tok, const char *s, size_t n, kosmos2__buf *tmp,
                                      kosmos2__buf *out) {
    size_t i, len;
    int rc;
    tmp->n = 0;
    out->n = 0;
    if ((rc = kosmos2__buf_put(tmp, "", 0)) != 0 || (rc = kosmos2__buf_put(out, "", 0)) != 0) return rc;
    if ((rc = kosmos2__charsmap_apply(tok, s, n, tmp)) != 0) return rc;
    if ((i = kosmos2__utf8_check(tmp->p, tmp->n)) != 0) /* only a corrupt charsmap can do this */
        return kosmos2__fail(KOSMOS2_E_FORMAT, "precompiled_charsmap produced invalid UTF-8");
    len = kosmos2__rstrip_len(tmp->p, tmp->n);
    if (len == 0) return 0;
    if (!(len >= 3 && memcmp(tmp->p, "\xE2\x96\x81", 3) == 0) && tmp->p[0] != ' ')
        if ((rc = kosmos2__buf_put(out, "\xE2\x96\x81", 3)) != 0) return rc;
    for (i = 0; i < len;) {
        if (tmp->p[i] == ' ') {
            if ((rc = kosmos2__buf_put(out, "\xE2\x96\x81", 3)) != 0) return rc;
            while (i < len && tmp->p[i] == ' ') i++;
        } else {
            size_t j = i;
            while (j < len && tmp->p[j] != ' ') j++;
            if ((rc = kosmos2__buf_put(out, tmp->p + i, j - i)) != 0) return rc;
            i = j;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------
 *  Models: one Metaspace word ("▁" + characters up to the next "▁") -> ids appended to `out`
 * ------------------------------------------------------------------------------------------ */
typedef struct {
    double *best;     /* [n + 1] best path score ending at byte i */
    int32_t *from;    /* [n + 1] start byte of the last token of that path, -1 = unreached */
    int32_t *id;      /* [n + 1] id of that last token */
    size_t cap;
} kosmos2__lattice;

static int kosmos2__lattice_reserve(kosmos2__lattice *L, size_t n) {
    double *b;
    int32_t *f, *d;
    if (n + 1 <= L->cap) return 0;
    if (n >= (size_t)INT32_MAX) return kosmos2__fail(KOSMOS2_E_LIMIT, "word of %zu bytes is too long", n);
    b = (double *)KOSMOS2_REALLOC(L->best, (n + 1) * sizeof(double));
    if (b) L->best = b;
    f = (int32_t *)KOSMOS2_REALLOC(L->from, (n + 1) * sizeof(int32_t));
    if (f) L->from = f;
    d = (int32_t *)KOSMOS2_REALLOC(L->id, (n + 1) * sizeof(int32_t));
    if (d) L->id = d;
    if (!b || !f || !d) return kosmos2__fail(KOSMOS2_E_NOMEM, "out of memory (word of %zu bytes)", n);
    L->cap = n + 1;
    return 0;
}

/* Unigram: Viterbi over all vocabulary matches (ties keep the earlier candidate); a character
 * with no single-character piece gets an <unk> edge scored min - 10; runs of <unk> fuse. */
static int kosmos2__unigram_word(const kosmos2_tokenizer *tok, const char *w, size_t n, kosmos2__lattice *L,
                                 kosmos2__ids *out) {
    size_t i, start, first;
    int rc;
    if ((rc = kosmos2__lattice_reserve(L, n)) != 0) return rc;
    for (i = 0; i <= n; i++) L->from[i] = -1;
    L->best[0] = 0.0;
    for (start = 0; start < n;) {
        size_t clen = (size_t)kosmos2__utf8_len((unsigned char)w[start]), end;
        int32_t node = 0;
        int single = 0;
        double base = L->best[start];
        for (end = start; end < n;) {
            node = kosmos2__trie_step(&tok->vocab, node, (unsigned char)w[end++]);
            if (node < 0) break;
            if (tok->vocab.value[node] >= 0) {
                int32_t id = tok->vocab.value[node];
                double cand = base + tok->score[id];
                if (L->from[end] < 0 || cand > L->best[end]) {
                    L->best[end] = cand;
                    L->from[end] = (int32_t)start;
                    L->id[end] = id;
                }
                if (end - start == clen) single = 1;
            }
        }
        if (!single) {
            double cand = base + tok->unk_score;
            end = start + clen;
            if (L->from[end] < 0 || cand > L->best[end]) {
                L->best[end] = cand;
                L->from[end] = (int32_t)start;
                L->id[end] = tok->unk_id;
            }
        }
        start += clen;
    }
    /* backtrack into the tail of `out`, then reverse that tail */
    first = out->n;
    for (i = n; i > 0;) {
        int32_t id = L->id[i];
        size_t s = (size_t)L->from[i];
        if (!(id == tok->unk_id && out->n > first && out->p[out->n - 1] == tok->unk_id))
            if ((rc = kosmos2__ids_push(out, id)) != 0) return rc;
        i = s;
    }
    for (i = 0; i < (out->n - first) / 2; i++) {
        int32_t t = out->p[first + i];
        out->p[first + i] = out->p[out->n - 1 - i];
        out->p[out->n - 1 - i] = t;
    }
    return 0;
}

/* BPE word state: symbols in a linked list, a min-heap of candidate merges (rank, pos). */
typedef struct { int32_t id, prev, next, len; } kosmos2__bpe_sym;
typedef struct { int32_t rank, pos, new_id; } kosmos2__bpe_merge;

static int kosmos2__bpe_less(const kosmos2__bpe_merge *a, const kosmos2__bpe_merge *b) {
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}
static void kosmos2__bpe_heap_push(kosmos2__bpe_merge *h, size_t *n, kosmos2__bpe_merge m) {
    size_t i = (*n)++;
    h[i] = m;
    while (i > 0 && kosmos2__bpe_less(&h[i], &h[(i - 1) / 2])) {
        kosmos2__bpe_merge t = h[i]; h[i] = h[(i - 1) / 2]; h[(i - 1) / 2] = t;
        i = (i - 1) / 2;
    }
}
static kosmos2__bpe_merge kosmos2__bpe_heap_pop(kosmos2__bpe_merge *h, size_t *n) {
    kosmos2__bpe_merge top = h[0];
    size_t i = 0;
    h[0] = h[--(*n)];
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < *n && kosmos2__bpe_less(&h[l], &h[m])) m = l;
        if (r < *n && kosmos2__bpe_less(&h[r], &h[m])) m = r;
        if (m == i) break;
        { kosmos2__bpe_merge t = h[i]; h[i] = h[m]; h[m] = t; }
        i = m;
    }
    return top;
}

/* Push the merge of symbols a and a.next, if that pair has a rank. */
static void kosmos2__bpe_consider(const kosmos2_tokenizer *tok, const kosmos2__bpe_sym *sym, int32_t a,
                                  kosmos2__bpe_merge *heap, size_t *nh) {
    int32_t rank, new_id;
    int32_t b = sym[a].next;
    if (b < 0) return;
    if (kosmos2__map_get(&tok->merges, (uint64_t)(uint32_t)sym[a].id << 32 | (uint32_t)sym[b].id, &rank, &new_id)) {
        kosmos2__bpe_merge m;
        m.rank = rank;
        m.pos = a;
        m.new_id = new_id;
        kosmos2__bpe_heap_push(heap, nh, m);
    }
}

/* BPE: characters (unknown ones fused into one <unk>), then merges lowest rank first (leftmost
 * on ties), skipping stale heap entries exactly as tokenizers' Word::merge_all does. */
static int kosmos2__bpe_word(const kosmos2_tokenizer *tok, const char *w, size_t n, kosmos2__ids *out) {
    kosmos2__bpe_sym *sym;
    kosmos2__bpe_merge *heap;
    size_t i, ns = 0, nh = 0, heap_cap;
    int32_t a;
    int rc = 0;
    sym = (kosmos2__bpe_sym *)kosmos2__calloc(n + 1, sizeof *sym);
    heap_cap = 3 * (n + 1);
    heap = (kosmos2__bpe_merge *)kosmos2__calloc(heap_cap, sizeof *heap);
    if (!sym || !heap) { KOSMOS2_FREE(sym); KOSMOS2_FREE(heap); return KOSMOS2_E_NOMEM; }
    for (i = 0; i < n;) {
        size_t cl = (size_t)kosmos2__utf8_len((unsigned char)w[i]);
        int32_t id = kosmos2__trie_find(&tok->vocab, w + i, cl);
        if (id < 0 && ns > 0 && sym[ns - 1].id == tok->unk_id && sym[ns - 1].len < 0) {
            sym[ns - 1].len -= (int32_t)cl; /* negative len marks a fused unknown run */
        } else {
            sym[ns].id = id < 0 ? tok->unk_id : id;
            sym[ns].len = id < 0 ? -(int32_t)cl : (int32_t)cl;
            sym[ns].prev = (int32_t)ns - 1;
            sym[ns].next = -1;
            if (ns > 0) sym[ns - 1].next = (int32_t)ns;
            ns++;
        }
        i += cl;
    }
    for (i = 0; i < ns; i++) if (sym[i].len < 0) sym[i].len = -sym[i].len;
    for (a = 0; a + 1 < (int32_t)ns; a++) kosmos2__bpe_consider(tok, sym, a, heap, &nh);
    while (nh > 0) {
        kosmos2__bpe_merge top = kosmos2__bpe_heap_pop(heap, &nh);
        int32_t b, rank, new_id;
        if (sym[top.pos].len == 0 || sym[top.pos].next < 0) continue;
        b = sym[top.pos].next;
        if (!kosmos2__map_get(&tok->merges, (uint64_t)(uint32_t)sym[top.pos].id << 32 | (uint32_t)sym[b].id, &rank, &new_id) ||
            new_id != top.new_id)
            continue; /* stale entry */
        sym[top.pos].id = top.new_id;
        sym[top.pos].len += sym[b].len;
        sym[top.pos].next = sym[b].next;
        sym[b].len = 0;
        if (sym[b].next >= 0) sym[sym[b].next].prev = top.pos;
        if (nh + 2 > heap_cap) { rc = kosmos2__fail(KOSMOS2_E_LIMIT, "BPE heap overflow"); break; }
        if (sym[top.pos].prev >= 0) kosmos2__bpe_consider(tok, sym, sym[top.pos].prev, heap, &nh);
        kosmos2__bpe_consider(tok, sym, top.pos, heap, &nh);
    }
    for (i = 0; i < ns && !rc; i++)
        if (sym[i].len != 0) rc = kosmos2__ids_push(out, sym[i].id);
    KOSMOS2_FREE(sym);
    KOSMOS2_FREE(heap);
    return rc;
}

/* ------------------------------------------------------------------------------------------
 *  Encoding
 * ------------------------------------------------------------------------------------------ */
typedef struct {
    kosmos2__buf tmp, norm;
    kosmos2__lattice lattice;
    kosmos2__ids ids;
} kosmos2__tok_scratch;

static void kosmos2__tok_scratch_free(kosmos2__tok_scratch *s) {
    KOSMOS2_FREE(s->tmp.p);
    KOSMOS2_FREE(s->norm.p);
    KOSMOS2_FREE(s->lattice.best);
    KOSMOS2_FREE(s->lattice.from);
    KOSMOS2_FREE(s->lattice.id);
    KOSMOS2_FREE(s->ids.p);
}

/* A text segment between added tokens -> ids appended to sc->ids. */
static int kosmos2__encode_segment(const kosmos2_tokenizer *tok, const char *s, size_t n, kosmos2__tok_scratch *sc) {
    size_t i, j;
    int rc;
    if (n == 0) return 0;
    if ((rc = kosmos2__normalize_segment(tok, s, n, &sc->tmp, &sc->norm)) != 0) return rc;
    /* Metaspace split: the string starts with "▁"; a new word starts at every further "▁" */
    for (i = 0; i < sc->norm.n; i = j) {
        for (j = i + 3; j < sc->norm.n; j++)
            if (j + 2 < sc->norm.n && memcmp(sc->norm.p + j, "\xE2\x96\x81", 3) == 0) break;
        if (j > sc->norm.n) j = sc->norm.n;
        rc = tok->model_type == KOSMOS2__SPM_BPE ? kosmos2__bpe_word(tok, sc->norm.p + i, j - i, &sc->ids)
                                                 : kosmos2__unigram_word(tok, sc->norm.p + i, j - i, &sc->lattice, &sc->ids);
        if (rc) return rc;
    }
    return 0;
}

/* The longest added token starting at s[0..n): its id and length, or -1. */
static int32_t kosmos2__match_added(const kosmos2_tokenizer *tok, const char *s, size_t n, size_t *len) {
    int32_t node = 0, best = -1;
    size_t i;
    if (!tok->added_first[(unsigned char)s[0]]) return -1;
    for (i = 0; i < n; i++) {
        node = kosmos2__trie_step(&tok->added, node, (unsigned char)s[i]);
        if (node < 0) break;
        if (tok->added.value[node] >= 0) {
            best = tok->added.value[node];
            *len = i + 1;
        }
    }
    return best;
}

/* Full text -> sc->ids: split on added tokens (leftmost-longest; lstrip swallows the
 * whitespace before a token, but not past the previous token), encode the segments between. */
static int kosmos2__encode_text(const kosmos2_tokenizer *tok, const char *s, size_t n, kosmos2__tok_scratch *sc) {
    size_t seg = 0, i = 0, bad;
    int rc;
    if ((bad = kosmos2__utf8_check(s, n)) != 0)
        return kosmos2__fail(KOSMOS2_E_INVALID, "text is not valid UTF-8 (byte %zu)", bad - 1);
    while (i < n) {
        size_t mlen = 0, start = i;
        int32_t id = kosmos2__match_added(tok, s + i, n - i, &mlen);
        if (id < 0) { i++; continue; }
        if (tok->flags[id] & KOSMOS2__TOK_LSTRIP) { /* swallow White_Space to the left */
            while (start > seg) {
                size_t p = start - 1;
                uint32_t cp;
                while (p > seg && ((unsigned char)s[p] & 0xC0) == 0x80) p--;
                if (!kosmos2__utf8_decode((const unsigned char *)s + p, start - p, &cp) || !kosmos2__is_white_space(cp)) break;
                start = p;
            }
        }
        if ((rc = kosmos2__encode_segment(tok, s + seg, start - seg, sc)) != 0) return rc;
        if ((rc = kosmos2__ids_push(&sc->ids, id)) != 0) return rc;
        i += mlen;
        seg = i;
    }
    return kosmos2__encode_segment(tok, s + seg, n - seg, sc);
}

int kosmos2_tokenize(const kosmos2_tokenizer *tok, const char *utf8, int32_t *ids, int cap) {
    kosmos2__tok_scratch sc;
    int rc;
    if (!tok || !utf8 || cap < 0 || (cap > 0 && !ids))
        return kosmos2__fail(KOSMOS2_E_INVALID, "kosmos2_tokenize: bad argument");
    memset(&sc, 0, sizeof sc);
    rc = kosmos2__encode_text(tok, utf8, strlen(utf8), &sc);
    if (rc == 0) {
        if (sc.ids.n > (size_t)INT_MAX) rc = kosmos2__fail(KOSMOS2_E_LIMIT, "too many tokens");
        else {
            size_t k = sc.ids.n < (size_t)cap ? sc.ids.n : (size_t)cap;
            if (k) memcpy(ids, sc.ids.p, k * sizeof(int32_t));
            rc = (int)sc.ids.n;
        }
    }
    kosmos2__tok_scratch_free(&sc);
    return rc;
}

int kosmos2_tokenizer_normalize(const kosmos2_tokenizer *tok, const char *utf8, char *out, size_t cap) {
    kosmos2__tok_scratch sc;
    size_t n, bad;
    int rc;
    if (!tok || !utf8 || (cap > 0 && !out)) return kosmos2__fail(KOSMOS2_E_INVALID, "kosmos2_tokenizer_normalize: bad argument");
    n = strlen(utf8);
    if ((bad = kosmos2__utf8_check(utf8, n)) != 0)
        return kosmos2__fail(KOSMOS2_E_INVALID, "text is not valid UTF-8 (byte %zu)", bad - 1);
    memset(&sc, 0, sizeof sc);
    rc = kosmos2__normalize_segment(tok, utf8, n, &sc.tmp, &sc.norm);
    if (rc == 0) {
        if (sc.norm.n > (size_t)INT_MAX) rc = kosmos2__fail(KOSMOS2_E_LIMIT, "text too long");
        else {
            if (cap > 0) {
                size_t k = sc.norm.n < cap - 1 ? sc.norm.n : cap - 1;
                memcpy(out, sc.norm.p, k);
                out[k] = 0;
            }
            rc = (int)sc.norm.n;
        }
    }
    kosmos2__tok_scratch_free(&sc);
    return rc;
}

int kosmos2_prompt_ids(const kosmos2_tokenizer *tok, const char *prompt, int n_image_tokens, int32_t *ids,
                       uint8_t *image_mask, int cap) {
    kosmos2__tok_scratch sc;
    kosmos2__buf text;
    const char *b, *e;
    int rc = 0, k;
    size_t i;
    if (!tok || !prompt || cap < 0 || (cap > 0 && !ids) || n_image_tokens < 0 || n_image_tokens > 65536)
        return kosmos2__fail(KOSMOS2_E_INVALID, "kosmos2_prompt_ids: bad argument");
    b = prompt;
    e = prompt + strlen(prompt);
    if ((i = kosmos2__utf8_check(b, (size_t)(e - b))) != 0)
        return kosmos2__fail(KOSMOS2_E_INVALID, "prompt is not valid UTF-8 (byte %zu)", i - 1);
    /* Python's str.strip() */
    for (;;) {
        uint32_t cp;
        int l;
        if (b >= e) break;
        l = kosmos2__utf8_decode((const unsigned char *)b, (size_t)(e - b), &cp);
        if (!kosmos2__is_py_space(cp)) break;
        b += l;
    }
    while (e > b) {
        const char *p = e - 1;
        uint32_t cp;
        while (p > b && ((unsigned char)*p & 0xC0) == 0x80) p--;
        kosmos2__utf8_decode((const unsigned char *)p, (size_t)(e - p), &cp);
        if (!kosmos2__is_py_space(cp)) break;
        e = p;
    }
    memset(&text, 0, sizeof text);
    memset(&sc, 0, sizeof sc);
    rc = kosmos2__buf_put(&text, "<s>", 3);
    if (n_image_tokens > 0 && !rc) {
        rc = kosmos2__buf_put(&text, "<image>", 7);
        for (k = 0; k < n_image_tokens && !rc; k++) rc = kosmos2__buf_put(&text, " <image>", 8);
        if (!rc) rc = kosmos2__buf_put(&text, " </image> ", 10);
    }
    if (!rc) rc = kosmos2__buf_put(&text, b, (size_t)(e - b));
    if (!rc) rc = kosmos2__encode_text(tok, text.p, text.n, &sc);
    if (!rc && sc.ids.n > (size_t)INT_MAX) rc = kosmos2__fail(KOSMOS2_E_LIMIT, "too many tokens");
    if (!rc) {
        /* positions 2 .. 2+n-1 become the image placeholders unk+1 .. unk+n */
        for (i = 0; i < sc.ids.n; i++) {
            int img = n_image_tokens > 0 && i >= 2 && i < 2 + (size_t)n_image_tokens;
            int32_t id = img ? tok->unk_id + 1 + (int32_t)(i - 2) : sc.ids.p[i];
            if (i < (size_t)cap) {
                ids[i] = id;
                if (image_mask) image_mask[i] = (uint8_t)img;
            }
        }
        rc = (int)sc.ids.n;
    }
    KOSMOS2_FREE(text.p);
    kosmos2__tok_scratch_free(&sc);
    return rc;
}

/* ------------------------------------------------------------------------------------------
 *  Decoding
 * ------------------------------------------------------------------------------------------ */
/* Replace every non-overlapping `from` by the shorter-or-equal `to`, left to right (Python's
 * str.replace), in place. */
static void kosmos2__replace_all(kosmos2__buf *b, const char *from, const char *to) {
    size_t fl = strlen(from), tl = strlen(to), r = 0, w = 0;
    if (b->n < fl) return;
    while (r < b->n) {
        if (r + fl <= b->n && memcmp(b->p + r, from, fl) == 0) {
            memmove(b->p + w, to, tl);
            w += tl;
            r += fl;
        } else {
            b->p[w++] = b->p[r++];
        }
    }
    b->n = w;
    b->p[w] = 0;
}

int kosmos2_detokenize(const kosmos2_tokenizer *tok, const int32_t *ids, int n, int skip_special, char *out,
                       size_t cap) {
    static const char *cleanup[10][2] = {{" .", "."},   {" ?", "?"},     {" !", "!"},     {" ,", ","},
                                         {" ' ", "'"},  {" n't", "n't"}, {" 'm", "'m"},   {" 's", "'s"},
                                         {" 've", "'ve"}, {" 're", "'re"}};
    kosmos2__buf b;
    int i, first = 1, rc = 0, k;
    if (!tok || n < 0 || (n > 0 && !ids) || (cap > 0 && !out))
        return kosmos2__fail(KOSMOS2_E_INVALID, "kosmos2_detokenize: bad argument");
    memset(&b, 0, sizeof b);
    if ((rc = kosmos2__buf_put(&b, "", 0)) != 0) return rc;
    for (i = 0; i < n && !rc; i++) {
        const char *t;
        uint32_t len, j, s;
        if (ids[i] < 0 || ids[i] >= tok->n_vocab) {
            rc = kosmos2__fail(KOSMOS2_E_INVALID, "kosmos2_detokenize: id %d at position %d is out of range (vocabulary %d)",
                               (int)ids[i], i, tok->n_vocab);
            break;
        }
        if (skip_special && (tok->flags[ids[i]] & KOSMOS2__TOK_SPECIAL)) continue;
        t = tok->text[ids[i]];
        len = tok->text_len[ids[i]];
        /* Metaspace decoder: "▁" -> " ", or removed in the first token */
        for (s = j = 0; j < len && !rc; j++) {
            if (j + 2 < len && memcmp(t + j, "\xE2\x96\x81", 3) == 0) {
                rc = kosmos2__buf_put(&b, t + s, j - s);
                if (!rc && !first) rc = kosmos2__buf_put(&b, " ", 1);
                j += 2;
                s = j + 1;
            }
        }
        if (!rc) rc = kosmos2__buf_put(&b, t + s, len - s);
        first = 0;
    }
    if (!rc) {
        for (k = 0; k < 10; k++) kosmos2__replace_all(&b, cleanup[k][0], cleanup[k][1]);
        if (b.n > (size_t)INT_MAX) rc = kosmos2__fail(KOSMOS2_E_LIMIT, "decoded text too long");
        else {
            if (cap > 0) {
                size_t c = b.n < cap - 1 ? b.n : cap - 1;
                memcpy(out, b.p, c);
                out[c] = 0;
            }
            rc = (int)b.n;
        }
    }
    KOSMOS2_FREE(b.p);
    return rc;
}
/* ============================================================================================
 *  [4] IMAGE: decode (stb_image / libjpeg), Pillow-exact bicubic resize, normalise
 * ============================================================================================
 *  file bytes ──► decode ──► RGB u8 [H,W,3] ──► bicubic squash [224,224,3] ──► rescale,
 *  normalise ──► pixel_values float32 [3,224,224]
 */

/* ---- stb_image, compiled here unless the user already has it ----------------------------- */
#ifndef KOSMOS2_NO_STB_IMAGE
#ifndef KOSMOS2_STB_IMAGE_INCLUDE
#define KOSMOS2_STB_IMAGE_INCLUDE <stb/stb_image.h>
#endif
#ifndef KOSMOS2_STB_IMAGE_IMPLEMENTED
#ifdef STBI_INCLUDE_STB_IMAGE_H
#error "stb_image.h was included before kosmos2.h's implementation: include it after, or define KOSMOS2_STB_IMAGE_IMPLEMENTED"
#endif
#define STB_IMAGE_IMPLEMENTATION
/* A private copy: its public functions get a kosmos2__ prefix so that they cannot clash with
 * a stb_image the user links. (Not STB_IMAGE_STATIC: stb_image v2.27 declares a function it never
 * defines, which GCC reports under -Wall for static declarations whatever the pragmas say.) */
#define stbi__unpremultiply_on_load_thread kosmos2__stbi__unpremultiply_on_load_thread /* v2.27 typo */
#define stbi_convert_iphone_png_to_rgb kosmos2__stbi_convert_iphone_png_to_rgb
#define stbi_convert_iphone_png_to_rgb_thread kosmos2__stbi_convert_iphone_png_to_rgb_thread
#define stbi_convert_wchar_to_utf8 kosmos2__stbi_convert_wchar_to_utf8
#define stbi_failure_reason kosmos2__stbi_failure_reason
#define stbi_hdr_to_ldr_gamma kosmos2__stbi_hdr_to_ldr_gamma
#define stbi_hdr_to_ldr_scale kosmos2__stbi_hdr_to_ldr_scale
#define stbi_image_free kosmos2__stbi_image_free
#define stbi_info kosmos2__stbi_info
#define stbi_info_from_callbacks kosmos2__stbi_info_from_callbacks
#define stbi_info_from_file kosmos2__stbi_info_from_file
#define stbi_info_from_memory kosmos2__stbi_info_from_memory
#define stbi_is_16_bit kosmos2__stbi_is_16_bit
#define stbi_is_16_bit_from_callbacks kosmos2__stbi_is_16_bit_from_callbacks
#define stbi_is_16_bit_from_file kosmos2__stbi_is_16_bit_from_file
#define stbi_is_16_bit_from_memory kosmos2__stbi_is_16_bit_from_memory
#define stbi_is_hdr kosmos2__stbi_is_hdr
#define stbi_is_hdr_from_callbacks kosmos2__stbi_is_hdr_from_callbacks
#define stbi_is_hdr_from_file kosmos2__stbi_is_hdr_from_file
#define stbi_is_hdr_from_memory kosmos2__stbi_is_hdr_from_memory
#define stbi_ldr_to_hdr_gamma kosmos2__stbi_ldr_to_hdr_gamma
#define stbi_ldr_to_hdr_scale kosmos2__stbi_ldr_to_hdr_scale
#define stbi_load kosmos2__stbi_load
#define stbi_load_16 kosmos2__stbi_load_16
#define stbi_load_16_from_callbacks kosmos2__stbi_load_16_from_callbacks
#define stbi_load_16_from_memory kosmos2__stbi_load_16_from_memory
#define stbi_load_from_callbacks kosmos2__stbi_load_from_callbacks
#define stbi_load_from_file kosmos2__stbi_load_from_file
#define stbi_load_from_file_16 kosmos2__stbi_load_from_file_16
#define stbi_load_from_memory kosmos2__stbi_load_from_memory
#define stbi_load_gif_from_memory kosmos2__stbi_load_gif_from_memory
#define stbi_loadf kosmos2__stbi_loadf
#define stbi_loadf_from_callbacks kosmos2__stbi_loadf_from_callbacks
#define stbi_loadf_from_file kosmos2__stbi_loadf_from_file
#define stbi_loadf_from_memory kosmos2__stbi_loadf_from_memory
#define stbi_set_flip_vertically_on_load kosmos2__stbi_set_flip_vertically_on_load
#define stbi_set_flip_vertically_on_load_thread kosmos2__stbi_set_flip_vertically_on_load_thread
#define stbi_set_unpremultiply_on_load kosmos2__stbi_set_unpremultiply_on_load
#define stbi_set_unpremultiply_on_load_thread kosmos2__stbi_set_unpremultiply_on_load_thread
#define stbi_zlib_decode_buffer kosmos2__stbi_zlib_decode_buffer
#define stbi_zlib_decode_malloc kosmos2__stbi_zlib_decode_malloc
#define stbi_zlib_decode_malloc_guesssize kosmos2__stbi_zlib_decode_malloc_guesssize
#define stbi_zlib_decode_malloc_guesssize_headerflag kosmos2__stbi_zlib_decode_malloc_guesssize_headerflag
#define stbi_zlib_decode_noheader_buffer kosmos2__stbi_zlib_decode_noheader_buffer
#define stbi_zlib_decode_noheader_malloc kosmos2__stbi_zlib_decode_noheader_malloc
#define STBI_ONLY_JPEG   /* the formats Pillow also reads (no HDR, PSD, PIC); PNM is ours */
#define STBI_ONLY_PNG
#define STBI_ONLY_BMP
#define STBI_ONLY_GIF
#define STBI_ONLY_TGA
#define STBI_MALLOC(n) KOSMOS2_MALLOC(n) /* so decoded pixels can be kept as they are */
#define STBI_REALLOC(p, n) KOSMOS2_REALLOC(p, n)
#define STBI_FREE(p) KOSMOS2_FREE(p)
#define KOSMOS2__STB_OWNS_ALLOCATOR 1
#endif
#if defined(__GNUC__) || defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wunused-but-set-variable"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wtype-limits"
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wcast-qual"
#pragma GCC diagnostic ignored "-Wconversion"
#pragma GCC diagnostic ignored "-Wdouble-promotion"
#endif
#include KOSMOS2_STB_IMAGE_INCLUDE
#if defined(__GNUC__) || defined(__clang__)
#pragma GCC diagnostic pop
#endif
#undef STB_IMAGE_IMPLEMENTATION /* a later #include <stb_image.h> in this file sees our (renamed) copy */
#endif /* KOSMOS2_NO_STB_IMAGE */

#ifdef KOSMOS2_USE_LIBJPEG
#include <setjmp.h>
#include <jpeglib.h>
#include <jerror.h>
#endif

/* ---- small helpers ---------------------------------------------------------------------- */

/* Allocate an RGB image of w x h (w, h > 0), checking w*h*3 for overflow. */
static int kosmos2__image_alloc(kosmos2_image *img, int w, int h) {
    img->width = img->height = 0;
    img->rgb = NULL;
    if (w <= 0 || h <= 0) return kosmos2__fail(KOSMOS2_E_INVALID, "image size %dx%d is empty", w, h);
    if ((size_t)w > SIZE_MAX / 3 / (size_t)h)
        return kosmos2__fail(KOSMOS2_E_LIMIT, "image size %dx%d overflows", w, h);
    img->rgb = (uint8_t *)kosmos2__alloc((size_t)w * (size_t)h * 3);
    if (!img->rgb) return KOSMOS2_E_NOMEM;
    img->width = w;
    img->height = h;
    return KOSMOS2_OK;
}

void kosmos2_image_free(kosmos2_image *img) {
    if (!img) return;
    KOSMOS2_FREE(img->rgb);
    img->rgb = NULL;
    img->width = img->height = 0;
}

/* Refuse w x h when it exceeds max_pixels (0 = default). */
KOSMOS2__UNUSED static int kosmos2__image_check_limit(long long w, long long h, size_t max_pixels) {
    if (!max_pixels) max_pixels = KOSMOS2_IMAGE_DEFAULT_MAX_PIXELS;
    if (w <= 0 || h <= 0) return kosmos2__fail(KOSMOS2_E_FORMAT, "image has an empty size %lldx%lld", w, h);
    if ((unsigned long long)w > (unsigned long long)max_pixels / (unsigned long long)h)
        return kosmos2__fail(KOSMOS2_E_LIMIT, "image is %lldx%lld, more than the limit of %zu pixels",
                             w, h, max_pixels);
    return KOSMOS2_OK;
}

int kosmos2_image_from_pixels(const uint8_t *pixels, int width, int height, int channels,
                              size_t row_stride_bytes, kosmos2_image *out) {
    int x, y, rc;
    if (!out) return kosmos2__fail(KOSMOS2_E_INVALID, "kosmos2_image_from_pixels: out is NULL");
    out->width = out->height = 0;
    out->rgb = NULL;
    if (!pixels) return kosmos2__fail(KOSMOS2_E_INVALID, "kosmos2_image_from_pixels: pixels is NULL");
    if (channels < 1 || channels > 4)
        return kosmos2__fail(KOSMOS2_E_INVALID, "kosmos2_image_from_pixels: %d channels (1..4)", channels);
    if (width <= 0 || height <= 0)
        return kosmos2__fail(KOSMOS2_E_INVALID, "kosmos2_image_from_pixels: empty size %dx%d", width, height);
    if (row_stride_bytes == 0) row_stride_bytes = (size_t)width * (size_t)channels;
    if (row_stride_bytes < (size_t)width * (size_t)channels)
        return kosmos2__fail(KOSMOS2_E_INVALID, "kosmos2_image_from_pixels: row stride %zu < %d x %d",
                             row_stride_bytes, width, channels);
    if ((rc = kosmos2__image_alloc(out, width, height))) return rc;
    for (y = 0; y < height; y++) {
        const uint8_t *src = pixels + (size_t)y * row_stride_bytes; /* [width, channels] */
        uint8_t *dst = out->rgb + (size_t)y * (size_t)width * 3;  /* [width, 3] */
        for (x = 0; x < width; x++, src += channels, dst += 3) {
            if (channels <= 2) { /* L, LA: gray replicated, alpha dropped */
                dst[0] = dst[1] = dst[2] = src[0];
            } else {             /* RGB, RGBA: alpha dropped */
                dst[0] = src[0];
                dst[1] = src[1];
                dst[2] = src[2];
            }
        }
    }
    return KOSMOS2_OK;
}

/* ---- JPEG through libjpeg(-turbo), configured as Pillow's JpegDecode ---------------------- *
 * Pillow 9.x: mode from the component count (1 L, 3 RGB, 4 CMYK), out_color_space = that mode
 * (libjpeg's default colour-space guess for the file, default DCT method JDCT_ISLOW, fancy
 * upsampling on), CMYK read as Adobe-inverted ("CMYK;I") and turned into RGB by Pillow's
 * cmyk2rgb; a file that ends early is an error ("image file is truncated"). */
#ifdef KOSMOS2_USE_LIBJPEG
typedef struct kosmos2__jpeg_error {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
} kosmos2__jpeg_error;

static void kosmos2__jpeg_error_exit(j_common_ptr cinfo) {
    kosmos2__jpeg_error *err = (kosmos2__jpeg_error *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, err->message);
    longjmp(err->jump, 1);
}

/* Warnings are ignored as Pillow does, except running out of data: Pillow refuses truncated files. */
static void kosmos2__jpeg_emit_message(j_common_ptr cinfo, int level) {
    kosmos2__jpeg_error *err = (kosmos2__jpeg_error *)cinfo->err;
    if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) {
        strcpy(err->message, "image file is truncated");
        longjmp(err->jump, 1);
    }
}

static void kosmos2__jpeg_output_message(j_common_ptr cinfo) { (void)cinfo; }

/* Pillow's cmyk2rgb on Adobe-inverted samples: r = nk - c*nk/255 with c = 255 - raw, nk = raw K. */
static uint8_t kosmos2__cmyk_channel(int raw_c, int raw_k) {
    int c = 255 - raw_c, nk = raw_k;           /* "CMYK;I" unpacking inverts */
    int t = c * nk + 128, v = nk - (((t >> 8) + t) >> 8); /* MULDIV255 */
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

static int kosmos2__decode_libjpeg(const uint8_t *data, size_t size, size_t max_pixels, kosmos2_image *out) {
    struct jpeg_decompress_struct cinfo;
    kosmos2__jpeg_error err;
    uint8_t *volatile row = NULL; /* [width, components] one decoded scanline */
    volatile int rc = KOSMOS2_OK;
    int ncomp, x;
    memset(&cinfo, 0, sizeof cinfo);
    cinfo.err = jpeg_std_error(&err.pub);
    err.pub.error_exit = kosmos2__jpeg_error_exit;
    err.pub.emit_message = kosmos2__jpeg_emit_message;
    err.pub.output_message = kosmos2__jpeg_output_message;
    err.message[0] = 0;
    if (setjmp(err.jump)) {
        jpeg_destroy_decompress(&cinfo);
        KOSMOS2_FREE(row);
        kosmos2_image_free(out);
        if (rc == KOSMOS2_OK) rc = kosmos2__fail(KOSMOS2_E_FORMAT, "JPEG: %s", err.message);
        return rc;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, (const unsigned char *)data, (unsigned long)size);
    jpeg_read_header(&cinfo, TRUE);
    ncomp = cinfo.num_components;
    if ((rc = kosmos2__image_check_limit(cinfo.image_width, cinfo.image_height, max_pixels))) goto done;
    if (ncomp == 1) cinfo.out_color_space = JCS_GRAYSCALE;
    else if (ncomp == 3) cinfo.out_color_space = JCS_RGB;
    else if (ncomp == 4) cinfo.out_color_space = JCS_CMYK;
    else {
        rc = kosmos2__fail(KOSMOS2_E_UNSUPPORTED, "JPEG: %d colour components (1, 3 or 4 supported)", ncomp);
        goto done;
    }
    jpeg_start_decompress(&cinfo);
    if ((rc = kosmos2__image_alloc(out, (int)cinfo.output_width, (int)cinfo.output_height))) goto done;
    row = (uint8_t *)kosmos2__alloc((size_t)cinfo.output_width * (size_t)cinfo.output_components);
    if (!row) { rc = KOSMOS2_E_NOMEM; goto done; }
    while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW rows[1];
        uint8_t *dst = out->rgb + (size_t)cinfo.output_scanline * (size_t)out->width * 3; /* [W, 3] */
        rows[0] = (JSAMPROW)row;
        if (jpeg_read_scanlines(&cinfo, rows, 1) != 1) {
            rc = kosmos2__fail(KOSMOS2_E_FORMAT, "JPEG: image file is truncated");
            goto done;
        }
        for (x = 0; x < out->width; x++, dst += 3) {
            const uint8_t *s = row + (size_t)x * (size_t)ncomp;
            if (ncomp == 1) dst[0] = dst[1] = dst[2] = s[0];
            else if (ncomp == 3) { dst[0] = s[0]; dst[1] = s[1]; dst[2] = s[2]; }
            else {
                dst[0] = kosmos2__cmyk_channel(s[0], s[3]);
                dst[1] = kosmos2__cmyk_channel(s[1], s[3]);
                dst[2] = kosmos2__cmyk_channel(s[2], s[3]);
            }
        }
    }
done:
    jpeg_destroy_decompress(&cinfo); /* no jpeg_finish_decompress: trailing data is not needed */
    KOSMOS2_FREE(row);
    if (rc) kosmos2_image_free(out);
    return rc;
}
#endif /* KOSMOS2_USE_LIBJPEG */

/* ---- binary PNM (P4, P5, P6), read as Pillow 9.x reads it ------------------------------- *
 * (stb_image does not rescale maxval != 255 and v2.27 misreads 16-bit PPM.) Pillow: maxval 255
 * is raw; P5 with maxval > 255 is mode "I" (convert("RGB") then clips at 255); any other maxval
 * is rescaled, value = min(out_max, round_half_even(v / maxval * out_max)) with out_max 65535
 * for mode "I" and 255 otherwise; P4 bit 1 is black. Plain (ASCII) P1-P3 are not supported. */

/* One header token as Pillow's PpmImageFile._read_token: whitespace-separated, '#' comments to the
 * end of the line, at most 10 characters, here digits only. */
static int kosmos2__pnm_token(const uint8_t *d, size_t n, size_t *p, long *value) {
    int len = 0;
    long v = 0;
    while (len <= 10) {
        uint8_t c;
        if (*p >= n) break;
        c = d[(*p)++];
        if (c == ' ' || (c >= 9 && c <= 13)) {
            if (len == 0) continue;
            break;
        }
        if (c == '#') { /* comment: skip to CR/LF (consumed) */
            while (*p < n && d[*p] != '\r' && d[*p] != '\n') (*p)++;
            if (*p < n) (*p)++;
            continue;
        }
        if (c < '0' || c > '9') return kosmos2__fail(KOSMOS2_E_FORMAT, "PNM: bad header character at byte %zu", *p - 1);
        v = v * 10 + (c - '0');
        len++;
    }
    if (len == 0) return kosmos2__fail(KOSMOS2_E_FORMAT, "PNM: header ends early at byte %zu", *p);
    if (len > 10) return kosmos2__fail(KOSMOS2_E_FORMAT, "PNM: header token too long at byte %zu", *p);
    *value = v;
    return KOSMOS2_OK;
}

static int kosmos2__decode_pnm(const uint8_t *d, size_t n, size_t max_pixels, kosmos2_image *out) {
    int kind = d[1] - '0', bands = kind == 6 ? 3 : 1, rc, x, y, b;
    long w = 0, h = 0, maxval = 1;
    size_t p = 3, bytes_per_sample, row_bytes, need; /* p: read position, after "P5 " */
    if (n < 3 || !(d[2] == ' ' || (d[2] >= 9 && d[2] <= 13)))
        return kosmos2__fail(KOSMOS2_E_FORMAT, "PNM: bad magic number");
    if ((rc = kosmos2__pnm_token(d, n, &p, &w)) || (rc = kosmos2__pnm_token(d, n, &p, &h))) return rc;
    if (kind != 4 && (rc = kosmos2__pnm_token(d, n, &p, &maxval))) return rc;
    if (maxval < 1 || maxval > 65535) return kosmos2__fail(KOSMOS2_E_FORMAT, "PNM: maxval %ld not in 1..65535", maxval);
    if ((rc = kosmos2__image_check_limit(w, h, max_pixels))) return rc;
    bytes_per_sample = maxval > 255 ? 2 : 1;
    row_bytes = kind == 4 ? ((size_t)w + 7) / 8 : (size_t)w * (size_t)bands * bytes_per_sample;
    need = row_bytes * (size_t)h; /* no overflow: w*h <= max_pixels */
    if (p > n || n - p < need)
        return kosmos2__fail(KOSMOS2_E_FORMAT, "PNM: image file is truncated (%zu of %zu data bytes)",
                             p > n ? (size_t)0 : n - p, need);
    if ((rc = kosmos2__image_alloc(out, (int)w, (int)h))) return rc;
    for (y = 0; y < (int)h; y++) {
        const uint8_t *row = d + p + (size_t)y * row_bytes; /* [row_bytes] */
        uint8_t *dst = out->rgb + (size_t)y * (size_t)w * 3; /* [w, 3] */
        for (x = 0; x < (int)w; x++) {
            uint8_t rgb[3];
            for (b = 0; b < bands; b++) {
                long v;
                if (kind == 4) v = (row[x >> 3] >> (7 - (x & 7)) & 1) ? 0 : 255;
                else if (bytes_per_sample == 1) v = row[(size_t)x * bands + b];
                else v = (long)row[((size_t)x * bands + b) * 2] << 8 | row[((size_t)x * bands + b) * 2 + 1];
                if (kind != 4 && maxval != 255 && !(kind == 5 && maxval == 65535)) {
                    long out_max = (kind == 5 && maxval > 255) ? 65535 : 255;
                    double s = nearbyint((double)v / (double)maxval * (double)out_max); /* round half even */
                    v = s > (double)out_max ? out_max : (long)s;
                }
                rgb[b] = (uint8_t)(v > 255 ? 255 : v); /* mode "I" -> RGB clips */
            }
            dst[3 * x] = rgb[0];
            dst[3 * x + 1] = rgb[bands == 3 ? 1 : 0];
            dst[3 * x + 2] = rgb[bands == 3 ? 2 : 0];
        }
    }
    return KOSMOS2_OK;
}

/* ---- everything else through stb_image -------------------------------------------------- */
#ifndef KOSMOS2_NO_STB_IMAGE
/* stb_image v2.27 (Debian 12) writes past a table when a JPEG Huffman table (DHT) declares more
 * than 256 codes or is cut by the end of the file, and reads uninitialised tables when a scan uses
 * a table no DHT defined (all found by fuzzing). Walk the JPEG's segments first and refuse such
 * files. Returns 0 or an error. */
static int kosmos2__jpeg_check_huffman_tables(const uint8_t *d, size_t n) {
    size_t p = 2; /* after SOI */
    int defined[2][4] = {{0, 0, 0, 0}, {0, 0, 0, 0}}; /* [DC/AC][table id]: seen in a DHT segment */
    int progressive = 0;
    while (p + 4 <= n) {
        unsigned marker;
        size_t len, end;
        if (d[p] != 0xFF) { p++; continue; }         /* stray byte: stb resynchronises too */
        marker = d[p + 1];
        if (marker == 0xFF) { p++; continue; }       /* fill byte */
        if (marker == 0xD9) return KOSMOS2_OK;       /* EOI */
        if (marker == 0x01 || marker == 0xD8 || (marker >= 0xD0 && marker <= 0xD7)) { p += 2; continue; }
        len = (size_t)d[p + 2] << 8 | d[p + 3];      /* segment length, includes these 2 bytes */
        if (len < 2) return kosmos2__fail(KOSMOS2_E_FORMAT, "JPEG: segment length %zu at byte %zu", len, p + 2);
        end = p + 2 + len;
        /* a segment cut by the end of the file: stb would read a DHT's counts past its data and
         * overflow its code table (stb 2.27), so no truncated segment reaches it */
        if (end > n) return kosmos2__fail(KOSMOS2_E_FORMAT, "JPEG: segment 0x%02X at byte %zu runs past the end of the file (truncated)", marker, p);
        if (marker == 0xC2) progressive = 1;
        if (marker == 0xC4) {                        /* DHT: [class/id, 16 counts, symbols]... */
            size_t q = p + 4;
            while (q < end) {
                size_t codes = 0;
                int i;
                if (q + 17 > end) return kosmos2__fail(KOSMOS2_E_FORMAT, "JPEG: short Huffman table at byte %zu", q);
                for (i = 1; i <= 16; i++) codes += d[q + (size_t)i];
                if (codes > 256 || q + 17 + codes > end)
                    return kosmos2__fail(KOSMOS2_E_FORMAT, "JPEG: Huffman table with %zu codes at byte %zu", codes, q);
                if ((d[q] >> 4) <= 1 && (d[q] & 15) <= 3) defined[d[q] >> 4][d[q] & 15] = 1;
                q += 17 + codes;
            }
        }
        if (marker == 0xDA) { /* SOS: every Huffman table the scan uses must have been defined
                               * (stb does not clear its tables and would decode with garbage) */
            size_t ns = len >= 3 ? d[p + 4] : 0, c;
            int ss, ah;
            if (len < 6 + 2 * ns) return kosmos2__fail(KOSMOS2_E_FORMAT, "JPEG: short scan header at byte %zu", p);
            ss = d[p + 5 + 2 * ns];
            ah = d[p + 7 + 2 * ns] >> 4;
            for (c = 0; c < ns; c++) {
                int td = d[p + 6 + 2 * c] >> 4, ta = d[p + 6 + 2 * c] & 15;
                int need_dc = progressive ? (ss == 0 && ah == 0) : 1, need_ac = progressive ? ss > 0 : 1;
                if ((need_dc && td <= 3 && !defined[0][td]) || (need_ac && ta <= 3 && !defined[1][ta]))
                    return kosmos2__fail(KOSMOS2_E_FORMAT, "JPEG: scan at byte %zu uses a Huffman table that was never defined", p);
            }
        }
        p = end;
        if (marker == 0xDA) { /* entropy-coded data follows the scan header: find the next marker */
            while (p + 1 < n && !(d[p] == 0xFF && d[p + 1] != 0 && !(d[p + 1] >= 0xD0 && d[p + 1] <= 0xD7))) p++;
        }
    }
    return KOSMOS2_OK;
}

/* The size a PNG/GIF/BMP/JPEG header announces, read before stb_image (which refuses sizes over
 * 2^30 bytes as "unknown image type"), so that such files get KOSMOS2_E_LIMIT. 0 if unknown. */
static int kosmos2__sniff_size(const uint8_t *d, size_t n, long long *w, long long *h) {
    size_t p;
    if (n >= 24 && memcmp(d, "\x89PNG\r\n\x1a\n", 8) == 0 && memcmp(d + 12, "IHDR", 4) == 0) {
        *w = (long long)d[16] << 24 | d[17] << 16 | d[18] << 8 | d[19];
        *h = (long long)d[20] << 24 | d[21] << 16 | d[22] << 8 | d[23];
        return 1;
    }
    if (n >= 10 && memcmp(d, "GIF8", 4) == 0) {
        *w = d[6] | d[7] << 8;
        *h = d[8] | d[9] << 8;
        return 1;
    }
    if (n >= 26 && d[0] == 'B' && d[1] == 'M' && (d[14] | d[15] << 8) >= 40) { /* BITMAPINFOHEADER+ */
        int32_t bw = (int32_t)((uint32_t)d[18] | (uint32_t)d[19] << 8 | (uint32_t)d[20] << 16 | (uint32_t)d[21] << 24);
        int32_t bh = (int32_t)((uint32_t)d[22] | (uint32_t)d[23] << 8 | (uint32_t)d[24] << 16 | (uint32_t)d[25] << 24);
        *w = bw < 0 ? -(long long)bw : bw;
        *h = bh < 0 ? -(long long)bh : bh; /* negative height = top-down rows */
        return 1;
    }
    if (n >= 4 && d[0] == 0xFF && d[1] == 0xD8) { /* first SOFn segment */
        for (p = 2; p + 9 <= n;) {
            unsigned m = d[p + 1];
            if (d[p] != 0xFF || m == 0xDA || m == 0xD9) break;
            if (m == 0xFF || m == 0x01 || (m >= 0xD0 && m <= 0xD7)) { p += m == 0xFF ? 1 : 2; continue; }
            if (m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC) {
                *h = d[p + 5] << 8 | d[p + 6];
                *w = d[p + 7] << 8 | d[p + 8];
                return 1;
            }
            p += 2 + ((size_t)d[p + 2] << 8 | d[p + 3]);
        }
    }
    return 0;
}

static int kosmos2__decode_stb_raw(const uint8_t *data, size_t size, size_t max_pixels, kosmos2_image *out) {
    int w = 0, h = 0, comp = 0, rc;
    uint8_t *pixels;
    if (size > (size_t)INT_MAX) return kosmos2__fail(KOSMOS2_E_LIMIT, "encoded image of %zu bytes is too large", size);
    if (size >= 2 && data[0] == 0xFF) { /* JPEG: SOI, possibly after fill bytes (stb accepts those) */
        size_t q = 1;
        while (q < size && data[q] == 0xFF) q++;
        if (q < size && data[q] == 0xD8 && (rc = kosmos2__jpeg_check_huffman_tables(data + q - 1, size - (q - 1))))
            return rc;
    }
    {
        long long sw, sh;
        if (kosmos2__sniff_size(data, size, &sw, &sh) && sw > 0 && sh > 0 &&
            (rc = kosmos2__image_check_limit(sw, sh, max_pixels)))
            return rc;
    }
    if (!stbi_info_from_memory(data, (int)size, &w, &h, &comp))
        return kosmos2__fail(KOSMOS2_E_FORMAT, "not a readable JPEG/PNG/BMP/GIF/TGA/PNM image (%s)",
                             stbi_failure_reason());
    if ((rc = kosmos2__image_check_limit(w, h, max_pixels))) return rc;
    if (comp == 1 && stbi_is_16_bit_from_memory(data, (int)size)) {
        /* 16-bit gray: Pillow opens it as mode "I" and convert("RGB") clips to 0..255 */
        int x, y, c;
        stbi_us *g = stbi_load_16_from_memory(data, (int)size, &w, &h, &c, 1); /* [h, w] */
        if (!g) return kosmos2__fail(KOSMOS2_E_FORMAT, "image decode failed (%s)", stbi_failure_reason());
        if ((rc = kosmos2__image_alloc(out, w, h))) { stbi_image_free(g); return rc; }
        for (y = 0; y < h; y++)
            for (x = 0; x < w; x++) {
                stbi_us v = g[(size_t)y * (size_t)w + (size_t)x];
                uint8_t *d = out->rgb + ((size_t)y * (size_t)w + (size_t)x) * 3;
                d[0] = d[1] = d[2] = (uint8_t)(v > 255 ? 255 : v);
            }
        stbi_image_free(g);
        return KOSMOS2_OK;
    }
    pixels = stbi_load_from_memory(data, (int)size, &w, &h, &comp, 3); /* [h, w, 3] */
    if (!pixels) return kosmos2__fail(KOSMOS2_E_FORMAT, "image decode failed (%s)", stbi_failure_reason());
#ifdef KOSMOS2__STB_OWNS_ALLOCATOR
    out->rgb = pixels; /* allocated with KOSMOS2_MALLOC */
    out->width = w;
    out->height = h;
    return KOSMOS2_OK;
#else
    if ((rc = kosmos2__image_alloc(out, w, h))) { stbi_image_free(pixels); return rc; }
    memcpy(out->rgb, pixels, (size_t)w * (size_t)h * 3);
    stbi_image_free(pixels);
    return KOSMOS2_OK;
#endif
}

/* PNG chunks are walked before stb_image sees the file. A PNG whose first IDAT chunk is empty
 * makes stb_image 2.27 do pointer arithmetic on NULL
 * (undefined behaviour; found by fuzzing). Empty IDAT chunks carry nothing (the zlib stream is
 * the concatenation of the chunks' data), so decode a copy without them. *copy: NULL when the
 * file needs no change, else a KOSMOS2_MALLOC'd copy of *copy_size bytes. */
static int kosmos2__png_without_empty_idat(const uint8_t *d, size_t n, uint8_t **copy, size_t *copy_size) {
    size_t p = 8, o = 8;
    int empty = 0;
    *copy = NULL;
    if (n < 8 || memcmp(d, "\x89PNG\r\n\x1a\n", 8) != 0) return 0;
    for (p = 8; p + 12 <= n;) { /* chunk: length, type, data, crc */
        size_t len = (size_t)d[p] << 24 | (size_t)d[p + 1] << 16 | (size_t)d[p + 2] << 8 | d[p + 3];
        /* a chunk longer than the file: stb would first grow its buffer to the claimed size
         * (2 GB from a 1 KB file, found by fuzzing); Pillow refuses truncated files too */
        if (len > n - p - 12) return kosmos2__fail(KOSMOS2_E_FORMAT, "PNG: chunk at byte %zu claims %zu bytes, more than the file has (truncated?)", p, len);
        if (len == 0 && memcmp(d + p + 4, "IDAT", 4) == 0) empty = 1;
        p += 12 + len;
    }
    if (!empty) return 0;
    *copy = (uint8_t *)kosmos2__alloc(n);
    if (!*copy) return KOSMOS2_E_NOMEM;
    memcpy(*copy, d, 8);
    for (p = 8; p + 12 <= n;) {
        size_t len = (size_t)d[p] << 24 | (size_t)d[p + 1] << 16 | (size_t)d[p + 2] << 8 | d[p + 3];
        if (len > n - p - 12) break;
        if (!(len == 0 && memcmp(d + p + 4, "IDAT", 4) == 0)) { memcpy(*copy + o, d + p, 12 + len); o += 12 + len; }
        p += 12 + len;
    }
    memcpy(*copy + o, d + p, n - p); /* whatever follows (a truncated chunk) as it was */
    *copy_size = o + (n - p);
    return 0;
}

static int kosmos2__decode_stb(const uint8_t *data, size_t size, size_t max_pixels, kosmos2_image *out) {
    uint8_t *copy = NULL;
    size_t copy_size = 0;
    int rc = kosmos2__png_without_empty_idat(data, size, &copy, &copy_size);
    if (rc) return rc;
    rc = copy ? kosmos2__decode_stb_raw(copy, copy_size, max_pixels, out) : kosmos2__decode_stb_raw(data, size, max_pixels, out);
    KOSMOS2_FREE(copy);
    return rc;
}
#endif

int kosmos2_image_load_memory(const void *data, size_t size, size_t max_pixels, kosmos2_image *out) {
    const uint8_t *bytes = (const uint8_t *)data;
    if (!out) return kosmos2__fail(KOSMOS2_E_INVALID, "kosmos2_image_load_memory: out is NULL");
    out->width = out->height = 0;
    out->rgb = NULL;
    if (!data && size) return kosmos2__fail(KOSMOS2_E_INVALID, "kosmos2_image_load_memory: data is NULL");
    if (size == 0) return kosmos2__fail(KOSMOS2_E_FORMAT, "image data is empty");
    if (size >= 2 && bytes[0] == 'P' && bytes[1] >= '1' && bytes[1] <= '6') {
        if (bytes[1] <= '3') return kosmos2__fail(KOSMOS2_E_UNSUPPORTED, "plain (ASCII) PNM is not supported");
        return kosmos2__decode_pnm(bytes, size, max_pixels, out);
    }
#ifdef KOSMOS2_USE_LIBJPEG
    if (size >= 3 && bytes[0] == 0xFF && bytes[1] == 0xD8 && bytes[2] == 0xFF)
        return kosmos2__decode_libjpeg(bytes, size, max_pixels, out);
#endif
#ifndef KOSMOS2_NO_STB_IMAGE
    return kosmos2__decode_stb(bytes, size, max_pixels, out);
#else
    (void)bytes;
    (void)max_pixels;
    return kosmos2__fail(KOSMOS2_E_UNSUPPORTED, "image decoding was left out (KOSMOS2_NO_STB_IMAGE)");
#endif
}

int kosmos2_image_load_file(const char *path, size_t max_pixels, kosmos2_image *out) {
    FILE *f;
    long n;
    uint8_t *buf; /* [n] the whole file */
    int rc;
    if (!out) return kosmos2__fail(KOSMOS2_E_INVALID, "kosmos2_image_load_file: out is NULL");
    out->width = out->height = 0;
    out->rgb = NULL;
    if (!path) return kosmos2__fail(KOSMOS2_E_INVALID, "kosmos2_image_load_file: path is NULL");
    f = fopen(path, "rb");
    if (!f) return kosmos2__fail(KOSMOS2_E_IO, "%s: cannot open (%s)", path, strerror(errno));
    if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return kosmos2__fail(KOSMOS2_E_IO, "%s: cannot determine the file size", path);
    }
    if ((unsigned long)n > (unsigned long)INT_MAX) {
        fclose(f);
        return kosmos2__fail(KOSMOS2_E_LIMIT, "%s: file of %ld bytes is too large for an image", path, n);
    }
    buf = (uint8_t *)kosmos2__alloc((size_t)n);
    if (!buf) { fclose(f); return KOSMOS2_E_NOMEM; }
    if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
        KOSMOS2_FREE(buf);
        fclose(f);
        return kosmos2__fail(KOSMOS2_E_IO, "%s: read error", path);
    }
    fclose(f);
    rc = kosmos2_image_load_memory(buf, (size_t)n, max_pixels, out);
    KOSMOS2_FREE(buf);
    if (rc) return kosmos2__wrap(rc, "%s: ", path);
    return KOSMOS2_OK;
}

/* ---- Pillow's bicubic resampling (libImaging/Resample.c, reimplemented) ------------------ *
 * Per axis (input length n, output length m): scale = n/m, filterscale = max(scale, 1),
 * support = 2 * filterscale (so shrinking antialiases). Output o is centred at
 * (o + 0.5) * scale; it reads inputs [xmin, xmax) with xmin = (int)(center - support + 0.5)
 * (clamped to 0) and xmax = (int)(center + support + 0.5) (clamped to n), weights
 * K((j - center + 0.5) / filterscale) divided by their sum (double), then rounded to fixed
 * point with 22 fractional bits (half away from zero). Sums start at 1/2 (rounding) and
 * are clamped to 0..255. The horizontal pass goes first, over the rows the vertical pass
 * needs only, into a uint8 image; a pass is skipped when its axis keeps its size. */

#define KOSMOS2__RESAMPLE_BITS 22 /* Pillow's PRECISION_BITS = 32 - 8 - 2 */

/* Keys' cubic convolution kernel with a = -0.5, evaluated as Pillow does (same rounding). */
static double kosmos2__bicubic_kernel(double x) {
    const double a = -0.5;
    if (x < 0.0) x = -x;
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

/* The taps of one axis. */
typedef struct kosmos2__resample_axis {
    int ksize;        /* taps per output sample (upper bound) */
    int *bounds;      /* [out_size, 2]: first input index, number of taps */
    int32_t *weights; /* [out_size, ksize]: weights with 22 fractional bits */
} kosmos2__resample_axis;

static void kosmos2__resample_axis_free(kosmos2__resample_axis *ax) {
    KOSMOS2_FREE(ax->bounds);
    KOSMOS2_FREE(ax->weights);
    ax->bounds = NULL;
    ax->weights = NULL;
}

static int kosmos2__resample_axis_init(kosmos2__resample_axis *ax, int in_size, int out_size) {
    double scale = (double)(float)in_size / out_size; /* Pillow: (in1 - in0) as float / out */
    double filterscale = scale < 1.0 ? 1.0 : scale;
    double support = 2.0 * filterscale; /* bicubic support is 2 */
    double inv_filterscale = 1.0 / filterscale;
    double ksize_d = ceil(support) * 2 + 1;
    double *w;      /* [ksize] the double weights of one output sample */
    int o, j;
    ax->bounds = NULL;
    ax->weights = NULL;
    /* never more taps than inputs: caps ksize without changing any weight */
    ax->ksize = ksize_d > (double)in_size ? in_size : (int)ksize_d;
    ax->bounds = (int *)kosmos2__calloc((size_t)out_size, 2 * sizeof(int));
    ax->weights = (int32_t *)kosmos2__calloc((size_t)out_size, (size_t)ax->ksize * sizeof(int32_t));
    w = (double *)kosmos2__calloc((size_t)ax->ksize, sizeof(double));
    if (!ax->bounds || !ax->weights || !w) {
        KOSMOS2_FREE(w);
        kosmos2__resample_axis_free(ax);
        return KOSMOS2_E_NOMEM;
    }
    for (o = 0; o < out_size; o++) {
        double center = (o + 0.5) * scale, sum = 0.0;
        int xmin = (int)(center - support + 0.5), xmax = (int)(center + support + 0.5), count;
        int32_t *k = ax->weights + (size_t)o * (size_t)ax->ksize;
        if (xmin < 0) xmin = 0;
        if (xmax > in_size) xmax = in_size;
        count = xmax - xmin;
        if (count > ax->ksize) count = ax->ksize; /* cannot happen; keeps reads in bounds */
        for (j = 0; j < count; j++) {
            w[j] = kosmos2__bicubic_kernel(((j + xmin) - center + 0.5) * inv_filterscale);
            sum += w[j];
        }
        for (j = 0; j < count; j++) {
            double v = sum != 0.0 ? w[j] / sum : w[j];
            v *= (double)(1 << KOSMOS2__RESAMPLE_BITS);
            k[j] = (int32_t)(v < 0 ? v - 0.5 : v + 0.5);
        }
        ax->bounds[2 * o] = xmin;
        ax->bounds[2 * o + 1] = count;
    }
    KOSMOS2_FREE(w);
    return KOSMOS2_OK;
}

/* Fixed-point sum -> 0..255 (Pillow: clip8(acc >> 22)). */
static uint8_t kosmos2__resample_clip(int32_t acc) {
    int32_t v;
    if (acc < 0) return 0;
    v = acc >> KOSMOS2__RESAMPLE_BITS;
    return (uint8_t)(v > 255 ? 255 : v);
}

/* Horizontal pass: rows [row0, row0 + rows) of src [*, in_w, 3] -> dst [rows, out_w, 3]. */
static void kosmos2__resample_horizontal(const uint8_t *src, int in_w, int row0, int rows,
                                         uint8_t *dst, int out_w, const kosmos2__resample_axis *ax) {
    int y;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if ((long long)rows * out_w * ax->ksize > 200000)
#endif
    for (y = 0; y < rows; y++) {
        const uint8_t *line = src + (size_t)(row0 + y) * (size_t)in_w * 3; /* [in_w, 3] */
        uint8_t *o = dst + (size_t)y * (size_t)out_w * 3;                   /* [out_w, 3] */
        int x, t;
        for (x = 0; x < out_w; x++) {
            const int32_t *k = ax->weights + (size_t)x * (size_t)ax->ksize;
            const uint8_t *p = line + (size_t)ax->bounds[2 * x] * 3;
            int n = ax->bounds[2 * x + 1];
            int32_t s0 = 1 << (KOSMOS2__RESAMPLE_BITS - 1), s1 = s0, s2 = s0;
            for (t = 0; t < n; t++, p += 3) {
                s0 += p[0] * k[t];
                s1 += p[1] * k[t];
                s2 += p[2] * k[t];
            }
            o[3 * x + 0] = kosmos2__resample_clip(s0);
            o[3 * x + 1] = kosmos2__resample_clip(s1);
            o[3 * x + 2] = kosmos2__resample_clip(s2);
        }
    }
}

/* Vertical pass: src [*, w, 3] whose row 0 is input row `row0` -> dst [out_h, w, 3]. */
static void kosmos2__resample_vertical(const uint8_t *src, int w, int row0, uint8_t *dst, int out_h,
                                       const kosmos2__resample_axis *ax) {
    int y;
    size_t stride = (size_t)w * 3;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if ((long long)out_h * w * ax->ksize > 200000)
#endif
    for (y = 0; y < out_h; y++) {
        const int32_t *k = ax->weights + (size_t)y * (size_t)ax->ksize;
        const uint8_t *col = src + (size_t)(ax->bounds[2 * y] - row0) * stride;
        int n = ax->bounds[2 * y + 1];
        uint8_t *o = dst + (size_t)y * stride;
        size_t x;
        int t;
        for (x = 0; x < stride; x++) {
            int32_t s = 1 << (KOSMOS2__RESAMPLE_BITS - 1);
            for (t = 0; t < n; t++) s += col[(size_t)t * stride + x] * k[t];
            o[x] = kosmos2__resample_clip(s);
        }
    }
}

int kosmos2_image_resize(const kosmos2_image *in, int out_width, int out_height, kosmos2_image *out) {
    kosmos2__resample_axis hx, vy;
    kosmos2_image tmp;  /* the horizontally resampled rows [row_last - row_first, out_width, 3] */
    const uint8_t *src; /* input of the vertical pass */
    int rc, row_first, row_last, need_h, need_v;
    if (!out) return kosmos2__fail(KOSMOS2_E_INVALID, "kosmos2_image_resize: out is NULL");
    out->width = out->height = 0;
    out->rgb = NULL;
    if (!in || !in->rgb || in->width <= 0 || in->height <= 0)
        return kosmos2__fail(KOSMOS2_E_INVALID, "kosmos2_image_resize: empty input image");
    if (out_width <= 0 || out_height <= 0)
        return kosmos2__fail(KOSMOS2_E_INVALID, "kosmos2_image_resize: empty output size %dx%d", out_width, out_height);
    need_h = out_width != in->width;
    need_v = out_height != in->height;
    if ((rc = kosmos2__image_alloc(out, out_width, out_height))) return rc;
    if (!need_h && !need_v) { /* Pillow returns a copy */
        memcpy(out->rgb, in->rgb, (size_t)in->width * (size_t)in->height * 3);
        return KOSMOS2_OK;
    }
    if ((rc = kosmos2__resample_axis_init(&hx, in->width, out_width))) { kosmos2_image_free(out); return rc; }
    if ((rc = kosmos2__resample_axis_init(&vy, in->height, out_height))) {
        kosmos2__resample_axis_free(&hx);
        kosmos2_image_free(out);
        return rc;
    }
    /* the input rows the vertical pass reads */
    row_first = vy.bounds[0];
    row_last = vy.bounds[2 * (out_height - 1)] + vy.bounds[2 * (out_height - 1) + 1];
    tmp.rgb = NULL;
    src = in->rgb;
    if (need_h) {
        uint8_t *dst = need_v ? NULL : out->rgb;
        if (need_v) {
            if ((rc = kosmos2__image_alloc(&tmp, out_width, row_last - row_first))) goto done;
            dst = tmp.rgb;
        } else {
            row_first = 0;
            row_last = in->height;
        }
        kosmos2__resample_horizontal(in->rgb, in->width, row_first, row_last - row_first, dst, out_width, &hx);
        src = tmp.rgb;
    } else {
        row_first = 0; /* the vertical pass reads the input itself */
    }
    if (need_v) kosmos2__resample_vertical(src, out_width, row_first, out->rgb, out_height, &vy);
done:
    KOSMOS2_FREE(tmp.rgb);
    kosmos2__resample_axis_free(&hx);
    kosmos2__resample_axis_free(&vy);
    if (rc) kosmos2_image_free(out);
    return rc;
}

/* ---- CLIPImageProcessor ----------------------------------------------------------------- */

kosmos2_preprocess_config kosmos2_preprocess_default_config(void) {
    kosmos2_preprocess_config c;
    memset(&c, 0, sizeof c);
    c.width = c.height = 224;
    c.do_convert_rgb = c.do_resize = c.do_rescale = c.do_normalize = 1;
    c.resample = 3;                         /* PIL.Image.BICUBIC */
    c.rescale_factor = 0.00392156862745098; /* 1/255 */
    c.mean[0] = 0.48145466f; c.mean[1] = 0.4578275f; c.mean[2] = 0.40821073f;
    c.std[0] = 0.26862954f; c.std[1] = 0.26130258f; c.std[2] = 0.27577711f;
    return c;
}

int kosmos2_image_preprocess(const kosmos2_image *img, const kosmos2_preprocess_config *cfg, float *out) {
    kosmos2_image resized;
    const kosmos2_image *src = img; /* [H, W, 3] the pixels to normalise */
    size_t plane, i;
    int c, rc;
    if (!img || !img->rgb || img->width <= 0 || img->height <= 0 || !cfg || !out)
        return kosmos2__fail(KOSMOS2_E_INVALID, "kosmos2_image_preprocess: empty image, config or output");
    if (cfg->width <= 0 || cfg->height <= 0)
        return kosmos2__fail(KOSMOS2_E_INVALID, "preprocess: target size %dx%d", cfg->width, cfg->height);
    for (c = 0; c < 3; c++)
        if (cfg->do_normalize && !(cfg->std[c] != 0.0f))
            return kosmos2__fail(KOSMOS2_E_INVALID, "preprocess: image_std[%d] is zero", c);
    resized.rgb = NULL;
    if (img->width != cfg->width || img->height != cfg->height) {
        if (!cfg->do_resize)
            return kosmos2__fail(KOSMOS2_E_INVALID, "preprocess: image is %dx%d, model wants %dx%d and do_resize is off",
                                 img->width, img->height, cfg->width, cfg->height);
        if (cfg->resample != 3)
            return kosmos2__fail(KOSMOS2_E_UNSUPPORTED, "preprocess: resample=%d (only 3, bicubic)", cfg->resample);
        if ((rc = kosmos2_image_resize(img, cfg->width, cfg->height, &resized))) return rc;
        src = &resized;
    }
    plane = (size_t)cfg->width * (size_t)cfg->height;
    for (c = 0; c < 3; c++) {
        float *dst = out + (size_t)c * plane; /* [H, W] channel c */
        for (i = 0; i < plane; i++) {
            uint8_t p = src->rgb[3 * i + (size_t)c];
            /* numpy: uint8 * python float is float64, then cast to float32 */
            float x = cfg->do_rescale ? (float)((double)p * cfg->rescale_factor) : (float)p;
            if (cfg->do_normalize) x = (x - cfg->mean[c]) / cfg->std[c]; /* float32 arithmetic */
            dst[i] = x;
        }
    }
    kosmos2_image_free(&resized);
    return KOSMOS2_OK;
}

/* ---- .npy output ------------------------------------------------------------------------ */

int kosmos2_write_npy_f32(const char *path, const float *data, const int64_t *shape, int ndim) {
    char header[512];
    size_t len, count = 1, i;
    int d, ok;
    FILE *f;
    if (!path || (!data && ndim) || (ndim && !shape) || ndim < 0 || ndim > 32)
        return kosmos2__fail(KOSMOS2_E_INVALID, "kosmos2_write_npy_f32: bad arguments");
    len = (size_t)snprintf(header, sizeof header, "{'descr': '<f4', 'fortran_order': False, 'shape': (");
    for (d = 0; d < ndim; d++) {
        if (shape[d] < 0) return kosmos2__fail(KOSMOS2_E_INVALID, "kosmos2_write_npy_f32: negative dimension");
        if (shape[d] && count > SIZE_MAX / 4 / (size_t)shape[d])
            return kosmos2__fail(KOSMOS2_E_INVALID, "kosmos2_write_npy_f32: shape overflows");
        count *= (size_t)shape[d];
        len += (size_t)snprintf(header + len, sizeof header - len, ndim == 1 ? "%lld,)" : d + 1 < ndim ? "%lld, " : "%lld)",
                                (long long)shape[d]);
        if (len >= sizeof header - 80) return kosmos2__fail(KOSMOS2_E_INVALID, "kosmos2_write_npy_f32: shape too long");
    }
    if (ndim == 0) len += (size_t)snprintf(header + len, sizeof header - len, ")");
    len += (size_t)snprintf(header + len, sizeof header - len, ", }");
    /* pad with spaces so that magic(6) + version(2) + length(2) + header ends on 64 bytes, '\n' last */
    while ((10 + len + 1) % 64) header[len++] = ' ';
    header[len++] = '\n';
    f = fopen(path, "wb");
    if (!f) return kosmos2__fail(KOSMOS2_E_IO, "%s: cannot create (%s)", path, strerror(errno));
    ok = fwrite("\x93NUMPY\x01\x00", 1, 8, f) == 8;
    ok = ok && fputc((int)(len & 0xFF), f) != EOF && fputc((int)(len >> 8), f) != EOF;
    ok = ok && fwrite(header, 1, len, f) == len;
    for (i = 0; ok && i < count; i++) { /* little-endian whatever the host */
        uint32_t u;
        unsigned char b[4];
        memcpy(&u, &data[i], 4);
        b[0] = (unsigned char)u; b[1] = (unsigned char)(u >> 8); b[2] = (unsigned char)(u >> 16); b[3] = (unsigned char)(u >> 24);
        ok = fwrite(b, 1, 4, f) == 4;
    }
    if (fclose(f) != 0) ok = 0;
    if (!ok) return kosmos2__fail(KOSMOS2_E_IO, "%s: write error", path);
    return KOSMOS2_OK;
}
/* ============================================================================================
 *  [5] KERNELS: weight types, matrix products, row conversion, vector math
 * ============================================================================================
 *  Weights stay in the type they were stored in (memory-mapped, no conversion at load); every
 *  product accumulates in float32. A matrix W is [rows = out features N, cols = in features K],
 *  row-major, as PyTorch's nn.Linear stores it. The one entry point is
 *      kosmos2__matmul(y, x, M, W, bias, n_threads):  y[M,N] = x[M,K] . W[N,K]^T + bias[N]
 *  which picks, at run time, a scalar, AVX2+FMA+F16C, AVX2 with AVX-VNNI (the AVX2 kernels but
 *  vpdpbusd column tiles for the quantized products) or AVX-512 (F/BW/VL/DQ + VNNI)
 *  implementation. The environment variable KOSMOS2_ISA=scalar|avx2|avxvnni caps the choice (read once);
 *  defining KOSMOS2_NO_SIMD builds the scalar path only. Do not build with -ffast-math (it would
 *  reorder the sums below).
 *
 *  THE CANONICAL SUM (why every path gives the same bits)
 *  Float weights (F32/F16/BF16; F16/BF16 are widened exactly to F32, activations are never
 *  rounded): output (m, n) keeps 16 partial sums ("lanes"). Lane l accumulates x[k]*w[k] for the
 *  k = l, l+16, l+32, ... in increasing order, one fused multiply-add each (fmaf). The 16 lanes
 *  are then folded as a tree: s[l] += s[l+8] (l<8), s[l] += s[l+4] (l<4), s[l] += s[l+2] (l<2),
 *  s[0] + s[1]; finally + bias[n].
 *  Quantized weights (Q8_0/Q4_0): the activation row is quantized to q8_0 once per product. Per
 *  32-block b the integer products are summed exactly in 8 groups of 4 consecutive elements,
 *  p[b][g] (g = 0..7); lane (b mod 2)*8 + g accumulates fmaf(dx[b]*dw[b], (float)p[b][g], lane)
 *  in increasing b (dx*dw is exact: both are float16 values), then the same fold and + bias.
 *  AVX-512 holds the 16 lanes in one register, AVX2 in two (lanes 0-7, 8-15), the scalar code in
 *  an array, so the three paths agree bit for bit (the tests check ==), a decode step (M = 1)
 *  gives the same bits as a prefill row, and every output is one thread's work: the result does
 *  not depend on the thread count.
 *
 *  DATA LAYOUTS (ggml's block layouts, 32 weights per block, rows must be a multiple of 32):
 *    q8_0 block, 34 bytes: float16 d; int8 qs[32];           value[i] = qs[i] * d
 *    q4_0 block, 18 bytes: float16 d; uint8 qs[16];          value[i] = ((qs[i] & 15) - 8) * d,
 *                                                            value[i+16] = ((qs[i] >> 4) - 8) * d
 *  Blocks are read byte-wise (memcpy), so rows need no alignment.
 *    q4_0r8 / q8_0r8 (KOSMOS2__Q4_0R8 / Q8_0R8: the same blocks interleaved 8 rows at a time,
 *      by kosmos2__repack_r8; what q4_0 / q8_0 GGUF files hold, and what plain ggml rows are
 *      repacked to at load): the rows in groups of 8, then the N % 8 last rows as plain rows.
 *      Group g, block b is one unit of U = 144 (q4_0) / 272 (q8_0) bytes at (g * nb + b) * U:
 *      float16 d[8] (row 8g + r's scale at 2r), then chunks of 32 bytes (4 / 8 of them); chunk
 *      c holds bytes 4c .. 4c+3 of each row's qs (row r's at 4r). One 32-byte load thus gives
 *      4 weights of 8 rows (q4_0: the low nibbles are weights 4c .. 4c+3, the high ones
 *      16+4c .. 16+4c+3): 8 outputs per register, one activation load feeds 8 rows.
 *      Their canonical sum (the 16-lane order above would cost 8 conversions and multiply-adds
 *      per block and row): per block the exact integer sum p[b] = sum w * a over all 32
 *      weights; s = fmaf(dx[b] * dw[b], (float)p[b], s) in increasing b (one chain: a block's
 *      integer work hides the multiply-add's latency, and a tile's accumulators stay in
 *      registers); y = s + bias. |p[b]| <= 32 * 128 * 127 < 2^24: the conversion is exact.
 *
 *  TILING (float weights, kosmos2__matmul_float). W is cut into panels of C rows; each thread
 *  owns an even, contiguous share of whole panels, and a thread done early takes the groups of
 *  panels another has not started (whole groups: the same bits). With at least R activation rows and float16/bfloat16
 *  weights, a panel is walked in blocks of KB values of k (1024 on AVX-512 and AVX2; on Zen 3
 *  the AVX2 bfloat16 products ran 6-25 % faster with 1024 than with 512, 2 threads, the four
 *  vision/prefill shapes, interleaved in one process; 2048 and 4096 no faster): the
 *  block [C, KB] is widened to float32 into a per-thread buffer (row stride KB + 16, so that its rows do not share L1
 *  sets; 25 KB on AVX-512, 12.5 KB on AVX2: it stays in L1) and multiplied with every group of R
 *  activation rows by a register tile of R x C 16-lane accumulators (AVX-512: 4 x 6 = 24 zmm;
 *  AVX2: 2 x 3 pairs of ymm). Between blocks the accumulators are parked in a per-thread buffer
 *  [8, M, C, 16] (each lane keeps its k's, so the order stays the canonical one): the panels go
 *  in groups of 8, block by block, so that an activation block serves 8 panels while in L2, and
 *  the activations are copied block by block (rows of one block adjacent in memory). Activations are
 *  taken in chunks of about half the L2 cache's size (CPUID; 1 MB when unknown), which stay in
 *  L2 while all the panels pass (the weights stream through the other half); the next weight
 *  block is prefetched a slice at a time between tiles.
 *  Float32 weights are not copied (the copy cost more than it saved: +3-17 % without it on
 *  the model's shapes, AVX2 and AVX-512): the tiles read them as stored, in the same blocks of
 *  K (a block [C, KB] stays in L1 while the chunk's rows pass; all of K at once read each
 *  panel from L2 for every tile: K = 4096 and 8192 on AVX2, Zen 3, 2 threads: 86-108 -> 112-122
 *  GFLOP/s). With fewer rows (decoding) the kernels read the weights as
 *  stored, converting in registers, all of K at once: each weight row is streamed once.
 *  Quantized weights (kosmos2__matmul_q): the activations are quantized once per product (by
 *  the kernel set's qact: the same bytes as kosmos2__quantize_row_q8_0 in every path), then
 *  panels of QC weight rows meet groups of QR activation rows (AVX-512: 4 x 4, two blocks per
 *  step with VNNI; AVX2: 2 x 2, one block per step), reading the blocks as stored. The r8
 *  layouts (what the model uses: files hold them, plain rows are repacked at load) go by groups
 *  of 8 weight rows, R8 = 4 activation rows per tile (AVX2 code, also on AVX-512 machines), 1
 *  row when decoding; per block and activation row one exact int32 sum
 *  per weight row, then one conversion and one multiply-add for all 8 (q4_0 decoding on Zen 3, one core,
 *  weights in L3: 28.5 GB/s against 11.0 for the ggml-layout tiles). q4_0r8 with 8 or more
 *  activation rows (vision, prefill) turns the tile around: the activations are also stored 8
 *  rows interleaved (a row per lane), each group of 8 weight rows is unpacked to bytes once per
 *  chunk of activation rows, and a column tile takes 8 activation rows x 4 weight rows with one
 *  broadcast of 4 weight bytes per multiply (kosmos2__r8cols_avx2: Zen 3, the four vision/prefill
 *  shapes, one thread: 180 GOP/s = 59 % of the maddubs peak, against 147 for the 4 x 8 tiles);
 *  q8_0r8 likewise (|w| and w unpacked: 111 against 105 GOP/s, 37 %: 4 vector operations per
 *  maddubs cap it near half the peak on AVX2). With AVX-512 VNNI the column tile takes 16
 *  activation rows (two groups) x all 8 weight rows, one vpdpbusd per 4 values and weight row,
 *  no int16 stage (kosmos2__r8cols_avx512; q8_0r8 as the bytes w + 128, corrected by -128 *
 *  sum a): tested against the scalar path under emulation, not timed (no such CPU here).
 *  Speed: 64-byte aligned activations and weights avoid split loads (about 10%). */

/* Q4_0R8 / Q8_0R8: q4_0 / q8_0 blocks interleaved 8 rows at a time (DATA LAYOUTS above). */
typedef enum { KOSMOS2__F32 = 0, KOSMOS2__F16 = 1, KOSMOS2__BF16 = 2, KOSMOS2__Q8_0 = 3, KOSMOS2__Q4_0 = 4, KOSMOS2__Q4_0R8 = 5,
               KOSMOS2__Q8_0R8 = 6 } kosmos2__dtype;

typedef struct {
    const void *data; /* [rows, cols] in `dtype` (q types: rows x cols/32 blocks) */
    kosmos2__dtype dtype;
    int64_t rows, cols;
} kosmos2__mat;

#define KOSMOS2__QK 32           /* weights per quantization block */
#define KOSMOS2__Q8_0_BYTES 34   /* float16 d + 32 x int8 */
#define KOSMOS2__Q4_0_BYTES 18   /* float16 d + 16 x (2 x 4 bit) */

/* Which implementation runs (kosmos2__kernels_set_isa / KOSMOS2_ISA=scalar|avx2|avxvnni|avx512). */
enum { KOSMOS2__ISA_SCALAR = 0, KOSMOS2__ISA_AVX2 = 1, KOSMOS2__ISA_AVXVNNI = 2, KOSMOS2__ISA_AVX512 = 3 };

/* ------------------------------------------------------------------ float16 / bfloat16 ---- */
KOSMOS2__UNUSED static float kosmos2__f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    float f;
    if (exp == 0) {
        if (man == 0) bits = sign;
        else { /* subnormal: value = man * 2^-24 */
            f = (float)man * (1.0f / 16777216.0f);
            return sign ? -f : f;
        }
    } else if (exp == 31) bits = sign | 0x7f800000u | (man << 13);
    else bits = sign | ((exp + 112) << 23) | (man << 13);
    memcpy(&f, &bits, 4);
    return f;
}
KOSMOS2__UNUSED static float kosmos2__bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}
/* float32 -> float16, round to nearest even (overflow -> inf, NaN stays NaN). */
KOSMOS2__UNUSED static uint16_t kosmos2__f32_to_f16(float f) {
    uint32_t x, sign, e, m, h, r;
    memcpy(&x, &f, 4);
    sign = (x >> 16) & 0x8000u;
    x &= 0x7fffffffu;
    if (x > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);  /* NaN */
    if (x >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* >= 65520 rounds to inf */
    e = x >> 23;
    if (e <= 112) { /* |f| < 2^-14: a float16 subnormal, h = round(|f| / 2^-24) */
        uint32_t s = 126 - e;
        if (s > 25) return (uint16_t)sign;
        m = (x & 0x7fffffu) | 0x800000u; /* |f| = m * 2^(e-150) */
        h = m >> s;
        r = m & ((1u << s) - 1);
        if (r > (1u << (s - 1)) || (r == (1u << (s - 1)) && (h & 1))) h++;
        return (uint16_t)(sign | h);
    }
    h = ((e - 112) << 10) | ((x & 0x7fffffu) >> 13);
    r = x & 0x1fffu;
    if (r > 0x1000u || (r == 0x1000u && (h & 1))) h++; /* a carry into the exponent is right */
    return (uint16_t)(sign | h);
}
static float kosmos2__f16_at(const uint8_t *p) { /* an unaligned little-endian float16 */
    uint16_t h;
    memcpy(&h, p, 2);
    return kosmos2__f16_to_f32(h);
}

/* Bytes of one row of `cols` weights (q types: cols must be a multiple of 32). */
KOSMOS2__UNUSED static int64_t kosmos2__row_bytes(kosmos2__dtype t, int64_t cols) {
    switch (t) {
    case KOSMOS2__F32: return cols * 4;
    case KOSMOS2__F16: case KOSMOS2__BF16: return cols * 2;
    case KOSMOS2__Q8_0: case KOSMOS2__Q8_0R8: return cols / KOSMOS2__QK * KOSMOS2__Q8_0_BYTES; /* (r8: on average) */
    case KOSMOS2__Q4_0: case KOSMOS2__Q4_0R8: return cols / KOSMOS2__QK * KOSMOS2__Q4_0_BYTES;
    }
    return 0;
}
KOSMOS2__UNUSED static const char *kosmos2__dtype_name(kosmos2__dtype t) {
    static const char *names[] = {"f32", "f16", "bf16", "q8_0", "q4_0", "q4_0r8", "q8_0r8"};
    return (unsigned)t < 7 ? names[t] : "?";
}
static int kosmos2__is_q(int dt) { return dt >= KOSMOS2__Q8_0 && dt <= KOSMOS2__Q8_0R8; }
static int kosmos2__is_r8(int dt) { return dt == KOSMOS2__Q4_0R8 || dt == KOSMOS2__Q8_0R8; }

/* ----------------------------------------------------------- q8_0 / q4_0 (de)quantization -- */
/* x[0..k-1] -> k/32 q8_0 blocks at out (k a multiple of 32). Per block: d = max|x| / 127,
 * q = round-half-away(x / d) (computed as x * (1/d)), d stored as float16 (ggml's rule). */
KOSMOS2__UNUSED static void kosmos2__quantize_row_q8_0(const float *x, void *out, int64_t k) {
    uint8_t *o = (uint8_t *)out;
    int64_t b, nb = k / KOSMOS2__QK;
    for (b = 0; b < nb; b++, x += KOSMOS2__QK, o += KOSMOS2__Q8_0_BYTES) {
        float amax = 0.0f, d, id;
        uint16_t dh;
        int i;
        for (i = 0; i < KOSMOS2__QK; i++) amax = fabsf(x[i]) > amax ? fabsf(x[i]) : amax;
        d = amax / 127.0f;
        id = d != 0.0f ? 1.0f / d : 0.0f;
        dh = kosmos2__f32_to_f16(d);
        memcpy(o, &dh, 2);
        for (i = 0; i < KOSMOS2__QK; i++) {
            float q = roundf(x[i] * id);
            q = q >= -127.0f ? (q <= 127.0f ? q : 127.0f) : -127.0f; /* also NaN -> -127 */
            o[2 + i] = (uint8_t)(int8_t)q;
        }
    }
}
/* x[0..k-1] -> k/32 q4_0 blocks. Per block: m = the element of largest magnitude (first one),
 * d = m / -8, q = min(15, trunc(x / d + 8.5)) (so m itself maps to 0), d stored as float16. */
KOSMOS2__UNUSED static void kosmos2__quantize_row_q4_0(const float *x, void *out, int64_t k) {
    uint8_t *o = (uint8_t *)out;
    int64_t b, nb = k / KOSMOS2__QK;
    for (b = 0; b < nb; b++, x += KOSMOS2__QK, o += KOSMOS2__Q4_0_BYTES) {
        float amax = 0.0f, m = 0.0f, d, id;
        uint16_t dh;
        int i;
        for (i = 0; i < KOSMOS2__QK; i++)
            if (fabsf(x[i]) > amax) { amax = fabsf(x[i]); m = x[i]; }
        d = m / -8.0f;
        id = d != 0.0f ? 1.0f / d : 0.0f;
        dh = kosmos2__f32_to_f16(d);
        memcpy(o, &dh, 2);
        for (i = 0; i < KOSMOS2__QK / 2; i++) {
            float t0 = x[i] * id + 8.5f, t1 = x[i + 16] * id + 8.5f;
            int q0, q1;
            t0 = t0 >= 0.0f ? (t0 <= 15.0f ? t0 : 15.0f) : 0.0f; /* NaN -> 0 */
            t1 = t1 >= 0.0f ? (t1 <= 15.0f ? t1 : 15.0f) : 0.0f;
            q0 = (int)t0;
            q1 = (int)t1;
            o[2 + i] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}
/* k/32 blocks -> k floats. */
KOSMOS2__UNUSED static void kosmos2__dequantize_row_q8_0(const void *in, float *y, int64_t k) {
    const uint8_t *p = (const uint8_t *)in;
    int64_t b, nb = k / KOSMOS2__QK;
    for (b = 0; b < nb; b++, p += KOSMOS2__Q8_0_BYTES) {
        float d = kosmos2__f16_at(p);
        int i;
        for (i = 0; i < KOSMOS2__QK; i++) y[b * KOSMOS2__QK + i] = (float)(int8_t)p[2 + i] * d;
    }
}
KOSMOS2__UNUSED static void kosmos2__dequantize_row_q4_0(const void *in, float *y, int64_t k) {
    const uint8_t *p = (const uint8_t *)in;
    int64_t b, nb = k / KOSMOS2__QK;
    for (b = 0; b < nb; b++, p += KOSMOS2__Q4_0_BYTES) {
        float d = kosmos2__f16_at(p);
        int i;
        for (i = 0; i < 16; i++) {
            y[b * KOSMOS2__QK + i] = (float)((p[2 + i] & 15) - 8) * d;
            y[b * KOSMOS2__QK + i + 16] = (float)((p[2 + i] >> 4) - 8) * d;
        }
    }
}

/* ------------------------------------------------------- q4_0r8 / q8_0r8 repacking -- */
/* q8 = 0: q4_0 (18-byte blocks, 16 bytes of nibbles), 1: q8_0 (34-byte blocks, 32 int8) */
#define KOSMOS2__R8_UNIT(q8) ((q8) ? 272 : 144) /* bytes of one (group of 8 rows, block) unit */
#define KOSMOS2__R8_BLK(q8) ((q8) ? KOSMOS2__Q8_0_BYTES : KOSMOS2__Q4_0_BYTES)
/* The q4_0 / q8_0 matrix src [N, K] (ggml rows) interleaved into dst (the same number of bytes):
 * groups g0 <= g < g1, and the N % 8 last rows (as they are) when tail. */
static void kosmos2__repack_r8(const uint8_t *src, uint8_t *dst, int64_t N, int64_t K, int64_t g0, int64_t g1, int tail, int q8) {
    const int64_t nb = K / KOSMOS2__QK, G = N / 8, bs = KOSMOS2__R8_BLK(q8), rb = nb * bs, U = KOSMOS2__R8_UNIT(q8);
    int64_t g, b;
    int r, c;
    for (g = g0; g < g1; g++)
        for (b = 0; b < nb; b++) {
            uint8_t *u = dst + (g * nb + b) * U;
            for (r = 0; r < 8; r++) {
                const uint8_t *blk = src + (g * 8 + r) * rb + b * bs;
                memcpy(u + 2 * r, blk, 2);
                for (c = 0; c < (int)(bs - 2) / 4; c++) memcpy(u + 16 + 32 * c + 4 * r, blk + 2 + 4 * c, 4);
            }
        }
    if (tail) memcpy(dst + G * nb * U, src + G * 8 * rb, (size_t)((N - G * 8) * rb));
}
/* Row n, block b of an r8 matrix [N, nb blocks] back as one plain block (18 / 34 bytes). */
static void kosmos2__r8_block(const uint8_t *W, int64_t N, int64_t nb, int64_t n, int64_t b, int q8, uint8_t *blk) {
    const int64_t G = N / 8, bs = KOSMOS2__R8_BLK(q8);
    if (n < G * 8) {
        const uint8_t *u = W + ((n / 8) * nb + b) * KOSMOS2__R8_UNIT(q8);
        int r = (int)(n % 8), c;
        memcpy(blk, u + 2 * r, 2);
        for (c = 0; c < (int)(bs - 2) / 4; c++) memcpy(blk + 2 + 4 * c, u + 16 + 32 * c + 4 * r, 4);
    } else memcpy(blk, W + G * nb * KOSMOS2__R8_UNIT(q8) + ((n - G * 8) * nb + b) * bs, (size_t)bs);
}

/* out[0..cols-1] = W[row] as float32 (exact for F16/BF16; dequantized for q types). */
KOSMOS2__UNUSED static void kosmos2__mat_row_f32(const kosmos2__mat *W, int64_t row, float *out) {
    int64_t j, n = W->cols;
    const uint8_t *base = (const uint8_t *)W->data + row * kosmos2__row_bytes(W->dtype, n);
    switch (W->dtype) {
    case KOSMOS2__F32: memcpy(out, base, (size_t)n * 4); break;
    case KOSMOS2__F16:
        for (j = 0; j < n; j++) out[j] = kosmos2__f16_at(base + 2 * j);
        break;
    case KOSMOS2__BF16:
        for (j = 0; j < n; j++) {
            uint16_t h;
            memcpy(&h, base + 2 * j, 2);
            out[j] = kosmos2__bf16_to_f32(h);
        }
        break;
    case KOSMOS2__Q8_0: kosmos2__dequantize_row_q8_0(base, out, n); break;
    case KOSMOS2__Q4_0: kosmos2__dequantize_row_q4_0(base, out, n); break;
    case KOSMOS2__Q4_0R8: case KOSMOS2__Q8_0R8:
        for (j = 0; j < n / KOSMOS2__QK; j++) {
            uint8_t blk[KOSMOS2__Q8_0_BYTES];
            kosmos2__r8_block((const uint8_t *)W->data, W->rows, n / KOSMOS2__QK, row, j, W->dtype == KOSMOS2__Q8_0R8, blk);
            if (W->dtype == KOSMOS2__Q8_0R8) kosmos2__dequantize_row_q8_0(blk, out + j * KOSMOS2__QK, KOSMOS2__QK);
            else kosmos2__dequantize_row_q4_0(blk, out + j * KOSMOS2__QK, KOSMOS2__QK);
        }
        break;
    }
}

/* ------------------------------------------------------------------------ ISA selection ---- */
/* x86-64 SIMD paths with GCC/clang, unless KOSMOS2_NO_SIMD is defined (scalar only) */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(KOSMOS2_NO_SIMD)
#define KOSMOS2__X86 1
#include <immintrin.h>
#include <cpuid.h>
#if defined(__GNUC__) && !defined(__clang__)
/* g++ -O2 falsely warns about the _mm512_undefined_* inside the AVX-512 intrinsics' unmasked forms */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#define KOSMOS2__X86_DIAG_PUSHED 1
#endif
#define KOSMOS2__T_AVX2 __attribute__((target("avx2,fma,f16c")))
#ifdef KOSMOS2__EMULATE_AVX512
/* Tests only (tests/avx512_emu.h): the AVX-512 kernels built from SIMDe's portable AVX-512
 * intrinsics on top of native AVX2, and chosen on any AVX2 CPU, so that they run on machines
 * without AVX-512 (the test suite checks them against the scalar reference there). */
#define KOSMOS2__T_AVX512 KOSMOS2__T_AVX2
#else
#define KOSMOS2__T_AVX512 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")))
#endif
/* AVX2 + AVX-VNNI (the VEX vpdpbusd): compilers from GCC 11 and clang 12 know it */
#if (defined(__clang__) && __clang_major__ >= 12) || (!defined(__clang__) && __GNUC__ >= 11)
#define KOSMOS2__HAVE_AVXVNNI 1
#ifdef KOSMOS2__EMULATE_AVX512
#define KOSMOS2__T_AVXVNNI KOSMOS2__T_AVX2 /* (tests: SIMDe's vpdpbusd, as for AVX-512) */
#else
#define KOSMOS2__T_AVXVNNI __attribute__((target("avx2,fma,f16c,avxvnni")))
#endif
#endif
#define KOSMOS2__INLINE static inline __attribute__((always_inline))
#ifdef __clang__ /* (clang takes "GCC unroll 8" as a partial unroll: the tiles' accumulator arrays stayed in memory, 4x slower) */
#define KOSMOS2__UNROLL _Pragma("clang loop unroll(full)")
#else
#define KOSMOS2__UNROLL _Pragma("GCC unroll 8")
#endif
/* v stays in a register here (an empty asm that "modifies" it: no load is folded into its uses) */
#define KOSMOS2__IN_REG(v) __asm__("" : "+x"(v))
#endif

static int kosmos2__isa_forced = -1; /* -1: best available; else the ISA asked for (tests) */
static int kosmos2__isa_avail = -1;  /* bit i: ISA i usable; detected once (benign race: every thread writes the same) */

/* The ISAs this CPU (and this compiler) can run, as bits, limited by KOSMOS2_ISA=scalar|avx2|
 * avxvnni|avx512 (the best one allowed). Not linear: AVX-512 machines without AVX-VNNI exist
 * (Zen 4, Ice Lake), and AVX-VNNI ones without AVX-512 (Alder Lake and later Intel clients). */
static int kosmos2__isa_detect(void) {
    int avail = 1 << KOSMOS2__ISA_SCALAR;
#ifdef KOSMOS2__X86
    const char *env = getenv("KOSMOS2_ISA");
    int f16c, i, cap = KOSMOS2__ISA_AVX512;
    unsigned a, b, c, d;
    __builtin_cpu_init();
    f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29)); /* CPUID.1:ECX.F16C (clang's builtin lacks it) */
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c) {
        avail |= 1 << KOSMOS2__ISA_AVX2;
#ifdef KOSMOS2__HAVE_AVXVNNI
        if (__get_cpuid_count(7, 1, &a, &b, &c, &d) && (a & (1u << 4))) /* CPUID.(7,1):EAX.AVX-VNNI */
            avail |= 1 << KOSMOS2__ISA_AVXVNNI;
#endif
        if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
            __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
            __builtin_cpu_supports("avx512vnni"))
            avail |= 1 << KOSMOS2__ISA_AVX512;
#ifdef KOSMOS2__EMULATE_AVX512
        avail |= 1 << KOSMOS2__ISA_AVX512;
#ifdef KOSMOS2__HAVE_AVXVNNI
        avail |= 1 << KOSMOS2__ISA_AVXVNNI;
#endif
#endif
    }
    if (env && strcmp(env, "scalar") == 0) cap = KOSMOS2__ISA_SCALAR;
    else if (env && strcmp(env, "avx2") == 0) cap = KOSMOS2__ISA_AVX2;
    else if (env && strcmp(env, "avxvnni") == 0) cap = KOSMOS2__ISA_AVXVNNI;
    for (i = cap + 1; i <= KOSMOS2__ISA_AVX512; i++) avail &= ~(1 << i);
#endif
    return avail;
}
/* The ISA the kernels use now: the best usable one at or below the one forced (or the best). */
static int kosmos2__kernels_isa(void) {
    int isa = KOSMOS2__ISA_AVX512;
    if (kosmos2__isa_avail < 0) kosmos2__isa_avail = kosmos2__isa_detect();
    if (kosmos2__isa_forced >= 0 && kosmos2__isa_forced < isa) isa = kosmos2__isa_forced;
    while (isa > 0 && !(kosmos2__isa_avail & (1 << isa))) isa--;
    return isa;
}
/* Bytes of one core's L2 cache, from CPUID (leaf 4 on Intel, 0x8000001D on AMD: the same
 * format), clamped to [256 KB, 4 MB]; 1 MB when unknown. Read once (benign race). */
static int64_t kosmos2__l2_bytes(void) {
    static int64_t l2 = 0;
    if (l2 == 0) {
        int64_t found = 0;
#ifdef KOSMOS2__X86
        static const unsigned leaves[2] = {4u, 0x8000001Du};
        int li, i;
        for (li = 0; li < 2 && !found; li++)
            for (i = 0; i < 16; i++) {
                unsigned a = 0, b = 0, c = 0, d = 0;
                if (!__get_cpuid_count(leaves[li], (unsigned)i, &a, &b, &c, &d) || (a & 31) == 0) break;
                if (((a >> 5) & 7) == 2 && ((a & 31) == 2 || (a & 31) == 3)) { /* level 2, data or unified */
                    found = (int64_t)((b >> 22) + 1) * (((b >> 12) & 0x3ff) + 1) * ((b & 0xfff) + 1) * ((int64_t)c + 1);
                    break;
                }
            }
#endif
        if (found == 0) found = (int64_t)1 << 20;
        l2 = found < ((int64_t)1 << 18) ? ((int64_t)1 << 18) : found > ((int64_t)1 << 22) ? ((int64_t)1 << 22) : found;
    }
    return l2;
}
/* Force an ISA (KOSMOS2__ISA_*; -1 = best available). Returns the ISA in effect, which is lower
 * than asked when the CPU (or KOSMOS2_ISA, or the compiler) does not allow it. Not thread-safe: call it before
 * starting work. */
KOSMOS2__UNUSED static int kosmos2__kernels_set_isa(int isa) {
    kosmos2__isa_forced = isa;
    return kosmos2__kernels_isa();
}
KOSMOS2__UNUSED static const char *kosmos2__isa_name(int isa) {
    return isa == KOSMOS2__ISA_AVX512 ? "avx512" : isa == KOSMOS2__ISA_AVXVNNI ? "avxvnni" : isa == KOSMOS2__ISA_AVX2 ? "avx2" : "scalar";
}

/* The next block of weights one thread will need: rows base + j*stride, j < rows, bytes
 * [0, bytes) of each. The weights stream from memory once; for the reads to overlap the
 * arithmetic, the block's cache lines are prefetched while the current block is multiplied,
 * a slice per register tile and one line per step of the tile's loop (a burst of prefetches
 * would hold the line fill buffers that the tile's own loads need). */
typedef struct {
    const uint8_t *base;
    int64_t stride, bytes, rows;
} kosmos2__next_block;
/* the slice for one tile: n lines from line `off` of row `row` (per_row lines per row) */
typedef struct {
    const uint8_t *base;
    int64_t stride, per_row, row, off, n;
} kosmos2__pf;

/* A tile kernel computes y[r*ldy + c] for r < R, c < C (its own R x C, see the kernel tables):
 * x rows at x + r*ldx (float32), weight rows at w + c*ldw elements of type dt, K of them.
 * Cache blocking over K: the 16 lanes of output (r, c) can be parked in part + (r*C + c)*16
 * between blocks of K (multiples of 16, so the lanes keep their k's). flags: KOSMOS2__T_RESUME
 * = start from the parked lanes (else from 0); KOSMOS2__T_FINISH = fold, add bias and write y
 * (else park the lanes). pf: lines to prefetch (or NULL). */
typedef void (*kosmos2__ftile_fn)(float *y, int64_t ldy, const float *x, int64_t ldx, const void *w,
                                  int64_t ldw, int dt, int64_t K, const float *bias, float *part, int flags,
                                  const kosmos2__pf *pf);
enum { KOSMOS2__T_RESUME = 1, KOSMOS2__T_FINISH = 2 };
/* All the whole R x C tiles of a panel block in one call: rows 0 .. M / R * R - 1 (part + m*C*16
 * for row m), float32 weights, the next block's lines spread over the tiles as kosmos2__pf_step
 * deals them (one call per tile cost 26-45 cycles each, about 8 % of a 1024-wide tile). */
typedef void (*kosmos2__ftiles_fn)(float *y, int64_t ldy, const float *x, int64_t ldx, const float *w, int64_t ldw,
                                   int64_t K, const float *bias, float *part, int flags, const kosmos2__next_block *next,
                                   int64_t M);
/* The next block's lines dealt over T tiles: tile t prefetches lines floor(lines * t / T) ..
 * floor(lines * (t+1) / T) - 1, counted without a division per tile (e = lines * t mod T). */
typedef struct {
    kosmos2__pf pf;
    int64_t lines, T, e;
} kosmos2__pf_deal;
static inline void kosmos2__pf_start(kosmos2__pf_deal *d, const kosmos2__next_block *next, int64_t T) {
    d->pf.base = next ? next->base : NULL;
    d->pf.stride = next ? next->stride : 0;
    d->pf.per_row = next ? (next->bytes + 63) / 64 : 0;
    d->pf.row = d->pf.off = d->pf.n = 0;
    d->lines = next ? d->pf.per_row * next->rows : 0;
    d->T = T > 0 ? T : 1;
    d->e = 0;
}
static inline const kosmos2__pf *kosmos2__pf_step(kosmos2__pf_deal *d) { /* the next tile's slice (or NULL) */
    d->pf.off += d->pf.n; /* this slice starts where the last one ended */
    while (d->pf.off >= d->pf.per_row && d->pf.per_row > 0) { d->pf.off -= d->pf.per_row; d->pf.row++; }
    d->pf.n = d->lines / d->T;
    d->e += d->lines % d->T;
    if (d->e >= d->T) { d->e -= d->T; d->pf.n++; }
    return d->lines > 0 ? &d->pf : NULL;
}
/* n weights of type dt to float32 (exact) */
typedef void (*kosmos2__widen_fn)(const void *src, int dt, float *dst, int64_t n);

/* Activations quantized to q8_0 for one product (row m of x -> row m of each array). The scales
 * are stored per block pair, each repeated 8 times, as the AVX-512 kernel's lanes want them. */
typedef struct {
    int64_t nb;      /* blocks per row = K / 32 */
    int64_t nbp;     /* block pairs per row = (nb + 1) / 2 */
    int64_t rs, rsp; /* row strides in blocks (>= nb) and in block pairs (>= nbp): padded so that
                      * the rows of a tile do not fall in the same L1 sets (K = 4096: 4 KiB apart) */
    float *d;        /* [M, rsp, 16] lanes 0-7: scale of block 2j, lanes 8-15: of block 2j+1 (or 0) */
    int8_t *q;       /* [M, rs*32] quantized values in [-127, 127] */
    int32_t *ns;     /* [M, rs*8] minus the sum of each group of 4 quantized values */
    int32_t *n8;     /* [M, rs] -8 * the sum of each block's 32 values (q4_0r8, and q8_0r8 with
                      * column tiles; else NULL) */
    /* r8 types with at least 8 rows and a kernel set with r8cols (else NULL): the same values with
     * 8 rows interleaved (rows 8g .. 8g+7 = group g; rows past M are zeros), one register per
     * 4 values of 8 rows, as the column tiles want them */
    int8_t *qi;      /* [ceil(M/8), nb, 8 chunks j, 8 rows, 4] values 4j .. 4j+3 of block b of each row */
    float *di;       /* [ceil(M/8), nb, 8 rows] the scales */
    int32_t *n8i;    /* [ceil(M/8), nb, 8 rows] n8 (where n8 is) */
} kosmos2__qacts;
/* scale of block b of activation row m */
#define KOSMOS2__QACT_D(A, m, b) ((A)->d[((m) * (A)->rsp + ((b) >> 1)) * 16 + ((b) & 1) * 8])
/* A quantized tile kernel: y[r*ldy + c] for activation rows m0 + r of A and weight rows c
 * (w + c*wstride bytes, type dt = Q8_0 or Q4_0). pf != 0: while reading a weight block, also
 * prefetch the block pf bytes further (the next panel: rows of a few hundred bytes are too
 * short for the hardware prefetchers to ramp up). */
typedef void (*kosmos2__qtile_fn)(float *y, int64_t ldy, const kosmos2__qacts *A, int64_t m0, const uint8_t *w,
                                  int64_t wstride, int dt, const float *bias, int64_t pf);
/* Quantize activation row x[0..K-1] (K = 32 * A->nb) into row m of A: the bytes of
 * kosmos2__quantize_row_q8_0 (every path gives the same, the tests check it). */
typedef void (*kosmos2__qact_fn)(const float *x, kosmos2__qacts *A, int64_t m);
/* r8 column tiles (many activation rows): one group of 8 weight rows is first unpacked, by
 * r8unpack, from its nb units at wg into wu and wd [nb, 8] (the scales as float32). q4_0r8: wu
 * [nb, 8 chunks j, 8 rows, 4] (the nibbles as bytes 0 .. 15: chunk j < 4 the low nibbles of unit
 * chunk j, j >= 4 the high ones of chunk j - 4); q8_0r8: AVX2 wu [nb, 8 chunks j, 2, 8 rows, 4]
 * (|w| as unsigned bytes, then w), AVX-512 wu [nb, 8 chunks j, 8 rows, 4] (w ^ 0x80 = w + 128
 * as unsigned bytes). Then r8cols multiplies activation groups g, g + 1, ... of A (qi: 8 rows
 * per group, a row per lane) by it: y[l * ldy + r] for rows l < rows (<= R8C of the kernel set:
 * rows > 8 reach into group g + 1) and weight rows r < 8, + bias[r] (or + 0). The r8 canonical
 * sum, so the bits of r8full / r8row. */
#define KOSMOS2__R8_WU(q8) ((q8) ? 512 : 256) /* bytes of wu per block */
typedef void (*kosmos2__r8unpack_fn)(const uint8_t *wg, int64_t nb, uint8_t *wu, float *wd, int q8);
typedef void (*kosmos2__r8cols_fn)(float *y, int64_t ldy, int64_t rows, const kosmos2__qacts *A, int64_t g,
                                   const uint8_t *wu, const float *wd, const float *bias, int q8);

/* Element-wise math in place on x [n]: exp, or an activation (see kosmos2__vm_ref). */
enum { KOSMOS2__VM_EXP, KOSMOS2__VM_GELU, KOSMOS2__VM_QUICK_GELU, KOSMOS2__VM_SILU };
typedef void (*kosmos2__vmath_fn)(float *x, int64_t n, int op);
/* Decoding attention, one cache row (one key position) for nh heads of hd values at a time, so
 * that the cache is read row after row (contiguous bytes) instead of head after head (a 128-byte
 * piece every 4 KB). k, v: the row's first head [nh * hd] of type dt (KOSMOS2__F32 or
 * KOSMOS2__F16); q, o [nh * hd] float32; p: one score per head at stride ldp.
 *   qk: p[h * ldp] = the canonical dot product of q[h*hd ..] and k[h*hd ..] (the float tiles' sum:
 *       a decode step's scores have the bits of the products' ones).
 *   pv: n rows at once (row s at v + s * ldv elements, its scores p[h * ldp + s]): for s = 0 ..
 *       n-1 in order, o[h*hd + d] = fmaf(p[h * ldp + s], v[s*ldv + h*hd + d], o[h*hd + d]), the
 *       sums kept in registers over the n rows. Called for increasing key positions on an o set
 *       to 0, each o[d] is summed in increasing s with fused multiply-adds from 0 (every path,
 *       any n: the same bits). */
typedef void (*kosmos2__qk_fn)(float *p, int64_t ldp, const float *q, const void *k, int dt, int nh, int64_t hd);
/* Attention scores for many queries, one head: p[t * ldp + s] = the canonical dot product (the
 * float tiles' sum, + 0) of q[t * hd ..] (t < T) and key s (s < S16), the keys given transposed
 * in blocks of 16, kt [S16 / 16, hd, 16] (value d of key s at ((s / 16) * hd + d) * 16 + s % 16);
 * hd and S16 multiples of 16. Lanes are 8 keys, so each query value is broadcast once per 16 keys
 * and the 16 canonical lanes fold with vertical adds, in the tree's order. */
typedef void (*kosmos2__qkt_fn)(float *p, int64_t ldp, const float *q, int64_t T, const float *kt, int64_t S16, int64_t hd);
/* The steps of kosmos2__softmax_row around its exp, vectorised with the same bits: max_sub
 * sets p -= m, m the row's maximum taken with the scalar loop's compares (p > m ? p : m);
 * scale sums the row in 8 double lanes (element s into lane s mod 8, in order; the tail into
 * lanes 0, 1, ...), folds them as the scalar code and multiplies each value by 1/sum in double. */
typedef void (*kosmos2__max_sub_fn)(float *p, int64_t n);
typedef void (*kosmos2__sm_scale_fn)(float *p, int64_t n);
typedef void (*kosmos2__pv_fn)(float *o, const float *p, int64_t ldp, const void *v, int64_t ldv, int n, int dt, int nh,
                               int64_t hd);
/* One row's LayerNorm: o [n] = (v - mean) / sqrt(var + eps) * w + b, v [n] (o may be v). Mean and
 * variance in double, each a sum in 8 interleaved partial sums (element i into sum i mod 8, the
 * variance's by fused multiply-adds), folded ((0+1)+(2+3))+((4+5)+(6+7)); then per element
 * fmaf((float)(v - mean) * inv, w, b) with inv = (float)(1 / sqrt(var + eps)). Every path: the
 * same bits (explicit fused operations, so no compiler contraction can tell them apart). */
typedef void (*kosmos2__lnorm_fn)(float *o, const float *v, int64_t n, const float *w, const float *b, float eps);
/* dst [n] = src [n] rounded to float16 (nearest even; overflow -> inf; NaN -> 0x7e00 with its
 * sign): kosmos2__f32_to_f16's bits on every path (a float16 KV cache). */
typedef void (*kosmos2__narrow_fn)(uint16_t *dst, const float *src, int64_t n);

/* The kernels of one ISA: R x C tiles. full: R x C, float32 weights; row: 1 x C, any float
 * dtype; one: 1 x 1. The q* entries are the same for quantized weights. */
typedef struct {
    int R, C;
    int64_t KB; /* block of K for M >= R (0: none) */
    kosmos2__ftile_fn full, row, one;
    kosmos2__ftile_fn fewer[4]; /* fewer[r]: r x C tile for the last r < R rows, float32 weights (or NULL) */
    kosmos2__ftiles_fn tiles;   /* all whole tiles of a block in one call (or NULL: full per tile) */
    kosmos2__widen_fn widen;
    int QR, QC;
    kosmos2__qtile_fn qfull, qrow, qone;
    kosmos2__qact_fn qact;
    kosmos2__qtile_fn qrow8; /* 1 x 8 tile for single-row products (or NULL) */
    int R8;                  /* r8 types: r8full takes R8 activation rows x one group of 8 weight rows, */
    kosmos2__qtile_fn r8full, r8row; /* r8row 1 x 8 (w: the group's first unit; y: 8 outputs per row) */
    kosmos2__r8unpack_fn r8unpack;   /* r8 column tiles for 8 or more rows (or NULL: r8full) */
    kosmos2__r8cols_fn r8cols;
    int R8C;                         /* activation rows per r8cols call (8 or 16) */
    kosmos2__vmath_fn vmath;
    kosmos2__qk_fn qk;
    kosmos2__qkt_fn qkt; /* (or NULL: scores by kosmos2__matmul) */
    kosmos2__max_sub_fn max_sub; /* (both or neither: NULL = the scalar loops) */
    kosmos2__sm_scale_fn sm_scale;
    kosmos2__pv_fn pv;
    kosmos2__lnorm_fn lnorm;
    kosmos2__narrow_fn narrow;
} kosmos2__kernel_set;

/* ---------------------------------------------------------------- scalar reference path ---- */
/* Fold 16 lanes in the canonical tree order. */
static float kosmos2__fold16(float *s) {
    int l;
    for (l = 0; l < 8; l++) s[l] += s[l + 8];
    for (l = 0; l < 4; l++) s[l] += s[l + 4];
    for (l = 0; l < 2; l++) s[l] += s[l + 2];
    return s[0] + s[1];
}
static float kosmos2__load_w(const void *w, int dt, int64_t k) { /* one float weight as float32 */
    uint16_t h;
    if (dt == KOSMOS2__F32) return ((const float *)w)[k];
    memcpy(&h, (const uint16_t *)w + k, 2);
    return dt == KOSMOS2__F16 ? kosmos2__f16_to_f32(h) : kosmos2__bf16_to_f32(h);
}
/* Canonical dot product of a float weight row with x (the scalar reference). */
static float kosmos2__dot_scalar(const void *w, int dt, const float *x, int64_t K) {
    float s[16] = {0};
    int64_t k;
    for (k = 0; k < K; k++) s[k & 15] = fmaf(x[k], kosmos2__load_w(w, dt, k), s[k & 15]);
    return kosmos2__fold16(s);
}
static void kosmos2__tile_scalar(float *y, int64_t ldy, const float *x, int64_t ldx, const void *w, int64_t ldw,
                                 int dt, int64_t K, const float *bias, float *part, int flags, const kosmos2__pf *pf) {
    (void)ldy; (void)ldx; (void)ldw; (void)part; (void)flags; (void)pf; /* the scalar driver does not block K */
    *y = kosmos2__dot_scalar(w, dt, x, K) + (bias ? bias[0] : 0.0f);
}
/* Canonical dot product of a q8_0/q4_0 weight row with a q8_0 activation row (scalar reference). */
static float kosmos2__qdot_scalar(const uint8_t *w, int dt, const kosmos2__qacts *A, int64_t m) {
    float s[16] = {0};
    int64_t b;
    const int8_t *aq = A->q + m * A->rs * KOSMOS2__QK;
    int bs = dt == KOSMOS2__Q8_0 ? KOSMOS2__Q8_0_BYTES : KOSMOS2__Q4_0_BYTES;
    for (b = 0; b < A->nb; b++, w += bs, aq += KOSMOS2__QK) {
        int wq[KOSMOS2__QK], i, g;
        float d = kosmos2__f16_at(w) * KOSMOS2__QACT_D(A, m, b); /* exact: two float16 values */
        if (dt == KOSMOS2__Q8_0)
            for (i = 0; i < 32; i++) wq[i] = (int8_t)w[2 + i];
        else
            for (i = 0; i < 16; i++) { wq[i] = (w[2 + i] & 15) - 8; wq[i + 16] = (w[2 + i] >> 4) - 8; }
        for (g = 0; g < 8; g++) {
            int p = 0;
            for (i = 4 * g; i < 4 * g + 4; i++) p += wq[i] * aq[i];
            s[(b & 1) * 8 + g] = fmaf(d, (float)p, s[(b & 1) * 8 + g]);
        }
    }
    return kosmos2__fold16(s);
}
static void kosmos2__qtile_scalar(float *y, int64_t ldy, const kosmos2__qacts *A, int64_t m0, const uint8_t *w,
                                  int64_t wstride, int dt, const float *bias, int64_t pf) {
    (void)ldy; (void)wstride; (void)pf;
    *y = kosmos2__qdot_scalar(w, dt, A, m0) + (bias ? bias[0] : 0.0f);
}

/* The r8 canonical sum (see DATA LAYOUTS) of activation row m of A with row r of the group whose
 * first unit is w (units `step` bytes apart), or with r < 0 the plain row at w (blocks `step`
 * bytes apart); q8: q8_0 (else q4_0) blocks. */
static float kosmos2__qdot_r8_scalar(const uint8_t *w, int64_t step, int r, int q8, const kosmos2__qacts *A, int64_t m) {
    float s = 0.0f;
    const int8_t *aq = A->q + m * A->rs * KOSMOS2__QK;
    const int nq = q8 ? 32 : 16; /* bytes of weights per block */
    int64_t b;
    for (b = 0; b < A->nb; b++, w += step, aq += KOSMOS2__QK) {
        uint8_t qs[32];
        float d;
        int32_t p = 0;
        int i, c;
        if (r < 0) { d = kosmos2__f16_at(w); memcpy(qs, w + 2, (size_t)nq); } /* a plain row */
        else {                                                               /* row r of a group unit */
            d = kosmos2__f16_at(w + 2 * r);
            for (c = 0; c < nq / 4; c++) memcpy(qs + 4 * c, w + 16 + 32 * c + 4 * r, 4);
        }
        if (q8) for (i = 0; i < 32; i++) p += (int8_t)qs[i] * aq[i];
        else for (i = 0; i < 16; i++) p += ((qs[i] & 15) - 8) * aq[i] + ((qs[i] >> 4) - 8) * aq[i + 16];
        s = fmaf(d * KOSMOS2__QACT_D(A, m, b), (float)p, s); /* exact product: two float16 */
    }
    return s;
}
/* r8full / r8row of the scalar set: 1 activation row x the 8 rows of the group at w */
static void kosmos2__r8tile_scalar(float *y, int64_t ldy, const kosmos2__qacts *A, int64_t m0, const uint8_t *w,
                                   int64_t wstride, int dt, const float *bias, int64_t pf) {
    const int q8 = dt == KOSMOS2__Q8_0R8;
    int r;
    (void)ldy; (void)wstride; (void)pf;
    for (r = 0; r < 8; r++) y[r] = kosmos2__qdot_r8_scalar(w, KOSMOS2__R8_UNIT(q8), r, q8, A, m0) + (bias ? bias[r] : 0.0f);
}

/* Quantize activation row x[0..K-1] to q8_0 (the weights' rule) into row m of A (reference). */
static void kosmos2__quantize_act_row(const float *x, kosmos2__qacts *A, int64_t m) {
    uint8_t blk[KOSMOS2__Q8_0_BYTES];
    float *d = A->d + m * A->rsp * 16;             /* [nbp, 16] */
    int8_t *q = A->q + m * A->rs * KOSMOS2__QK;    /* [nb, 32] */
    int32_t *ns = A->ns + m * A->rs * 8;           /* [nb, 8] */
    int64_t b;
    int i, g;
    for (i = 0; i < 16 && A->nbp > 0; i++) d[(A->nbp - 1) * 16 + i] = 0.0f; /* odd nb: no block 2j+1 */
    for (b = 0; b < A->nb; b++) {
        float dv;
        kosmos2__quantize_row_q8_0(x + b * KOSMOS2__QK, blk, KOSMOS2__QK);
        dv = kosmos2__f16_at(blk);
        for (i = 0; i < 8; i++) d[(b >> 1) * 16 + (b & 1) * 8 + i] = dv;
        memcpy(q + b * KOSMOS2__QK, blk + 2, KOSMOS2__QK);
        for (g = 0; g < 8; g++)
            ns[b * 8 + g] = -((int8_t)blk[2 + 4 * g] + (int8_t)blk[3 + 4 * g] + (int8_t)blk[4 + 4 * g] + (int8_t)blk[5 + 4 * g]);
    }
}

/* Vector math with ONE definition: every path evaluates the same float32 operations in the same
 * order (fmaf = one fused multiply-add), so scalar, AVX2 and AVX-512 agree to the bit.
 * exp(x) = 2^n * e^r, n = rint(x log2 e), r = x - n ln 2 (ln 2 in two parts), e^r by Cephes'
 * expf polynomial (about 1 ulp). x < -87 gives 0 (true exp would be below 2^-125, a float
 * subnormal), x > 88 gives +inf, NaN stays NaN. */
static float kosmos2__exp_ref(float x) {
    float n, r, p, y, s;
    uint32_t bits;
    if (x != x) return x;
    if (x < -87.0f) return 0.0f;
    if (x > 88.0f) return INFINITY;
    n = rintf(x * 1.44269504088896341f);
    r = fmaf(n, -0.693359375f, x);
    r = fmaf(n, 2.12194440e-4f, r);
    p = 1.9875691500e-4f;
    p = fmaf(p, r, 1.3981999507e-3f);
    p = fmaf(p, r, 8.3334519073e-3f);
    p = fmaf(p, r, 4.1665795894e-2f);
    p = fmaf(p, r, 1.6666665459e-1f);
    p = fmaf(p, r, 5.0000001201e-1f);
    y = fmaf(p, r * r, r) + 1.0f;
    bits = (uint32_t)((int32_t)n + 127) << 23; /* 2^n, n in [-126, 127] */
    memcpy(&s, &bits, 4);
    return y * s;
}
/* GELU with the exact erf form, 0.5 x (1 + erf(x / sqrt 2)); erf by Abramowitz & Stegun 7.1.26
 * (|error| < 1.5e-7): for u = x / sqrt 2, z = |u|, t = 1 / (1 + 0.3275911 z),
 * q = t (a1 + t (a2 + ...)) e^(-z^2) = 1 - erf(z); then 1 + erf(u) = 2 - q (u >= 0) or q (u < 0),
 * which keeps the relative accuracy of the negative tail. */
static float kosmos2__gelu_ref(float x) {
    float u = x * 0.70710678118654752f, z = fabsf(u), t = 1.0f / fmaf(0.3275911f, z, 1.0f), p, q;
    p = 1.061405429f;
    p = fmaf(p, t, -1.453152027f);
    p = fmaf(p, t, 1.421413741f);
    p = fmaf(p, t, -0.284496736f);
    p = fmaf(p, t, 0.254829592f);
    q = (p * t) * kosmos2__exp_ref(-(z * z));
    return (0.5f * x) * (u >= 0.0f ? 2.0f - q : q);
}
/* one element of op: exp, GELU (erf), quick GELU x sigmoid(1.702 x), SiLU x sigmoid(x) */
static float kosmos2__vm_ref(float x, int op) {
    if (op == KOSMOS2__VM_EXP) return kosmos2__exp_ref(x);
    if (op == KOSMOS2__VM_GELU) return kosmos2__gelu_ref(x);
    if (op == KOSMOS2__VM_QUICK_GELU) return x / (1.0f + kosmos2__exp_ref(-1.702f * x));
    return x / (1.0f + kosmos2__exp_ref(-x));
}
static void kosmos2__vmath_scalar(float *x, int64_t n, int op) {
    int64_t i;
    for (i = 0; i < n; i++) x[i] = kosmos2__vm_ref(x[i], op);
}
static void kosmos2__narrow_scalar(uint16_t *dst, const float *src, int64_t n) {
    int64_t i;
    for (i = 0; i < n; i++) dst[i] = kosmos2__f32_to_f16(src[i]);
}
static void kosmos2__qk_scalar(float *p, int64_t ldp, const float *q, const void *k, int dt, int nh, int64_t hd) {
    int h;
    for (h = 0; h < nh; h++)
        p[h * ldp] = kosmos2__dot_scalar((const char *)k + h * hd * (dt == KOSMOS2__F32 ? 4 : 2), dt, q + h * hd, hd);
}
/* the fold of 8 partial sums shared by every lnorm path */
static double kosmos2__fold8_d(const double *s) { return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7])); }
/* lnorm's last step (mean, variance and the tail of the sums done): o[i] for i0 <= i < n */
static void kosmos2__lnorm_tail(float *o, const float *v, int64_t i0, int64_t n, const float *w, const float *b,
                                double mean, float inv) {
    int64_t i;
    for (i = i0; i < n; i++) o[i] = fmaf((float)((double)v[i] - mean) * inv, w[i], b[i]);
}
static void kosmos2__lnorm_scalar(float *o, const float *v, int64_t n, const float *w, const float *b, float eps) {
    double s[8] = {0}, mean, var;
    int64_t i;
    for (i = 0; i < n; i++) s[i & 7] += v[i];
    mean = kosmos2__fold8_d(s) / (double)n;
    memset(s, 0, sizeof s);
    for (i = 0; i < n; i++) s[i & 7] = fma((double)v[i] - mean, (double)v[i] - mean, s[i & 7]);
    var = kosmos2__fold8_d(s) / (double)n;
    kosmos2__lnorm_tail(o, v, 0, n, w, b, mean, (float)(1.0 / sqrt(var + (double)eps)));
}
static void kosmos2__pv_scalar(float *o, const float *p, int64_t ldp, const void *v, int64_t ldv, int n, int dt, int nh,
                               int64_t hd) {
    int64_t d;
    int h, r;
    for (r = 0; r < n; r++)
        for (h = 0; h < nh; h++)
            for (d = 0; d < hd; d++)
                o[h * hd + d] = fmaf(p[h * ldp + r], kosmos2__load_w(v, dt, r * ldv + h * hd + d), o[h * hd + d]);
}

/* ------------------------------------------------------------------------------ AVX2 path -- */
#ifdef KOSMOS2__X86
/* fold of a[l] = s[l] + s[l+8] (l < 8) down to one float, in the canonical order */
KOSMOS2__INLINE KOSMOS2__T_AVX2 float kosmos2__fold8_avx2(__m256 a) {
    __m128 b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    __m128 c = _mm_add_ps(b, _mm_movehl_ps(b, b));
    return _mm_cvtss_f32(_mm_add_ss(c, _mm_shuffle_ps(c, c, 1)));
}
/* 8 weights at w[k..k+7] as float32 */
KOSMOS2__INLINE KOSMOS2__T_AVX2 __m256 kosmos2__load8_avx2(const void *w, int dt, int64_t k) {
    if (dt == KOSMOS2__F32) return _mm256_loadu_ps((const float *)w + k);
    if (dt == KOSMOS2__F16) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + k)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(
        _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + k))), 16));
}
/* The float tile: R x C outputs, each with two 8-lane accumulators (lanes 0-7, 8-15). The K % 16
 * tail is copied into zero-padded float buffers (0*0 added to a lane leaves it unchanged).
 * Per 8 lanes the R activation vectors and then each weight vector are loaded once into a
 * register (R + C loads for R * C multiply-adds); KOSMOS2__IN_REG keeps the compiler from
 * folding them back into the multiply-adds as memory operands, which GCC otherwise does (2 x 3:
 * 16 loads per 12 multiply-adds instead of 10, and 1.35x slower on an L1-resident block, Zen 3). */
KOSMOS2__INLINE KOSMOS2__T_AVX2 void kosmos2__tile_avx2_body(float *y, int64_t ldy, const float *x, int64_t ldx,
                                                             const void *w, int64_t ldw, int dt, int64_t K,
                                                             const float *bias, float *part, int flags,
                                                             const kosmos2__pf *pf, const int R, const int C) {
    __m256 lo[2][3], hi[2][3];
    float xt[2][16], wt[3][16];
    int64_t k, pn = pf ? pf->n : 0, prow = pf ? pf->row : 0, poff = pf ? pf->off : 0;
    int r, c;
    const int es = dt == KOSMOS2__F32 ? 4 : 2;
    /* (one row of float16/bfloat16 weights prefetches the next panel itself; a 2048-wide row is
     * one 4 KB page, which the hardware prefetchers do not run ahead of: +7..30 % GB/s decoding
     * 6144 x 2048 bf16 / f16 from DRAM on Zen 3, 2 threads; float32 weights showed no clear gain) */
    KOSMOS2__UNROLL for (r = 0; r < R; r++) KOSMOS2__UNROLL for (c = 0; c < C; c++) {
        lo[r][c] = flags & KOSMOS2__T_RESUME ? _mm256_loadu_ps(part + (r * C + c) * 16) : _mm256_setzero_ps();
        hi[r][c] = flags & KOSMOS2__T_RESUME ? _mm256_loadu_ps(part + (r * C + c) * 16 + 8) : _mm256_setzero_ps();
    }
    /* One step: k .. k + 15 of every accumulator, lanes 0-7 then 8-15, each operand loaded once
     * into a register (see above). */
#define KOSMOS2__TILE_AVX2_STEP(k)                                                                                     \
    do {                                                                                                               \
        __m256 x0[2], x1[2];                                                                                           \
        if (R == 1 && dt != KOSMOS2__F32) { /* decoding: the next panel's bytes (rows are contiguous) at the same pace */ \
            const char *q = (const char *)w + C * ldw * es + C * (k) * es;                                             \
            _mm_prefetch(q, _MM_HINT_T0);                                                                              \
            _mm_prefetch(q + 64, _MM_HINT_T0);                                                                         \
        }                                                                                                              \
        if (R > 1) /* the activation rows' line 256 bytes ahead (from L2: +1-5 %, 2 threads, Zen 3) */                 \
            KOSMOS2__UNROLL for (r = 0; r < R; r++) _mm_prefetch((const char *)(x + r * ldx + (k)) + 256, _MM_HINT_T0); \
        KOSMOS2__UNROLL for (r = 0; r < R; r++) {                                                                      \
            x0[r] = _mm256_loadu_ps(x + r * ldx + (k));                                                                \
            KOSMOS2__IN_REG(x0[r]);                                                                                    \
        }                                                                                                              \
        KOSMOS2__UNROLL for (c = 0; c < C; c++) {                                                                      \
            __m256 wv = kosmos2__load8_avx2((const char *)w + c * ldw * es, dt, (k));                                  \
            KOSMOS2__IN_REG(wv);                                                                                       \
            KOSMOS2__UNROLL for (r = 0; r < R; r++) lo[r][c] = _mm256_fmadd_ps(x0[r], wv, lo[r][c]);                   \
        }                                                                                                              \
        KOSMOS2__UNROLL for (r = 0; r < R; r++) {                                                                      \
            x1[r] = _mm256_loadu_ps(x + r * ldx + (k) + 8);                                                            \
            KOSMOS2__IN_REG(x1[r]);                                                                                    \
        }                                                                                                              \
        KOSMOS2__UNROLL for (c = 0; c < C; c++) {                                                                      \
            __m256 wv = kosmos2__load8_avx2((const char *)w + c * ldw * es, dt, (k) + 8);                              \
            KOSMOS2__IN_REG(wv);                                                                                       \
            KOSMOS2__UNROLL for (r = 0; r < R; r++) hi[r][c] = _mm256_fmadd_ps(x1[r], wv, hi[r][c]);                   \
        }                                                                                                              \
    } while (0)
    /* The steps that also prefetch one line of the next weight block each (see
     * kosmos2__next_block), then the others with no per-step test: a 2 x 3 step is 12
     * multiply-adds among ~30 instructions, and Zen 3 dispatches 6 per cycle, so the loop's own
     * overhead counts (Zen 3, 52 rows x 1024 -> 4096 f32 as the driver runs it, one thread:
     * 69-71 -> 72-80 % of the FMA peak; scripts/ab_stages.sh, 2 threads, 8 pairs: f32 vision
     * min 1718 -> 1556 ms, bf16 vision 1406 -> 1245, bf16 prefill 1434 -> 1349). Two steps per
     * iteration were slower: GCC then spilled an accumulator. */
    for (k = 0; k + 16 <= K && pn > 0; k += 16, pn--) {
        _mm_prefetch((const char *)pf->base + prow * pf->stride + poff * 64, _MM_HINT_T1);
        if (++poff == pf->per_row) { poff = 0; prow++; }
        KOSMOS2__TILE_AVX2_STEP(k);
    }
    for (; k + 16 <= K; k += 16) KOSMOS2__TILE_AVX2_STEP(k);
#undef KOSMOS2__TILE_AVX2_STEP
    if (k < K) {
        int64_t n = K - k, j;
        for (r = 0; r < R; r++)
            for (j = 0; j < 16; j++) xt[r][j] = j < n ? x[r * ldx + k + j] : 0.0f;
        for (c = 0; c < C; c++)
            for (j = 0; j < 16; j++) wt[c][j] = j < n ? kosmos2__load_w((const char *)w + c * ldw * es, dt, k + j) : 0.0f;
        KOSMOS2__UNROLL for (c = 0; c < C; c++) KOSMOS2__UNROLL for (r = 0; r < R; r++) {
            lo[r][c] = _mm256_fmadd_ps(_mm256_loadu_ps(xt[r]), _mm256_loadu_ps(wt[c]), lo[r][c]);
            hi[r][c] = _mm256_fmadd_ps(_mm256_loadu_ps(xt[r] + 8), _mm256_loadu_ps(wt[c] + 8), hi[r][c]);
        }
    }
    KOSMOS2__UNROLL for (r = 0; r < R; r++) KOSMOS2__UNROLL for (c = 0; c < C; c++) {
        if (flags & KOSMOS2__T_FINISH)
            y[r * ldy + c] = kosmos2__fold8_avx2(_mm256_add_ps(lo[r][c], hi[r][c])) + (bias ? bias[c] : 0.0f);
        else {
            _mm256_storeu_ps(part + (r * C + c) * 16, lo[r][c]);
            _mm256_storeu_ps(part + (r * C + c) * 16 + 8, hi[r][c]);
        }
    }
}
static KOSMOS2__T_AVX2 void kosmos2__tile_avx2_full(float *y, int64_t ldy, const float *x, int64_t ldx,
                                                     const void *w, int64_t ldw, int dt, int64_t K, const float *bias, float *part, int flags, const kosmos2__pf *pf) {
    (void)dt;
    kosmos2__tile_avx2_body(y, ldy, x, ldx, w, ldw, KOSMOS2__F32, K, bias, part, flags, pf, 2, 3);
}
static KOSMOS2__T_AVX2 void kosmos2__tiles_avx2(float *y, int64_t ldy, const float *x, int64_t ldx, const float *w, int64_t ldw,
                                               int64_t K, const float *bias, float *part, int flags,
                                               const kosmos2__next_block *next, int64_t M) {
    kosmos2__pf_deal d;
    int64_t m;
    kosmos2__pf_start(&d, next, M / 2);
    for (m = 0; m + 2 <= M; m += 2)
        kosmos2__tile_avx2_body(y + m * ldy, ldy, x + m * ldx, ldx, w, ldw, KOSMOS2__F32, K, bias, part ? part + m * 3 * 16 : NULL,
                                flags, kosmos2__pf_step(&d), 2, 3);
}
static KOSMOS2__T_AVX2 void kosmos2__tile_avx2_row(float *y, int64_t ldy, const float *x, int64_t ldx,
                                                    const void *w, int64_t ldw, int dt, int64_t K, const float *bias, float *part, int flags, const kosmos2__pf *pf) {
    if (dt == KOSMOS2__F32) kosmos2__tile_avx2_body(y, ldy, x, ldx, w, ldw, KOSMOS2__F32, K, bias, part, flags, pf, 1, 3);
    else if (dt == KOSMOS2__F16) kosmos2__tile_avx2_body(y, ldy, x, ldx, w, ldw, KOSMOS2__F16, K, bias, part, flags, pf, 1, 3);
    else kosmos2__tile_avx2_body(y, ldy, x, ldx, w, ldw, KOSMOS2__BF16, K, bias, part, flags, pf, 1, 3);
}
static KOSMOS2__T_AVX2 void kosmos2__tile_avx2_one(float *y, int64_t ldy, const float *x, int64_t ldx,
                                                    const void *w, int64_t ldw, int dt, int64_t K, const float *bias, float *part, int flags, const kosmos2__pf *pf) {
    if (dt == KOSMOS2__F32) kosmos2__tile_avx2_body(y, ldy, x, ldx, w, ldw, KOSMOS2__F32, K, bias, part, flags, pf, 1, 1);
    else if (dt == KOSMOS2__F16) kosmos2__tile_avx2_body(y, ldy, x, ldx, w, ldw, KOSMOS2__F16, K, bias, part, flags, pf, 1, 1);
    else kosmos2__tile_avx2_body(y, ldy, x, ldx, w, ldw, KOSMOS2__BF16, K, bias, part, flags, pf, 1, 1);
}
static KOSMOS2__T_AVX2 void kosmos2__widen_avx2(const void *src, int dt, float *dst, int64_t n) {
    int64_t k;
    if (dt == KOSMOS2__F32)
        for (k = 0; k + 8 <= n; k += 8) _mm256_storeu_ps(dst + k, _mm256_loadu_ps((const float *)src + k));
    else if (dt == KOSMOS2__F16)
        for (k = 0; k + 8 <= n; k += 8) _mm256_storeu_ps(dst + k, kosmos2__load8_avx2(src, KOSMOS2__F16, k));
    else
        for (k = 0; k + 8 <= n; k += 8) _mm256_storeu_ps(dst + k, kosmos2__load8_avx2(src, KOSMOS2__BF16, k));
    for (; k < n; k++) dst[k] = kosmos2__load_w(src, dt, k);
}

/* 32 weights of block `blk` as int8 (q4_0 nibbles unpacked: low nibbles first, minus 8) */
/* A block's 32 weights as bytes: q8_0 signed as stored; q4_0 the UNSIGNED nibbles u in [0, 15]
 * (the -8 is applied to the sums: see kosmos2__qgroups_avx2). */
KOSMOS2__INLINE KOSMOS2__T_AVX2 __m256i kosmos2__qload32_avx2(const uint8_t *blk, int dt) {
    if (dt == KOSMOS2__Q8_0) return _mm256_loadu_si256((const __m256i *)(blk + 2));
    {
        __m128i v = _mm_loadu_si128((const __m128i *)(blk + 2)), m = _mm_set1_epi8(15);
        __m128i lo = _mm_and_si128(v, m), hi = _mm_and_si128(_mm_srli_epi16(v, 4), m);
        return _mm256_set_m128i(hi, lo);
    }
}
/* Exact int32 sums of 4 consecutive products w*a (8 groups).
 *   q8_0: maddubs on |w| and sign(a, w) (|w| <= 127: the int16 pair sums cannot saturate);
 *   q4_0: maddubs on the unsigned nibbles u and a (pairs <= 2*15*127), and
 *         sum((u - 8) * a) = sum(u * a) - 8 * sum(a): corr = 8 * A->ns (ns = -sum(a) per group),
 *         computed once per activation row and block by the caller. */
KOSMOS2__INLINE KOSMOS2__T_AVX2 __m256i kosmos2__qgroups_avx2(__m256i w, __m256i a, __m256i corr, int dt) {
    if (dt == KOSMOS2__Q4_0) return _mm256_add_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(w, a), _mm256_set1_epi16(1)), corr);
    return _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(a, w)), _mm256_set1_epi16(1));
}
/* The quantized tile: R x C outputs; accumulators lo (even blocks) and hi (odd blocks). */
KOSMOS2__INLINE KOSMOS2__T_AVX2 void kosmos2__qtile_avx2_body(float *y, int64_t ldy, const kosmos2__qacts *A, int64_t m0,
                                                              const uint8_t *w, int64_t wstride, int dt,
                                                              const float *bias, int64_t pf, const int R, const int C) {
    __m256 acc[2][4][2]; /* [r][c][b & 1] (R <= 2, C <= 4) */
    const int64_t nb = A->nb;
    const int8_t *aq = A->q + m0 * A->rs * KOSMOS2__QK;
    int64_t b;
    int r, c;
    const int bs = dt == KOSMOS2__Q8_0 ? KOSMOS2__Q8_0_BYTES : KOSMOS2__Q4_0_BYTES;
    KOSMOS2__UNROLL for (r = 0; r < R; r++) KOSMOS2__UNROLL for (c = 0; c < C; c++) {
        acc[r][c][0] = _mm256_setzero_ps();
        acc[r][c][1] = _mm256_setzero_ps();
    }
    for (b = 0; b < nb; b++) {
        const int h = (int)(b & 1);
        __m256i corr[2]; /* q4_0: 8 * (minus the group sums) of each activation row (see kosmos2__qgroups_avx2) */
        KOSMOS2__UNROLL for (r = 0; r < R; r++)
            corr[r] = dt == KOSMOS2__Q4_0 ? _mm256_slli_epi32(_mm256_loadu_si256((const __m256i *)(A->ns + ((m0 + r) * A->rs + b) * 8)), 3)
                                          : _mm256_setzero_si256();
        KOSMOS2__UNROLL for (c = 0; c < C; c++) {
            const uint8_t *blk = w + c * wstride + b * bs;
            __m256i wv = kosmos2__qload32_avx2(blk, dt);
            if (pf) _mm_prefetch((const char *)blk + pf, _MM_HINT_T0);
            unsigned short dh;
            float dw;
            memcpy(&dh, blk, 2);
            dw = _cvtsh_ss(dh);
            KOSMOS2__UNROLL for (r = 0; r < R; r++) {
                __m256i av = _mm256_loadu_si256((const __m256i *)(aq + r * A->rs * KOSMOS2__QK + b * KOSMOS2__QK));
                __m256 p = _mm256_cvtepi32_ps(kosmos2__qgroups_avx2(wv, av, corr[r], dt));
                __m256 d = _mm256_set1_ps(dw * KOSMOS2__QACT_D(A, m0 + r, b));
                acc[r][c][h] = _mm256_fmadd_ps(d, p, acc[r][c][h]);
            }
        }
    }
    for (r = 0; r < R; r++)
        for (c = 0; c < C; c++)
            y[r * ldy + c] = kosmos2__fold8_avx2(_mm256_add_ps(acc[r][c][0], acc[r][c][1])) + (bias ? bias[c] : 0.0f);
}
static KOSMOS2__T_AVX2 void kosmos2__qtile_avx2_full(float *y, int64_t ldy, const kosmos2__qacts *A, int64_t m0,
                                                     const uint8_t *w, int64_t wstride, int dt, const float *bias, int64_t pf) {
    if (dt == KOSMOS2__Q8_0) kosmos2__qtile_avx2_body(y, ldy, A, m0, w, wstride, KOSMOS2__Q8_0, bias, pf, 2, 2);
    else kosmos2__qtile_avx2_body(y, ldy, A, m0, w, wstride, KOSMOS2__Q4_0, bias, pf, 2, 2);
}
static KOSMOS2__T_AVX2 void kosmos2__qtile_avx2_row(float *y, int64_t ldy, const kosmos2__qacts *A, int64_t m0,
                                                     const uint8_t *w, int64_t wstride, int dt, const float *bias, int64_t pf) {
    if (dt == KOSMOS2__Q8_0) kosmos2__qtile_avx2_body(y, ldy, A, m0, w, wstride, KOSMOS2__Q8_0, bias, pf, 1, 2);
    else kosmos2__qtile_avx2_body(y, ldy, A, m0, w, wstride, KOSMOS2__Q4_0, bias, pf, 1, 2);
}
/* 1 x 8 as two 1 x 4 tiles (decoding: one activation row feeds 4 weight rows at a time) */
static KOSMOS2__T_AVX2 void kosmos2__qtile_avx2_row8(float *y, int64_t ldy, const kosmos2__qacts *A, int64_t m0,
                                                      const uint8_t *w, int64_t wstride, int dt, const float *bias, int64_t pf) {
    int half;
    for (half = 0; half < 2; half++) {
        const uint8_t *wh = w + half * 4 * wstride;
        const float *bh = bias ? bias + half * 4 : NULL;
        if (dt == KOSMOS2__Q8_0) kosmos2__qtile_avx2_body(y + half * 4, ldy, A, m0, wh, wstride, KOSMOS2__Q8_0, bh, pf, 1, 4);
        else kosmos2__qtile_avx2_body(y + half * 4, ldy, A, m0, wh, wstride, KOSMOS2__Q4_0, bh, pf, 1, 4);
    }
}
static KOSMOS2__T_AVX2 void kosmos2__qtile_avx2_one(float *y, int64_t ldy, const kosmos2__qacts *A, int64_t m0,
                                                     const uint8_t *w, int64_t wstride, int dt, const float *bias, int64_t pf) {
    if (dt == KOSMOS2__Q8_0) kosmos2__qtile_avx2_body(y, ldy, A, m0, w, wstride, KOSMOS2__Q8_0, bias, pf, 1, 1);
    else kosmos2__qtile_avx2_body(y, ldy, A, m0, w, wstride, KOSMOS2__Q4_0, bias, pf, 1, 1);
}

/* q4_0r8 (see DATA LAYOUTS): R activation rows x the 8 weight rows of one group, lanes = weight
 * rows. Per block: the 4 chunks unpacked once into 8 registers of unsigned nibbles (chunk c low:
 * weights 4c..4c+3 of each row, high: 16+4c..16+4c+3), then for each activation row 8 maddubs
 * against its broadcast 4-value groups, summed in int16 (each sum <= 8 * 2 * 15 * 127 = 30480:
 * no overflow), madd to int32 per row, + A->n8 (the -8 of every nibble), one conversion and one
 * multiply-add with the 8 rows' scales times the activation's scale. */
KOSMOS2__INLINE KOSMOS2__T_AVX2 __m256i kosmos2__bcast4_avx2(const int8_t *p) { /* 4 bytes in every 32-bit lane */
    int32_t v;
    memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}
/* y[r * ldy + 0..7] = acc[r] + bias (or + 0), r < R: the r8 canonical ending */
KOSMOS2__INLINE KOSMOS2__T_AVX2 void kosmos2__r8_store_avx2(float *y, int64_t ldy, const __m256 *acc, const float *bias, const int R) {
    int r;
    KOSMOS2__UNROLL for (r = 0; r < R; r++)
        _mm256_storeu_ps(y + r * ldy, _mm256_add_ps(acc[r], bias ? _mm256_loadu_ps(bias) : _mm256_setzero_ps()));
}
KOSMOS2__INLINE KOSMOS2__T_AVX2 void kosmos2__r8tile_avx2_body(float *y, int64_t ldy, const kosmos2__qacts *A, int64_t m0,
                                                               const uint8_t *w, const float *bias, int64_t pf, const int R) {
    __m256 acc[4]; /* [r] (R <= 4) */
    const __m256i m4 = _mm256_set1_epi8(15), ones = _mm256_set1_epi16(1);
    const int8_t *aq = A->q + m0 * A->rs * KOSMOS2__QK;
    const int32_t *n8 = A->n8 + m0 * A->rs;
    int64_t b;
    int r, c;
    KOSMOS2__UNROLL for (r = 0; r < R; r++) acc[r] = _mm256_setzero_ps();
    for (b = 0; b < A->nb; b++, w += KOSMOS2__R8_UNIT(0)) {
        const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)w));
        __m256i lo[4], hi[4];
        if (pf) { _mm_prefetch((const char *)w + pf, _MM_HINT_T0); _mm_prefetch((const char *)w + pf + 64, _MM_HINT_T0); _mm_prefetch((const char *)w + pf + 128, _MM_HINT_T0); }
        KOSMOS2__UNROLL for (c = 0; c < 4; c++) {
            const __m256i v = _mm256_loadu_si256((const __m256i *)(w + 16 + 32 * c));
            lo[c] = _mm256_and_si256(v, m4);
            hi[c] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
        }
        KOSMOS2__UNROLL for (r = 0; r < R; r++) {
            const int8_t *a = aq + r * A->rs * KOSMOS2__QK + b * KOSMOS2__QK;
            __m256i s, is;
            s = _mm256_maddubs_epi16(lo[0], kosmos2__bcast4_avx2(a));
            s = _mm256_add_epi16(s, _mm256_maddubs_epi16(lo[1], kosmos2__bcast4_avx2(a + 4)));
            s = _mm256_add_epi16(s, _mm256_maddubs_epi16(lo[2], kosmos2__bcast4_avx2(a + 8)));
            s = _mm256_add_epi16(s, _mm256_maddubs_epi16(lo[3], kosmos2__bcast4_avx2(a + 12)));
            s = _mm256_add_epi16(s, _mm256_maddubs_epi16(hi[0], kosmos2__bcast4_avx2(a + 16)));
            s = _mm256_add_epi16(s, _mm256_maddubs_epi16(hi[1], kosmos2__bcast4_avx2(a + 20)));
            s = _mm256_add_epi16(s, _mm256_maddubs_epi16(hi[2], kosmos2__bcast4_avx2(a + 24)));
            s = _mm256_add_epi16(s, _mm256_maddubs_epi16(hi[3], kosmos2__bcast4_avx2(a + 28)));
            is = _mm256_add_epi32(_mm256_madd_epi16(s, ones), _mm256_set1_epi32(n8[r * A->rs + b]));
            acc[r] = _mm256_fmadd_ps(_mm256_mul_ps(dw, _mm256_set1_ps(KOSMOS2__QACT_D(A, m0 + r, b))), _mm256_cvtepi32_ps(is), acc[r]);
        }
    }
    kosmos2__r8_store_avx2(y, ldy, acc, bias, R);
}
/* q8_0r8: the same with signed weights: maddubs(|w|, sign(a, w)) per chunk (|w| <= 128, so each
 * int16 pair sum is at most 2 * 128 * 127 = 32512: no saturation, but two would overflow),
 * madd to int32 per chunk. |w| once per block for all R rows; the signs from memory. */
KOSMOS2__INLINE KOSMOS2__T_AVX2 void kosmos2__r8tile_q8_avx2_body(float *y, int64_t ldy, const kosmos2__qacts *A, int64_t m0,
                                                                  const uint8_t *w, const float *bias, int64_t pf, const int R) {
    __m256 acc[4]; /* [r] (R <= 4) */
    const __m256i ones = _mm256_set1_epi16(1);
    const int8_t *aq = A->q + m0 * A->rs * KOSMOS2__QK;
    int64_t b;
    int r, c;
    KOSMOS2__UNROLL for (r = 0; r < R; r++) acc[r] = _mm256_setzero_ps();
    for (b = 0; b < A->nb; b++, w += KOSMOS2__R8_UNIT(1)) {
        const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)w));
        __m256i aw[8];
        if (pf) KOSMOS2__UNROLL for (c = 0; c < 5; c++) _mm_prefetch((const char *)w + pf + 64 * c, _MM_HINT_T0);
        KOSMOS2__UNROLL for (c = 0; c < 8; c++) aw[c] = _mm256_abs_epi8(_mm256_loadu_si256((const __m256i *)(w + 16 + 32 * c)));
        KOSMOS2__UNROLL for (r = 0; r < R; r++) {
            const int8_t *a = aq + r * A->rs * KOSMOS2__QK + b * KOSMOS2__QK;
            __m256i is = _mm256_setzero_si256();
            KOSMOS2__UNROLL for (c = 0; c < 8; c++) {
                const __m256i sa = _mm256_sign_epi8(kosmos2__bcast4_avx2(a + 4 * c), _mm256_loadu_si256((const __m256i *)(w + 16 + 32 * c)));
                is = _mm256_add_epi32(is, _mm256_madd_epi16(_mm256_maddubs_epi16(aw[c], sa), ones));
            }
            acc[r] = _mm256_fmadd_ps(_mm256_mul_ps(dw, _mm256_set1_ps(KOSMOS2__QACT_D(A, m0 + r, b))), _mm256_cvtepi32_ps(is), acc[r]);
        }
    }
    kosmos2__r8_store_avx2(y, ldy, acc, bias, R);
}
static KOSMOS2__T_AVX2 void kosmos2__r8tile_avx2_full(float *y, int64_t ldy, const kosmos2__qacts *A, int64_t m0,
                                                      const uint8_t *w, int64_t wstride, int dt, const float *bias, int64_t pf) {
    (void)wstride;
    if (dt == KOSMOS2__Q8_0R8) kosmos2__r8tile_q8_avx2_body(y, ldy, A, m0, w, bias, pf, 4);
    else kosmos2__r8tile_avx2_body(y, ldy, A, m0, w, bias, pf, 4);
}
static KOSMOS2__T_AVX2 void kosmos2__r8tile_avx2_row(float *y, int64_t ldy, const kosmos2__qacts *A, int64_t m0,
                                                     const uint8_t *w, int64_t wstride, int dt, const float *bias, int64_t pf) {
    (void)wstride;
    if (dt == KOSMOS2__Q8_0R8) kosmos2__r8tile_q8_avx2_body(y, ldy, A, m0, w, bias, pf, 1);
    else kosmos2__r8tile_avx2_body(y, ldy, A, m0, w, bias, pf, 1);
}
/* q4_0r8 column tiles (see kosmos2__r8cols_fn): lanes = 8 activation rows. The group's nibbles
 * are unpacked to bytes once (per chunk of activation rows), so the tile needs no unpacking: per
 * block and 4 values, one broadcast of 4 unsigned weight bytes per weight row and one maddubs per
 * (weight row, 8 activation rows) with the interleaved activations; the 8 int16 sums of a block
 * (each <= 8 * 2 * 15 * 127 = 30480) then madd to int32, + n8, one conversion and one
 * multiply-add per weight row. 4 weight rows per pass (4 + 4 accumulators), two passes per
 * group. On Zen 3 (one core, data in L1) 65-69 % of the maddubs peak against 53-55 % for the
 * 4 x 8 r8full tile, which unpacks every block for every 4 rows and spills registers. */
static KOSMOS2__T_AVX2 void kosmos2__r8unpack_avx2(const uint8_t *wg, int64_t nb, uint8_t *wu, float *wd, int q8) {
    const __m256i m4 = _mm256_set1_epi8(15);
    int64_t b;
    int c;
    if (q8) {
        for (b = 0; b < nb; b++, wg += KOSMOS2__R8_UNIT(1), wu += 512, wd += 8) {
            _mm256_storeu_ps(wd, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)wg)));
            KOSMOS2__UNROLL for (c = 0; c < 8; c++) {
                const __m256i v = _mm256_loadu_si256((const __m256i *)(wg + 16 + 32 * c));
                _mm256_storeu_si256((__m256i *)(wu + 64 * c), _mm256_abs_epi8(v));
                _mm256_storeu_si256((__m256i *)(wu + 64 * c + 32), v);
            }
        }
        return;
    }
    for (b = 0; b < nb; b++, wg += KOSMOS2__R8_UNIT(0), wu += 256, wd += 8) {
        _mm256_storeu_ps(wd, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)wg)));
        KOSMOS2__UNROLL for (c = 0; c < 4; c++) {
            const __m256i v = _mm256_loadu_si256((const __m256i *)(wg + 16 + 32 * c));
            _mm256_storeu_si256((__m256i *)(wu + 32 * c), _mm256_and_si256(v, m4));
            _mm256_storeu_si256((__m256i *)(wu + 128 + 32 * c), _mm256_and_si256(_mm256_srli_epi16(v, 4), m4));
        }
    }
}
/* The 8-row column tiles' block end and store (weight rows 4h .. 4h+3, lanes = activation rows):
 * acc[r] += (wd[r] * da) * is[r] (wd: the block's 4 weight scales, da: the 8 rows' scales), and
 * y[l * ldy + 4h + r] = acc[r][l] + bias (l < rows). */
KOSMOS2__INLINE KOSMOS2__T_AVX2 void kosmos2__r8cols_fin4_avx2(__m256 *acc, const __m256i *is, const float *wd, __m256 da) {
    int r;
    KOSMOS2__UNROLL for (r = 0; r < 4; r++)
        acc[r] = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_broadcast_ss(wd + r), da), _mm256_cvtepi32_ps(is[r]), acc[r]);
}
KOSMOS2__INLINE KOSMOS2__T_AVX2 void kosmos2__r8cols_store4_avx2(float *y, int64_t ldy, int64_t rows, const __m256 *acc,
                                                                 const float *bias, int h) {
    int r, l;
    for (r = 0; r < 4; r++) {
        float t[8];
        const float bv = bias ? bias[4 * h + r] : 0.0f;
        _mm256_storeu_ps(t, acc[r]);
        for (l = 0; l < rows; l++) y[l * ldy + 4 * h + r] = t[l] + bv;
    }
}
/* q8_0r8: per (weight row, 4 values) maddubs(|w|, sign(a, w)) and madd to int32 at once (two
 * int16 pair sums of up to 2 * 128 * 127 would overflow): 4 vector operations per maddubs, so
 * at most half the maddubs peak on 4 pipes (Zen 3, one core, data in L1: 41-42 % against 36 %
 * for the 4 x 8 r8full tile). */
KOSMOS2__INLINE KOSMOS2__T_AVX2 void kosmos2__r8cols_q8_avx2(float *y, int64_t ldy, int64_t rows, const kosmos2__qacts *A, int64_t g,
                                                             const uint8_t *wu, const float *wd, const float *bias) {
    const __m256i ones = _mm256_set1_epi16(1);
    const int64_t nb = A->nb;
    const int8_t *aq0 = A->qi + g * nb * 256;  /* [nb, 8, 8, 4] */
    const float *ad0 = A->di + g * nb * 8;     /* [nb, 8] */
    int h, r, j;
    for (h = 0; h < 2; h++) { /* weight rows 4h .. 4h+3 */
        __m256 acc[4];
        const int8_t *aq = aq0;
        const uint8_t *w = wu + 16 * h;
        int64_t b;
        KOSMOS2__UNROLL for (r = 0; r < 4; r++) acc[r] = _mm256_setzero_ps();
        for (b = 0; b < nb; b++, aq += 256, w += 512) {
            __m256i is[4];
            __m256 da = _mm256_loadu_ps(ad0 + b * 8);
            KOSMOS2__UNROLL for (j = 0; j < 8; j++) {
                const __m256i av = _mm256_loadu_si256((const __m256i *)(aq + 32 * j));
                KOSMOS2__UNROLL for (r = 0; r < 4; r++) {
                    const __m256i wa = kosmos2__bcast4_avx2((const int8_t *)(w + 64 * j + 4 * r));
                    const __m256i ws = kosmos2__bcast4_avx2((const int8_t *)(w + 64 * j + 32 + 4 * r));
                    const __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(wa, _mm256_sign_epi8(av, ws)), ones);
                    is[r] = j ? _mm256_add_epi32(is[r], p) : p;
                    KOSMOS2__IN_REG(is[r]);
                }
            }
            kosmos2__r8cols_fin4_avx2(acc, is, wd + b * 8 + 4 * h, da);
        }
        kosmos2__r8cols_store4_avx2(y, ldy, rows, acc, bias, h);
    }
}
static KOSMOS2__T_AVX2 void kosmos2__r8cols_avx2(float *y, int64_t ldy, int64_t rows, const kosmos2__qacts *A, int64_t g,
                                                 const uint8_t *wu, const float *wd, const float *bias, int q8) {
    const __m256i ones = _mm256_set1_epi16(1);
    const int64_t nb = A->nb;
    const int8_t *aq0 = A->qi + g * nb * 256;  /* [nb, 8, 8, 4] */
    const float *ad0 = A->di + g * nb * 8;     /* [nb, 8] */
    const int32_t *an0;                        /* [nb, 8] */
    int h, r, j;
    if (q8) {
        kosmos2__r8cols_q8_avx2(y, ldy, rows, A, g, wu, wd, bias);
        return;
    }
    an0 = A->n8i + g * nb * 8;
    for (h = 0; h < 2; h++) { /* weight rows 4h .. 4h+3 */
        __m256 acc[4];
        const int8_t *aq = aq0;
        const uint8_t *w = wu + 16 * h;
        int64_t b;
        KOSMOS2__UNROLL for (r = 0; r < 4; r++) acc[r] = _mm256_setzero_ps();
        for (b = 0; b < nb; b++, aq += 256, w += 256) {
            __m256i s[4];
            __m256 da = _mm256_loadu_ps(ad0 + b * 8);
            __m256i n8 = _mm256_loadu_si256((const __m256i *)(an0 + b * 8));
            KOSMOS2__UNROLL for (j = 0; j < 8; j++) {
                const __m256i av = _mm256_loadu_si256((const __m256i *)(aq + 32 * j));
                KOSMOS2__UNROLL for (r = 0; r < 4; r++) {
                    const __m256i p = _mm256_maddubs_epi16(kosmos2__bcast4_avx2((const int8_t *)(w + 32 * j + 4 * r)), av);
                    s[r] = j ? _mm256_add_epi16(s[r], p) : p;
                    KOSMOS2__IN_REG(s[r]); /* (else GCC regroups the int16 sums and spills) */
                }
            }
            KOSMOS2__UNROLL for (r = 0; r < 4; r++) s[r] = _mm256_add_epi32(_mm256_madd_epi16(s[r], ones), n8);
            kosmos2__r8cols_fin4_avx2(acc, s, wd + b * 8 + 4 * h, da);
        }
        kosmos2__r8cols_store4_avx2(y, ldy, rows, acc, bias, h);
    }
}

/* Column tiles with a vpdpbusd (AVX-VNNI here, AVX-512 VNNI in kosmos2__r8cols_avx512): the
 * weights unpacked as unsigned bytes. q4_0r8: the nibbles, as for AVX2; q8_0r8: wu [nb, 8
 * chunks j, 8 rows, 4] = w ^ 0x80 = w + 128, wd the scales. */
static KOSMOS2__T_AVX2 void kosmos2__r8unpack_vnni(const uint8_t *wg, int64_t nb, uint8_t *wu, float *wd, int q8) {
    const __m256i top = _mm256_set1_epi8((char)0x80);
    int64_t b;
    int c;
    if (!q8) {
        kosmos2__r8unpack_avx2(wg, nb, wu, wd, 0); /* (the nibbles as bytes: the same layout) */
        return;
    }
    for (b = 0; b < nb; b++, wg += KOSMOS2__R8_UNIT(1), wu += 256, wd += 8) { /* wu [nb, 8 chunks, 8 rows, 4] */
        _mm256_storeu_ps(wd, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)wg)));
        for (c = 0; c < 8; c++)
            _mm256_storeu_si256((__m256i *)(wu + 32 * c), _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(wg + 16 + 32 * c)), top));
    }
}
#ifdef KOSMOS2__HAVE_AVXVNNI
/* AVX-VNNI (Intel since Alder Lake, AMD since Zen 5; without AVX-512 the only vpdpbusd): the
 * AVX2 column tile with one vpdpbusd per (weight row, 4 values) in place of maddubs + int16 add
 * (+ a share of the madd), the int32 sums starting at the block's correction as in
 * kosmos2__r8cols_avx512 (q4_0r8: n8; q8_0r8: 16 * n8 for the bytes w + 128). The same bits.
 * Tested under emulation only (no such CPU here). */
static KOSMOS2__T_AVXVNNI void kosmos2__r8cols_avxvnni(float *y, int64_t ldy, int64_t rows, const kosmos2__qacts *A, int64_t g,
                                                       const uint8_t *wu, const float *wd, const float *bias, int q8) {
    const int64_t nb = A->nb;
    const int8_t *aq0 = A->qi + g * nb * 256;  /* [nb, 8, 8, 4] */
    const float *ad0 = A->di + g * nb * 8;     /* [nb, 8] */
    const int32_t *an0 = A->n8i + g * nb * 8;  /* [nb, 8] */
    int h, r, j;
    for (h = 0; h < 2; h++) { /* weight rows 4h .. 4h+3 */
        __m256 acc[4];
        const int8_t *aq = aq0;
        const uint8_t *w = wu + 16 * h;
        int64_t b;
        KOSMOS2__UNROLL for (r = 0; r < 4; r++) acc[r] = _mm256_setzero_ps();
        for (b = 0; b < nb; b++, aq += 256, w += 256) {
            const __m256 da = _mm256_loadu_ps(ad0 + b * 8);
            __m256i corr = _mm256_loadu_si256((const __m256i *)(an0 + b * 8)), s[4];
            if (q8) corr = _mm256_slli_epi32(corr, 4);
            KOSMOS2__UNROLL for (r = 0; r < 4; r++) s[r] = corr;
            KOSMOS2__UNROLL for (j = 0; j < 8; j++) {
                const __m256i av = _mm256_loadu_si256((const __m256i *)(aq + 32 * j));
                KOSMOS2__UNROLL for (r = 0; r < 4; r++)
                    s[r] = _mm256_dpbusd_avx_epi32(s[r], kosmos2__bcast4_avx2((const int8_t *)(w + 32 * j + 4 * r)), av);
            }
            kosmos2__r8cols_fin4_avx2(acc, s, wd + b * 8 + 4 * h, da);
        }
        kosmos2__r8cols_store4_avx2(y, ldy, rows, acc, bias, h);
    }
}
/* int8 peak with AVX-VNNI: 12 chains of vpdpbusd (32 multiply-adds each, as a maddubs) */
static KOSMOS2__T_AVXVNNI int32_t kosmos2__probe_i8_avxvnni(int64_t iters) {
    __m256i a[12];
    const __m256i u = _mm256_set1_epi8(3), v = _mm256_set1_epi8(-2);
    int64_t i;
    int j;
    for (j = 0; j < 12; j++) a[j] = _mm256_set1_epi32(j);
    for (i = 0; i < iters; i++) _Pragma("GCC unroll 12") for (j = 0; j < 12; j++) a[j] = _mm256_dpbusd_avx_epi32(a[j], u, v);
    for (j = 1; j < 12; j++) a[0] = _mm256_add_epi32(a[0], a[j]);
    return _mm_cvtsi128_si32(_mm256_castsi256_si128(a[0]));
}
#endif

/* The activation quantization (kosmos2__quantize_act_row), 8 values per register. roundf (half
 * away from zero) is done exactly: r = trunc(t), then r += sign(t) when |t - r| >= 0.5 (t - r
 * is exact); the clamp keeps the scalar order, so NaN -> -127 (max returns its second operand
 * when one is NaN). The scale is rounded to float16 by F16C (round to nearest even, like
 * kosmos2__f32_to_f16; d is never NaN). Calling the scalar helpers here would cost more than the
 * whole block: they are SSE code, and SSE after AVX-512 code stalls. */
KOSMOS2__INLINE KOSMOS2__T_AVX2 __m256i kosmos2__qround8_avx2(__m256 t) {
    const __m256 sgn = _mm256_set1_ps(-0.0f);
    __m256 r = _mm256_round_ps(t, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    __m256 half = _mm256_cmp_ps(_mm256_andnot_ps(sgn, _mm256_sub_ps(t, r)), _mm256_set1_ps(0.5f), _CMP_GE_OQ);
    r = _mm256_add_ps(r, _mm256_and_ps(half, _mm256_or_ps(_mm256_and_ps(t, sgn), _mm256_set1_ps(1.0f))));
    r = _mm256_min_ps(_mm256_max_ps(r, _mm256_set1_ps(-127.0f)), _mm256_set1_ps(127.0f));
    return _mm256_cvtps_epi32(r);
}
/* the largest of 8 floats (none NaN) */
KOSMOS2__INLINE KOSMOS2__T_AVX2 float kosmos2__hmax8_avx2(__m256 a) {
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    return _mm_cvtss_f32(_mm_max_ss(h, _mm_shuffle_ps(h, h, 1)));
}
static KOSMOS2__T_AVX2 void kosmos2__qact_avx2(const float *x, kosmos2__qacts *A, int64_t m) {
    float *d = A->d + m * A->rsp * 16;             /* [nbp, 16] */
    int8_t *q = A->q + m * A->rs * KOSMOS2__QK;    /* [nb, 32] */
    int32_t *ns = A->ns + m * A->rs * 8;           /* [nb, 8] */
    const __m256 sgn = _mm256_set1_ps(-0.0f);
    int64_t b;
    int i;
    for (i = 0; i < 16 && A->nbp > 0; i++) d[(A->nbp - 1) * 16 + i] = 0.0f; /* odd nb: no block 2j+1 */
    for (b = 0; b < A->nb; b++, x += KOSMOS2__QK) {
        __m256 x0 = _mm256_loadu_ps(x), x1 = _mm256_loadu_ps(x + 8), x2 = _mm256_loadu_ps(x + 16), x3 = _mm256_loadu_ps(x + 24);
        __m256 a = _mm256_setzero_ps(), idv;
        __m256i q0, q1, q2, q3, qb, gs;
        float amax, dd, id;
        a = _mm256_max_ps(_mm256_andnot_ps(sgn, x0), a); /* (NaN lanes keep a) */
        a = _mm256_max_ps(_mm256_andnot_ps(sgn, x1), a);
        a = _mm256_max_ps(_mm256_andnot_ps(sgn, x2), a);
        a = _mm256_max_ps(_mm256_andnot_ps(sgn, x3), a);
        amax = kosmos2__hmax8_avx2(a);
        dd = amax / 127.0f;
        id = dd != 0.0f ? 1.0f / dd : 0.0f;
        dd = _cvtsh_ss(_cvtss_sh(dd, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)); /* to float16 and back */
        for (i = 0; i < 8; i++) d[(b >> 1) * 16 + (b & 1) * 8 + i] = dd;
        idv = _mm256_set1_ps(id);
        q0 = kosmos2__qround8_avx2(_mm256_mul_ps(x0, idv));
        q1 = kosmos2__qround8_avx2(_mm256_mul_ps(x1, idv));
        q2 = kosmos2__qround8_avx2(_mm256_mul_ps(x2, idv));
        q3 = kosmos2__qround8_avx2(_mm256_mul_ps(x3, idv));
        /* int32 -> int8 (values in [-127, 127]): the packs interleave 128-bit halves, a permute undoes it */
        qb = _mm256_packs_epi16(_mm256_packs_epi32(q0, q1), _mm256_packs_epi32(q2, q3));
        qb = _mm256_permutevar8x32_epi32(qb, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)(q + b * KOSMOS2__QK), qb);
        gs = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), qb), _mm256_set1_epi16(1)); /* sums of 4 */
        _mm256_storeu_si256((__m256i *)(ns + b * 8), _mm256_sub_epi32(_mm256_setzero_si256(), gs));
    }
}

/* kosmos2__exp_ref / kosmos2__vm_ref on 8 lanes, the same operations */
KOSMOS2__INLINE KOSMOS2__T_AVX2 __m256 kosmos2__exp_avx2(__m256 x) {
    const __m256 lo = _mm256_cmp_ps(x, _mm256_set1_ps(-87.0f), _CMP_LT_OQ), hi = _mm256_cmp_ps(x, _mm256_set1_ps(88.0f), _CMP_GT_OQ);
    const __m256 nan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fmadd_ps(n, _mm256_set1_ps(-0.693359375f), x), p, y, s;
    r = _mm256_fmadd_ps(n, _mm256_set1_ps(2.12194440e-4f), r);
    p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    y = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0f));
    s = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23));
    y = _mm256_mul_ps(y, s);
    y = _mm256_blendv_ps(y, _mm256_setzero_ps(), lo);
    y = _mm256_blendv_ps(y, _mm256_set1_ps(INFINITY), hi);
    return _mm256_blendv_ps(y, x, nan);
}
static KOSMOS2__T_AVX2 void kosmos2__max_sub_avx2(float *p, int64_t n) {
    __m256 mx = _mm256_set1_ps(-FLT_MAX), m;
    float lanes[8], maxv;
    int64_t s;
    int l;
    for (s = 0; s + 8 <= n; s += 8) mx = _mm256_max_ps(_mm256_loadu_ps(p + s), mx); /* p > mx ? p : mx */
    _mm256_storeu_ps(lanes, mx);
    for (; s < n; s++) lanes[0] = p[s] > lanes[0] ? p[s] : lanes[0];
    maxv = lanes[0];
    for (l = 1; l < 8; l++) maxv = lanes[l] > maxv ? lanes[l] : maxv;
    m = _mm256_set1_ps(maxv);
    for (s = 0; s + 8 <= n; s += 8) _mm256_storeu_ps(p + s, _mm256_sub_ps(_mm256_loadu_ps(p + s), m));
    for (; s < n; s++) p[s] -= maxv;
}
static KOSMOS2__T_AVX2 void kosmos2__sm_scale_avx2(float *p, int64_t n) {
    __m256d a0 = _mm256_setzero_pd(), a1 = _mm256_setzero_pd(), iv;
    double acc[8], inv;
    int64_t s;
    int l;
    for (s = 0; s + 8 <= n; s += 8) {
        a0 = _mm256_add_pd(a0, _mm256_cvtps_pd(_mm_loadu_ps(p + s)));
        a1 = _mm256_add_pd(a1, _mm256_cvtps_pd(_mm_loadu_ps(p + s + 4)));
    }
    _mm256_storeu_pd(acc, a0);
    _mm256_storeu_pd(acc + 4, a1);
    for (l = 0; s < n; s++, l++) acc[l] += p[s];
    inv = 1.0 / (((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7])));
    iv = _mm256_set1_pd(inv);
    for (s = 0; s + 4 <= n; s += 4) _mm_storeu_ps(p + s, _mm256_cvtpd_ps(_mm256_mul_pd(_mm256_cvtps_pd(_mm_loadu_ps(p + s)), iv)));
    for (; s < n; s++) p[s] = (float)(p[s] * inv);
}
static KOSMOS2__T_AVX2 void kosmos2__vmath_avx2(float *x, int64_t n, int op) {
    int64_t i;
    const __m256 one = _mm256_set1_ps(1.0f), sgn = _mm256_set1_ps(-0.0f);
    for (i = 0; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i), y;
        if (op == KOSMOS2__VM_EXP) y = kosmos2__exp_avx2(v);
        else if (op == KOSMOS2__VM_GELU) {
            __m256 u = _mm256_mul_ps(v, _mm256_set1_ps(0.70710678118654752f)), z = _mm256_andnot_ps(sgn, u);
            __m256 t = _mm256_div_ps(one, _mm256_fmadd_ps(_mm256_set1_ps(0.3275911f), z, one)), p, q;
            p = _mm256_set1_ps(1.061405429f);
            p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-1.453152027f));
            p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(1.421413741f));
            p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-0.284496736f));
            p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(0.254829592f));
            q = _mm256_mul_ps(_mm256_mul_ps(p, t), kosmos2__exp_avx2(_mm256_xor_ps(_mm256_mul_ps(z, z), sgn)));
            q = _mm256_blendv_ps(q, _mm256_sub_ps(_mm256_set1_ps(2.0f), q), _mm256_cmp_ps(u, _mm256_setzero_ps(), _CMP_GE_OQ));
            y = _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), v), q);
        } else {
            __m256 a = op == KOSMOS2__VM_QUICK_GELU ? _mm256_mul_ps(_mm256_set1_ps(-1.702f), v) : _mm256_xor_ps(v, sgn);
            y = _mm256_div_ps(v, _mm256_add_ps(one, kosmos2__exp_avx2(a)));
        }
        _mm256_storeu_ps(x + i, y);
    }
    for (; i < n; i++) x[i] = kosmos2__vm_ref(x[i], op);
}
/* kosmos2__narrow_scalar 8 values at a time with F16C: its rounding to nearest even gives the same
 * bits except for NaN payloads, so a group holding a NaN goes the scalar way. */
static KOSMOS2__T_AVX2 void kosmos2__narrow_f16c(uint16_t *dst, const float *src, int64_t n) {
    int64_t i;
    for (i = 0; i + 8 <= n; i += 8) {
        __m256 x = _mm256_loadu_ps(src + i);
        if (_mm256_movemask_ps(_mm256_cmp_ps(x, x, _CMP_UNORD_Q))) kosmos2__narrow_scalar(dst + i, src + i, 8);
        else _mm_storeu_si128((__m128i *)(dst + i), _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
    kosmos2__narrow_scalar(dst + i, src + i, n - i);
}
KOSMOS2__INLINE KOSMOS2__T_AVX2 void kosmos2__qk_avx2_body(float *p, int64_t ldp, const float *q, const void *k, const int dt,
                                                           int nh, int64_t hd) {
    int64_t d;
    int h;
    for (h = 0; h < nh; h++) { /* lanes 0-7 and 8-15 of the canonical sum, then its fold */
        __m256 a0 = _mm256_setzero_ps(), a1 = a0;
        for (d = 0; d < hd; d += 16) {
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + h * hd + d), kosmos2__load8_avx2(k, dt, h * hd + d), a0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + h * hd + d + 8), kosmos2__load8_avx2(k, dt, h * hd + d + 8), a1);
        }
        p[h * ldp] = kosmos2__fold8_avx2(_mm256_add_ps(a0, a1));
    }
}
/* lane l of the canonical sum for keys s0 .. s0+15 (kb: their block of kt): k = l, l + 16, ... < hd */
#define KOSMOS2__QKT_LANE(l, a0, a1)                                                              \
    do {                                                                                         \
        int64_t i_;                                                                              \
        a0 = _mm256_setzero_ps();                                                                \
        a1 = _mm256_setzero_ps();                                                                \
        KOSMOS2__UNROLL for (i_ = (l); i_ < hd; i_ += 16) {                                      \
            const __m256 qv_ = _mm256_broadcast_ss(qt + i_);                                     \
            a0 = _mm256_fmadd_ps(qv_, _mm256_loadu_ps(kb + i_ * 16), a0);                        \
            a1 = _mm256_fmadd_ps(qv_, _mm256_loadu_ps(kb + i_ * 16 + 8), a1);                    \
        }                                                                                        \
    } while (0)
/* (s_l + s_l+8) for lanes l and l + 4, summed: the tree's v_l, l < 4 */
#define KOSMOS2__QKT_V(l, v0, v1)                                                                \
    do {                                                                                         \
        __m256 a0_, a1_, b0_, b1_;                                                               \
        KOSMOS2__QKT_LANE(l, a0_, a1_);                                                          \
        KOSMOS2__QKT_LANE((l) + 8, b0_, b1_);                                                    \
        v0 = _mm256_add_ps(a0_, b0_);                                                            \
        v1 = _mm256_add_ps(a1_, b1_);                                                            \
        KOSMOS2__QKT_LANE((l) + 4, a0_, a1_);                                                    \
        KOSMOS2__QKT_LANE((l) + 12, b0_, b1_);                                                   \
        v0 = _mm256_add_ps(v0, _mm256_add_ps(a0_, b0_));                                         \
        v1 = _mm256_add_ps(v1, _mm256_add_ps(a1_, b1_));                                         \
    } while (0)
KOSMOS2__INLINE KOSMOS2__T_AVX2 void kosmos2__qkt_avx2_body(float *p, int64_t ldp, const float *q, int64_t T, const float *kt,
                                                            int64_t S16, const int64_t hd) {
    int64_t t, s0;
    for (t = 0; t < T; t++) {
        const float *qt = q + t * hd;
        for (s0 = 0; s0 < S16; s0 += 16) {
            const float *kb = kt + s0 * hd; /* [hd, 16] */
            __m256 x0, x1, y0, y1, v0, v1;
            KOSMOS2__QKT_V(0, x0, x1);  /* x_0 = v_0 + v_2 */
            KOSMOS2__QKT_V(2, v0, v1);
            x0 = _mm256_add_ps(x0, v0);
            x1 = _mm256_add_ps(x1, v1);
            KOSMOS2__QKT_V(1, y0, y1);  /* x_1 = v_1 + v_3 */
            KOSMOS2__QKT_V(3, v0, v1);
            y0 = _mm256_add_ps(y0, v0);
            y1 = _mm256_add_ps(y1, v1);
            _mm256_storeu_ps(p + t * ldp + s0, _mm256_add_ps(_mm256_add_ps(x0, y0), _mm256_setzero_ps()));
            _mm256_storeu_ps(p + t * ldp + s0 + 8, _mm256_add_ps(_mm256_add_ps(x1, y1), _mm256_setzero_ps()));
        }
    }
}
#undef KOSMOS2__QKT_V
#undef KOSMOS2__QKT_LANE
static KOSMOS2__T_AVX2 void kosmos2__qkt_avx2(float *p, int64_t ldp, const float *q, int64_t T, const float *kt, int64_t S16, int64_t hd) {
    if (hd == 64) kosmos2__qkt_avx2_body(p, ldp, q, T, kt, S16, 64); /* (the model's heads: the lanes unrolled) */
    else kosmos2__qkt_avx2_body(p, ldp, q, T, kt, S16, hd);
}
static KOSMOS2__T_AVX2 void kosmos2__qk_avx2(float *p, int64_t ldp, const float *q, const void *k, int dt, int nh, int64_t hd) {
    if (hd % 16) kosmos2__qk_scalar(p, ldp, q, k, dt, nh, hd);
    else if (dt == KOSMOS2__F16) kosmos2__qk_avx2_body(p, ldp, q, k, KOSMOS2__F16, nh, hd);
    else kosmos2__qk_avx2_body(p, ldp, q, k, KOSMOS2__F32, nh, hd);
}
static KOSMOS2__T_AVX2 void kosmos2__lnorm_avx2(float *o, const float *v, int64_t n, const float *w, const float *b, float eps) {
    double s[8], mean, var;
    int64_t i, n8 = n / 8 * 8;
    __m256d a0 = _mm256_setzero_pd(), a1 = a0, m;
    __m256 inv8;
    float inv;
    for (i = 0; i < n8; i += 8) { /* sums 0-3 in a0, 4-7 in a1 */
        const __m256 x = _mm256_loadu_ps(v + i);
        a0 = _mm256_add_pd(a0, _mm256_cvtps_pd(_mm256_castps256_ps128(x)));
        a1 = _mm256_add_pd(a1, _mm256_cvtps_pd(_mm256_extractf128_ps(x, 1)));
    }
    _mm256_storeu_pd(s, a0); _mm256_storeu_pd(s + 4, a1);
    for (; i < n; i++) s[i & 7] += v[i];
    mean = kosmos2__fold8_d(s) / (double)n;
    m = _mm256_set1_pd(mean);
    a0 = a1 = _mm256_setzero_pd();
    for (i = 0; i < n8; i += 8) {
        const __m256 x = _mm256_loadu_ps(v + i);
        const __m256d d0 = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(x)), m);
        const __m256d d1 = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(x, 1)), m);
        a0 = _mm256_fmadd_pd(d0, d0, a0);
        a1 = _mm256_fmadd_pd(d1, d1, a1);
    }
    _mm256_storeu_pd(s, a0); _mm256_storeu_pd(s + 4, a1);
    for (; i < n; i++) s[i & 7] = fma((double)v[i] - mean, (double)v[i] - mean, s[i & 7]);
    var = kosmos2__fold8_d(s) / (double)n;
    inv = (float)(1.0 / sqrt(var + (double)eps));
    inv8 = _mm256_set1_ps(inv);
    for (i = 0; i < n8; i += 8) {
        const __m256 x = _mm256_loadu_ps(v + i);
        const __m128 t0 = _mm256_cvtpd_ps(_mm256_sub_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(x)), m));
        const __m128 t1 = _mm256_cvtpd_ps(_mm256_sub_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(x, 1)), m));
        const __m256 t = _mm256_mul_ps(_mm256_insertf128_ps(_mm256_castps128_ps256(t0), t1, 1), inv8);
        _mm256_storeu_ps(o + i, _mm256_fmadd_ps(t, _mm256_loadu_ps(w + i), _mm256_loadu_ps(b + i)));
    }
    kosmos2__lnorm_tail(o, v, n8, n, w, b, mean, inv);
}
KOSMOS2__INLINE KOSMOS2__T_AVX2 void kosmos2__pv_avx2_body(float *o, const float *p, int64_t ldp, const void *v, int64_t ldv,
                                                           int n, const int dt, int nh, int64_t hd) {
    int64_t d;
    int h, r;
    for (h = 0; h < nh; h++) {
        float *oh = o + h * hd;
        const float *ph = p + h * ldp;
        for (d = 0; d + 8 <= hd; d += 8) { /* 8 sums in a register over the n rows */
            const int64_t k = h * hd + d;
            __m256 a = _mm256_loadu_ps(oh + d);
            if (n == 4) {
                a = _mm256_fmadd_ps(_mm256_set1_ps(ph[0]), kosmos2__load8_avx2(v, dt, k), a);
                a = _mm256_fmadd_ps(_mm256_set1_ps(ph[1]), kosmos2__load8_avx2(v, dt, ldv + k), a);
                a = _mm256_fmadd_ps(_mm256_set1_ps(ph[2]), kosmos2__load8_avx2(v, dt, 2 * ldv + k), a);
                a = _mm256_fmadd_ps(_mm256_set1_ps(ph[3]), kosmos2__load8_avx2(v, dt, 3 * ldv + k), a);
            } else
                for (r = 0; r < n; r++) a = _mm256_fmadd_ps(_mm256_set1_ps(ph[r]), kosmos2__load8_avx2(v, dt, r * ldv + k), a);
            _mm256_storeu_ps(oh + d, a);
        }
        for (; d < hd; d++)
            for (r = 0; r < n; r++) oh[d] = fmaf(ph[r], kosmos2__load_w(v, dt, r * ldv + h * hd + d), oh[d]);
    }
}
static KOSMOS2__T_AVX2 void kosmos2__pv_avx2(float *o, const float *p, int64_t ldp, const void *v, int64_t ldv, int n, int dt,
                                             int nh, int64_t hd) {
    if (dt == KOSMOS2__F16) kosmos2__pv_avx2_body(o, p, ldp, v, ldv, n, KOSMOS2__F16, nh, hd);
    else kosmos2__pv_avx2_body(o, p, ldp, v, ldv, n, KOSMOS2__F32, nh, hd);
}

/* --------------------------------------------------------------------------- AVX-512 path -- */
/* 16 weights at w[k..k+15] as float32; the masked form reads only lanes in `mask` (others 0) */
KOSMOS2__INLINE KOSMOS2__T_AVX512 __m512 kosmos2__load16_avx512(const void *w, int dt, int64_t k) {
    if (dt == KOSMOS2__F32) return _mm512_loadu_ps((const float *)w + k);
    if (dt == KOSMOS2__F16) return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)w + k)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(
        _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)((const uint16_t *)w + k))), 16));
}
KOSMOS2__INLINE KOSMOS2__T_AVX512 __m512 kosmos2__load16m_avx512(const void *w, int dt, int64_t k, __mmask16 mask) {
    if (dt == KOSMOS2__F32) return _mm512_maskz_loadu_ps(mask, (const float *)w + k);
    if (dt == KOSMOS2__F16) return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, (const uint16_t *)w + k));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask, (const uint16_t *)w + k)), 16));
}
KOSMOS2__INLINE KOSMOS2__T_AVX512 float kosmos2__fold16_avx512(__m512 v) {
    return kosmos2__fold8_avx2(_mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1)));
}
/* Folding many accumulators at once, in the canonical tree order: each step adds the two halves
 * of the remaining lanes of two accumulators and packs both results into one register, so 16
 * accumulators take 4 levels of 8 + 4 + 2 + 1 shuffle-shuffle-add steps (45 instructions,
 * against about 150 folding them one by one). */
KOSMOS2__INLINE KOSMOS2__T_AVX512 __m512 kosmos2__fold_l1(__m512 a, __m512 b) { /* [a_l + a_l+8 | b_l + b_l+8] */
    return _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x44), _mm512_shuffle_f32x4(a, b, 0xEE));
}
KOSMOS2__INLINE KOSMOS2__T_AVX512 __m512 kosmos2__fold_l2(__m512 s, __m512 t) { /* 4 x (l + l+4) per 128 bits */
    return _mm512_add_ps(_mm512_shuffle_f32x4(s, t, 0x88), _mm512_shuffle_f32x4(s, t, 0xDD));
}
KOSMOS2__INLINE KOSMOS2__T_AVX512 __m512 kosmos2__fold_l3(__m512 u, __m512 v) { /* per 128 bits: u_l + u_l+2, v_l + v_l+2 */
    return _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(u), _mm512_castps_pd(v))),
                         _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(u), _mm512_castps_pd(v))));
}
KOSMOS2__INLINE KOSMOS2__T_AVX512 __m512 kosmos2__fold_l4(__m512 x, __m512 y) { /* per 128 bits: x0+x1 x2+x3 y0+y1 y2+y3 */
    return _mm512_add_ps(_mm512_shuffle_ps(x, y, 0x88), _mm512_shuffle_ps(x, y, 0xDD));
}
/* Finish a 4 x 6 tile: y[r*ldy + c] = fold(acc[r][c]) + bias[c]. Columns 0-3 are folded as 16
 * accumulators a[4c + r], giving lane 4r + c (row r = 128-bit quarter r); columns 4-5 as 8,
 * giving lanes 4r, 4r + 1. */
KOSMOS2__INLINE KOSMOS2__T_AVX512 void kosmos2__finish_4x6_avx512(float *y, int64_t ldy, __m512 acc[4][6],
                                                                  const float *bias) {
    __m512 u0, u1, u2, u3, v0, v1, b4;
    u0 = kosmos2__fold_l2(kosmos2__fold_l1(acc[0][0], acc[1][0]), kosmos2__fold_l1(acc[2][0], acc[3][0]));
    u1 = kosmos2__fold_l2(kosmos2__fold_l1(acc[0][1], acc[1][1]), kosmos2__fold_l1(acc[2][1], acc[3][1]));
    u2 = kosmos2__fold_l2(kosmos2__fold_l1(acc[0][2], acc[1][2]), kosmos2__fold_l1(acc[2][2], acc[3][2]));
    u3 = kosmos2__fold_l2(kosmos2__fold_l1(acc[0][3], acc[1][3]), kosmos2__fold_l1(acc[2][3], acc[3][3]));
    u0 = kosmos2__fold_l4(kosmos2__fold_l3(u0, u1), kosmos2__fold_l3(u2, u3));
    v0 = kosmos2__fold_l2(kosmos2__fold_l1(acc[0][4], acc[1][4]), kosmos2__fold_l1(acc[2][4], acc[3][4]));
    v1 = kosmos2__fold_l2(kosmos2__fold_l1(acc[0][5], acc[1][5]), kosmos2__fold_l1(acc[2][5], acc[3][5]));
    v0 = kosmos2__fold_l3(v0, v1);
    v0 = kosmos2__fold_l4(v0, v0);
    b4 = bias ? _mm512_broadcast_f32x4(_mm_loadu_ps(bias)) : _mm512_setzero_ps();
    u0 = _mm512_add_ps(u0, b4);
    b4 = bias ? _mm512_broadcast_f32x4(_mm_setr_ps(bias[4], bias[5], bias[4], bias[5])) : _mm512_setzero_ps();
    v0 = _mm512_add_ps(v0, b4);
    _mm_storeu_ps(y, _mm512_castps512_ps128(u0)); /* (immediates must be literal, even at -O0) */
    _mm_storeu_ps(y + ldy, _mm512_extractf32x4_ps(u0, 1));
    _mm_storeu_ps(y + 2 * ldy, _mm512_extractf32x4_ps(u0, 2));
    _mm_storeu_ps(y + 3 * ldy, _mm512_extractf32x4_ps(u0, 3));
    _mm_storel_pi((__m64 *)(void *)(y + 4), _mm512_castps512_ps128(v0));
    _mm_storel_pi((__m64 *)(void *)(y + ldy + 4), _mm512_extractf32x4_ps(v0, 1));
    _mm_storel_pi((__m64 *)(void *)(y + 2 * ldy + 4), _mm512_extractf32x4_ps(v0, 2));
    _mm_storel_pi((__m64 *)(void *)(y + 3 * ldy + 4), _mm512_extractf32x4_ps(v0, 3));
}

/* The float tile: R x C outputs (R <= 4, C <= 6), one 16-lane zmm accumulator each; per 16 k:
 * C weight loads, R activation loads, R*C FMAs (4 x 6: 24 accumulators + 6 weights + 1 x). */
KOSMOS2__INLINE KOSMOS2__T_AVX512 void kosmos2__tile_avx512_body(float *y, int64_t ldy, const float *x, int64_t ldx,
                                                                 const void *w, int64_t ldw, int dt, int64_t K,
                                                                 const float *bias, float *part, int flags,
                                                                 const kosmos2__pf *pf, const int R, const int C) {
    __m512 acc[4][6], wv[6];
    int64_t k, pn = pf ? pf->n : 0, prow = pf ? pf->row : 0, poff = pf ? pf->off : 0;
    int r, c;
    const int es = dt == KOSMOS2__F32 ? 4 : 2;
    KOSMOS2__UNROLL for (r = 0; r < R; r++) KOSMOS2__UNROLL for (c = 0; c < C; c++)
        acc[r][c] = flags & KOSMOS2__T_RESUME ? _mm512_loadu_ps(part + (r * C + c) * 16) : _mm512_setzero_ps();
    for (k = 0; k + 16 <= K; k += 16) {
        if (pn > 0) { /* one line of the next weight block per step */
            _mm_prefetch((const char *)pf->base + prow * pf->stride + poff * 64, _MM_HINT_T1);
            pn--;
            if (++poff == pf->per_row) { poff = 0; prow++; }
        }
        if (R == 1 && ((k * es) & 63) == 0) /* one row (decoding): each weight row's line 512 bytes ahead */
            KOSMOS2__UNROLL for (c = 0; c < C; c++) _mm_prefetch((const char *)w + c * ldw * es + k * es + 512, _MM_HINT_T0);
        KOSMOS2__UNROLL for (c = 0; c < C; c++) wv[c] = kosmos2__load16_avx512((const char *)w + c * ldw * es, dt, k);
        KOSMOS2__UNROLL for (r = 0; r < R; r++) {
            __m512 xv = _mm512_loadu_ps(x + r * ldx + k);
            KOSMOS2__UNROLL for (c = 0; c < C; c++) acc[r][c] = _mm512_fmadd_ps(xv, wv[c], acc[r][c]);
        }
    }
    if (k < K) { /* masked tail: absent lanes add 0*0, which leaves an accumulator unchanged */
        const __mmask16 mask = (__mmask16)((1u << (K - k)) - 1);
        KOSMOS2__UNROLL for (c = 0; c < C; c++) wv[c] = kosmos2__load16m_avx512((const char *)w + c * ldw * es, dt, k, mask);
        KOSMOS2__UNROLL for (r = 0; r < R; r++) {
            __m512 xv = _mm512_maskz_loadu_ps(mask, x + r * ldx + k);
            KOSMOS2__UNROLL for (c = 0; c < C; c++) acc[r][c] = _mm512_fmadd_ps(xv, wv[c], acc[r][c]);
        }
    }
    if (R == 4 && C == 6 && (flags & KOSMOS2__T_FINISH)) kosmos2__finish_4x6_avx512(y, ldy, acc, bias);
    else
        KOSMOS2__UNROLL for (r = 0; r < R; r++) KOSMOS2__UNROLL for (c = 0; c < C; c++) {
            if (flags & KOSMOS2__T_FINISH) y[r * ldy + c] = kosmos2__fold16_avx512(acc[r][c]) + (bias ? bias[c] : 0.0f);
            else _mm512_storeu_ps(part + (r * C + c) * 16, acc[r][c]);
        }
}
static KOSMOS2__T_AVX512 void kosmos2__tile_avx512_full(float *y, int64_t ldy, const float *x, int64_t ldx,
                                                         const void *w, int64_t ldw, int dt, int64_t K, const float *bias, float *part, int flags, const kosmos2__pf *pf) {
    (void)dt;
    kosmos2__tile_avx512_body(y, ldy, x, ldx, w, ldw, KOSMOS2__F32, K, bias, part, flags, pf, 4, 6);
}
static KOSMOS2__T_AVX512 void kosmos2__tile_avx512_2x6(float *y, int64_t ldy, const float *x, int64_t ldx,
                                                        const void *w, int64_t ldw, int dt, int64_t K, const float *bias,
                                                        float *part, int flags, const kosmos2__pf *pf) {
    (void)dt;
    kosmos2__tile_avx512_body(y, ldy, x, ldx, w, ldw, KOSMOS2__F32, K, bias, part, flags, pf, 2, 6);
}
static KOSMOS2__T_AVX512 void kosmos2__tile_avx512_3x6(float *y, int64_t ldy, const float *x, int64_t ldx,
                                                        const void *w, int64_t ldw, int dt, int64_t K, const float *bias,
                                                        float *part, int flags, const kosmos2__pf *pf) {
    (void)dt;
    kosmos2__tile_avx512_body(y, ldy, x, ldx, w, ldw, KOSMOS2__F32, K, bias, part, flags, pf, 3, 6);
}
static KOSMOS2__T_AVX512 void kosmos2__tile_avx512_row(float *y, int64_t ldy, const float *x, int64_t ldx,
                                                        const void *w, int64_t ldw, int dt, int64_t K, const float *bias, float *part, int flags, const kosmos2__pf *pf) {
    if (dt == KOSMOS2__F32) kosmos2__tile_avx512_body(y, ldy, x, ldx, w, ldw, KOSMOS2__F32, K, bias, part, flags, pf, 1, 6);
    else if (dt == KOSMOS2__F16) kosmos2__tile_avx512_body(y, ldy, x, ldx, w, ldw, KOSMOS2__F16, K, bias, part, flags, pf, 1, 6);
    else kosmos2__tile_avx512_body(y, ldy, x, ldx, w, ldw, KOSMOS2__BF16, K, bias, part, flags, pf, 1, 6);
}
static KOSMOS2__T_AVX512 void kosmos2__tile_avx512_one(float *y, int64_t ldy, const float *x, int64_t ldx,
                                                        const void *w, int64_t ldw, int dt, int64_t K, const float *bias, float *part, int flags, const kosmos2__pf *pf) {
    if (dt == KOSMOS2__F32) kosmos2__tile_avx512_body(y, ldy, x, ldx, w, ldw, KOSMOS2__F32, K, bias, part, flags, pf, 1, 1);
    else if (dt == KOSMOS2__F16) kosmos2__tile_avx512_body(y, ldy, x, ldx, w, ldw, KOSMOS2__F16, K, bias, part, flags, pf, 1, 1);
    else kosmos2__tile_avx512_body(y, ldy, x, ldx, w, ldw, KOSMOS2__BF16, K, bias, part, flags, pf, 1, 1);
}
static KOSMOS2__T_AVX512 void kosmos2__widen_avx512(const void *src, int dt, float *dst, int64_t n) {
    int64_t k;
    if (dt == KOSMOS2__F32)
        for (k = 0; k + 16 <= n; k += 16) _mm512_storeu_ps(dst + k, _mm512_loadu_ps((const float *)src + k));
    else if (dt == KOSMOS2__F16)
        for (k = 0; k + 16 <= n; k += 16) _mm512_storeu_ps(dst + k, kosmos2__load16_avx512(src, KOSMOS2__F16, k));
    else
        for (k = 0; k + 16 <= n; k += 16) _mm512_storeu_ps(dst + k, kosmos2__load16_avx512(src, KOSMOS2__BF16, k));
    for (; k < n; k++) dst[k] = kosmos2__load_w(src, dt, k);
}

/* Two blocks (b even, b+1) in one zmm of UNSIGNED bytes for vpdpbusd (unsigned x signed bytes,
 * 4 products summed per int32 lane): bytes 0-31 = block b, 32-63 = block b+1 (zero when absent),
 * so int32 lane j is group j of the canonical sum. The weights are made unsigned and the
 * activations a stay signed:
 *   q4_0: u = the nibble in [0, 15]:  sum((u - 8) * a) = sum(u * a) - 8 * sum(a)
 *   q8_0: u = w + 128 (w ^ 0x80):     sum(w * a)       = sum(u * a) - 128 * sum(a)
 * The group sums of a come with the quantized activations (A->ns = -sum), so the correction is
 * the start value of vpdpbusd: one shift per activation row and step, shared by all weight rows. */
KOSMOS2__INLINE KOSMOS2__T_AVX512 __m512i kosmos2__qload64u_avx512(const uint8_t *blk, int two, int bs, int dt) {
    if (dt == KOSMOS2__Q4_0 && two) { /* both blocks: each 16 bytes twice, then per 16-bit lane shift 0 / 4 */
        const __m512i q = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(blk + 2)))),
                                             _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(blk + bs + 2))), 1);
        const __m512i sh = _mm512_set_epi64(0x0004000400040004LL, 0x0004000400040004LL, 0, 0, 0x0004000400040004LL, 0x0004000400040004LL, 0, 0);
        return _mm512_and_si512(_mm512_srlv_epi16(q, sh), _mm512_set1_epi8(15)); /* b.lo b.hi b1.lo b1.hi */
    }
    if (dt == KOSMOS2__Q8_0) {
        __m256i lo = _mm256_loadu_si256((const __m256i *)(blk + 2));
        __m256i hi = two ? _mm256_loadu_si256((const __m256i *)(blk + bs + 2)) : _mm256_setzero_si256();
        return _mm512_xor_si512(_mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1), _mm512_set1_epi8((char)0x80));
    } else {
        __m128i v0 = _mm_loadu_si128((const __m128i *)(blk + 2));
        __m128i v1 = two ? _mm_loadu_si128((const __m128i *)(blk + bs + 2)) : _mm_setzero_si128();
        __m256i v = _mm256_set_m128i(v1, v0), m = _mm256_set1_epi8(15);
        __m256i lo = _mm256_and_si256(v, m), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m);
        __m512i z = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1); /* b.lo b1.lo b.hi b1.hi */
        return _mm512_shuffle_i64x2(z, z, 0xD8);                          /* b.lo b.hi b1.lo b1.hi */
    }
}
/* the scales of blocks b and b+1 (0 when absent) in lanes 0-7 and 8-15. For q4_0 two word
 * broadcasts (hot 1 x 8 tile +10 % over the masked load + vpermw below, cold +5 %); for q8_0
 * the masked load measured faster on cold weights (-4 % with broadcasts). */
KOSMOS2__INLINE KOSMOS2__T_AVX512 __m512 kosmos2__qscale2_avx512(const uint8_t *blk, int two, int bs, int dt) {
    short h0, h1 = 0;
    if (two && dt == KOSMOS2__Q8_0) { /* one (masked: never past the pair) load of both blocks' starts, the two scale words spread */
        const __m512i v = _mm512_maskz_loadu_epi8((__mmask64)((1ULL << (bs + 2)) - 1), blk);
        const __m512i idx = _mm512_set_epi16(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* (unused words) */
                                             bs / 2, bs / 2, bs / 2, bs / 2, bs / 2, bs / 2, bs / 2, bs / 2, 0, 0, 0, 0, 0, 0, 0, 0);
        return _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutexvar_epi16(idx, v)));
    }
    memcpy(&h0, blk, 2); /* q4_0, or a last odd block: its scale, and 0 for the absent one */
    if (two) memcpy(&h1, blk + bs, 2);
    return _mm512_cvtph_ps(_mm256_set_m128i(_mm_set1_epi16(h1), _mm_set1_epi16(h0)));
}
/* The quantized tile: R x C outputs (R <= 4, C <= 4, or 1 x 8), two blocks per step; per step and (r, c):
 * vpdpbusd, convert, scale product, FMA. */
KOSMOS2__INLINE KOSMOS2__T_AVX512 void kosmos2__qtile_avx512_body(float *y, int64_t ldy, const kosmos2__qacts *A, int64_t m0,
                                                                  const uint8_t *w, int64_t wstride, int dt,
                                                                  const float *bias, int64_t pf, const int R, const int C) {
    __m512 acc[4][8], dw[8];
    __m512i wu[8];
    const int64_t nb = A->nb;
    const int bs = dt == KOSMOS2__Q8_0 ? KOSMOS2__Q8_0_BYTES : KOSMOS2__Q4_0_BYTES, sh = dt == KOSMOS2__Q8_0 ? 7 : 3;
    int64_t b = 0, j = 0;
    int r, c, pass;
    KOSMOS2__UNROLL for (r = 0; r < R; r++) KOSMOS2__UNROLL for (c = 0; c < C; c++) acc[r][c] = _mm512_setzero_ps();
    /* pass 0: the pairs of blocks; pass 1: a last odd block (the loop is unrolled, so `two` is a
     * constant in each copy) */
    KOSMOS2__UNROLL for (pass = 0; pass < 2; pass++)
    for (; pass == 0 ? b + 2 <= nb : b < nb; b += 2, j++) {
        const int two = pass == 0;
        KOSMOS2__UNROLL for (c = 0; c < C; c++) {
            const uint8_t *blk = w + c * wstride + b * bs;
            wu[c] = kosmos2__qload64u_avx512(blk, two, bs, dt);
            if (pf) _mm_prefetch((const char *)blk + pf, _MM_HINT_T0); /* (to L1: faster than T1 on Zen 5) */
            dw[c] = kosmos2__qscale2_avx512(blk, two, bs, dt);
        }
        KOSMOS2__UNROLL for (r = 0; r < R; r++) {
            const int64_t m = m0 + r;
            const int8_t *a = A->q + (m * A->rs + b) * KOSMOS2__QK;
            const int32_t *ns = A->ns + (m * A->rs + b) * 8;
            const __m512 dx = _mm512_loadu_ps(A->d + (m * A->rsp + j) * 16);
            __m512i av, init;
            if (two) {
                av = _mm512_loadu_si512((const void *)a);
                init = _mm512_loadu_si512((const void *)ns);
            } else {
                av = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_loadu_si256((const __m256i *)a), 0);
                init = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_loadu_si256((const __m256i *)ns), 0);
            }
            init = _mm512_slli_epi32(init, (unsigned)sh);
            KOSMOS2__UNROLL for (c = 0; c < C; c++) {
                __m512 p = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(init, wu[c], av));
                acc[r][c] = _mm512_fmadd_ps(_mm512_mul_ps(dx, dw[c]), p, acc[r][c]);
            }
        }
    }
    KOSMOS2__UNROLL for (r = 0; r < R; r++) KOSMOS2__UNROLL for (c = 0; c < C; c++)
        y[r * ldy + c] = kosmos2__fold16_avx512(acc[r][c]) + (bias ? bias[c] : 0.0f);
}
static KOSMOS2__T_AVX512 void kosmos2__qtile_avx512_full(float *y, int64_t ldy, const kosmos2__qacts *A, int64_t m0,
                                                          const uint8_t *w, int64_t wstride, int dt, const float *bias, int64_t pf) {
    if (dt == KOSMOS2__Q8_0) kosmos2__qtile_avx512_body(y, ldy, A, m0, w, wstride, KOSMOS2__Q8_0, bias, pf, 4, 4);
    else kosmos2__qtile_avx512_body(y, ldy, A, m0, w, wstride, KOSMOS2__Q4_0, bias, pf, 4, 4);
}
static KOSMOS2__T_AVX512 void kosmos2__qtile_avx512_row(float *y, int64_t ldy, const kosmos2__qacts *A, int64_t m0,
                                                         const uint8_t *w, int64_t wstride, int dt, const float *bias, int64_t pf) {
    if (dt == KOSMOS2__Q8_0) kosmos2__qtile_avx512_body(y, ldy, A, m0, w, wstride, KOSMOS2__Q8_0, bias, pf, 1, 4);
    else kosmos2__qtile_avx512_body(y, ldy, A, m0, w, wstride, KOSMOS2__Q4_0, bias, pf, 1, 4);
}
static KOSMOS2__T_AVX512 void kosmos2__qtile_avx512_one(float *y, int64_t ldy, const kosmos2__qacts *A, int64_t m0,
                                                         const uint8_t *w, int64_t wstride, int dt, const float *bias, int64_t pf) {
    if (dt == KOSMOS2__Q8_0) kosmos2__qtile_avx512_body(y, ldy, A, m0, w, wstride, KOSMOS2__Q8_0, bias, pf, 1, 1);
    else kosmos2__qtile_avx512_body(y, ldy, A, m0, w, wstride, KOSMOS2__Q4_0, bias, pf, 1, 1);
}
/* The 1 x 8 q4_0 tile written out for decoding: the same operations as the body above with R = 1,
 * C = 8, but each row's step done at once (fewer live registers: no spills), the row pointers
 * advanced instead of recomputed and the prefetch unconditional (pf = 0 prefetches the line
 * itself). Cold matvec +5-15 % over the body; for q8_0 the body measured faster. */
static KOSMOS2__T_AVX512 void kosmos2__qrow8_q4_avx512(float *y, const kosmos2__qacts *A, int64_t m0, const uint8_t *w,
                                                        int64_t wstride, const float *bias, int64_t pf) {
    const int bs = KOSMOS2__Q4_0_BYTES;
    const int64_t nb = A->nb, npair = nb / 2, w4 = 4 * wstride;
    const int8_t *a = A->q + m0 * A->rs * KOSMOS2__QK;  /* [nb, 32] */
    const int32_t *ns = A->ns + m0 * A->rs * 8;         /* [nb, 8] */
    const float *d = A->d + m0 * A->rsp * 16;           /* [nbp, 16] */
    const uint8_t *r0 = w, *r1 = w + wstride, *r2 = w + 2 * wstride, *r3 = w + 3 * wstride;
    __m512 acc[8];
    int64_t j;
    int c;
    for (c = 0; c < 8; c++) acc[c] = _mm512_setzero_ps();
    for (j = 0; j < npair; j++, a += 2 * KOSMOS2__QK, ns += 16, d += 16, r0 += 2 * bs, r1 += 2 * bs, r2 += 2 * bs, r3 += 2 * bs) {
        const __m512 dx = _mm512_loadu_ps(d);
        const __m512i av = _mm512_loadu_si512((const void *)a);
        const __m512i init = _mm512_slli_epi32(_mm512_loadu_si512((const void *)ns), 3);
#define KOSMOS2__ROW(ci, p)                                                                                          \
    do {                                                                                                             \
        const uint8_t *blk_ = (p);                                                                                   \
        const __m512i wu_ = kosmos2__qload64u_avx512(blk_, 1, bs, KOSMOS2__Q4_0);                                    \
        const __m512 dw_ = kosmos2__qscale2_avx512(blk_, 1, bs, KOSMOS2__Q4_0);                                      \
        _mm_prefetch((const char *)blk_ + pf, _MM_HINT_T0);                                                          \
        acc[ci] = _mm512_fmadd_ps(_mm512_mul_ps(dx, dw_), _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(init, wu_, av)), acc[ci]); \
    } while (0)
        KOSMOS2__ROW(0, r0); KOSMOS2__ROW(1, r1); KOSMOS2__ROW(2, r2); KOSMOS2__ROW(3, r3);
        KOSMOS2__ROW(4, r0 + w4); KOSMOS2__ROW(5, r1 + w4); KOSMOS2__ROW(6, r2 + w4); KOSMOS2__ROW(7, r3 + w4);
#undef KOSMOS2__ROW
    }
    if (nb & 1) { /* a last odd block, as the body's pass 1 */
        const __m512 dx = _mm512_loadu_ps(d);
        const __m512i av = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_loadu_si256((const __m256i *)a), 0);
        const __m512i init = _mm512_slli_epi32(_mm512_inserti64x4(_mm512_setzero_si512(), _mm256_loadu_si256((const __m256i *)ns), 0), 3);
        for (c = 0; c < 8; c++) {
            const uint8_t *blk = w + c * wstride + (nb - 1) * bs;
            const __m512i wu = kosmos2__qload64u_avx512(blk, 0, bs, KOSMOS2__Q4_0);
            const __m512 dw = kosmos2__qscale2_avx512(blk, 0, bs, KOSMOS2__Q4_0);
            acc[c] = _mm512_fmadd_ps(_mm512_mul_ps(dx, dw), _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(init, wu, av)), acc[c]);
        }
    }
    for (c = 0; c < 8; c++) y[c] = kosmos2__fold16_avx512(acc[c]) + (bias ? bias[c] : 0.0f);
}
/* 1 x 8 (decoding: one activation row feeds 8 weight rows, 8 streams in flight) */
static KOSMOS2__T_AVX512 void kosmos2__qtile_avx512_row8(float *y, int64_t ldy, const kosmos2__qacts *A, int64_t m0,
                                                          const uint8_t *w, int64_t wstride, int dt, const float *bias, int64_t pf) {
    if (dt == KOSMOS2__Q8_0) kosmos2__qtile_avx512_body(y, ldy, A, m0, w, wstride, KOSMOS2__Q8_0, bias, pf, 1, 8);
    else kosmos2__qrow8_q4_avx512(y, A, m0, w, wstride, bias, pf);
}
/* [lo | hi] of two 8 x 32-bit loads */
KOSMOS2__INLINE KOSMOS2__T_AVX512 __m512i kosmos2__cat8_avx512(const void *lo, const void *hi) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)lo)), _mm256_loadu_si256((const __m256i *)hi), 1);
}
/* r8 column tiles with VNNI (see kosmos2__r8cols_fn; the bits of kosmos2__r8cols_avx2): lanes =
 * 16 activation rows (groups g and g + 1; when rows <= 8, group g in both halves and the upper
 * lanes dropped), all 8 weight rows of the group in one pass. Per block and 4 values, one
 * broadcast of 4 weight bytes and one vpdpbusd per weight row: the unsigned weight bytes times
 * the signed activations, 4 products summed into each int32 lane (exact: no int16 stage, so no
 * vpmaddwd either), the accumulators starting at the block's correction. q4_0r8: the nibbles
 * u = w + 8, correction n8 = -8 * sum(a); q8_0r8: the bytes w ^ 0x80 = w + 128 (unpacked so by
 * kosmos2__r8unpack_vnni), correction 16 * n8 = -128 * sum(a) (|sum| <= 32 * 255 * 127: int32).
 * Then per weight row one conversion and one multiply-add with dw * da, as on AVX2. */
static KOSMOS2__T_AVX512 void kosmos2__r8cols_avx512(float *y, int64_t ldy, int64_t rows, const kosmos2__qacts *A, int64_t g,
                                                     const uint8_t *wu, const float *wd, const float *bias, int q8) {
    const int64_t nb = A->nb, g1 = rows > 8 ? g + 1 : g;
    const int8_t *aq0 = A->qi + g * nb * 256, *aq1 = A->qi + g1 * nb * 256; /* [nb, 8 chunks, 8 rows, 4] */
    const float *ad0 = A->di + g * nb * 8, *ad1 = A->di + g1 * nb * 8;     /* [nb, 8] */
    const int32_t *an0 = A->n8i + g * nb * 8, *an1 = A->n8i + g1 * nb * 8; /* [nb, 8] */
    __m512 acc[8]; /* [weight row], lanes = activation rows */
    int64_t b;
    int r, j, l;
    for (r = 0; r < 8; r++) acc[r] = _mm512_setzero_ps();
    for (b = 0; b < nb; b++, aq0 += 256, aq1 += 256, wu += 256) {
        const __m512 da = _mm512_castsi512_ps(kosmos2__cat8_avx512(ad0 + b * 8, ad1 + b * 8));
        __m512i corr = kosmos2__cat8_avx512(an0 + b * 8, an1 + b * 8), s[8];
        if (q8) corr = _mm512_slli_epi32(corr, 4);
        for (r = 0; r < 8; r++) s[r] = corr;
        KOSMOS2__UNROLL for (j = 0; j < 8; j++) {
            const __m512i av = kosmos2__cat8_avx512(aq0 + 32 * j, aq1 + 32 * j);
            KOSMOS2__UNROLL for (r = 0; r < 8; r++) {
                int32_t w4;
                memcpy(&w4, wu + 32 * j + 4 * r, 4);
                s[r] = _mm512_dpbusd_epi32(s[r], _mm512_set1_epi32(w4), av);
            }
        }
        KOSMOS2__UNROLL for (r = 0; r < 8; r++)
            acc[r] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_set1_ps(wd[b * 8 + r]), da), _mm512_cvtepi32_ps(s[r]), acc[r]);
    }
    for (r = 0; r < 8; r++) {
        float t[16];
        const float bv = bias ? bias[r] : 0.0f;
        _mm512_storeu_ps(t, acc[r]);
        for (l = 0; l < rows; l++) y[l * ldy + r] = t[l] + bv;
    }
}
/* The activation quantization (see kosmos2__qact_avx2), 16 values per register. */
KOSMOS2__INLINE KOSMOS2__T_AVX512 __m128i kosmos2__qround16_avx512(__m512 t) {
    const __m512i sgn = _mm512_set1_epi32((int)0x80000000u);
    __m512 r = _mm512_roundscale_ps(t, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    __m512 f = _mm512_castsi512_ps(_mm512_andnot_si512(sgn, _mm512_castps_si512(_mm512_sub_ps(t, r))));
    __mmask16 half = _mm512_cmp_ps_mask(f, _mm512_set1_ps(0.5f), _CMP_GE_OQ);
    __m512 one = _mm512_castsi512_ps(_mm512_or_si512(_mm512_and_si512(_mm512_castps_si512(t), sgn),
                                                     _mm512_castps_si512(_mm512_set1_ps(1.0f))));
    r = _mm512_mask_add_ps(r, half, r, one);
    r = _mm512_min_ps(_mm512_max_ps(r, _mm512_set1_ps(-127.0f)), _mm512_set1_ps(127.0f));
    return _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(r));
}
static KOSMOS2__T_AVX512 void kosmos2__qact_avx512(const float *x, kosmos2__qacts *A, int64_t m) {
    float *d = A->d + m * A->rsp * 16;             /* [nbp, 16] */
    int8_t *q = A->q + m * A->rs * KOSMOS2__QK;    /* [nb, 32] */
    int32_t *ns = A->ns + m * A->rs * 8;           /* [nb, 8] */
    const __m512i absm = _mm512_set1_epi32(0x7fffffff);
    int64_t b;
    int i;
    for (i = 0; i < 16 && A->nbp > 0; i++) d[(A->nbp - 1) * 16 + i] = 0.0f; /* odd nb: no block 2j+1 */
    for (b = 0; b < A->nb; b++, x += KOSMOS2__QK) {
        __m512 x0 = _mm512_loadu_ps(x), x1 = _mm512_loadu_ps(x + 16), a, idv;
        __m256i qb, gs;
        float amax, dd, id;
        a = _mm512_max_ps(_mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(x0), absm)), _mm512_setzero_ps());
        a = _mm512_max_ps(_mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(x1), absm)), a); /* (NaN lanes keep a) */
        amax = kosmos2__hmax8_avx2(_mm256_max_ps(_mm512_castps512_ps256(a), _mm512_extractf32x8_ps(a, 1)));
        dd = amax / 127.0f;
        id = dd != 0.0f ? 1.0f / dd : 0.0f;
        dd = _cvtsh_ss(_cvtss_sh(dd, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)); /* to float16 and back */
        for (i = 0; i < 8; i++) d[(b >> 1) * 16 + (b & 1) * 8 + i] = dd;
        idv = _mm512_set1_ps(id);
        qb = _mm256_set_m128i(kosmos2__qround16_avx512(_mm512_mul_ps(x1, idv)), kosmos2__qround16_avx512(_mm512_mul_ps(x0, idv)));
        _mm256_storeu_si256((__m256i *)(q + b * KOSMOS2__QK), qb);
        gs = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), qb), _mm256_set1_epi16(1)); /* sums of 4 */
        _mm256_storeu_si256((__m256i *)(ns + b * 8), _mm256_sub_epi32(_mm256_setzero_si256(), gs));
    }
}

/* kosmos2__exp_ref / kosmos2__vm_ref on 16 lanes, the same operations */
KOSMOS2__INLINE KOSMOS2__T_AVX512 __m512 kosmos2__exp_avx512(__m512 x) {
    const __mmask16 lo = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.0f), _CMP_LT_OQ), hi = _mm512_cmp_ps_mask(x, _mm512_set1_ps(88.0f), _CMP_GT_OQ);
    const __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fmadd_ps(n, _mm512_set1_ps(-0.693359375f), x), p, y, s;
    r = _mm512_fmadd_ps(n, _mm512_set1_ps(2.12194440e-4f), r);
    p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    y = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0f));
    s = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23));
    y = _mm512_mul_ps(y, s);
    y = _mm512_mask_mov_ps(y, lo, _mm512_setzero_ps());
    y = _mm512_mask_mov_ps(y, hi, _mm512_set1_ps(INFINITY));
    return _mm512_mask_mov_ps(y, nan, x);
}
static KOSMOS2__T_AVX512 void kosmos2__vmath_avx512(float *x, int64_t n, int op) {
    int64_t i;
    const __m512 one = _mm512_set1_ps(1.0f), sgn = _mm512_set1_ps(-0.0f);
    for (i = 0; i + 16 <= n; i += 16) {
        __m512 v = _mm512_loadu_ps(x + i), y;
        if (op == KOSMOS2__VM_EXP) y = kosmos2__exp_avx512(v);
        else if (op == KOSMOS2__VM_GELU) {
            __m512 u = _mm512_mul_ps(v, _mm512_set1_ps(0.70710678118654752f)), z = _mm512_andnot_ps(sgn, u);
            __m512 t = _mm512_div_ps(one, _mm512_fmadd_ps(_mm512_set1_ps(0.3275911f), z, one)), p, q;
            p = _mm512_set1_ps(1.061405429f);
            p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-1.453152027f));
            p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.421413741f));
            p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-0.284496736f));
            p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.254829592f));
            q = _mm512_mul_ps(_mm512_mul_ps(p, t), kosmos2__exp_avx512(_mm512_xor_ps(_mm512_mul_ps(z, z), sgn)));
            q = _mm512_mask_mov_ps(q, _mm512_cmp_ps_mask(u, _mm512_setzero_ps(), _CMP_GE_OQ), _mm512_sub_ps(_mm512_set1_ps(2.0f), q));
            y = _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), v), q);
        } else {
            __m512 a = op == KOSMOS2__VM_QUICK_GELU ? _mm512_mul_ps(_mm512_set1_ps(-1.702f), v) : _mm512_xor_ps(v, sgn);
            y = _mm512_div_ps(v, _mm512_add_ps(one, kosmos2__exp_avx512(a)));
        }
        _mm512_storeu_ps(x + i, y);
    }
    for (; i < n; i++) x[i] = kosmos2__vm_ref(x[i], op);
}
static KOSMOS2__T_AVX512 void kosmos2__qk_avx512(float *p, int64_t ldp, const float *q, const void *k, int dt, int nh, int64_t hd) {
    int64_t d;
    int h;
    if (hd % 16) { kosmos2__qk_scalar(p, ldp, q, k, dt, nh, hd); return; }
    for (h = 0; h < nh; h++) { /* the 16 lanes of the canonical sum in one register, then its fold */
        __m512 a = _mm512_setzero_ps();
        for (d = 0; d < hd; d += 16) a = _mm512_fmadd_ps(_mm512_loadu_ps(q + h * hd + d), kosmos2__load16_avx512(k, dt, h * hd + d), a);
        p[h * ldp] = kosmos2__fold16_avx512(a);
    }
}
static KOSMOS2__T_AVX512 void kosmos2__pv_avx512(float *o, const float *p, int64_t ldp, const void *v, int64_t ldv, int n,
                                                 int dt, int nh, int64_t hd) {
    int64_t d;
    int h, r;
    for (h = 0; h < nh; h++) {
        float *oh = o + h * hd;
        const float *ph = p + h * ldp;
        for (d = 0; d < hd; d += 16) { /* 16 sums in a register over the n rows (masked at the end) */
            const __mmask16 m = hd - d >= 16 ? 0xffff : (__mmask16)((1u << (hd - d)) - 1);
            __m512 a = _mm512_maskz_loadu_ps(m, oh + d);
            for (r = 0; r < n; r++) a = _mm512_fmadd_ps(_mm512_set1_ps(ph[r]), kosmos2__load16m_avx512(v, dt, r * ldv + h * hd + d, m), a);
            _mm512_mask_storeu_ps(oh + d, m, a);
        }
    }
}
/* Machine probes (kosmos2_bench_*): the sum of p[0..n-1] read as 4 sequential streams (one per
 * quarter: one stream alone does not reach the memory bandwidth everywhere), and independent
 * chains of FMAs in registers (AVX-512: 16, AVX2: 12; chains x lanes x 2 flops per iteration). */
static KOSMOS2__T_AVX2 float kosmos2__probe_read_avx2(const float *p, int64_t n) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    const int64_t q = n / 4;
    float t[8];
    int64_t i;
    for (i = 0; i + 16 <= q; i += 16) {
        a0 = _mm256_add_ps(a0, _mm256_add_ps(_mm256_loadu_ps(p + i), _mm256_loadu_ps(p + i + 8)));
        a1 = _mm256_add_ps(a1, _mm256_add_ps(_mm256_loadu_ps(p + q + i), _mm256_loadu_ps(p + q + i + 8)));
        a2 = _mm256_add_ps(a2, _mm256_add_ps(_mm256_loadu_ps(p + 2 * q + i), _mm256_loadu_ps(p + 2 * q + i + 8)));
        a3 = _mm256_add_ps(a3, _mm256_add_ps(_mm256_loadu_ps(p + 3 * q + i), _mm256_loadu_ps(p + 3 * q + i + 8)));
    }
    _mm256_storeu_ps(t, _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    return t[0];
}
static KOSMOS2__T_AVX512 float kosmos2__probe_fma_avx512(int64_t iters) {
    __m512 a[16];
    const __m512 m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
    int64_t i;
    int j;
    for (j = 0; j < 16; j++) a[j] = _mm512_set1_ps((float)j);
    for (i = 0; i < iters; i++) _Pragma("GCC unroll 16") for (j = 0; j < 16; j++) a[j] = _mm512_fmadd_ps(a[j], m, c);
    for (j = 1; j < 16; j++) a[0] = _mm512_add_ps(a[0], a[j]);
    return kosmos2__fold16_avx512(a[0]);
}
/* (AVX2: 12 chains, so that they and the two constants fit the 16 ymm registers: with 16, the
 * compiler kept some in memory and the probe read 25 % low) */
static KOSMOS2__T_AVX2 float kosmos2__probe_fma_avx2(int64_t iters) {
    __m256 a[12];
    const __m256 m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
    float t[8];
    int64_t i;
    int j;
    for (j = 0; j < 12; j++) a[j] = _mm256_set1_ps((float)j);
    for (i = 0; i < iters; i++) _Pragma("GCC unroll 12") for (j = 0; j < 12; j++) a[j] = _mm256_fmadd_ps(a[j], m, c);
    for (j = 1; j < 12; j++) a[0] = _mm256_add_ps(a[0], a[j]);
    _mm256_storeu_ps(t, a[0]);
    return t[0];
}
/* int8 peak: independent chains of the quantized kernels' multiply-add instruction (each result
 * feeds the next: nothing can be hoisted) */
static KOSMOS2__T_AVX512 int32_t kosmos2__probe_i8_avx512(int64_t iters) {
    __m512i a[16];
    const __m512i u = _mm512_set1_epi8(3), v = _mm512_set1_epi8(-2);
    int64_t i;
    int j;
    for (j = 0; j < 16; j++) a[j] = _mm512_set1_epi32(j);
    for (i = 0; i < iters; i++) _Pragma("GCC unroll 16") for (j = 0; j < 16; j++) a[j] = _mm512_dpbusd_epi32(a[j], u, v);
    for (j = 1; j < 16; j++) a[0] = _mm512_add_epi32(a[0], a[j]);
    return _mm_cvtsi128_si32(_mm512_castsi512_si128(a[0]));
}
static KOSMOS2__T_AVX2 int32_t kosmos2__probe_i8_avx2(int64_t iters) { /* (12 chains: see the FMA probe) */
    __m256i a[12];
    const __m256i v = _mm256_set1_epi8(-2);
    int64_t i;
    int j;
    for (j = 0; j < 12; j++) a[j] = _mm256_set1_epi16((short)j);
    for (i = 0; i < iters; i++) _Pragma("GCC unroll 12") for (j = 0; j < 12; j++) a[j] = _mm256_maddubs_epi16(a[j], v);
    for (j = 1; j < 12; j++) a[0] = _mm256_add_epi16(a[0], a[j]);
    return _mm_cvtsi128_si32(_mm256_castsi256_si128(a[0]));
}
#endif /* KOSMOS2__X86 */

/* int8 operations (2 per multiply-add) of one kosmos2__probe_i8(iters) */
static double kosmos2__probe_i8_ops(int64_t iters) {
    const int isa = kosmos2__kernels_isa();
    return (double)iters * 2 * (isa == KOSMOS2__ISA_AVX512 ? 16 * 64 : isa >= KOSMOS2__ISA_AVX2 ? 12 * 32 : 16 * 8);
}
static int32_t kosmos2__probe_i8(int64_t iters) {
    int32_t a[16][8];
    int64_t i;
    int j, l;
#ifdef KOSMOS2__X86
    if (kosmos2__kernels_isa() == KOSMOS2__ISA_AVX512) return kosmos2__probe_i8_avx512(iters);
#ifdef KOSMOS2__HAVE_AVXVNNI
    if (kosmos2__kernels_isa() == KOSMOS2__ISA_AVXVNNI) return kosmos2__probe_i8_avxvnni(iters);
#endif
    if (kosmos2__kernels_isa() == KOSMOS2__ISA_AVX2) return kosmos2__probe_i8_avx2(iters);
#endif
    for (j = 0; j < 16; j++) for (l = 0; l < 8; l++) a[j][l] = j + l;
    for (i = 0; i < iters; i++) for (j = 0; j < 16; j++) for (l = 0; l < 8; l++) a[j][l] = (int32_t)((uint32_t)a[j][l] * 3u + 1u);
    return (int32_t)((uint32_t)a[0][0] + (uint32_t)a[15][7]);
}

/* The portable probes (see above): 4 streams; 16 chains of 8 lanes. */
static float kosmos2__probe_read(const float *p, int64_t n) {
    const int64_t q = n / 4;
    float a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    int64_t i;
#ifdef KOSMOS2__X86
    if (kosmos2__kernels_isa() >= KOSMOS2__ISA_AVX2) return kosmos2__probe_read_avx2(p, n);
#endif
    for (i = 0; i < q; i++) { a0 += p[i]; a1 += p[q + i]; a2 += p[2 * q + i]; a3 += p[3 * q + i]; }
    return a0 + a1 + a2 + a3;
}
/* flops of one kosmos2__probe_fma(iters) */
static double kosmos2__probe_fma_flops(int64_t iters) {
    const int isa = kosmos2__kernels_isa();
    return (double)iters * 2 * (isa == KOSMOS2__ISA_AVX512 ? 16 * 16 : isa >= KOSMOS2__ISA_AVX2 ? 12 * 8 : 16 * 8);
}
static float kosmos2__probe_fma(int64_t iters) {
    float a[16][8];
    int64_t i;
    int j, l;
#ifdef KOSMOS2__X86
    if (kosmos2__kernels_isa() == KOSMOS2__ISA_AVX512) return kosmos2__probe_fma_avx512(iters);
    if (kosmos2__kernels_isa() >= KOSMOS2__ISA_AVX2) return kosmos2__probe_fma_avx2(iters);
#endif
    for (j = 0; j < 16; j++) for (l = 0; l < 8; l++) a[j][l] = (float)j;
    for (i = 0; i < iters; i++) for (j = 0; j < 16; j++) for (l = 0; l < 8; l++) a[j][l] = a[j][l] * 0.999999f + 1e-7f; /* (as the scalar kernels: multiply, add) */
    return a[0][0] + a[15][7];
}

/* ----------------------------------------------------------------------- kernel tables ---- */
static const kosmos2__kernel_set kosmos2__kernels_scalar = {
    1, 1, 0, kosmos2__tile_scalar, kosmos2__tile_scalar, kosmos2__tile_scalar, {NULL, NULL, NULL, NULL}, NULL, NULL,
    1, 1, kosmos2__qtile_scalar, kosmos2__qtile_scalar, kosmos2__qtile_scalar, kosmos2__quantize_act_row,
    NULL, 1, kosmos2__r8tile_scalar, kosmos2__r8tile_scalar, NULL, NULL, 0, kosmos2__vmath_scalar, kosmos2__qk_scalar, NULL, NULL, NULL, kosmos2__pv_scalar, kosmos2__lnorm_scalar, kosmos2__narrow_scalar};
#ifdef KOSMOS2__X86
static const kosmos2__kernel_set kosmos2__kernels_avx2 = {
    2, 3, 1024, kosmos2__tile_avx2_full, kosmos2__tile_avx2_row, kosmos2__tile_avx2_one, {NULL, NULL, NULL, NULL},
    kosmos2__tiles_avx2, kosmos2__widen_avx2,
    2, 2, kosmos2__qtile_avx2_full, kosmos2__qtile_avx2_row, kosmos2__qtile_avx2_one, kosmos2__qact_avx2,
    kosmos2__qtile_avx2_row8, 4, kosmos2__r8tile_avx2_full, kosmos2__r8tile_avx2_row, kosmos2__r8unpack_avx2, kosmos2__r8cols_avx2, 8,
    kosmos2__vmath_avx2, kosmos2__qk_avx2, kosmos2__qkt_avx2, kosmos2__max_sub_avx2, kosmos2__sm_scale_avx2, kosmos2__pv_avx2, kosmos2__lnorm_avx2,
    kosmos2__narrow_f16c};
#ifdef KOSMOS2__HAVE_AVXVNNI
static const kosmos2__kernel_set kosmos2__kernels_avxvnni = { /* AVX2 with the AVX-VNNI column tiles */
    2, 3, 1024, kosmos2__tile_avx2_full, kosmos2__tile_avx2_row, kosmos2__tile_avx2_one, {NULL, NULL, NULL, NULL},
    kosmos2__tiles_avx2, kosmos2__widen_avx2,
    2, 2, kosmos2__qtile_avx2_full, kosmos2__qtile_avx2_row, kosmos2__qtile_avx2_one, kosmos2__qact_avx2,
    kosmos2__qtile_avx2_row8, 4, kosmos2__r8tile_avx2_full, kosmos2__r8tile_avx2_row, kosmos2__r8unpack_vnni, kosmos2__r8cols_avxvnni, 8,
    kosmos2__vmath_avx2, kosmos2__qk_avx2, kosmos2__qkt_avx2, kosmos2__max_sub_avx2, kosmos2__sm_scale_avx2, kosmos2__pv_avx2, kosmos2__lnorm_avx2,
    kosmos2__narrow_f16c};
#endif
static const kosmos2__kernel_set kosmos2__kernels_avx512 = {
    4, 6, 1024, kosmos2__tile_avx512_full, kosmos2__tile_avx512_row, kosmos2__tile_avx512_one,
    {NULL, NULL, kosmos2__tile_avx512_2x6, kosmos2__tile_avx512_3x6}, NULL, kosmos2__widen_avx512,
    4, 4, kosmos2__qtile_avx512_full, kosmos2__qtile_avx512_row, kosmos2__qtile_avx512_one, kosmos2__qact_avx512,
    kosmos2__qtile_avx512_row8, 4, kosmos2__r8tile_avx2_full, kosmos2__r8tile_avx2_row, /* (few rows: the AVX2 r8 tiles) */
    kosmos2__r8unpack_vnni, kosmos2__r8cols_avx512, 16,
    kosmos2__vmath_avx512, kosmos2__qk_avx512, NULL, kosmos2__max_sub_avx2, kosmos2__sm_scale_avx2, kosmos2__pv_avx512, kosmos2__lnorm_avx2, kosmos2__narrow_f16c};
#endif
static const kosmos2__kernel_set *kosmos2__kernel_table(void) {
#ifdef KOSMOS2__X86
    int isa = kosmos2__kernels_isa();
    if (isa == KOSMOS2__ISA_AVX512) return &kosmos2__kernels_avx512;
#ifdef KOSMOS2__HAVE_AVXVNNI
    if (isa == KOSMOS2__ISA_AVXVNNI) return &kosmos2__kernels_avxvnni;
#endif
    if (isa == KOSMOS2__ISA_AVX2) return &kosmos2__kernels_avx2;
#endif
    return &kosmos2__kernels_scalar;
}
#ifdef KOSMOS2__X86_DIAG_PUSHED
#pragma GCC diagnostic pop
#endif

/* ------------------------------------------------------------------------ machine probes -- */
static int kosmos2__bench_threads(int n_threads) {
#ifdef _OPENMP
    return n_threads > 0 ? n_threads : omp_get_num_procs();
#else
    (void)n_threads;
    return 1;
#endif
}
/* p [n] filled with distinct values (no shared zero pages), first touched by the nt readers. */
static void kosmos2__probe_fill(float *p, int64_t n, int nt) {
    int64_t i;
    (void)nt; /* (without OpenMP) */
#pragma omp parallel for num_threads(nt) schedule(static)
    for (i = 0; i < n; i++) p[i] = (float)(uint32_t)((uint64_t)i * 2654435761u >> 7);
}
/* Bytes/s of the best of `reps` streaming reads of p [n] by nt threads (each its own part). */
static double kosmos2__probe_read_best(const float *p, int64_t n, int nt, int reps) {
    double best = 0;
    volatile float sink = 0;
    int rep;
    (void)nt; /* (without OpenMP) */
    for (rep = 0; rep < reps; rep++) {
        const double t0 = kosmos2__now_ms();
        double t;
#pragma omp parallel num_threads(nt)
        {
#ifdef _OPENMP
            const int64_t chunk = n / omp_get_num_threads() / 64 * 64, t_id = omp_get_thread_num();
#else
            const int64_t chunk = n, t_id = 0;
#endif
            const float s = kosmos2__probe_read(p + t_id * chunk, chunk);
#pragma omp atomic
            sink += s;
        }
        t = kosmos2__now_ms() - t0;
        if (t > 0 && (double)n * 4 / (t * 1e-3) > best) best = (double)n * 4 / (t * 1e-3);
    }
    (void)sink;
    return best;
}
double kosmos2_bench_memory_read(int n_threads) {
    const int64_t n = (int64_t)1 << 28; /* 1 GiB of floats */
    const int nt = kosmos2__bench_threads(n_threads);
    float *p = (float *)KOSMOS2_MALLOC((size_t)n * sizeof(float));
    double best;
    if (!p) { kosmos2__fail(KOSMOS2_E_NOMEM, "kosmos2_bench_memory_read: no memory for the 1 GiB buffer"); return 0; }
    kosmos2__probe_fill(p, n, nt);
    best = kosmos2__probe_read_best(p, n, nt, 4);
    KOSMOS2_FREE(p);
    return best;
}
/* The best of 4 runs of a peak probe on nt threads (~0.1 s each): float32 FMAs (flop/s) or int8
 * multiply-adds (op/s), 2 per multiply-add either way. */
static double kosmos2__bench_peak(int n_threads, int int8) {
    const int64_t iters = kosmos2__kernels_isa() == KOSMOS2__ISA_SCALAR ? 2000000 : 20000000;
    const int nt = kosmos2__bench_threads(n_threads);
    const double ops = (int8 ? kosmos2__probe_i8_ops(iters) : kosmos2__probe_fma_flops(iters)) * nt;
    double best = 0;
    volatile double sink = 0;
    int rep;
    (void)nt; /* (without OpenMP) */
    for (rep = 0; rep < 4; rep++) {
        const double t0 = kosmos2__now_ms();
        double t;
#pragma omp parallel num_threads(nt)
        {
            const double s = int8 ? (double)kosmos2__probe_i8(iters) : (double)kosmos2__probe_fma(iters);
#pragma omp atomic
            sink += s;
        }
        t = kosmos2__now_ms() - t0;
        if (t > 0 && ops / (t * 1e-3) > best) best = ops / (t * 1e-3);
    }
    (void)sink;
    return best;
}
double kosmos2_bench_fma_peak(int n_threads) { return kosmos2__bench_peak(n_threads, 0); }
double kosmos2_bench_int8_peak(int n_threads) { return kosmos2__bench_peak(n_threads, 1); }
const char *kosmos2_kernels_name(void) { return kosmos2__isa_name(kosmos2__kernels_isa()); }

/* --------------------------------------------------------------------- product drivers ---- */
/* p rounded up to a multiple of 64 bytes (a cache line: whole-line vector loads); NULL stays NULL */
static void *kosmos2__align64(void *p) {
    return p ? (void *)((char *)p + ((64 - (uintptr_t)p % 64) % 64)) : NULL;
}

/* One panel of c weight rows (type dt, row stride ldw elements) times M activation rows (row
 * stride ldx), kc values of k: R x C tiles, then 1 x C rows, then 1 x 1 for a narrow last panel.
 * part: [M, C, 16] lanes parked between blocks of K (see kosmos2__ftile_fn). */
static void kosmos2__panel_float(const kosmos2__kernel_set *ks, float *y, int64_t ldy, const float *x, int64_t ldx,
                                 int64_t M, const void *w, int64_t ldw, int dt, int64_t c, int64_t kc,
                                 const float *bias, float *part, int flags, const kosmos2__next_block *next) {
    const int64_t es = dt == KOSMOS2__F32 ? 4 : 2, C = ks->C;
    int64_t m = 0, j;
    if (c == C && dt == KOSMOS2__F32 && M >= ks->R) {
        if (ks->tiles) {
            ks->tiles(y, ldy, x, ldx, (const float *)w, ldw, kc, bias, part, flags, next, M);
            m = M / ks->R * ks->R;
        } else {
            kosmos2__pf_deal d;
            kosmos2__pf_start(&d, next, M / ks->R);
            for (; m + ks->R <= M; m += ks->R)
                ks->full(y + m * ldy, ldy, x + m * ldx, ldx, w, ldw, dt, kc, bias, part ? part + m * C * 16 : NULL, flags,
                         kosmos2__pf_step(&d));
        }
    }
    if (c == C && dt == KOSMOS2__F32 && M - m > 1 && M - m < ks->R && ks->fewer[M - m]) { /* the last rows */
        ks->fewer[M - m](y + m * ldy, ldy, x + m * ldx, ldx, w, ldw, dt, kc, bias, part ? part + m * C * 16 : NULL, flags,
                         NULL);
        m = M;
    }
    for (; m < M; m++) {
        if (c == C)
            ks->row(y + m * ldy, ldy, x + m * ldx, ldx, w, ldw, dt, kc, bias, part ? part + m * C * 16 : NULL, flags, NULL);
        else
            for (j = 0; j < c; j++)
                ks->one(y + m * ldy + j, ldy, x + m * ldx, ldx, (const char *)w + j * ldw * es, ldw, dt, kc,
                        bias ? bias + j : NULL, part ? part + (m * C + j) * 16 : NULL, flags, NULL);
    }
}

/* Float products with several blocks of K go through the panels in groups of 8: block k0 of
 * each panel of the group, then block k0 + kb of each, ..., so that the chunk's activation block
 * is read from L2 for 8 panels in a row (their lanes parked per panel). Zen 3, one thread, best
 * of 7, interleaved against one panel at a time: 257x4096->1024 60-62 -> 66-67 GFLOP/s,
 * 71x8192->2048 63 -> 69, 71x2048->8192 64-66 -> 66-67 (groups of 2: +1-3 %, of 16 as 8). */
#define KOSMOS2__PGROUP 8
/* Panels [g, ge) (a group) times the rows m0 .. m0 + mr - 1 (a chunk), block by block of K:
 * block k0 of each panel of the group, then block k0 + kb of each, ... (see TILING). */
static void kosmos2__float_group(const kosmos2__kernel_set *ks, float *y, const float *x, const float *x_in, int64_t M,
                                 int64_t m0, int64_t mr, const kosmos2__mat *W, const float *bias, int64_t g, int64_t ge,
                                 int64_t kb, int64_t ldx, int xblk, float *buf, int64_t ldb, float *part, int blocked) {
    const int64_t N = W->rows, K = W->cols, C = ks->C, np = (N + C - 1) / C;
    const int64_t wbytes = kosmos2__row_bytes(W->dtype, K), es = W->dtype == KOSMOS2__F32 ? 4 : 2;
    int64_t p, k0;
    for (k0 = 0; k0 == 0 || k0 < K; k0 += kb)
        for (p = g; p < ge; p++) {
            const int64_t n0 = p * C, c = N - n0 < C ? N - n0 : C;
            const uint8_t *w = (const uint8_t *)W->data + n0 * wbytes;
            float *yp = y + m0 * N + n0;
            const float *xp = x + m0 * ldx, *bp = bias ? bias + n0 : NULL;
            float *pp = part ? part + (p - g) * mr * C * 16 : NULL; /* this panel's parked lanes */
            int64_t j;
            /* this chunk's rows over block k0 (k0 a multiple of kb): in xb, or x as it is */
#define KOSMOS2__XK(k0) (xblk ? x + ((k0) / kb * M + m0) * ldx : xp + (k0))
            if (!blocked) { /* weights as stored, all of K at once (x as given: xb holds blocks) */
                if (k0 == 0) kosmos2__panel_float(ks, yp, N, x_in + m0 * K, K, mr, w, K, W->dtype, c, K, bp, NULL, KOSMOS2__T_FINISH, NULL);
                continue;
            }
            { /* block k0 .. k0 + kc - 1 of this panel (each panel's blocks in increasing k) */
                const int64_t kc = K - k0 < kb ? K - k0 : kb;
                const int flags = (k0 > 0 ? KOSMOS2__T_RESUME : 0) | (k0 + kc >= K ? KOSMOS2__T_FINISH : 0);
                kosmos2__next_block next; /* what this thread multiplies next */
                const int64_t g0 = g * C; /* the group's first weight row */
                next.stride = wbytes;
                if (p + 1 < ge) { /* the group's next panel, same block */
                    next.base = w + c * wbytes + k0 * es;
                    next.rows = N - n0 - c < C ? N - n0 - c : C;
                    next.bytes = kc * es;
                } else if (k0 + kc < K) { /* the group's first panel, next block */
                    next.base = (const uint8_t *)W->data + g0 * wbytes + (k0 + kc) * es;
                    next.rows = N - g0 < C ? N - g0 : C;
                    next.bytes = (K - k0 - kc < kb ? K - k0 - kc : kb) * es;
                } else { /* the next group */
                    next.base = w + c * wbytes;
                    next.rows = p + 1 < np ? (N - n0 - c < C ? N - n0 - c : C) : 0;
                    next.bytes = kb * es;
                }
                if (!buf) { /* float32: the block as stored */
                    kosmos2__panel_float(ks, yp, N, KOSMOS2__XK(k0), ldx, mr, w + k0 * es, K, KOSMOS2__F32, c, kc, bp, pp, flags, &next);
                    continue;
                }
                for (j = 0; j < c; j++) ks->widen(w + j * wbytes + k0 * es, W->dtype, buf + j * ldb, kc);
                kosmos2__panel_float(ks, yp, N, KOSMOS2__XK(k0), ldx, mr, buf, ldb, KOSMOS2__F32, c, kc, bp, pp, flags, &next);
            }
        }
#undef KOSMOS2__XK
}

/* Tests only: thread 0 of a float product starts this many seconds late (so that the others
 * take its groups of panels), and the count of groups taken from another thread's share. */
KOSMOS2__UNUSED static double kosmos2__claims_delay = 0.0;
KOSMOS2__UNUSED static int64_t kosmos2__claims_taken = 0;

/* y[M,N] = x[M,K] W^T + bias for F32/F16/BF16 weights (see TILING above). */
static int kosmos2__matmul_float(float *y, const float *x, int64_t M, const kosmos2__mat *W, const float *bias,
                                 int n_threads, const kosmos2__kernel_set *ks) {
    const int64_t N = W->rows, K = W->cols, C = ks->C, np = (N + C - 1) / C;
    /* many rows: copy/widen each panel block of K to a float buffer and tile over rows */
    const int many = M >= ks->R && ks->R > 1;
    const int64_t kb = many ? (K < ks->KB ? K : ks->KB) : K;
    const int64_t ldb = kb + 16; /* buffer row stride: +64 bytes, so rows do not share L1 sets */
    /* activation rows per chunk: the fewest chunks whose rows over one block of K take at most
     * 60 % of the L2 (the weights stream through it as well; a 2 x 3 tile whose rows come from
     * L2 runs at half speed once they spill). Zen 3, 512 KB L2, 2 threads, 25 interleaved runs,
     * best and median: 60 % against the half of before (4 chunks instead of 5 for 257 rows, 1
     * instead of 2 for 71): 257x1024->4096 and 257x4096->1024 f32/bf16 +0-2 % (better in all 8
     * pairs of minima), 71x2048->8192 and 71x8192->2048 +2-4 %; all of the L2 had lost to half
     * of it by 2-6 % before the activations were copied block by block and prefetched. Not
     * re-measured on AVX-512 machines (1-2 MB L2). */
    int64_t chunks = (M * kb * 4 * 5 + 3 * kosmos2__l2_bytes() - 1) / (3 * kosmos2__l2_bytes()), mc, ldx = K;
    /* many rows and several blocks of K: x copied block by block, xb [nkb, M, kb + 16] (block j
     * of row m at (j * M + m) * (kb + 16)), so that the rows a sweep of tiles reads over one block
     * follow each other in memory (Zen 3, one thread, the three shapes with K > 1024: +3-7 %).
     * Many rows with K = 1024 (rows 4 KiB apart): the R rows of a tile would share L1 sets; a copy
     * with rows 64 bytes longer avoids that. Without memory: x as it is. */
    const int64_t nkb = (K + kb - 1) / kb;
    const int xblk = many && kb < K;
    const float *const x_in = x;
    float *xpad = xblk ? (float *)kosmos2__alloc((size_t)(nkb * M * (kb + 16)) * sizeof(float))
                : many && K % 1024 == 0 ? (float *)kosmos2__alloc((size_t)(M * (K + 16)) * sizeof(float)) : NULL;
    if (xpad && xblk) {
        int64_t m, j;
        for (j = 0; j < nkb; j++)
            for (m = 0; m < M; m++)
                memcpy(xpad + (j * M + m) * (kb + 16), x + m * K + j * kb, (size_t)(K - j * kb < kb ? K - j * kb : kb) * sizeof(float));
        x = xpad;
        ldx = kb + 16;
    } else if (xpad) {
        int64_t m;
        for (m = 0; m < M; m++) memcpy(xpad + m * (K + 16), x + m * K, (size_t)K * sizeof(float));
        x = xpad;
        ldx = K + 16;
    }
    if (chunks < 1) chunks = 1;
    mc = (M + chunks - 1) / chunks;
    mc = (mc + ks->R - 1) / ks->R * ks->R;
    (void)n_threads;
#ifdef _OPENMP
    /* claims [nchunks, threads, 2]: per chunk of rows and thread, the thread's groups of panels
     * not yet taken, [front, back) */
    const int64_t nchunks = (M + mc - 1) / mc;
    int64_t *claims = (int64_t *)KOSMOS2_MALLOC((size_t)(nchunks * (n_threads > 1 ? n_threads : 1) * 2) * sizeof(int64_t));
#pragma omp parallel num_threads(n_threads) if (n_threads > 1 && !omp_in_parallel() && M * N * K >= ((int64_t)1 << 18) && claims)
#endif
    {
        /* per thread (float16 / bfloat16): the panel block [C, ldb] widened to float32 and the
         * parked lanes [KOSMOS2__PGROUP, mc, C, 16]; without them (float32, few rows, or no memory) the kernels
         * read W directly over all of K */
        void *bufmem = many && W->dtype != KOSMOS2__F32 ? KOSMOS2_MALLOC((size_t)(C * ldb) * 4 + 64) : NULL;
        void *partmem = many && kb < K ? KOSMOS2_MALLOC((size_t)(KOSMOS2__PGROUP * mc * C) * 64 + 64) : NULL;
        float *buf = (float *)kosmos2__align64(bufmem), *part = (float *)kosmos2__align64(partmem);
        const int blocked = (buf || W->dtype == KOSMOS2__F32) && (kb == K || part); /* else all of K at once */
        int64_t g, m0;
#ifdef _OPENMP
        /* Each thread owns a contiguous, even share of the panels (as a static schedule would)
         * and goes through its groups of panels from the front, chunk by chunk, with no barrier
         * between chunks; a thread done with a chunk takes the groups another thread has not
         * started from the back of that thread's share (on a shared host one vCPU often runs
         * slower, and the other would wait at the end). A group of a chunk is always done whole
         * by one thread: the same bits whoever does it. (A dynamic schedule over all (chunk,
         * group) items was slower: f32 vision, Zen 3, 2 threads, median 1.54 against 1.41 s.) */
        const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
        int64_t ci;
        for (ci = 0; ci < nchunks && claims; ci++) {
            claims[(ci * nt + t) * 2] = 0;
            claims[(ci * nt + t) * 2 + 1] = (np * (t + 1) / nt - np * t / nt + KOSMOS2__PGROUP - 1) / KOSMOS2__PGROUP;
        }
#pragma omp barrier
        if (t == 0 && kosmos2__claims_delay > 0.0) {
            const double t0 = omp_get_wtime();
            while (omp_get_wtime() - t0 < kosmos2__claims_delay) {}
        }
        for (ci = 0, m0 = 0; m0 < M && claims; m0 += mc, ci++)
            for (;;) {
                int64_t item = -1, owner = t, v, p0, p1;
#pragma omp critical(kosmos2__claims)
                {
                    int64_t *c = claims + (ci * nt + t) * 2;
                    if (c[0] < c[1]) item = c[0]++; /* own groups from the front */
                    for (v = 1; v < nt && item < 0; v++) {
                        c = claims + (ci * nt + (t + v) % nt) * 2;
                        if (c[0] < c[1]) { /* another's from the back */
                            item = --c[1];
                            owner = (t + v) % nt;
                            kosmos2__claims_taken++;
                        }
                    }
                }
                if (item < 0) break;
                p0 = np * owner / nt;
                p1 = np * (owner + 1) / nt;
                g = p0 + item * KOSMOS2__PGROUP; /* a group of KOSMOS2__PGROUP panels, block by block */
                kosmos2__float_group(ks, y, x, x_in, M, m0, M - m0 < mc ? M - m0 : mc, W, bias, g, p1 - g < KOSMOS2__PGROUP ? p1 : g + KOSMOS2__PGROUP,
                                     kb, ldx, xblk && xpad, buf, ldb, part, blocked);
            }
        if (!claims) /* (no memory for the claims: one thread, in order) */
#endif
            for (m0 = 0; m0 < M; m0 += mc)
                for (g = 0; g < np; g += KOSMOS2__PGROUP) /* groups of KOSMOS2__PGROUP panels, block by block */
                    kosmos2__float_group(ks, y, x, x_in, M, m0, M - m0 < mc ? M - m0 : mc, W, bias, g, np - g < KOSMOS2__PGROUP ? np : g + KOSMOS2__PGROUP,
                                         kb, ldx, xblk && xpad, buf, ldb, part, blocked);
        KOSMOS2_FREE(bufmem);
        KOSMOS2_FREE(partmem);
    }
#ifdef _OPENMP
    KOSMOS2_FREE(claims);
#endif
    KOSMOS2_FREE(xpad);
    return KOSMOS2_OK;
}

/* One panel of c quantized weight rows times the quantized activation rows m0 .. M-1 of A
 * (y points at row 0). */
static void kosmos2__panel_q(const kosmos2__kernel_set *ks, float *y, int64_t ldy, const kosmos2__qacts *A, int64_t m0,
                             int64_t M, const uint8_t *w, int64_t wstride, int dt, int64_t c, const float *bias, int64_t pf) {
    int64_t m = m0, j;
    if (c == ks->QC)
        for (; m + ks->QR <= M; m += ks->QR, pf = 0) ks->qfull(y + m * ldy, ldy, A, m, w, wstride, dt, bias, pf);
    for (; m < M; m++, pf = 0) { /* (the first pass over the panel prefetches the next one) */
        if (c == ks->QC) ks->qrow(y + m * ldy, ldy, A, m, w, wstride, dt, bias, pf);
        else
            for (j = 0; j < c; j++)
                ks->qone(y + m * ldy + j, ldy, A, m, w + j * wstride, wstride, dt, bias ? bias + j : NULL, 0);
    }
}

/* Tile p of the 8-row tiles of the matrices Ws[0], Ws[1], ... taken in order: its matrix (returned)
 * and its index *t within that matrix. */
static int kosmos2__tile8_of(const kosmos2__mat *const *Ws, int64_t p, int64_t *t) {
    int j = 0;
    while (p >= Ws[j]->rows / 8) p -= Ws[j++]->rows / 8;
    *t = p;
    return j;
}

/* ys[i][M,N_i] = q8_0(x)[M,K] Ws[i]^T + biases[i] (i < nm) for Q8_0/Q4_0 weights of one dtype
 * and K, in one parallel region: x is quantized once (in parallel over rows) for all nm products
 * (the decoder's q, k and v share it). Then panels of QC weight rows are distributed over the
 * threads, for one chunk of activation rows at a time: a quantized row takes about 3K bytes
 * (values, lane-broadcast scales, group sums) and every panel reads the whole chunk, so a chunk is
 * sized to stay in half the L2 cache (the weights, read once per chunk, stream from memory anyway).
 * One activation row (decoding): 1 x 8 tiles, those of all nm matrices in one static loop (each
 * thread streams one contiguous run of weights). */
/* Activation rows m0 .. m1-1 times group p of the r8 matrices Ws (numbered across them, as
 * kosmos2__tile8_of): tiles of QR rows, then single rows; gbytes: bytes per group. */
static void kosmos2__r8_group(const kosmos2__kernel_set *ks, float *const *ys, const kosmos2__mat *const *Ws,
                              const float *const *biases, const kosmos2__qacts *A, int64_t p, int64_t m0, int64_t m1,
                              int QR, int64_t gbytes, int dt) {
    int64_t t, m;
    const int j = kosmos2__tile8_of(Ws, p, &t); /* group t of matrix j */
    const int64_t N = Ws[j]->rows, G = N / 8;
    const float *bias = biases[j] ? biases[j] + t * 8 : NULL;
    const uint8_t *wg = (const uint8_t *)Ws[j]->data + t * gbytes;
    for (m = m0; m + QR <= m1; m += QR) ks->r8full(ys[j] + m * N + t * 8, N, A, m, wg, 0, dt, bias, m == m0 && t + 1 < G ? gbytes : 0);
    if (m1 - m0 == 1) /* decoding: prefetch the stream 1.5 KB ahead. The next group at the same
                       * block (as the tiles do) was 3-10 % slower from DRAM (q8_0r8 / q4_0r8
                       * 6144 x 2048, 2 threads, interleaved; 0.5-3 KB and 17 KB ahead tried);
                       * full-size q8_0 decode steps: faster in 5 of 6 pairs (best of 32: all
                       * 6, by 3-10 %); q4_0: 4 of 7, no clear change */
        ks->r8row(ys[j] + m0 * N + t * 8, N, A, m0, wg, 0, dt, bias, 1536);
    else
        for (; m < m1; m++) ks->r8row(ys[j] + m * N + t * 8, N, A, m, wg, 0, dt, bias, m == m0 && t + 1 < G ? gbytes : 0);
}
static int kosmos2__matmul_qn(float *const *ys, const float *x, int64_t M, const kosmos2__mat *const *Ws,
                              const float *const *biases, int nm, int n_threads, const kosmos2__kernel_set *ks) {
    const int64_t K = Ws[0]->cols, C = ks->QC, nb = K / KOSMOS2__QK;
    const int dt = Ws[0]->dtype, r8 = kosmos2__is_r8(dt), q8 = dt == KOSMOS2__Q8_0R8;
    const int64_t wbytes = kosmos2__row_bytes(Ws[0]->dtype, K), gbytes = nb * KOSMOS2__R8_UNIT(q8); /* (r8: bytes per group) */
    const int cols = r8 && M >= 8 && ks->r8cols; /* r8 types, many rows: the column tiles */
    const int n8 = dt == KOSMOS2__Q4_0R8 || (q8 && cols); /* the blocks' -8 * sums (q8_0r8: the VNNI column tiles') */
    const int64_t Mp = (M + 7) / 8 * 8;
    int64_t n_all = 0, n8_all = 0;
    kosmos2__qacts A;
    size_t abytes;
    void *mem;
    int i;
    if (K % KOSMOS2__QK != 0)
        return kosmos2__fail(KOSMOS2_E_INVALID, "matmul: %s weights need a multiple of 32 columns, got %lld",
                             kosmos2__dtype_name(Ws[0]->dtype), (long long)K);
    for (i = 0; i < nm; i++) {
        if (Ws[i]->cols != K || (int)Ws[i]->dtype != dt)
            return kosmos2__fail(KOSMOS2_E_INVALID, "matmul: fused products need one weight type and width");
        n_all += Ws[i]->rows;
        n8_all += Ws[i]->rows / 8;
    }
    A.nb = nb;
    A.nbp = (nb + 1) / 2;
    A.rs = 2 * A.nbp + 2;   /* row strides: + 64 bytes of values, of sums and of scales */
    A.rsp = A.nbp + 1;
    abytes = (size_t)(M * A.rsp) * 64 + (size_t)(M * A.rs) * (32 + (n8 ? 4 : 0) + KOSMOS2__QK);
    mem = kosmos2__alloc(abytes + (cols ? (size_t)(Mp * nb) * (32 + 4 + (n8 ? 4 : 0)) + 64 : 0));
    if (!mem) return KOSMOS2_E_NOMEM;
    A.d = (float *)mem;
    A.ns = (int32_t *)(A.d + M * A.rsp * 16);
    A.n8 = n8 ? A.ns + M * A.rs * 8 : NULL;
    A.q = (int8_t *)(A.ns + M * A.rs * (n8 ? 9 : 8));
    A.qi = NULL; A.di = NULL; A.n8i = NULL;
    if (cols) { /* the interleaved copy; the rows past M of the last group are zeros */
        A.qi = (int8_t *)kosmos2__align64((char *)mem + abytes);
        A.di = (float *)(A.qi + Mp * nb * 32);
        A.n8i = n8 ? (int32_t *)(A.di + Mp * nb) : NULL;
        if (Mp > M) {
            int64_t b, l;
            for (b = 0; b < nb; b++)
                for (l = M % 8; l < 8; l++) {
                    for (i = 0; i < 8; i++) memset(A.qi + ((M / 8 * nb + b) * 8 + i) * 32 + 4 * l, 0, 4);
                    A.di[(M / 8 * nb + b) * 8 + l] = 0.0f;
                    if (n8) A.n8i[(M / 8 * nb + b) * 8 + l] = 0;
                }
        }
    }
    (void)n_threads;
    (void)n_all; /* (used only by the OpenMP clause) */
    (void)n8_all;
#ifdef _OPENMP
#pragma omp parallel num_threads(n_threads) if (n_threads > 1 && !omp_in_parallel() && M * n_all * K >= ((int64_t)1 << 18))
#endif
    {
        const int QR = r8 ? ks->R8 : ks->QR;
        int64_t m, p, m0, mc = kosmos2__l2_bytes() / 2 / (3 * K);
        int j;
        mc = mc < QR ? QR : mc / QR * QR; /* activation rows per chunk */
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
        for (m = 0; m < M; m++) {
            ks->qact(x + m * K, &A, m);
            if (n8) { /* q4_0r8: -8 * each block's sum, from the group sums */
                const int32_t *ns = A.ns + m * A.rs * 8;
                int64_t b;
                for (b = 0; b < nb; b++)
                    A.n8[m * A.rs + b] = 8 * (ns[8 * b] + ns[8 * b + 1] + ns[8 * b + 2] + ns[8 * b + 3] + ns[8 * b + 4] + ns[8 * b + 5] + ns[8 * b + 6] + ns[8 * b + 7]);
            }
            if (cols) { /* row m into lane m % 8 of group m / 8 */
                const int64_t gi = m / 8 * nb, l = m % 8;
                int64_t b;
                for (b = 0; b < nb; b++) {
                    for (j = 0; j < 8; j++) memcpy(A.qi + ((gi + b) * 8 + j) * 32 + 4 * l, A.q + (m * A.rs + b) * KOSMOS2__QK + 4 * j, 4);
                    A.di[(gi + b) * 8 + l] = KOSMOS2__QACT_D(&A, m, b);
                    if (n8) A.n8i[(gi + b) * 8 + l] = A.n8[m * A.rs + b];
                }
            }
        }
        if (cols) { /* many rows, r8 types: per chunk of activation rows (as many as the L2 holds),
                     * each group of 8 weight rows unpacked once into a per-thread buffer, then
                     * times every 8 rows of the chunk (a thread without the buffer: r8full, same
                     * bits). Zen 3, the four vision/prefill shapes, one thread, best of 15, three
                     * interleaved runs: chunks of the whole L2 180 GOP/s, half 163-178, a quarter
                     * 148-164, all rows at once 158-184 */
            void *wmem = KOSMOS2_MALLOC((size_t)nb * (KOSMOS2__R8_WU(q8) + 32) + 64);
            uint8_t *wu = (uint8_t *)kosmos2__align64(wmem);
            float *wd = wu ? (float *)(wu + nb * KOSMOS2__R8_WU(q8)) : NULL;
            int64_t mcc = kosmos2__l2_bytes() / (K + nb * 8) / ks->R8C * ks->R8C;
            if (mcc < ks->R8C) mcc = ks->R8C;
            for (m0 = 0; m0 < M; m0 += mcc) {
                const int64_t m1 = M - m0 < mcc ? M : m0 + mcc;
#ifdef _OPENMP /* (nowait: a static schedule gives each thread the same groups in every chunk) */
#pragma omp for schedule(static) nowait
#endif
                for (p = 0; p < n8_all; p++) {
                    int64_t t;
                    const int jm = kosmos2__tile8_of(Ws, p, &t); /* group t of matrix jm */
                    const int64_t N = Ws[jm]->rows;
                    const float *bias = biases[jm] ? biases[jm] + t * 8 : NULL;
                    if (!wu) {
                        kosmos2__r8_group(ks, ys, Ws, biases, &A, p, m0, m1, QR, gbytes, dt);
                        continue;
                    }
                    ks->r8unpack((const uint8_t *)Ws[jm]->data + t * gbytes, nb, wu, wd, q8);
                    for (m = m0; m < m1; m += ks->R8C)
                        ks->r8cols(ys[jm] + m * N + t * 8, N, m1 - m < ks->R8C ? m1 - m : ks->R8C, &A, m / 8, wu, wd, bias, q8);
                }
            }
            KOSMOS2_FREE(wmem);
        }
        if (r8) { /* r8: the groups of 8 rows (decoding: those of all nm matrices at once) in a
                   * static loop, or a guided one when decoding (on a shared host one thread
                   * often runs slower for a while: full-size q8_0 decode steps took less time in
                   * 8 of 10 interleaved pairs, by 1-14 %; q4_0 the same); then the N % 8 last
                   * rows as plain rows by the reference. Who computes a group does not change
                   * its bits. */
            for (m0 = 0; m0 < M && !cols; m0 += mc) { /* (the groups were done above by the column tiles) */
                const int64_t m1 = M - m0 < mc ? M : m0 + mc;
                if (M == 1) {
#ifdef _OPENMP
#pragma omp for schedule(guided, 8)
#endif
                    for (p = 0; p < n8_all; p++) kosmos2__r8_group(ks, ys, Ws, biases, &A, p, m0, m1, QR, gbytes, dt);
                } else {
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
                    for (p = 0; p < n8_all; p++) kosmos2__r8_group(ks, ys, Ws, biases, &A, p, m0, m1, QR, gbytes, dt);
                }
            }
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
            for (m = 0; m < M; m++)
                for (j = 0; j < nm; j++) {
                    const int64_t N = Ws[j]->rows, G = N / 8;
                    for (p = G * 8; p < N; p++)
                        ys[j][m * N + p] = kosmos2__qdot_r8_scalar((const uint8_t *)Ws[j]->data + G * gbytes + (p - G * 8) * wbytes,
                                                                  KOSMOS2__R8_BLK(q8), -1, q8, &A, m) + (biases[j] ? biases[j][p] : 0.0f);
                }
        } else
        if (M == 1 && ks->qrow8) { /* one row (decoding): 8 weight rows per tile, the rest in panels */
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
            for (p = 0; p < n8_all; p++) {
                int64_t t, n8;
                const float *bias;
                j = kosmos2__tile8_of(Ws, p, &t); /* tile t of matrix j */
                n8 = Ws[j]->rows / 8;
                bias = biases[j];
                ks->qrow8(ys[j] + t * 8, Ws[j]->rows, &A, 0, (const uint8_t *)Ws[j]->data + t * 8 * wbytes, wbytes, dt,
                          bias ? bias + t * 8 : NULL, t + 1 < n8 ? 8 * wbytes : 0);
            }
#ifdef _OPENMP
#pragma omp single
#endif
            for (j = 0; j < nm; j++) {
                const int64_t N = Ws[j]->rows;
                for (p = N / 8 * 8; p < N; p += C) {
                    const int64_t c = N - p < C ? N - p : C;
                    kosmos2__panel_q(ks, ys[j] + p, N, &A, 0, 1, (const uint8_t *)Ws[j]->data + p * wbytes, wbytes, dt, c,
                                     biases[j] ? biases[j] + p : NULL, 0);
                }
            }
        } else
        for (j = 0; j < nm; j++) {
            const int64_t N = Ws[j]->rows, np = (N + C - 1) / C;
            const float *bias = biases[j];
            for (m0 = 0; m0 < M; m0 += mc) {
                const int64_t m1 = M - m0 < mc ? M : m0 + mc;
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
                for (p = 0; p < np; p++) {
                    const int64_t n0 = p * C, c = N - n0 < C ? N - n0 : C;
                    kosmos2__panel_q(ks, ys[j] + n0, N, &A, m0, m1, (const uint8_t *)Ws[j]->data + n0 * wbytes, wbytes, dt, c,
                                     bias ? bias + n0 : NULL, p + 1 < np ? C * wbytes : 0);
                }
            }
        }
    }
    KOSMOS2_FREE(mem);
    return KOSMOS2_OK;
}
static int kosmos2__matmul_q(float *y, const float *x, int64_t M, const kosmos2__mat *W, const float *bias,
                             int n_threads, const kosmos2__kernel_set *ks) {
    return kosmos2__matmul_qn(&y, x, M, &W, &bias, 1, n_threads, ks);
}

/* y[m, n] = sum_k x[m, k] * W[n, k] + bias[n]    x [M, K], W [N, K], bias [N] or NULL, y [M, N].
 * Any dtype; the canonical sum above, so the result is the same for any thread count and ISA.
 * Runs on n_threads OpenMP threads (one when called inside a parallel region). Returns 0, or
 * KOSMOS2_E_INVALID (q type with K % 32 != 0) / KOSMOS2_E_NOMEM (q types only). */
KOSMOS2__UNUSED static int kosmos2__matmul(float *y, const float *x, int64_t M, const kosmos2__mat *W,
                                           const float *bias, int n_threads) {
    const kosmos2__kernel_set *ks = kosmos2__kernel_table();
    if (M <= 0 || W->rows <= 0) return KOSMOS2_OK;
    if (n_threads < 1) n_threads = 1;
    if (kosmos2__is_q(W->dtype)) return kosmos2__matmul_q(y, x, M, W, bias, n_threads, ks);
    return kosmos2__matmul_float(y, x, M, W, bias, n_threads, ks);
}

/* ============================================================================================
 *  [6] CHECKPOINT: config.json, preprocessor_config.json, tensors by name, shapes checked
 * ============================================================================================ */
typedef struct { const float *w, *b; } kosmos2__ln;          /* LayerNorm weight [n], bias [n] */
typedef struct { kosmos2__mat w; const float *b; } kosmos2__linear; /* y = x W^T + b: w [out, in], b [out] */

typedef struct {             /* one CLIP encoder layer (pre-LN) */
    kosmos2__ln ln1, ln2;    /* layer_norm1, layer_norm2 [Dv] */
    kosmos2__linear q, k, v, o;  /* self_attn.{q,k,v,out}_proj [Dv, Dv] */
    kosmos2__linear fc1, fc2;    /* mlp.fc1 [Fv, Dv], mlp.fc2 [Dv, Fv] */
} kosmos2__vision_layer;

typedef struct {             /* one text decoder block (pre-LN with two sub-LNs) */
    kosmos2__ln attn_ln;     /* self_attn_layer_norm [D] */
    kosmos2__linear q, k, v, o;  /* self_attn.{q,k,v,out}_proj [D, D] */
    kosmos2__ln inner_ln;    /* self_attn.inner_attn_ln [D]: on the merged context, before out_proj */
    kosmos2__ln ffn_pre_ln;  /* final_layer_norm [D]: the block's pre-FFN norm (misleading HF name) */
    kosmos2__linear fc1, fc2;    /* ffn.fc1 [F, D], ffn.fc2 [D, F] */
    kosmos2__ln ffn_ln;      /* ffn.ffn_layernorm [F]: after the activation, before fc2 */
} kosmos2__text_layer;

struct kosmos2_model {
    kosmos2_config cfg;
    kosmos2_preprocess_config pp;
    kosmos2_tokenizer *tok;
    int n_threads;
    kosmos2__file files[64];  /* the mapped safetensors files */
    int n_files;
    kosmos2__tensor *tensors; /* [n_tensors], data pointers into files */
    int n_tensors;
    char *config_json;        /* config.json as read (kept for `quantize`) */
    char *preproc_json;       /* preprocessor_config.json as read ("" when absent) */
    unsigned char *spm;       /* [spm_size] sentencepiece.bpe.model bytes */
    size_t spm_size;
    void **owned;             /* float32 copies made at load (non-f32 vectors, misaligned data) */
    int n_owned, cap_owned;
    /* vision tower */
    kosmos2__mat patch_w;     /* patch_embedding.weight [Dv, C*P*P] (a conv as a matrix) */
    const float *class_emb;   /* class_embedding [Dv] */
    const float *pos_emb;     /* position_embedding.weight [N = (S/P)^2 + 1, Dv] */
    kosmos2__ln pre_ln, post_ln;  /* pre_layrnorm, post_layernorm [Dv] */
    kosmos2__vision_layer *vl;    /* [vision_layers] */
    /* image-to-text projection (the resampler) */
    kosmos2__linear dense;    /* dense [D, Dv] */
    const float *latent_query;    /* latent_query [Q = 64, D] */
    kosmos2__linear xq, xk, xv, xo;   /* x_attn.{q,k,v,out}_proj [D, D] */
    /* text decoder */
    kosmos2__mat embed;       /* embed_tokens.weight [V, D] */
    kosmos2__mat lm_head;     /* lm_head.weight [V, D] (the same memory as embed when tied) */
    kosmos2__text_layer *tl;  /* [text_layers] */
    kosmos2__ln final_ln;     /* layer_norm [D] */
};

kosmos2_model_params kosmos2_model_default_params(void) {
    kosmos2_model_params p;
    p.use_mmap = 1;
    p.n_threads = 0;
    return p;
}

/* ---- config.json ----------------------------------------------------------------------- */
/* Read integer field `key` of object o into *out (unchanged when absent). */
static int kosmos2__cfg_int(const kosmos2__json *o, const char *sect, const char *key, int lo, int hi, int *out) {
    const kosmos2__json *v = kosmos2__json_get(o, key);
    if (!v || v->type == KOSMOS2__JNULL) return 0;
    if (v->type != KOSMOS2__JNUM || v->num != floor(v->num) || v->num < lo || v->num > hi)
        return kosmos2__fail(KOSMOS2_E_FORMAT, "%s%s must be an integer in [%d, %d]", sect, key, lo, hi);
    *out = (int)v->num;
    return 0;
}
static int kosmos2__cfg_float(const kosmos2__json *o, const char *sect, const char *key, float *out) {
    const kosmos2__json *v = kosmos2__json_get(o, key);
    if (!v || v->type == KOSMOS2__JNULL) return 0;
    if (v->type != KOSMOS2__JNUM || !(v->num > 0 && v->num < 1)) return kosmos2__fail(KOSMOS2_E_FORMAT, "%s%s must be a number in (0, 1)", sect, key);
    *out = (float)v->num;
    return 0;
}
static int kosmos2__cfg_bool(const kosmos2__json *o, const char *key, int *out) {
    const kosmos2__json *v = kosmos2__json_get(o, key);
    if (v && (v->type == KOSMOS2__JBOOL || v->type == KOSMOS2__JNUM)) *out = v->num != 0;
    return 0;
}
static int kosmos2__cfg_str(const kosmos2__json *o, const char *sect, const char *key, char *out, size_t cap) {
    const kosmos2__json *v = kosmos2__json_get(o, key);
    if (!v || v->type == KOSMOS2__JNULL) return 0;
    if (v->type != KOSMOS2__JSTR || v->len >= cap) return kosmos2__fail(KOSMOS2_E_FORMAT, "%s%s must be a short string", sect, key);
    memcpy(out, v->str, v->len + 1);
    return 0;
}

static int kosmos2__act_known(const char *a) {
    return !strcmp(a, "gelu") || !strcmp(a, "quick_gelu") || !strcmp(a, "gelu_new") || !strcmp(a, "gelu_pytorch_tanh") ||
           !strcmp(a, "relu") || !strcmp(a, "silu") || !strcmp(a, "swish");
}

/* Fill cfg from the parsed config.json; absent fields keep transformers' defaults. */
static int kosmos2__config_from_json(const kosmos2__json *root, kosmos2_config *c) {
    const kosmos2__json *t = kosmos2__json_get(root, "text_config"), *v = kosmos2__json_get(root, "vision_config");
    const kosmos2__json *mt = kosmos2__json_get(root, "model_type");
    const int BIG = 1 << 20;
    int rc = 0;
    memset(c, 0, sizeof *c);
    c->vision_hidden = 1024; c->vision_intermediate = 4096; c->vision_layers = 24; c->vision_heads = 16;
    c->image_size = 224; c->patch_size = 14; c->num_channels = 3; c->vision_eps = 1e-5f; strcpy(c->vision_act, "quick_gelu");
    c->vocab_size = 65037; c->text_hidden = 2048; c->text_layers = 24; c->text_heads = 32; c->ffn_dim = 8192;
    c->max_positions = 2048; c->text_eps = 1e-5f; c->scale_embedding = 1; strcpy(c->text_act, "gelu");
    c->bos_id = 0; c->eos_id = 2; c->pad_id = 1; c->no_repeat_ngram_size = 0; c->latent_query_num = 64;
    if (root->type != KOSMOS2__JOBJ) return kosmos2__fail(KOSMOS2_E_FORMAT, "not a JSON object");
    if (mt && (mt->type != KOSMOS2__JSTR || strcmp(mt->str, "kosmos-2") != 0))
        return kosmos2__fail(KOSMOS2_E_UNSUPPORTED, "model_type is '%s', expected 'kosmos-2'", mt->type == KOSMOS2__JSTR ? mt->str : "?");
    if ((t && t->type != KOSMOS2__JOBJ) || (v && v->type != KOSMOS2__JOBJ))
        return kosmos2__fail(KOSMOS2_E_FORMAT, "text_config and vision_config must be objects");
    rc |= kosmos2__cfg_int(root, "", "latent_query_num", 1, 4096, &c->latent_query_num);
    if (v) {
        rc = rc ? rc : kosmos2__cfg_int(v, "vision_config.", "hidden_size", 1, BIG, &c->vision_hidden);
        rc = rc ? rc : kosmos2__cfg_int(v, "vision_config.", "intermediate_size", 1, BIG, &c->vision_intermediate);
        rc = rc ? rc : kosmos2__cfg_int(v, "vision_config.", "num_hidden_layers", 0, 4096, &c->vision_layers);
        rc = rc ? rc : kosmos2__cfg_int(v, "vision_config.", "num_attention_heads", 1, 4096, &c->vision_heads);
        rc = rc ? rc : kosmos2__cfg_int(v, "vision_config.", "image_size", 1, 8192, &c->image_size);
        rc = rc ? rc : kosmos2__cfg_int(v, "vision_config.", "patch_size", 1, 8192, &c->patch_size);
        rc = rc ? rc : kosmos2__cfg_int(v, "vision_config.", "num_channels", 3, 3, &c->num_channels);
        rc = rc ? rc : kosmos2__cfg_float(v, "vision_config.", "layer_norm_eps", &c->vision_eps);
        rc = rc ? rc : kosmos2__cfg_str(v, "vision_config.", "hidden_act", c->vision_act, sizeof c->vision_act);
    }
    if (t) {
        rc = rc ? rc : kosmos2__cfg_int(t, "text_config.", "vocab_size", 5, 1 << 24, &c->vocab_size);
        rc = rc ? rc : kosmos2__cfg_int(t, "text_config.", "embed_dim", 2, BIG, &c->text_hidden);
        rc = rc ? rc : kosmos2__cfg_int(t, "text_config.", "layers", 0, 4096, &c->text_layers);
        rc = rc ? rc : kosmos2__cfg_int(t, "text_config.", "attention_heads", 1, 4096, &c->text_heads);
        rc = rc ? rc : kosmos2__cfg_int(t, "text_config.", "ffn_dim", 1, BIG, &c->ffn_dim);
        rc = rc ? rc : kosmos2__cfg_int(t, "text_config.", "max_position_embeddings", 1, 1 << 24, &c->max_positions);
        rc = rc ? rc : kosmos2__cfg_float(t, "text_config.", "layer_norm_eps", &c->text_eps);
        rc = rc ? rc : kosmos2__cfg_bool(t, "scale_embedding", &c->scale_embedding);
        rc = rc ? rc : kosmos2__cfg_str(t, "text_config.", "activation_function", c->text_act, sizeof c->text_act);
        rc = rc ? rc : kosmos2__cfg_int(t, "text_config.", "bos_token_id", 0, 1 << 24, &c->bos_id);
        rc = rc ? rc : kosmos2__cfg_int(t, "text_config.", "eos_token_id", 0, 1 << 24, &c->eos_id);
        rc = rc ? rc : kosmos2__cfg_int(t, "text_config.", "pad_token_id", 0, 1 << 24, &c->pad_id);
        rc = rc ? rc : kosmos2__cfg_int(t, "text_config.", "no_repeat_ngram_size", 0, 1 << 20, &c->no_repeat_ngram_size);
    }
    if (rc) return rc;
    /* values that would make the model impossible */
    if (c->vision_hidden % c->vision_heads) return kosmos2__fail(KOSMOS2_E_FORMAT, "vision_config.hidden_size %d is not divisible by num_attention_heads %d", c->vision_hidden, c->vision_heads);
    if (c->text_hidden % c->text_heads) return kosmos2__fail(KOSMOS2_E_FORMAT, "text_config.embed_dim %d is not divisible by attention_heads %d", c->text_hidden, c->text_heads);
    if (c->text_hidden % 2) return kosmos2__fail(KOSMOS2_E_FORMAT, "text_config.embed_dim %d must be even (sinusoidal positions)", c->text_hidden);
    if (c->image_size % c->patch_size) return kosmos2__fail(KOSMOS2_E_FORMAT, "vision_config.image_size %d is not a multiple of patch_size %d", c->image_size, c->patch_size);
    if ((int64_t)(c->image_size / c->patch_size) * (c->image_size / c->patch_size) > 1 << 20) return kosmos2__fail(KOSMOS2_E_LIMIT, "too many patches");
    if (c->eos_id >= c->vocab_size || c->bos_id >= c->vocab_size || c->pad_id >= c->vocab_size)
        return kosmos2__fail(KOSMOS2_E_FORMAT, "special token ids must be below vocab_size %d", c->vocab_size);
    if (!kosmos2__act_known(c->vision_act)) return kosmos2__fail(KOSMOS2_E_UNSUPPORTED, "vision_config.hidden_act '%s' is not supported", c->vision_act);
    if (!kosmos2__act_known(c->text_act)) return kosmos2__fail(KOSMOS2_E_UNSUPPORTED, "text_config.activation_function '%s' is not supported", c->text_act);
    return 0;
}

/* ---- preprocessor_config.json ------------------------------------------------------------
 * CLIPImageProcessor as Kosmos-2 configures it: squash-resize to size, (no-op) centre crop,
 * rescale, normalise. Only the square-resize path is supported (what use_square_size and a
 * {height, width} size give); anything else is refused with a clear error. */
static int kosmos2__size_of(const kosmos2__json *s, int square, int *w, int *h) {
    const kosmos2__json *a;
    if (!s || s->type == KOSMOS2__JNULL) return 0;
    /* sizes are clamped to [-1, 1e6] before the int conversion (out-of-range doubles are UB to convert);
     * anything outside 1..8192 is refused by the caller */
#define KOSMOS2__SIZE(x) ((x) > 1e6 || !((x) >= -1) ? -1 : (int)(x))
    if (s->type == KOSMOS2__JNUM) { *w = *h = KOSMOS2__SIZE(s->num); return 0; }
    if (s->type != KOSMOS2__JOBJ) return kosmos2__fail(KOSMOS2_E_FORMAT, "size must be an object");
    if ((a = kosmos2__json_get(s, "height")) && a->type == KOSMOS2__JNUM) *h = KOSMOS2__SIZE(a->num);
    if ((a = kosmos2__json_get(s, "width")) && a->type == KOSMOS2__JNUM) *w = KOSMOS2__SIZE(a->num);
    if ((a = kosmos2__json_get(s, "shortest_edge")) && a->type == KOSMOS2__JNUM) {
        if (!square) return kosmos2__fail(KOSMOS2_E_UNSUPPORTED, "aspect-preserving resize (size.shortest_edge without use_square_size) is not supported");
        *w = *h = KOSMOS2__SIZE(a->num);
    }
#undef KOSMOS2__SIZE
    return 0;
}

static int kosmos2__preprocess_from_json(const kosmos2__json *r, kosmos2_preprocess_config *pp) {
    const kosmos2__json *a;
    int square = 0, cw, ch, crop = 1, i, rc;
    if (r->type != KOSMOS2__JOBJ) return kosmos2__fail(KOSMOS2_E_FORMAT, "not a JSON object");
    kosmos2__cfg_bool(r, "use_square_size", &square);
    kosmos2__cfg_bool(r, "do_resize", &pp->do_resize);
    kosmos2__cfg_bool(r, "do_rescale", &pp->do_rescale);
    kosmos2__cfg_bool(r, "do_normalize", &pp->do_normalize);
    kosmos2__cfg_bool(r, "do_convert_rgb", &pp->do_convert_rgb);
    kosmos2__cfg_bool(r, "do_center_crop", &crop);
    if ((rc = kosmos2__cfg_int(r, "", "resample", 0, 5, &pp->resample)) != 0) return rc;
    if ((a = kosmos2__json_get(r, "rescale_factor")) && a->type == KOSMOS2__JNUM) pp->rescale_factor = a->num;
    if ((rc = kosmos2__size_of(kosmos2__json_get(r, "size"), square, &pp->width, &pp->height)) != 0) return rc;
    cw = pp->width; ch = pp->height;
    if ((rc = kosmos2__size_of(kosmos2__json_get(r, "crop_size"), 1, &cw, &ch)) != 0) return rc;
    if (crop && (cw != pp->width || ch != pp->height)) return kosmos2__fail(KOSMOS2_E_UNSUPPORTED, "a centre crop (%dx%d) different from the resize (%dx%d) is not supported", cw, ch, pp->width, pp->height);
    for (i = 0; i < 2; i++) {
        const char *key = i ? "image_std" : "image_mean";
        float *dst = i ? pp->std : pp->mean;
        a = kosmos2__json_get(r, key);
        if (!a || a->type == KOSMOS2__JNULL) continue;
        if (a->type != KOSMOS2__JARR || a->len != 3 || a->items[0].type != KOSMOS2__JNUM || a->items[1].type != KOSMOS2__JNUM || a->items[2].type != KOSMOS2__JNUM)
            return kosmos2__fail(KOSMOS2_E_FORMAT, "%s must be an array of 3 numbers", key);
        dst[0] = (float)a->items[0].num; dst[1] = (float)a->items[1].num; dst[2] = (float)a->items[2].num;
    }
    if (pp->do_normalize && (pp->std[0] == 0 || pp->std[1] == 0 || pp->std[2] == 0)) return kosmos2__fail(KOSMOS2_E_FORMAT, "image_std must not be 0");
    if (pp->width < 1 || pp->height < 1 || pp->width > 8192 || pp->height > 8192) return kosmos2__fail(KOSMOS2_E_FORMAT, "bad image size %dx%d", pp->width, pp->height);
    return 0;
}

/* ---- tensors by name ------------------------------------------------------------------ */
static const kosmos2__tensor *kosmos2__find(const kosmos2_model *m, const char *name) {
    int i;
    for (i = 0; i < m->n_tensors; i++)
        if (!strcmp(m->tensors[i].name, name)) return &m->tensors[i];
    return NULL;
}

static int kosmos2__own(kosmos2_model *m, void *p) {
    if (m->n_owned == m->cap_owned) {
        int nc = m->cap_owned ? m->cap_owned * 2 : 256;
        void **no = (void **)KOSMOS2_REALLOC(m->owned, (size_t)nc * sizeof *no);
        if (!no) { KOSMOS2_FREE(p); return kosmos2__fail(KOSMOS2_E_NOMEM, "out of memory"); }
        m->owned = no;
        m->cap_owned = nc;
    }
    m->owned[m->n_owned++] = p;
    return 0;
}

/* Find `name`, check its shape against d0..d{ndim-1} and its dtype (F32/F16/BF16). */
static int kosmos2__check(const kosmos2_model *m, const char *name, int ndim, const int64_t *dims, const kosmos2__tensor **out) {
    const kosmos2__tensor *t = kosmos2__find(m, name);
    char want[96], got[96];
    int i, ok;
    *out = NULL;
    if (!t) return kosmos2__fail(KOSMOS2_E_FORMAT, "tensor '%s' is missing from the checkpoint", name);
    ok = t->ndim == ndim;
    for (i = 0; ok && i < ndim; i++) ok = t->shape[i] == dims[i];
    if (!ok) {
        size_t a = 0, b = 0;
        for (i = 0; i < ndim && a < 80; i++) a += (size_t)snprintf(want + a, sizeof want - a, i ? ", %lld" : "%lld", (long long)dims[i]);
        for (i = 0; i < t->ndim && b < 80; i++) b += (size_t)snprintf(got + b, sizeof got - b, i ? ", %lld" : "%lld", (long long)t->shape[i]);
        want[a] = 0; got[b] = 0;
        return kosmos2__fail(KOSMOS2_E_FORMAT, "tensor '%s' has shape [%s], config.json implies [%s]", name, got, want);
    }
    if (strcmp(t->dtype, "F32") && strcmp(t->dtype, "F16") && strcmp(t->dtype, "BF16") && strcmp(t->dtype, "Q8_0") && strcmp(t->dtype, "Q4_0") && strcmp(t->dtype, "Q4_0R8") && strcmp(t->dtype, "Q8_0R8"))
        return kosmos2__fail(KOSMOS2_E_UNSUPPORTED, "tensor '%s' has dtype %s (supported: F32, F16, BF16)", name, t->dtype);
    *out = t;
    return 0;
}

static kosmos2__dtype kosmos2__dtype_of(const kosmos2__tensor *t) {
    return !strcmp(t->dtype, "F32") ? KOSMOS2__F32 : !strcmp(t->dtype, "F16") ? KOSMOS2__F16 : !strcmp(t->dtype, "BF16") ? KOSMOS2__BF16
         : !strcmp(t->dtype, "Q8_0") ? KOSMOS2__Q8_0 : !strcmp(t->dtype, "Q4_0") ? KOSMOS2__Q4_0 : !strcmp(t->dtype, "Q8_0R8") ? KOSMOS2__Q8_0R8 : KOSMOS2__Q4_0R8;
}
/* The alignment the kernels need for a stored type (q blocks start with a float16). */
static size_t kosmos2__dtype_align(const kosmos2__tensor *t) { return !strcmp(t->dtype, "F32") ? 4 : 2; }

/* A tensor as a float32 array: the mapped data itself when it is F32 and aligned, else a copy. */
static int kosmos2__get_f32(kosmos2_model *m, const char *name, int ndim, const int64_t *dims, const float **out) {
    const kosmos2__tensor *t;
    kosmos2__mat tmp;
    float *copy;
    int64_t i, n;
    int rc = kosmos2__check(m, name, ndim, dims, &t);
    if (rc) return rc;
    if (!strcmp(t->dtype, "F32") && ((uintptr_t)t->data % 4) == 0) { *out = (const float *)t->data; return 0; }
    for (n = 1, i = 0; i < ndim; i++) n *= dims[i];
    copy = (float *)kosmos2__alloc((size_t)n * sizeof(float));
    if (!copy || (rc = kosmos2__own(m, copy)) != 0) return KOSMOS2_E_NOMEM;
    tmp.dtype = kosmos2__dtype_of(t); tmp.rows = 1; tmp.cols = n;
    tmp.data = t->data;
    if ((uintptr_t)t->data % kosmos2__dtype_align(t)) { /* misaligned: an aligned copy of the bytes first */
        void *bytes = kosmos2__alloc(t->nbytes);
        if (!bytes) return KOSMOS2_E_NOMEM;
        memcpy(bytes, t->data, t->nbytes);
        tmp.data = bytes;
        kosmos2__mat_row_f32(&tmp, 0, copy);
        KOSMOS2_FREE(bytes);
    } else kosmos2__mat_row_f32(&tmp, 0, copy);
    *out = copy;
    return 0;
}

/* Tensor t viewed as a matrix [rows, cols] in its stored type (copied only when misaligned). */
static int kosmos2__mat_from(kosmos2_model *m, const kosmos2__tensor *t, int64_t rows, int64_t cols, kosmos2__mat *out) {
    out->dtype = kosmos2__dtype_of(t);
    out->rows = rows; out->cols = cols;
    out->data = t->data;
    if ((uintptr_t)t->data % kosmos2__dtype_align(t)) {
        void *copy = kosmos2__alloc(t->nbytes);
        if (!copy || kosmos2__own(m, copy)) return KOSMOS2_E_NOMEM;
        memcpy(copy, t->data, t->nbytes);
        out->data = copy;
    }
    return 0;
}

/* A 2-D tensor [rows, cols] as a matrix. */
static int kosmos2__get_mat(kosmos2_model *m, const char *name, int64_t rows, int64_t cols, kosmos2__mat *out) {
    const kosmos2__tensor *t;
    int64_t dims[2];
    int rc;
    dims[0] = rows; dims[1] = cols;
    if ((rc = kosmos2__check(m, name, 2, dims, &t)) != 0) return rc;
    return kosmos2__mat_from(m, t, rows, cols, out);
}

static int kosmos2__get_ln(kosmos2_model *m, const char *prefix, int64_t n, kosmos2__ln *ln) {
    char name[256];
    int rc;
    snprintf(name, sizeof name, "%s.weight", prefix);
    if ((rc = kosmos2__get_f32(m, name, 1, &n, &ln->w)) != 0) return rc;
    snprintf(name, sizeof name, "%s.bias", prefix);
    return kosmos2__get_f32(m, name, 1, &n, &ln->b);
}

static int kosmos2__get_linear(kosmos2_model *m, const char *prefix, int64_t out_f, int64_t in_f, kosmos2__linear *l) {
    char name[256];
    int rc;
    snprintf(name, sizeof name, "%s.weight", prefix);
    if ((rc = kosmos2__get_mat(m, name, out_f, in_f, &l->w)) != 0) return rc;
    snprintf(name, sizeof name, "%s.bias", prefix);
    return kosmos2__get_f32(m, name, 1, &out_f, &l->b);
}

/* Bind every weight the architecture needs, checking names and shapes against the config. */
static int kosmos2__bind_weights(kosmos2_model *m) {
    const kosmos2_config *c = &m->cfg;
    int64_t Dv = c->vision_hidden, Fv = c->vision_intermediate, D = c->text_hidden, F = c->ffn_dim, V = c->vocab_size;
    int64_t side = c->image_size / c->patch_size, N = side * side + 1, Q = c->latent_query_num;
    int64_t dims[4];
    char p[200];
    int i, rc;
    const kosmos2__tensor *lm;
    /* vision embeddings */
    dims[0] = Dv; dims[1] = c->num_channels; dims[2] = c->patch_size; dims[3] = c->patch_size;
    {   /* the conv weight [Dv, C, P, P] is the matrix [Dv, C*P*P] */
        const kosmos2__tensor *t;
        if ((rc = kosmos2__check(m, "vision_model.model.embeddings.patch_embedding.weight", 4, dims, &t)) != 0) return rc;
        if ((rc = kosmos2__mat_from(m, t, Dv, dims[1] * dims[2] * dims[3], &m->patch_w)) != 0) return rc;
    }
    if ((rc = kosmos2__get_f32(m, "vision_model.model.embeddings.class_embedding", 1, &Dv, &m->class_emb)) != 0) return rc;
    dims[0] = N; dims[1] = Dv;
    if ((rc = kosmos2__get_f32(m, "vision_model.model.embeddings.position_embedding.weight", 2, dims, &m->pos_emb)) != 0) return rc;
    if ((rc = kosmos2__get_ln(m, "vision_model.model.pre_layrnorm", Dv, &m->pre_ln)) != 0) return rc;
    if ((rc = kosmos2__get_ln(m, "vision_model.model.post_layernorm", Dv, &m->post_ln)) != 0) return rc;
    m->vl = (kosmos2__vision_layer *)kosmos2__calloc((size_t)c->vision_layers + 1, sizeof *m->vl);
    if (!m->vl) return KOSMOS2_E_NOMEM;
    for (i = 0; i < c->vision_layers; i++) {
        kosmos2__vision_layer *L = &m->vl[i];
#define KOSMOS2__P(fmt) (snprintf(p, sizeof p, "vision_model.model.encoder.layers.%d." fmt, i), p)
        if ((rc = kosmos2__get_ln(m, KOSMOS2__P("layer_norm1"), Dv, &L->ln1)) != 0) return rc;
        if ((rc = kosmos2__get_ln(m, KOSMOS2__P("layer_norm2"), Dv, &L->ln2)) != 0) return rc;
        if ((rc = kosmos2__get_linear(m, KOSMOS2__P("self_attn.q_proj"), Dv, Dv, &L->q)) != 0) return rc;
        if ((rc = kosmos2__get_linear(m, KOSMOS2__P("self_attn.k_proj"), Dv, Dv, &L->k)) != 0) return rc;
        if ((rc = kosmos2__get_linear(m, KOSMOS2__P("self_attn.v_proj"), Dv, Dv, &L->v)) != 0) return rc;
        if ((rc = kosmos2__get_linear(m, KOSMOS2__P("self_attn.out_proj"), Dv, Dv, &L->o)) != 0) return rc;
        if ((rc = kosmos2__get_linear(m, KOSMOS2__P("mlp.fc1"), Fv, Dv, &L->fc1)) != 0) return rc;
        if ((rc = kosmos2__get_linear(m, KOSMOS2__P("mlp.fc2"), Dv, Fv, &L->fc2)) != 0) return rc;
#undef KOSMOS2__P
    }
    /* image-to-text projection */
    if ((rc = kosmos2__get_linear(m, "image_to_text_projection.dense", D, Dv, &m->dense)) != 0) return rc;
    dims[0] = Q; dims[1] = D;
    if ((rc = kosmos2__get_f32(m, "image_to_text_projection.latent_query", 2, dims, &m->latent_query)) != 0) return rc;
    if ((rc = kosmos2__get_linear(m, "image_to_text_projection.x_attn.q_proj", D, D, &m->xq)) != 0) return rc;
    if ((rc = kosmos2__get_linear(m, "image_to_text_projection.x_attn.k_proj", D, D, &m->xk)) != 0) return rc;
    if ((rc = kosmos2__get_linear(m, "image_to_text_projection.x_attn.v_proj", D, D, &m->xv)) != 0) return rc;
    if ((rc = kosmos2__get_linear(m, "image_to_text_projection.x_attn.out_proj", D, D, &m->xo)) != 0) return rc;
    /* text decoder */
    if ((rc = kosmos2__get_mat(m, "text_model.model.embed_tokens.weight", V, D, &m->embed)) != 0) return rc;
    m->tl = (kosmos2__text_layer *)kosmos2__calloc((size_t)c->text_layers + 1, sizeof *m->tl);
    if (!m->tl) return KOSMOS2_E_NOMEM;
    for (i = 0; i < c->text_layers; i++) {
        kosmos2__text_layer *L = &m->tl[i];
#define KOSMOS2__P(fmt) (snprintf(p, sizeof p, "text_model.model.layers.%d." fmt, i), p)
        if ((rc = kosmos2__get_ln(m, KOSMOS2__P("self_attn_layer_norm"), D, &L->attn_ln)) != 0) return rc;
        if ((rc = kosmos2__get_linear(m, KOSMOS2__P("self_attn.q_proj"), D, D, &L->q)) != 0) return rc;
        if ((rc = kosmos2__get_linear(m, KOSMOS2__P("self_attn.k_proj"), D, D, &L->k)) != 0) return rc;
        if ((rc = kosmos2__get_linear(m, KOSMOS2__P("self_attn.v_proj"), D, D, &L->v)) != 0) return rc;
        if ((rc = kosmos2__get_linear(m, KOSMOS2__P("self_attn.out_proj"), D, D, &L->o)) != 0) return rc;
        if ((rc = kosmos2__get_ln(m, KOSMOS2__P("self_attn.inner_attn_ln"), D, &L->inner_ln)) != 0) return rc;
        if ((rc = kosmos2__get_ln(m, KOSMOS2__P("final_layer_norm"), D, &L->ffn_pre_ln)) != 0) return rc;
        if ((rc = kosmos2__get_linear(m, KOSMOS2__P("ffn.fc1"), F, D, &L->fc1)) != 0) return rc;
        if ((rc = kosmos2__get_linear(m, KOSMOS2__P("ffn.fc2"), D, F, &L->fc2)) != 0) return rc;
        if ((rc = kosmos2__get_ln(m, KOSMOS2__P("ffn.ffn_layernorm"), F, &L->ffn_ln)) != 0) return rc;
#undef KOSMOS2__P
    }
    if ((rc = kosmos2__get_ln(m, "text_model.model.layer_norm", D, &m->final_ln)) != 0) return rc;
    /* lm_head: tied to embed_tokens; the hub file stores the matrix once */
    lm = kosmos2__find(m, "text_model.lm_head.weight");
    if (lm) return kosmos2__get_mat(m, "text_model.lm_head.weight", V, D, &m->lm_head);
    m->lm_head = m->embed;
    return 0;
}


/* ---- GGUF: the single-file format (weights, config, tokenizer) -----------------------------
 *  Layout (GGUF v3, little-endian): "GGUF", u32 version, u64 n_tensors, u64 n_kv; n_kv key/value
 *  pairs (key = u64 length + bytes; u32 value type; value); n_tensors tensor infos (name, u32
 *  n_dims, u64 ne[n_dims] innermost first, u32 ggml type, u64 offset into the data section);
 *  padding to `general.alignment` (64 here); the data section. kosmos2.h stores config.json and
 *  preprocessor_config.json as strings and the SentencePiece model as a byte array, so one file
 *  is a whole model. Tensor names are the Hugging Face names. */
#define KOSMOS2__GGUF_ALIGN 64
/* kosmos2.h's own tensor types (not ggml's, whose readers refuse them): q4_0 / q8_0 blocks
 * interleaved 8 rows at a time, the r8 layouts of [5] DATA LAYOUTS, so that q4_0 / q8_0 files map
 * with no conversion at load. Plain q4_0 / q8_0 tensors (ggml types 2 / 8) are repacked at load. */
#define KOSMOS2__GGML_Q4_0R8 4098u
#define KOSMOS2__GGML_Q8_0R8 4104u
enum { KOSMOS2__GT_U8, KOSMOS2__GT_I8, KOSMOS2__GT_U16, KOSMOS2__GT_I16, KOSMOS2__GT_U32, KOSMOS2__GT_I32, KOSMOS2__GT_F32,
       KOSMOS2__GT_BOOL, KOSMOS2__GT_STR, KOSMOS2__GT_ARR, KOSMOS2__GT_U64, KOSMOS2__GT_I64, KOSMOS2__GT_F64 };

typedef struct {            /* a bounds-checked reader over the mapped file */
    const unsigned char *p; /* [n] */
    size_t n, pos;
    int bad;
} kosmos2__rd;

static uint64_t kosmos2__rd_u(kosmos2__rd *r, int bytes) {
    uint64_t v = 0;
    int i;
    if (r->bad || r->n - r->pos < (size_t)bytes) { r->bad = 1; return 0; }
    for (i = bytes - 1; i >= 0; i--) v = (v << 8) | r->p[r->pos + (size_t)i];
    r->pos += (size_t)bytes;
    return v;
}
/* A GGUF string: pointer into the file and its length (not NUL-terminated). */
static const char *kosmos2__rd_str(kosmos2__rd *r, size_t *len) {
    uint64_t n = kosmos2__rd_u(r, 8);
    const char *s;
    if (r->bad || n > r->n - r->pos) { r->bad = 1; *len = 0; return ""; }
    s = (const char *)r->p + r->pos;
    r->pos += (size_t)n;
    *len = (size_t)n;
    return s;
}
static int kosmos2__gt_size(uint32_t t) {
    static const int sz[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return t < 13 ? sz[t] : -1;
}
/* Skip one value of type t (arrays of arrays nest at most 4 deep). */
static void kosmos2__rd_skip(kosmos2__rd *r, uint32_t t, int depth) {
    size_t len;
    if (t == KOSMOS2__GT_STR) { kosmos2__rd_str(r, &len); return; }
    if (t == KOSMOS2__GT_ARR) {
        uint32_t et = (uint32_t)kosmos2__rd_u(r, 4);
        uint64_t n = kosmos2__rd_u(r, 8), i;
        int es = kosmos2__gt_size(et);
        if (depth > 4 || es < 0) { r->bad = 1; return; }
        if (es > 0) {
            if (n > (r->n - r->pos) / (uint64_t)es) { r->bad = 1; return; }
            r->pos += (size_t)(n * (uint64_t)es);
            return;
        }
        for (i = 0; i < n && !r->bad; i++) kosmos2__rd_skip(r, et, depth + 1);
        return;
    }
    if (kosmos2__gt_size(t) <= 0) { r->bad = 1; return; }
    kosmos2__rd_u(r, kosmos2__gt_size(t));
}

typedef struct {            /* what kosmos2.h needs from a GGUF file's metadata */
    const char *config_json, *preproc_json, *spm; /* into the mapped file */
    size_t config_len, preproc_len, spm_len;
} kosmos2__gguf_meta;

static const char *kosmos2__ggml_type_name(uint32_t t) {
    switch (t) {
    case 0: return "F32";
    case 1: return "F16";
    case 2: return "Q4_0";
    case 8: return "Q8_0";
    case KOSMOS2__GGML_Q4_0R8: return "Q4_0R8";
    case KOSMOS2__GGML_Q8_0R8: return "Q8_0R8";
    case 30: return "BF16";
    default: return NULL;
    }
}

static int kosmos2__gguf_parse(const char *path, const kosmos2__file *f, kosmos2__tensor **tensors, int *n_tensors, kosmos2__gguf_meta *meta) {
    kosmos2__rd r;
    uint64_t nt, nkv, i, align = 32, data_start;
    uint32_t version;
    int rc;
    r.p = f->data; r.n = f->size; r.pos = 0; r.bad = 0;
    memset(meta, 0, sizeof *meta);
    if (f->size < 24 || memcmp(f->data, "GGUF", 4) != 0) return kosmos2__fail(KOSMOS2_E_FORMAT, "%s: not a GGUF file", path);
    r.pos = 4;
    version = (uint32_t)kosmos2__rd_u(&r, 4);
    nt = kosmos2__rd_u(&r, 8);
    nkv = kosmos2__rd_u(&r, 8);
    if (version < 2 || version > 3) return kosmos2__fail(KOSMOS2_E_UNSUPPORTED, "%s: GGUF version %u (supported: 2, 3)", path, version);
    if (nt > 100000 || nkv > 100000) return kosmos2__fail(KOSMOS2_E_FORMAT, "%s: absurd counts (%llu tensors, %llu keys)", path, (unsigned long long)nt, (unsigned long long)nkv);
    for (i = 0; i < nkv && !r.bad; i++) {
        size_t klen;
        const char *key = kosmos2__rd_str(&r, &klen);
        uint32_t t = (uint32_t)kosmos2__rd_u(&r, 4);
#define KOSMOS2__KEY(s) (klen == strlen(s) && !memcmp(key, s, klen))
        if (r.bad) break;
        if (t == KOSMOS2__GT_STR && KOSMOS2__KEY("kosmos2.config_json")) meta->config_json = kosmos2__rd_str(&r, &meta->config_len);
        else if (t == KOSMOS2__GT_STR && KOSMOS2__KEY("kosmos2.preprocessor_config_json")) meta->preproc_json = kosmos2__rd_str(&r, &meta->preproc_len);
        else if (t == KOSMOS2__GT_ARR && KOSMOS2__KEY("tokenizer.sentencepiece_model")) {
            uint32_t et = (uint32_t)kosmos2__rd_u(&r, 4);
            uint64_t n = kosmos2__rd_u(&r, 8);
            if (et != KOSMOS2__GT_U8 || n > r.n - r.pos) { r.bad = 1; break; }
            meta->spm = (const char *)r.p + r.pos;
            meta->spm_len = (size_t)n;
            r.pos += (size_t)n;
        } else if (t == KOSMOS2__GT_U32 && KOSMOS2__KEY("general.alignment")) {
            align = kosmos2__rd_u(&r, 4);
            if (align == 0 || (align & (align - 1)) || align > 65536) return kosmos2__fail(KOSMOS2_E_FORMAT, "%s: bad general.alignment %llu", path, (unsigned long long)align);
        } else kosmos2__rd_skip(&r, t, 0);
#undef KOSMOS2__KEY
    }
    if (r.bad) return kosmos2__fail(KOSMOS2_E_FORMAT, "%s: metadata runs past the end of the file (byte %zu)", path, r.pos);
    *tensors = (kosmos2__tensor *)kosmos2__calloc((size_t)nt + 1, sizeof **tensors);
    if (!*tensors) return KOSMOS2_E_NOMEM;
    for (i = 0; i < nt; i++) {
        kosmos2__tensor *ts = &(*tensors)[i];
        size_t nlen;
        const char *name = kosmos2__rd_str(&r, &nlen), *tn;
        uint32_t nd = (uint32_t)kosmos2__rd_u(&r, 4), d, type;
        uint64_t count = 1;
        if (r.bad || nd == 0 || nd > 8 || nlen == 0 || nlen > 512) return kosmos2__fail(KOSMOS2_E_FORMAT, "%s: tensor info %llu is malformed (byte %zu)", path, (unsigned long long)i, r.pos);
        ts->name = (char *)kosmos2__alloc(nlen + 1);
        if (!ts->name) return KOSMOS2_E_NOMEM;
        memcpy(ts->name, name, nlen);
        ts->name[nlen] = 0;
        (*n_tensors)++;
        ts->ndim = (int)nd;
        for (d = 0; d < nd; d++) { /* GGUF lists the innermost dimension first; we keep PyTorch's order */
            uint64_t v = kosmos2__rd_u(&r, 8);
            if (v == 0 || v > ((uint64_t)1 << 40) || count > ((uint64_t)1 << 40) / v) return kosmos2__fail(KOSMOS2_E_FORMAT, "%s: tensor '%s' has a bad dimension", path, ts->name);
            ts->shape[nd - 1 - d] = (int64_t)v;
            count *= v;
        }
        type = (uint32_t)kosmos2__rd_u(&r, 4);
        ts->data = (const unsigned char *)(uintptr_t)kosmos2__rd_u(&r, 8); /* the offset for now */
        if (r.bad) return kosmos2__fail(KOSMOS2_E_FORMAT, "%s: tensor infos run past the end of the file", path);
        tn = kosmos2__ggml_type_name(type);
        if (!tn) return kosmos2__fail(KOSMOS2_E_UNSUPPORTED, "%s: tensor '%s' has ggml type %u (supported: F32, F16, BF16, Q8_0, Q4_0, and kosmos2.h's Q4_0R8 %u, Q8_0R8 %u)", path, ts->name, type,
                                   KOSMOS2__GGML_Q4_0R8, KOSMOS2__GGML_Q8_0R8);
        strcpy(ts->dtype, tn);
        if ((type == 2 || type == 8 || type == KOSMOS2__GGML_Q4_0R8 || type == KOSMOS2__GGML_Q8_0R8) && ts->shape[nd - 1] % 32) return kosmos2__fail(KOSMOS2_E_FORMAT, "%s: quantized tensor '%s' has rows of %lld (not a multiple of 32)", path, ts->name, (long long)ts->shape[nd - 1]);
        ts->nbytes = (size_t)(count / (uint64_t)ts->shape[nd - 1] * (uint64_t)kosmos2__row_bytes(type == 0 ? KOSMOS2__F32 : type == 1 ? KOSMOS2__F16 : type == 30 ? KOSMOS2__BF16 : type == 8 ? KOSMOS2__Q8_0 : type == 2 ? KOSMOS2__Q4_0 : type == KOSMOS2__GGML_Q8_0R8 ? KOSMOS2__Q8_0R8 : KOSMOS2__Q4_0R8, ts->shape[nd - 1]));
    }
    data_start = ((uint64_t)r.pos + align - 1) / align * align;
    if (data_start > f->size) return kosmos2__fail(KOSMOS2_E_FORMAT, "%s: truncated before the data section", path);
    for (i = 0; i < nt; i++) {
        kosmos2__tensor *ts = &(*tensors)[i];
        uint64_t off = (uint64_t)(uintptr_t)ts->data;
        if (off % align) return kosmos2__fail(KOSMOS2_E_FORMAT, "%s: tensor '%s' offset %llu is not aligned to %llu", path, ts->name, (unsigned long long)off, (unsigned long long)align);
        if (off > f->size - data_start || ts->nbytes > f->size - data_start - off)
            return kosmos2__fail(KOSMOS2_E_FORMAT, "%s: tensor '%s' (%zu bytes at offset %llu) lies outside the file (truncated?)", path, ts->name, ts->nbytes, (unsigned long long)off);
        ts->data = f->data + data_start + off;
    }
    if ((rc = kosmos2__check_overlaps(path, *tensors, *n_tensors)) != 0) return rc;
    if (!meta->config_json || !meta->spm) return kosmos2__fail(KOSMOS2_E_FORMAT, "%s: not a kosmos2.h GGUF file (no kosmos2.config_json or tokenizer.sentencepiece_model)", path);
    return 0;
}

/* ---- writing a GGUF file (`kosmos2 quantize`) ---------------------------------------------- */
static uint16_t kosmos2__f32_to_bf16(float f) { /* round to nearest even, NaN kept quiet */
    uint32_t b;
    memcpy(&b, &f, 4);
    if ((b & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((b >> 16) | 0x40);
    return (uint16_t)((b + 0x7fffu + ((b >> 16) & 1)) >> 16);
}

static uint32_t kosmos2__ggml_type_of(kosmos2__dtype t) {
    switch (t) {
    case KOSMOS2__F32: return 0;
    case KOSMOS2__F16: return 1;
    case KOSMOS2__Q4_0: return 2;
    case KOSMOS2__Q4_0R8: return KOSMOS2__GGML_Q4_0R8;
    case KOSMOS2__Q8_0R8: return KOSMOS2__GGML_Q8_0R8;
    case KOSMOS2__Q8_0: return 8;
    default: return 30;
    }
}

/* The type a tensor gets when quantizing to `want`: large matrices take `want`; the token
 * embedding stays float16 in q8_0 files (it is also the tied lm_head: in q8_0 it alone doubled
 * the logits' error, measured by test_gguf_quantized_accuracy) and takes q8_0 in q4_0 files (28 %
 * of the bytes a q4_0 token reads were this matrix in float16; the error is q4_0's: see the
 * README's How exact); 1-D tensors, the class/position embeddings and
 * the latent queries stay float32; rows that are not a multiple of 32 cannot be block-quantized:
 * float16. With q4_0, the resampler (image_to_text_projection: every image embedding passes it)
 * takes q8_0: +10 MB, and the prompt logits' error against float32 on the full-size random
 * checkpoints falls from 5.9 % to 4.6 % (branch-scaled, see scripts/make_fullsize.py) and from
 * 26.9 % to 24.4 % (standard). */
static kosmos2__dtype kosmos2__quant_choice(const kosmos2__tensor *t, kosmos2__dtype want) {
    int64_t cols = t->shape[t->ndim - 1];
    int is_q = kosmos2__is_q(want);
    if (t->ndim < 2 || strstr(t->name, "position_embedding") || strstr(t->name, "latent_query") || strstr(t->name, "class_embedding")) return KOSMOS2__F32;
    if (!is_q) return want;
    if (cols % 32 || strstr(t->name, "patch_embedding")) return KOSMOS2__F16;
    if (strstr(t->name, "embed_tokens") || strstr(t->name, "lm_head")) return want == KOSMOS2__Q4_0R8 ? KOSMOS2__Q8_0R8 : want == KOSMOS2__Q4_0 ? KOSMOS2__Q8_0 : KOSMOS2__F16;
    if (strstr(t->name, "image_to_text_projection")) return want == KOSMOS2__Q4_0R8 ? KOSMOS2__Q8_0R8 : want == KOSMOS2__Q4_0 ? KOSMOS2__Q8_0 : want;
    return want;
}

static int kosmos2__fw(FILE *fp, const void *p, size_t n) { return fwrite(p, 1, n, fp) == n ? 0 : -1; }
static int kosmos2__fw_u(FILE *fp, uint64_t v, int bytes) {
    unsigned char b[8];
    int i;
    for (i = 0; i < bytes; i++) b[i] = (unsigned char)(v >> (8 * i));
    return kosmos2__fw(fp, b, (size_t)bytes);
}
static int kosmos2__fw_str(FILE *fp, const char *s, size_t n) { return kosmos2__fw_u(fp, n, 8) | kosmos2__fw(fp, s, n); }

int kosmos2_model_save_gguf(const kosmos2_model *m, const char *path, const char *type, kosmos2_progress_callback progress, void *user_data) {
    kosmos2__dtype want, *chosen = NULL;
    FILE *fp = NULL;
    uint64_t off = 0, *offs = NULL;
    float *row = NULL;
    unsigned char *qrow = NULL, *tbuf = NULL;
    int i, d, rc = 0;
    long pos;
    if (!m || !path || !type) return kosmos2__fail(KOSMOS2_E_INVALID, "kosmos2_model_save_gguf: NULL argument");
    if (!strcmp(type, "f32")) want = KOSMOS2__F32;
    else if (!strcmp(type, "f16")) want = KOSMOS2__F16;
    else if (!strcmp(type, "bf16")) want = KOSMOS2__BF16;
    else if (!strcmp(type, "q8_0")) want = KOSMOS2__Q8_0R8;       /* interleaved 8 rows: mapped as is */
    else if (!strcmp(type, "q8_0_ggml")) want = KOSMOS2__Q8_0;    /* ggml's row layout: repacked at load */
    else if (!strcmp(type, "q4_0")) want = KOSMOS2__Q4_0R8;       /* interleaved 8 rows: mapped as is */
    else if (!strcmp(type, "q4_0_ggml")) want = KOSMOS2__Q4_0;    /* ggml's row layout: repacked at load */
    else return kosmos2__fail(KOSMOS2_E_INVALID, "unknown weight type '%s' (f32, f16, bf16, q8_0, q4_0, q8_0_ggml, q4_0_ggml)", type);
    chosen = (kosmos2__dtype *)kosmos2__calloc((size_t)m->n_tensors + 1, sizeof *chosen);
    offs = (uint64_t *)kosmos2__calloc((size_t)m->n_tensors + 1, sizeof *offs);
    if (!chosen || !offs) { rc = KOSMOS2_E_NOMEM; goto end; }
    fp = fopen(path, "wb");
    if (!fp) { rc = kosmos2__fail(KOSMOS2_E_IO, "%s: cannot create: %s", path, strerror(errno)); goto end; }
    /* header and metadata */
    rc |= kosmos2__fw(fp, "GGUF", 4) | kosmos2__fw_u(fp, 3, 4) | kosmos2__fw_u(fp, (uint64_t)m->n_tensors, 8) | kosmos2__fw_u(fp, 5, 8);
    rc |= kosmos2__fw_str(fp, "general.architecture", 20) | kosmos2__fw_u(fp, KOSMOS2__GT_STR, 4) | kosmos2__fw_str(fp, "kosmos2", 7);
    rc |= kosmos2__fw_str(fp, "general.alignment", 17) | kosmos2__fw_u(fp, KOSMOS2__GT_U32, 4) | kosmos2__fw_u(fp, KOSMOS2__GGUF_ALIGN, 4);
    rc |= kosmos2__fw_str(fp, "kosmos2.config_json", 19) | kosmos2__fw_u(fp, KOSMOS2__GT_STR, 4) | kosmos2__fw_str(fp, m->config_json, strlen(m->config_json));
    rc |= kosmos2__fw_str(fp, "kosmos2.preprocessor_config_json", 32) | kosmos2__fw_u(fp, KOSMOS2__GT_STR, 4) | kosmos2__fw_str(fp, m->preproc_json, strlen(m->preproc_json));
    rc |= kosmos2__fw_str(fp, "tokenizer.sentencepiece_model", 29) | kosmos2__fw_u(fp, KOSMOS2__GT_ARR, 4) | kosmos2__fw_u(fp, KOSMOS2__GT_U8, 4) | kosmos2__fw_u(fp, m->spm_size, 8) | kosmos2__fw(fp, m->spm, m->spm_size);
    /* tensor infos */
    for (i = 0; i < m->n_tensors; i++) {
        const kosmos2__tensor *t = &m->tensors[i];
        int64_t rows = 1;
        chosen[i] = kosmos2__quant_choice(t, want);
        for (d = 0; d < t->ndim - 1; d++) rows *= t->shape[d];
        offs[i] = off;
        off += ((uint64_t)(rows * kosmos2__row_bytes(chosen[i], t->shape[t->ndim - 1])) + KOSMOS2__GGUF_ALIGN - 1) / KOSMOS2__GGUF_ALIGN * KOSMOS2__GGUF_ALIGN;
        rc |= kosmos2__fw_str(fp, t->name, strlen(t->name)) | kosmos2__fw_u(fp, (uint64_t)t->ndim, 4);
        for (d = t->ndim - 1; d >= 0; d--) rc |= kosmos2__fw_u(fp, (uint64_t)t->shape[d], 8);
        rc |= kosmos2__fw_u(fp, kosmos2__ggml_type_of(chosen[i]), 4) | kosmos2__fw_u(fp, offs[i], 8);
    }
    pos = ftell(fp);
    while (rc == 0 && pos % KOSMOS2__GGUF_ALIGN) { rc |= kosmos2__fw(fp, "", 1); pos++; }
    if (rc) { rc = kosmos2__fail(KOSMOS2_E_IO, "%s: write error: %s", path, strerror(errno)); goto end; }
    /* data: row by row, converted from the stored type */
    for (i = 0; i < m->n_tensors; i++) {
        const kosmos2__tensor *t = &m->tensors[i];
        kosmos2__mat src;
        int64_t rows = 1, cols = t->shape[t->ndim - 1], r2, k, rb = kosmos2__row_bytes(chosen[i], cols);
        for (d = 0; d < t->ndim - 1; d++) rows *= t->shape[d];
        src.data = t->data; src.dtype = kosmos2__dtype_of(t); src.rows = rows; src.cols = cols;
        KOSMOS2_FREE(row); KOSMOS2_FREE(qrow); KOSMOS2_FREE(tbuf);
        row = (float *)kosmos2__alloc((size_t)cols * sizeof(float));
        qrow = (unsigned char *)kosmos2__alloc((size_t)rb);
        tbuf = kosmos2__is_r8(chosen[i]) ? (unsigned char *)kosmos2__alloc((size_t)(rows * rb) * 2) : NULL; /* rows, then repacked */
        if (!row || !qrow || (kosmos2__is_r8(chosen[i]) && !tbuf)) { rc = KOSMOS2_E_NOMEM; goto end; }
        for (r2 = 0; r2 < rows && rc == 0; r2++) {
            kosmos2__mat_row_f32(&src, r2, row);
            switch (chosen[i]) {
            case KOSMOS2__F32: memcpy(qrow, row, (size_t)rb); break;
            case KOSMOS2__F16: for (k = 0; k < cols; k++) { uint16_t h = kosmos2__f32_to_f16(row[k]); memcpy(qrow + 2 * k, &h, 2); } break;
            case KOSMOS2__BF16: for (k = 0; k < cols; k++) { uint16_t h = kosmos2__f32_to_bf16(row[k]); memcpy(qrow + 2 * k, &h, 2); } break;
            case KOSMOS2__Q8_0: kosmos2__quantize_row_q8_0(row, qrow, cols); break;
            case KOSMOS2__Q4_0: kosmos2__quantize_row_q4_0(row, qrow, cols); break;
            case KOSMOS2__Q4_0R8: kosmos2__quantize_row_q4_0(row, tbuf + r2 * rb, cols); break;
            case KOSMOS2__Q8_0R8: kosmos2__quantize_row_q8_0(row, tbuf + r2 * rb, cols); break;
            }
            if (!kosmos2__is_r8(chosen[i])) rc |= kosmos2__fw(fp, qrow, (size_t)rb);
        }
        if (rc == 0 && kosmos2__is_r8(chosen[i])) {
            kosmos2__repack_r8(tbuf, tbuf + rows * rb, rows, cols, 0, rows / 8, 1, chosen[i] == KOSMOS2__Q8_0R8);
            rc |= kosmos2__fw(fp, tbuf + rows * rb, (size_t)(rows * rb));
        }
        pos = ftell(fp);
        while (rc == 0 && pos % KOSMOS2__GGUF_ALIGN) { rc |= kosmos2__fw(fp, "", 1); pos++; }
        if (rc) { rc = kosmos2__fail(KOSMOS2_E_IO, "%s: write error: %s", path, strerror(errno)); goto end; }
        if (progress && progress(t->name, kosmos2__dtype_name(chosen[i]), i + 1, m->n_tensors, user_data)) { rc = kosmos2__fail(KOSMOS2_E_ABORTED, "quantization aborted"); goto end; }
    }
    if (fclose(fp) != 0) { fp = NULL; rc = kosmos2__fail(KOSMOS2_E_IO, "%s: write error", path); goto end; }
    fp = NULL;
end:
    if (fp) fclose(fp);
    if (rc) remove(path);
    KOSMOS2_FREE(chosen); KOSMOS2_FREE(offs); KOSMOS2_FREE(row); KOSMOS2_FREE(qrow); KOSMOS2_FREE(tbuf);
    return rc;
}

/* ---- the checkpoint directory ----------------------------------------------------------- */
static int kosmos2__path(char *buf, size_t cap, const char *dir, const char *file) {
    if ((size_t)snprintf(buf, cap, "%s/%s", dir, file) >= cap) return kosmos2__fail(KOSMOS2_E_INVALID, "path too long: %s/%s", dir, file);
    return 0;
}

/* Open the weight files: model.safetensors, or the shards listed by model.safetensors.index.json. */
static int kosmos2__open_weights(kosmos2_model *m, const char *dir, int use_mmap) {
    char path[4096];
    kosmos2__json idx;
    const kosmos2__json *wm;
    size_t i;
    int rc, j;
    if ((rc = kosmos2__path(path, sizeof path, dir, "model.safetensors")) != 0) return rc;
    if (kosmos2__file_exists(path) || !(kosmos2__path(path, sizeof path, dir, "model.safetensors.index.json") == 0 && kosmos2__file_exists(path))) {
        kosmos2__path(path, sizeof path, dir, "model.safetensors");
        if ((rc = kosmos2__file_open(path, use_mmap, &m->files[0])) != 0) return rc;
        m->n_files = 1;
        return kosmos2__safetensors_parse(path, &m->files[0], 0, &m->tensors, &m->n_tensors);
    }
    if ((rc = kosmos2__json_load(path, &idx)) != 0) return rc;
    wm = kosmos2__json_get(&idx, "weight_map");
    if (!wm || wm->type != KOSMOS2__JOBJ) { kosmos2__json_free(&idx); return kosmos2__fail(KOSMOS2_E_FORMAT, "%s: no weight_map object", path); }
    for (i = 0; i < wm->len; i++) {
        const kosmos2__json *f = &wm->items[i];
        int seen = 0;
        if (f->type != KOSMOS2__JSTR || !f->len || strchr(f->str, '/') || strchr(f->str, '\\') || !strcmp(f->str, "..")) {
            rc = kosmos2__fail(KOSMOS2_E_FORMAT, "%s: weight_map entry for '%s' is not a plain file name", path, wm->keys[i]);
            kosmos2__json_free(&idx);
            return rc;
        }
        for (j = 0; j < (int)i && !seen; j++) seen = !strcmp(wm->items[j].str, f->str);
        if (seen) continue;
        if (m->n_files == (int)(sizeof m->files / sizeof m->files[0])) { kosmos2__json_free(&idx); return kosmos2__fail(KOSMOS2_E_LIMIT, "%s: more than 64 shards", path); }
        {
            char sp[4096];
            if ((rc = kosmos2__path(sp, sizeof sp, dir, f->str)) != 0 || (rc = kosmos2__file_open(sp, use_mmap, &m->files[m->n_files])) != 0) { kosmos2__json_free(&idx); return rc; }
            m->n_files++;
            if ((rc = kosmos2__safetensors_parse(sp, &m->files[m->n_files - 1], m->n_files - 1, &m->tensors, &m->n_tensors)) != 0) { kosmos2__json_free(&idx); return rc; }
        }
    }
    kosmos2__json_free(&idx);
    return 0;
}

void kosmos2_model_free(kosmos2_model *m) {
    int i;
    if (!m) return;
    for (i = 0; i < m->n_owned; i++) KOSMOS2_FREE(m->owned[i]);
    KOSMOS2_FREE(m->owned);
    for (i = 0; i < m->n_tensors; i++) KOSMOS2_FREE(m->tensors[i].name);
    KOSMOS2_FREE(m->tensors);
    for (i = 0; i < m->n_files; i++) kosmos2__file_close(&m->files[i]);
    KOSMOS2_FREE(m->vl);
    KOSMOS2_FREE(m->tl);
    KOSMOS2_FREE(m->config_json);
    KOSMOS2_FREE(m->preproc_json);
    KOSMOS2_FREE(m->spm);
    if (m->tok) kosmos2_tokenizer_free(m->tok);
    KOSMOS2_FREE(m);
}

/* A NUL-terminated copy of n bytes. */
static char *kosmos2__strndup(const char *s, size_t n) {
    char *p = (char *)kosmos2__alloc(n + 1);
    if (p) { memcpy(p, s, n); p[n] = 0; }
    return p;
}

/* Read a whole (small) file into a NUL-terminated buffer; *out NULL when the file is absent and
 * `optional`. */
static int kosmos2__read_text(const char *path, int optional, char **out, size_t *size) {
    kosmos2__file f;
    int rc;
    *out = NULL;
    if (optional && !kosmos2__file_exists(path)) return 0;
    if ((rc = kosmos2__file_open(path, 0, &f)) != 0) return rc;
    if (f.size > ((size_t)64 << 20)) { kosmos2__file_close(&f); return kosmos2__fail(KOSMOS2_E_LIMIT, "%s: larger than 64 MiB", path); }
    *out = kosmos2__strndup((const char *)f.data, f.size);
    if (size) *size = f.size;
    kosmos2__file_close(&f);
    return *out ? 0 : KOSMOS2_E_NOMEM;
}

/* config.json text, preprocessor_config.json text ("" = absent) and the SentencePiece model bytes
 * -> m->cfg, m->pp, m->tok. `where` names the source in error messages. */
static int kosmos2__setup_from_texts(kosmos2_model *m, const char *where) {
    kosmos2__json js;
    int rc;
    if ((rc = kosmos2__json_parse(m->config_json, strlen(m->config_json), &js)) != 0) return kosmos2__wrap(rc, "%sconfig.json: ", where);
    rc = kosmos2__config_from_json(&js, &m->cfg);
    kosmos2__json_free(&js);
    if (rc) return kosmos2__wrap(rc, "%sconfig.json: ", where);
    m->pp = kosmos2_preprocess_default_config();
    m->pp.width = m->pp.height = m->cfg.image_size;
    if (m->preproc_json[0]) {
        if ((rc = kosmos2__json_parse(m->preproc_json, strlen(m->preproc_json), &js)) != 0) return kosmos2__wrap(rc, "%spreprocessor_config.json: ", where);
        rc = kosmos2__preprocess_from_json(&js, &m->pp);
        kosmos2__json_free(&js);
        if (rc) return kosmos2__wrap(rc, "%spreprocessor_config.json: ", where);
        if (m->pp.width != m->cfg.image_size || m->pp.height != m->cfg.image_size)
            return kosmos2__fail(KOSMOS2_E_FORMAT, "%spreprocessor_config.json: images are resized to %dx%d but the vision tower takes %dx%d", where,
                                 m->pp.width, m->pp.height, m->cfg.image_size, m->cfg.image_size);
    }
    if ((rc = kosmos2_tokenizer_load_memory(m->spm, m->spm_size, &m->tok)) != 0) return kosmos2__wrap(rc, "%ssentencepiece.bpe.model: ", where);
    if (kosmos2_tokenizer_vocab_size(m->tok) > m->cfg.vocab_size)
        return kosmos2__fail(KOSMOS2_E_FORMAT, "%ssentencepiece.bpe.model: the tokenizer has %d ids but the model's vocab_size is %d", where,
                             kosmos2_tokenizer_vocab_size(m->tok), m->cfg.vocab_size);
    return 0;
}

/* Every q4_0 / q8_0 matrix (ggml rows: files of other tools or q*_ggml) of the layers and the
 * resampler repacked to q4_0r8 / q8_0r8 (see [5] DATA LAYOUTS: one activation load then feeds 8
 * weight rows; q4_0 decoding ran at 54-59 % of the memory bandwidth in the ggml layout). One block for all, on 2 MiB pages where the system allows (the
 * weights stream through every token). The source pages of a mapped file are given back as each
 * matrix is done (MADV_DONTNEED: they stay in the page cache, not in this process's RSS), so the
 * peak RSS grows by one matrix, not by the model. */
static int kosmos2__repack_weights(kosmos2_model *m) {
    const kosmos2_config *c = &m->cfg;
    const size_t huge = (size_t)2 << 20;
    int n = 0, i, j, nt = m->n_threads;
    size_t total = 0, slack, off = 0;
    unsigned char *raw, *base;
    const void *embed_data = m->embed.data; /* lm_head may be the same matrix (tied) */
    kosmos2__mat **mats = (kosmos2__mat **)kosmos2__calloc((size_t)(6 * c->vision_layers + 6 * c->text_layers + 7), sizeof *mats);
    if (!mats) return KOSMOS2_E_NOMEM;
#define KOSMOS2__ADD(W) if (((W).dtype == KOSMOS2__Q4_0 || (W).dtype == KOSMOS2__Q8_0) && (W).rows >= 8) mats[n++] = &(W)
    for (i = 0; i < c->vision_layers; i++) {
        kosmos2__vision_layer *L = &m->vl[i];
        KOSMOS2__ADD(L->q.w); KOSMOS2__ADD(L->k.w); KOSMOS2__ADD(L->v.w); KOSMOS2__ADD(L->o.w); KOSMOS2__ADD(L->fc1.w); KOSMOS2__ADD(L->fc2.w);
    }
    KOSMOS2__ADD(m->dense.w); KOSMOS2__ADD(m->xq.w); KOSMOS2__ADD(m->xk.w); KOSMOS2__ADD(m->xv.w); KOSMOS2__ADD(m->xo.w);
    for (i = 0; i < c->text_layers; i++) {
        kosmos2__text_layer *L = &m->tl[i];
        KOSMOS2__ADD(L->q.w); KOSMOS2__ADD(L->k.w); KOSMOS2__ADD(L->v.w); KOSMOS2__ADD(L->o.w); KOSMOS2__ADD(L->fc1.w); KOSMOS2__ADD(L->fc2.w);
    }
    KOSMOS2__ADD(m->embed);
    if (m->lm_head.data != embed_data) KOSMOS2__ADD(m->lm_head);
#undef KOSMOS2__ADD
    if (n == 0) { KOSMOS2_FREE(mats); return 0; }
    for (i = 0; i < n; i++) total += ((size_t)(mats[i]->rows * kosmos2__row_bytes(mats[i]->dtype, mats[i]->cols)) + 63) & ~(size_t)63;
    slack = total >= 2 * huge ? huge : 64;
    raw = (unsigned char *)KOSMOS2_MALLOC(total + slack);
    if (!raw || kosmos2__own(m, raw)) { KOSMOS2_FREE(mats); return kosmos2__fail(KOSMOS2_E_NOMEM, "out of memory repacking %.1f MiB of q4_0/q8_0 weights", (double)total / 1048576.0); }
    base = (unsigned char *)(((uintptr_t)raw + slack - 1) & ~(uintptr_t)(slack - 1));
#ifdef KOSMOS2__MADV_HUGEPAGE
    if (slack == huge) (void)madvise(base, total & ~(huge - 1), KOSMOS2__MADV_HUGEPAGE); /* advice only */
#endif
#ifdef _OPENMP
    if (nt <= 0) nt = omp_get_num_procs();
#endif
    for (i = 0; i < n; i++) {
        kosmos2__mat *W = mats[i];
        const uint8_t *src = (const uint8_t *)W->data;
        const int64_t G = W->rows / 8, bytes = W->rows * kosmos2__row_bytes(W->dtype, W->cols);
        const int q8 = W->dtype == KOSMOS2__Q8_0;
        int64_t g;
        (void)nt;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1 && G >= 64)
#endif
        for (g = 0; g < G; g += 16) kosmos2__repack_r8(src, base + off, W->rows, W->cols, g, g + 16 < G ? g + 16 : G, g + 16 >= G, q8);
#ifdef KOSMOS2__MADV_DONTNEED
        for (j = 0; j < m->n_files; j++) { /* give back the source's whole pages */
            const kosmos2__file *f = &m->files[j];
            uintptr_t a = ((uintptr_t)src + 4095) & ~(uintptr_t)4095, e = ((uintptr_t)src + (size_t)bytes) & ~(uintptr_t)4095;
            if (f->mapped && src >= f->data && src + bytes <= f->data + f->size && e > a) (void)madvise((void *)a, e - a, KOSMOS2__MADV_DONTNEED);
        }
#endif
        W->data = base + off;
        W->dtype = q8 ? KOSMOS2__Q8_0R8 : KOSMOS2__Q4_0R8;
        off += ((size_t)bytes + 63) & ~(size_t)63;
    }
    (void)j;
    if (m->lm_head.data == embed_data) m->lm_head = m->embed; /* tied: the one repacked copy */
    KOSMOS2_FREE(mats);
    return 0;
}

/* A Hugging Face checkpoint directory. */
static int kosmos2__load_dir(kosmos2_model *m, const char *dir, int use_mmap) {
    char path[4096], where[4200];
    int rc;
    snprintf(where, sizeof where, "%s/", dir);
    if ((rc = kosmos2__path(path, sizeof path, dir, "config.json")) != 0) return rc;
    if (!kosmos2__file_exists(path)) return kosmos2__fail(KOSMOS2_E_IO, "%s: not found (is '%s' a Kosmos-2 checkpoint directory?)", path, dir);
    if ((rc = kosmos2__read_text(path, 0, &m->config_json, NULL)) != 0) return rc;
    if ((rc = kosmos2__path(path, sizeof path, dir, "preprocessor_config.json")) != 0) return rc;
    if ((rc = kosmos2__read_text(path, 1, &m->preproc_json, NULL)) != 0) return rc;
    if (!m->preproc_json && !(m->preproc_json = kosmos2__strdup(""))) return KOSMOS2_E_NOMEM;
    if ((rc = kosmos2__path(path, sizeof path, dir, "sentencepiece.bpe.model")) != 0) return rc;
    if ((rc = kosmos2__read_text(path, 0, (char **)&m->spm, &m->spm_size)) != 0) return rc;
    if ((rc = kosmos2__setup_from_texts(m, where)) != 0) return rc;
    if ((rc = kosmos2__open_weights(m, dir, use_mmap)) != 0) return rc;
    if ((rc = kosmos2__bind_weights(m)) != 0) return kosmos2__wrap(rc, "%s: ", dir);
    return kosmos2__repack_weights(m);
}

/* One GGUF file written by kosmos2_model_save_gguf. */
static int kosmos2__load_gguf(kosmos2_model *m, const char *path, int use_mmap) {
    kosmos2__gguf_meta meta;
    char where[4200];
    int rc;
    snprintf(where, sizeof where, "%s: ", path);
    if ((rc = kosmos2__file_open(path, use_mmap, &m->files[0])) != 0) return rc;
    m->n_files = 1;
    if ((rc = kosmos2__gguf_parse(path, &m->files[0], &m->tensors, &m->n_tensors, &meta)) != 0) return rc;
    m->config_json = kosmos2__strndup(meta.config_json, meta.config_len);
    m->preproc_json = kosmos2__strndup(meta.preproc_json ? meta.preproc_json : "", meta.preproc_len);
    m->spm = (unsigned char *)kosmos2__strndup(meta.spm, meta.spm_len);
    m->spm_size = meta.spm_len;
    if (!m->config_json || !m->preproc_json || !m->spm) return KOSMOS2_E_NOMEM;
    if ((rc = kosmos2__setup_from_texts(m, where)) != 0) return rc;
    if ((rc = kosmos2__bind_weights(m)) != 0) return kosmos2__wrap(rc, "%s", where);
    return kosmos2__repack_weights(m);
}

static int kosmos2__is_dir(const char *path) {
#ifdef KOSMOS2__HAVE_MMAP
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
#else
    char p[4096];
    snprintf(p, sizeof p, "%s/config.json", path);
    return kosmos2__file_exists(p);
#endif
}

int kosmos2_model_load(const char *path, const kosmos2_model_params *params, kosmos2_model **out) {
    kosmos2_model_params mp = params ? *params : kosmos2_model_default_params();
    kosmos2_model *m;
    int rc;
    if (!out) return kosmos2__fail(KOSMOS2_E_INVALID, "kosmos2_model_load: out is NULL");
    *out = NULL;
    if (!path || !*path) return kosmos2__fail(KOSMOS2_E_INVALID, "kosmos2_model_load: no model path given");
    m = (kosmos2_model *)kosmos2__calloc(1, sizeof *m);
    if (!m) return KOSMOS2_E_NOMEM;
    m->n_threads = mp.n_threads;
    (void)kosmos2__kernels_isa(); /* detect the CPU now, not lazily in contexts racing on other threads */
    if (!kosmos2__is_dir(path) && kosmos2__file_exists(path)) rc = kosmos2__load_gguf(m, path, mp.use_mmap);
    else rc = kosmos2__load_dir(m, path, mp.use_mmap);
    if (rc) { kosmos2_model_free(m); return rc; }
    *out = m;
    return 0;
}

const kosmos2_config *kosmos2_model_config(const kosmos2_model *m) { return m ? &m->cfg : NULL; }
const kosmos2_tokenizer *kosmos2_model_tokenizer(const kosmos2_model *m) { return m ? m->tok : NULL; }
const kosmos2_preprocess_config *kosmos2_model_preprocess_config(const kosmos2_model *m) { return m ? &m->pp : NULL; }
int kosmos2_model_n_tensors(const kosmos2_model *m) { return m ? m->n_tensors : 0; }
int kosmos2_model_tensor(const kosmos2_model *m, int i, kosmos2_tensor_info *info) {
    const kosmos2__tensor *t;
    if (!m || !info || i < 0 || i >= m->n_tensors) return kosmos2__fail(KOSMOS2_E_INVALID, "tensor index %d out of range", i);
    t = &m->tensors[i];
    info->name = t->name; info->dtype = t->dtype; info->ndim = t->ndim;
    memcpy(info->shape, t->shape, sizeof info->shape);
    info->data = t->data; info->nbytes = t->nbytes;
    return 0;
}

/* ============================================================================================
 *  [7] MODEL OPS: layer norm, activations, softmax, attention (float32, row-wise)
 * ============================================================================================ */
/* Element-wise work is spread over the threads only when there is enough of it (a fork/join costs
 * microseconds) and never from inside a parallel region. Every element is computed by the same
 * expression whoever computes it, so results do not depend on the thread count. */
#define KOSMOS2__PAR_MIN ((int64_t)1 << 15)

/* dst[r, :] = LayerNorm(src[r, :]) * w + b for r < rows; src, dst [rows, n] (dst may be src):
 * the kernel set's lnorm (mean and variance in double, 8 partial sums; vectorised, as a decode
 * step's single rows run on one thread). Rows are spread over nt threads. */
static void kosmos2__layernorm(float *dst, const float *src, int64_t rows, int64_t n, const kosmos2__ln *ln, float eps,
                               int nt) {
    const kosmos2__kernel_set *ks = kosmos2__kernel_table();
    int64_t r;
    (void)nt;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1 && rows > 1 && rows * n >= KOSMOS2__PAR_MIN && !omp_in_parallel())
#endif
    for (r = 0; r < rows; r++) ks->lnorm(dst + r * n, src + r * n, n, ln->w, ln->b, eps);
}

/* In-place activation by HF name: gelu (exact erf form), quick_gelu, gelu_new (tanh), relu, silu.
 * x [n], spread over nt threads in blocks. gelu, quick_gelu and silu use the kernels' vector math
 * (one definition on every path: see kosmos2__vm_ref), the others libm. */
static void kosmos2__activate(float *x, int64_t n, const char *act, int nt) {
    const int kind = !strcmp(act, "gelu") ? 0 : !strcmp(act, "quick_gelu") ? 1
                   : (!strcmp(act, "gelu_new") || !strcmp(act, "gelu_pytorch_tanh")) ? 2 : !strcmp(act, "relu") ? 3 : 4;
    const int64_t blk = 4096, nblk = (n + blk - 1) / blk;
    const kosmos2__kernel_set *ks = kosmos2__kernel_table();
    int64_t b;
    (void)nt;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1 && n >= KOSMOS2__PAR_MIN && !omp_in_parallel())
#endif
    for (b = 0; b < nblk; b++) {
        int64_t i, end = (b + 1) * blk < n ? (b + 1) * blk : n;
        if (kind == 2)
            for (i = b * blk; i < end; i++) x[i] = 0.5f * x[i] * (1.0f + tanhf(0.7978845608028654f * (x[i] + 0.044715f * x[i] * x[i] * x[i])));
        else if (kind == 3)
            for (i = b * blk; i < end; i++) x[i] = x[i] > 0 ? x[i] : 0;
        else /* gelu, quick_gelu, silu / swish: the kernels' vector math */
            ks->vmath(x + b * blk, end - b * blk, kind == 0 ? KOSMOS2__VM_GELU : kind == 1 ? KOSMOS2__VM_QUICK_GELU : KOSMOS2__VM_SILU);
    }
}

/* h[i] += a[i] (a residual connection), h, a [n]; over nt threads. */
static void kosmos2__add(float *h, const float *a, int64_t n, int nt) {
    int64_t i;
    (void)nt;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1 && n >= 4 * KOSMOS2__PAR_MIN && !omp_in_parallel())
#endif
    for (i = 0; i < n; i++) h[i] += a[i];
}

/* Ask for the cache lines of p [n bytes] to be read (the hardware's prefetchers do not follow
 * one short run per 4 KB page, such as a decode step's part of a KV cache row, well: with the
 * next rows requested two ahead, decoding attention took half the time at 100 keys). */
static void kosmos2__prefetch_bytes(const char *p, int64_t n) {
    int64_t off;
    for (off = 0; off < n; off += 64) KOSMOS2__PREFETCH(p + off);
}

/* Softmax of row p [n] in place: exp(x - max) (the kernels' vector math) times 1 / sum. The sum
 * is taken in double in 8 lanes (lane l: the s = l mod 8, in increasing s), folded as
 * ((l0+l4)+(l2+l6))+((l1+l5)+(l3+l7)); then each value times the double 1/sum, rounded to float
 * once. A fixed order, so every path and thread count gives the same bits: the kernel sets'
 * max_sub / sm_scale do these steps in vectors (one sequential double sum and a double division
 * per value took 4 ns per value: a quarter of vision attention's time; the scalar loops, compiled
 * for baseline x86-64, still 17 % of it). */
static void kosmos2__softmax_row(float *p, int64_t n) {
    const kosmos2__kernel_set *ks = kosmos2__kernel_table();
    float mx[8];
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0}, inv;
    float maxv;
    int64_t s;
    int l;
    if (ks->max_sub) { /* the same steps, vectorised */
        ks->max_sub(p, n);
        ks->vmath(p, n, KOSMOS2__VM_EXP);
        ks->sm_scale(p, n);
        return;
    }
    for (l = 0; l < 8; l++) mx[l] = -FLT_MAX;
    for (s = 0; s + 8 <= n; s += 8)
        for (l = 0; l < 8; l++) mx[l] = p[s + l] > mx[l] ? p[s + l] : mx[l];
    for (; s < n; s++) mx[0] = p[s] > mx[0] ? p[s] : mx[0];
    maxv = mx[0];
    for (l = 1; l < 8; l++) maxv = mx[l] > maxv ? mx[l] : maxv; /* (the max: exact in any order) */
    for (s = 0; s < n; s++) p[s] -= maxv;
    kosmos2__kernel_table()->vmath(p, n, KOSMOS2__VM_EXP);
    for (s = 0; s + 8 <= n; s += 8)
        for (l = 0; l < 8; l++) acc[l] += p[s + l];
    for (l = 0; s < n; s++, l++) acc[l] += p[s];
    inv = 1.0 / (((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7])));
    for (s = 0; s < n; s++) p[s] = (float)(p[s] * inv);
}

/* n values of keys or values of element type dt (KOSMOS2__F32, or KOSMOS2__F16 as stored in a
 * float16 KV cache) from element `off` of base, as float32 in dst. float16 is widened exactly, by
 * the kernel table's widen (F16C / AVX-512 where the ISA has it): every path gives the same bits. */
static void kosmos2__kv_widen(const kosmos2__kernel_set *ks, float *dst, const void *base, int dt, int64_t off, int64_t n) {
    int64_t i;
    if (dt == KOSMOS2__F32) memcpy(dst, (const float *)base + off, (size_t)n * sizeof(float));
    else if (ks->widen) ks->widen((const uint16_t *)base + off, KOSMOS2__F16, dst, n);
    else for (i = 0; i < n; i++) dst[i] = kosmos2__f16_to_f32(((const uint16_t *)base)[off + i]); /* scalar ISA */
}

/* Multi-head attention for T queries over S keys, heads concatenated head-major.
 *   q [T, q_stride] float32 (scaled here: each query value times qscale, as transformers scales
 *   the projected queries; q is modified for T < 8), k/v [S, kv_stride] of element type kv_dt
 *   (KOSMOS2__F32, or KOSMOS2__F16 for a float16 KV cache: rows are widened exactly to float32
 *   as they are read, so the result is that of float32 attention on the stored values),
 *   out [T, H*hd]. Query t may see keys 0 .. (causal ? causal_base + t : S-1).
 * Many queries (vision, resampler, prefill): per head, scores = Q K^T (by the kernel set's qkt
 * from keys transposed in blocks of 16 where it has one, else a matrix product: the same bits)
 * and out = P V (a matrix product through the kernels). Few queries (decode): each thread takes a range of heads and
 * walks the cache rows in order, prefetched a few rows ahead (kernels qk, one row; pv, 4 rows
 * per call: a 2 KB contiguous read per row instead of a 128-byte piece every 4 KB; at ~90 keys,
 * full-size model, 2 threads, decoding attention went from 2.9 to 1.5 ms per token, then from
 * ~6 % to ~3 % of a q4_0 decode step with pv's 4 rows).
 * Either way each output is one thread's fixed-order sum: no dependence on the thread count. */
static int kosmos2__attention(float *out, float *q, int64_t q_stride, float qscale, const void *k, const void *v, int kv_dt,
                              int64_t kv_stride, int64_t T, int64_t S, int H, int hd, int causal, int64_t causal_base,
                              int n_threads) {
    const int64_t n_jobs = T * H;
    const kosmos2__kernel_set *ks = kosmos2__kernel_table();
    (void)n_threads; /* (unused without OpenMP) */
    if (T >= 8) { /* one parallel region: heads spread over the threads, each head's products on one */
        /* S16: S rounded up to 16, the keys padded with zero rows and V with zero columns (P V's
         * products then need no tail: the same bits, as a tail adds 0 * 0 to its lanes too) */
        const int64_t S16 = (S + 15) / 16 * 16;
        const int qkt = ks->qkt && hd % 16 == 0; /* the scores by the transposed-keys kernel */
        const int64_t per = T * hd * 2 + S16 * hd * 2 + T * S16 + hd;
        int failed = 0;
        (void)n_threads;
#pragma omp parallel num_threads(n_threads) if (T * S * hd * H >= ((int64_t)1 << 18))
        {
            /* one head's scratch per thread, reused for each of its heads (stays in L2/L3; a
             * scratch per head touched 8.8 MB of fresh pages per vision layer): qh [T, hd],
             * oh [T, hd], kh [S16, hd], vt [hd, S16] (V transposed), p [T, S16], vr [hd] (one row) */
            float *qh = (float *)KOSMOS2_MALLOC((size_t)per * sizeof(float)), *oh = NULL, *kh = NULL, *vt = NULL, *p = NULL, *vr = NULL;
            kosmos2__mat km, vm;
            int64_t h;
            if (qh) {
                oh = qh + T * hd; kh = oh + T * hd; vt = kh + S16 * hd; p = vt + S16 * hd; vr = p + T * S16;
            } else {
#pragma omp atomic write
                failed = 1;
            }
            km.data = kh; km.dtype = KOSMOS2__F32; km.rows = S16; km.cols = hd;
            vm.data = vt; vm.dtype = KOSMOS2__F32; vm.rows = hd; vm.cols = S16;
#pragma omp for schedule(static)
            for (h = 0; h < H; h++) {
                int64_t t, s, d;
                if (!qh) continue;
                for (t = 0; t < T; t++)
                    for (d = 0; d < hd; d++) qh[t * hd + d] = q[t * q_stride + h * hd + d] * qscale;
                for (s = 0; s < S; s++) { /* K as rows kh [S16, hd], or transposed in its place (qkt) */
                    const float *ks_ = vr, *vs = vr;
                    if (qkt) {
                        if (kv_dt == KOSMOS2__F32) ks_ = (const float *)k + s * kv_stride + h * hd;
                        else kosmos2__kv_widen(ks, vr, k, kv_dt, s * kv_stride + h * hd, hd);
                        for (d = 0; d < hd; d++) kh[(s / 16 * hd + d) * 16 + s % 16] = ks_[d];
                    } else
                        kosmos2__kv_widen(ks, kh + s * hd, k, kv_dt, s * kv_stride + h * hd, hd);
                    if (kv_dt == KOSMOS2__F32) vs = (const float *)v + s * kv_stride + h * hd;
                    else kosmos2__kv_widen(ks, vr, v, kv_dt, s * kv_stride + h * hd, hd);
                    for (d = 0; d < hd; d++) vt[d * S16 + s] = vs[d];
                }
                if (!qkt) memset(kh + S * hd, 0, (size_t)((S16 - S) * hd) * sizeof(float)); /* the padding keys and values */
                for (d = 0; d < hd && S16 > S; d++) {
                    if (qkt) memset(kh + (S / 16 * hd + d) * 16 + S % 16, 0, (size_t)(S16 - S) * sizeof(float));
                    memset(vt + d * S16 + S, 0, (size_t)(S16 - S) * sizeof(float));
                }
                if (qkt) ks->qkt(p, S16, qh, T, kh, S16, hd); /* scores = Q K^T (0 for the padding keys) */
                else kosmos2__matmul(p, qh, T, &km, NULL, 1);
                for (t = 0; t < T; t++) {
                    int64_t n_keys = causal ? causal_base + t + 1 : S;
                    if (n_keys > S) n_keys = S;
                    kosmos2__softmax_row(p + t * S16, n_keys);
                    for (s = n_keys; s < S16; s++) p[t * S16 + s] = 0.0f;
                }
                kosmos2__matmul(oh, p, T, &vm, NULL, 1); /* out = P V */
                for (t = 0; t < T; t++) memcpy(out + t * (int64_t)H * hd + h * hd, oh + t * hd, (size_t)hd * sizeof(float));
            }
            KOSMOS2_FREE(qh);
        }
        return failed ? kosmos2__fail(KOSMOS2_E_NOMEM, "attention: out of memory for a %lld-byte scratch", (long long)(per * 4)) : 0;
    }
    {   /* few queries (decoding): each thread takes a contiguous range of heads and reads the
         * cache row after row (its heads' part of a row is contiguous), scores then values */
        int64_t t, i;
        const int64_t es = kv_dt == KOSMOS2__F16 ? 2 : 4; /* bytes per cache element */
        float *scratch = (float *)kosmos2__alloc((size_t)(n_jobs * S) * sizeof(float)); /* [T, H, S] scores */
        if (!scratch) return KOSMOS2_E_NOMEM;
        for (t = 0; t < T; t++)
            for (i = 0; i < (int64_t)H * hd; i++) q[t * q_stride + i] *= qscale;
#pragma omp parallel num_threads(n_threads) if (n_jobs * S * hd > 32768)
        {
            int tid = 0, nth = 1, h0, h1, h;
            int64_t t, s, j, bytes;
#ifdef _OPENMP
            tid = omp_get_thread_num();
            nth = omp_get_num_threads();
#endif
            h0 = (int)((int64_t)H * tid / nth);
            h1 = (int)((int64_t)H * (tid + 1) / nth);
            bytes = (h1 - h0) * hd * es; /* this thread's part of a cache row */
            for (t = 0; t < T && h1 > h0; t++) {
                int64_t n_keys = causal ? causal_base + t + 1 : S;
                const float *qt = q + t * q_stride + h0 * hd;
                float *p = scratch + (t * H + h0) * S, *o = out + t * (int64_t)H * hd + h0 * hd; /* p [h1-h0, S] */
                if (n_keys > S) n_keys = S;
                for (s = 0; s < n_keys; s++) {
                    const char *row = (const char *)k + (s * kv_stride + h0 * hd) * es;
                    if (s + 2 < n_keys) kosmos2__prefetch_bytes(row + 2 * kv_stride * es, bytes);
                    ks->qk(p + s, S, qt, row, kv_dt, h1 - h0, hd);
                }
                for (h = 0; h < h1 - h0; h++) kosmos2__softmax_row(p + h * S, n_keys);
                memset(o, 0, (size_t)bytes / (size_t)es * sizeof(float));
                for (s = 0; s < n_keys; s += 4) { /* 4 rows per call (the sums stay in registers) */
                    const char *row = (const char *)v + (s * kv_stride + h0 * hd) * es;
                    const int n = n_keys - s < 4 ? (int)(n_keys - s) : 4;
                    for (j = 4; j < 8 && s + j < n_keys; j++) kosmos2__prefetch_bytes(row + j * kv_stride * es, bytes);
                    ks->pv(o, p + s, S, row, kv_stride, n, kv_dt, h1 - h0, hd);
                }
            }
        }
        KOSMOS2_FREE(scratch);
    }
    return 0;
}

/* y = x W^T + b; fails only for quantized weights (out of memory for the quantized activations). */
static int kosmos2__linear_fwd(float *y, const float *x, int64_t M, const kosmos2__linear *l, int n_threads) {
    return kosmos2__matmul(y, x, M, &l->w, l->b, n_threads);
}
/* ys[i] = x l[i]^T + b (i < 3) with x shared (the attention's q, k, v): quantized weights of one
 * type and width go through one fused product (one activation quantization, one parallel
 * region), anything else one product at a time. The same bits either way. */
static int kosmos2__linear3_fwd(float *const ys[3], const float *x, int64_t M, const kosmos2__linear *const l[3], int n_threads) {
    const kosmos2__kernel_set *ks = kosmos2__kernel_table();
    int i, rc = 0;
    if (M > 0 && n_threads >= 1) {
        const kosmos2__mat *Ws[3];
        const float *bs[3];
        int fuse = 1;
        for (i = 0; i < 3; i++) {
            Ws[i] = &l[i]->w;
            bs[i] = l[i]->b;
            fuse = fuse && kosmos2__is_q(Ws[i]->dtype) && Ws[i]->dtype == Ws[0]->dtype &&
                   Ws[i]->cols == Ws[0]->cols && Ws[i]->rows > 0;
        }
        if (fuse) return kosmos2__matmul_qn(ys, x, M, Ws, bs, 3, n_threads, ks);
    }
    for (i = 0; i < 3 && rc == 0; i++) rc = kosmos2__linear_fwd(ys[i], x, M, l[i], n_threads);
    return rc;
}

/* ============================================================================================
 *  [8] CONTEXT: per-thread state (KV caches, threads)
 * ============================================================================================ */
typedef struct {        /* the key/value cache of one sequence */
    void **k, **v;      /* [text_layers] -> [cap, D] keys / values after projection (heads interleaved),
                         * of the context's kv_dt: float, or float16 bits (uint16_t); all in `mem` */
    void *mem;          /* the one allocation holding every layer's keys and values */
    int32_t *ids;       /* [cap] the tokens in the cache (for the n-gram ban) */
    int n, cap;         /* positions used / allocated */
    int n_nonpad;       /* tokens that are not <pad> (positions count only those) */
} kosmos2__kv;

struct kosmos2_context {
    const kosmos2_model *m;
    int n_threads;
    int max_ctx;        /* hard limit on positions (config max_position_embeddings unless lowered) */
    size_t max_kv_bytes;/* limit on the memory of all KV caches of this context */
    size_t kv_bytes;    /* what they hold now */
    int kv_dt;          /* element type of the KV caches: KOSMOS2__F32 or KOSMOS2__F16 */
    kosmos2__kv kv;     /* the main sequence */
    float *image_embeds;/* [Q, D] the last encoded image */
    int have_image;
    double t_vision_ms, t_resampler_ms, t_prefill_ms, t_decode_ms;
    int n_decoded;
    int (*abort_cb)(void *user_data); /* kosmos2_context_set_abort_callback (or NULL) */
    void *abort_ud;
};

void kosmos2_context_set_abort_callback(kosmos2_context *ctx, int (*abort_callback)(void *user_data), void *user_data) {
    if (!ctx) return;
    ctx->abort_cb = abort_callback;
    ctx->abort_ud = user_data;
}

/* 0, or KOSMOS2_E_ABORTED when the context's abort callback asks to stop before layer l of n of
 * `stage`. */
static int kosmos2__poll_abort(const kosmos2_context *ctx, const char *stage, int l, int n) {
    if (ctx && ctx->abort_cb && ctx->abort_cb(ctx->abort_ud))
        return kosmos2__fail(KOSMOS2_E_ABORTED, "aborted by the context's callback before layer %d of %d of %s", l + 1, n, stage);
    return 0;
}

/* Bytes of one key or value of type dt (KOSMOS2__F32 or KOSMOS2__F16). */
static size_t kosmos2__kv_elem_bytes(int dt) { return dt == KOSMOS2__F16 ? 2 : 4; }

/* Bytes of KV cache per position: keys and values of every layer (type dt), and the token id. */
static size_t kosmos2__kv_bytes_per_pos(const kosmos2_config *c, int dt) {
    return (size_t)c->text_layers * 2 * (size_t)c->text_hidden * kosmos2__kv_elem_bytes(dt) + sizeof(int32_t);
}

static void kosmos2__kv_free(kosmos2_context *ctx, kosmos2__kv *kv) {
    int l, layers = ctx->m->cfg.text_layers;
    (void)l; (void)layers;
    KOSMOS2_FREE(kv->mem);
    KOSMOS2_FREE(kv->k); KOSMOS2_FREE(kv->v); KOSMOS2_FREE(kv->ids);
    ctx->kv_bytes -= (size_t)kv->cap * kosmos2__kv_bytes_per_pos(&ctx->m->cfg, ctx->kv_dt);
    memset(kv, 0, sizeof *kv);
}

/* Make room for `need` positions (grown by doubling, never beyond the context limit or the
 * context's KV memory limit). */
static int kosmos2__kv_reserve(kosmos2_context *ctx, kosmos2__kv *kv, int need) {
    const kosmos2_config *c = &ctx->m->cfg;
    int l, cap, max_ctx = ctx->max_ctx;
    size_t D = (size_t)c->text_hidden, es = kosmos2__kv_elem_bytes(ctx->kv_dt), per = kosmos2__kv_bytes_per_pos(c, ctx->kv_dt);
    if (need <= kv->cap) return 0;
    if (need > max_ctx) return kosmos2__fail(KOSMOS2_E_LIMIT, "sequence of %d tokens exceeds the context limit of %d positions", need, max_ctx);
    cap = kv->cap ? kv->cap : 64;
    while (cap < need) cap = cap > max_ctx / 2 ? max_ctx : cap * 2;
    if (ctx->kv_bytes + (size_t)(cap - kv->cap) * per > ctx->max_kv_bytes) cap = need; /* no headroom: exactly what is needed */
    if (ctx->kv_bytes + (size_t)(cap - kv->cap) * per > ctx->max_kv_bytes)
        return kosmos2__fail(KOSMOS2_E_LIMIT, "the KV cache would need %.1f MiB, over this context's limit of %.1f MiB (kosmos2_context_params.max_kv_bytes)",
                             (double)(ctx->kv_bytes + (size_t)(cap - kv->cap) * per) / 1048576.0, (double)ctx->max_kv_bytes / 1048576.0);
    if (!kv->k) {
        kv->k = (void **)kosmos2__calloc((size_t)c->text_layers + 1, sizeof(void *));
        kv->v = (void **)kosmos2__calloc((size_t)c->text_layers + 1, sizeof(void *));
        if (!kv->k || !kv->v) return KOSMOS2_E_NOMEM;
    }
    {   /* One block for all layers, [layers][k, v][cap, D], on 2 MiB pages where the system
         * allows: every decoded token writes a new row to each of the 2 x layers arrays, and with
         * 4 KiB pages each of those rows was a page fault (~20 us each in the test VM: 4 % of
         * q4_0 decoding). The rows in use are copied over (growth is by doubling: rare). */
        const size_t per_arr = (size_t)cap * D * es, total = 2 * (size_t)c->text_layers * per_arr, huge = (size_t)2 << 20;
        const size_t slack = total >= 2 * huge ? huge : 64;
        unsigned char *raw = (unsigned char *)KOSMOS2_MALLOC(total + slack), *base;
        if (!raw) return kosmos2__fail(KOSMOS2_E_NOMEM, "out of memory growing the KV cache to %d positions", cap);
        base = (unsigned char *)(((uintptr_t)raw + slack - 1) & ~(uintptr_t)(slack - 1));
#ifdef KOSMOS2__MADV_HUGEPAGE
        if (slack == huge) (void)madvise(base, total & ~(huge - 1), KOSMOS2__MADV_HUGEPAGE); /* advice only */
#endif
        for (l = 0; l < c->text_layers; l++) {
            unsigned char *nk = base + (size_t)(2 * l) * per_arr, *nv = nk + per_arr;
            if (kv->n > 0) {
                memcpy(nk, kv->k[l], (size_t)kv->n * D * es);
                memcpy(nv, kv->v[l], (size_t)kv->n * D * es);
            }
            kv->k[l] = nk;
            kv->v[l] = nv;
        }
        KOSMOS2_FREE(kv->mem);
        kv->mem = raw;
    }
    {
        int32_t *ni = (int32_t *)KOSMOS2_REALLOC(kv->ids, (size_t)cap * sizeof(int32_t));
        if (!ni) return kosmos2__fail(KOSMOS2_E_NOMEM, "out of memory");
        kv->ids = ni;
    }
    ctx->kv_bytes += (size_t)(cap - kv->cap) * per;
    kv->cap = cap;
    return 0;
}

/* dst = a copy of src's first src->n positions (beam search reorders sequences this way). */
static int kosmos2__kv_copy(kosmos2_context *ctx, kosmos2__kv *dst, const kosmos2__kv *src) {
    const kosmos2_config *c = &ctx->m->cfg;
    int l, rc;
    size_t row = (size_t)c->text_hidden * kosmos2__kv_elem_bytes(ctx->kv_dt); /* bytes of one position's keys (or values) */
    if ((rc = kosmos2__kv_reserve(ctx, dst, src->n > 0 ? src->n : 1)) != 0) return rc;
    for (l = 0; l < c->text_layers; l++) {
        memcpy(dst->k[l], src->k[l], (size_t)src->n * row);
        memcpy(dst->v[l], src->v[l], (size_t)src->n * row);
    }
    memcpy(dst->ids, src->ids, (size_t)src->n * sizeof(int32_t));
    dst->n = src->n;
    dst->n_nonpad = src->n_nonpad;
    return 0;
}

kosmos2_context_params kosmos2_context_default_params(void) {
    kosmos2_context_params p;
    p.n_threads = 0;
    p.max_ctx = 0;
    p.max_kv_bytes = 0;
    p.kv_type = KOSMOS2_KV_AUTO;
    return p;
}

/* 1 if any matrix of the text decoder's blocks is quantized (q8_0 / q4_0): KOSMOS2_KV_AUTO's rule. */
static int kosmos2__text_quantized(const kosmos2_model *m) {
    int l;
    for (l = 0; l < m->cfg.text_layers; l++) {
        const kosmos2__text_layer *L = &m->tl[l];
        const kosmos2__linear *lin[6];
        int j;
        lin[0] = &L->q; lin[1] = &L->k; lin[2] = &L->v; lin[3] = &L->o; lin[4] = &L->fc1; lin[5] = &L->fc2;
        for (j = 0; j < 6; j++)
            if (kosmos2__is_q(lin[j]->w.dtype)) return 1;
    }
    return 0;
}

int kosmos2_context_new(const kosmos2_model *m, const kosmos2_context_params *params, kosmos2_context **out) {
    kosmos2_context_params p = params ? *params : kosmos2_context_default_params();
    kosmos2_context *c;
    if (!out) return kosmos2__fail(KOSMOS2_E_INVALID, "kosmos2_context_new: out is NULL");
    *out = NULL;
    if (!m) return kosmos2__fail(KOSMOS2_E_INVALID, "kosmos2_context_new: model is NULL");
    if (p.kv_type != KOSMOS2_KV_AUTO && p.kv_type != KOSMOS2_KV_F32 && p.kv_type != KOSMOS2_KV_F16)
        return kosmos2__fail(KOSMOS2_E_INVALID, "kosmos2_context_new: kv_type %d is not KOSMOS2_KV_AUTO, KOSMOS2_KV_F32 or KOSMOS2_KV_F16", p.kv_type);
    c = (kosmos2_context *)kosmos2__calloc(1, sizeof *c);
    if (!c) return KOSMOS2_E_NOMEM;
    c->m = m;
    c->n_threads = p.n_threads > 0 ? p.n_threads : m->n_threads;
#ifdef _OPENMP
    if (c->n_threads <= 0) c->n_threads = omp_get_num_procs();
#endif
    if (c->n_threads <= 0) c->n_threads = 1;
    c->max_ctx = m->cfg.max_positions;
    if (p.max_ctx > 0 && p.max_ctx < c->max_ctx) c->max_ctx = p.max_ctx;
    c->max_kv_bytes = p.max_kv_bytes ? p.max_kv_bytes : KOSMOS2_DEFAULT_MAX_KV_BYTES;
    if (p.kv_type == KOSMOS2_KV_AUTO) c->kv_dt = kosmos2__text_quantized(m) ? KOSMOS2__F16 : KOSMOS2__F32;
    else c->kv_dt = p.kv_type == KOSMOS2_KV_F16 ? KOSMOS2__F16 : KOSMOS2__F32;
    c->image_embeds = (float *)kosmos2__calloc((size_t)m->cfg.latent_query_num * (size_t)m->cfg.text_hidden, sizeof(float));
    if (!c->image_embeds) { KOSMOS2_FREE(c); return KOSMOS2_E_NOMEM; }
    *out = c;
    return 0;
}

int kosmos2_context_kv_type(const kosmos2_context *ctx) {
    if (!ctx) return 0;
    return ctx->kv_dt == KOSMOS2__F16 ? KOSMOS2_KV_F16 : KOSMOS2_KV_F32;
}
int kosmos2_context_n_threads(const kosmos2_context *ctx) { return ctx ? ctx->n_threads : 0; }

void kosmos2_context_free(kosmos2_context *c) {
    if (!c) return;
    kosmos2__kv_free(c, &c->kv);
    KOSMOS2_FREE(c->image_embeds);
    KOSMOS2_FREE(c);
}

/* ============================================================================================
 *  [9] VISION ENCODER: CLIP ViT (patch conv, class token, learned positions, pre-LN layers)
 * ============================================================================================ */
/* One pre-LN encoder layer on h [N, Dv]; scratch: a [N, Dv], q/k/v/ctx [N, Dv] each, f [N, Fv]. */
static int kosmos2__vision_layer_fwd(const kosmos2_model *m, const kosmos2__vision_layer *L, float *h, int64_t N, float *a,
                                     float *q, float *k, float *v, float *ctx, float *f, int nt) {
    const kosmos2_config *c = &m->cfg;
    int64_t Dv = c->vision_hidden;
    int rc;
    int hd = c->vision_hidden / c->vision_heads;
    float scale = (float)pow((double)hd, -0.5);
    float *const qkv[3] = {q, k, v};
    const kosmos2__linear *const lqkv[3] = {&L->q, &L->k, &L->v};
    kosmos2__layernorm(a, h, N, Dv, &L->ln1, c->vision_eps, nt);
    if ((rc = kosmos2__linear3_fwd(qkv, a, N, lqkv, nt)) != 0) return rc;
    if ((rc = kosmos2__attention(ctx, q, Dv, scale, k, v, KOSMOS2__F32, Dv, N, N, c->vision_heads, hd, 0, 0, nt)) != 0) return rc;
    if ((rc = kosmos2__linear_fwd(a, ctx, N, &L->o, nt)) != 0) return rc;
    kosmos2__add(h, a, N * Dv, nt);
    kosmos2__layernorm(a, h, N, Dv, &L->ln2, c->vision_eps, nt);
    if ((rc = kosmos2__linear_fwd(f, a, N, &L->fc1, nt)) != 0) return rc;
    kosmos2__activate(f, N * c->vision_intermediate, c->vision_act, nt);
    if ((rc = kosmos2__linear_fwd(a, f, N, &L->fc2, nt)) != 0) return rc;
    kosmos2__add(h, a, N * Dv, nt);
    return 0;
}

/* pixels [C, S, S] -> h [N = (S/P)^2 + 1, Dv], the encoder's last_hidden_state (before post-LN). */
static int kosmos2__vision_fwd(const kosmos2_context *cx, const kosmos2_model *m, const float *pixels, float *h, int nt) {
    const kosmos2_config *c = &m->cfg;
    int64_t S = c->image_size, P = c->patch_size, side = S / P, Np = side * side, N = Np + 1, Dv = c->vision_hidden;
    int64_t CPP = (int64_t)c->num_channels * P * P, Fv = c->vision_intermediate, i, l;
    float *buf, *patches, *a, *q, *k, *v, *ctx, *f;
    int rc = 0;
    size_t need = (size_t)(Np * CPP + 5 * N * Dv + N * Fv);
    buf = (float *)kosmos2__alloc(need * sizeof(float));
    if (!buf) return KOSMOS2_E_NOMEM;
    patches = buf;               /* [Np, C*P*P], element (c, ky, kx) as the conv weight */
    a = patches + Np * CPP;      /* [N, Dv] */
    q = a + N * Dv; k = q + N * Dv; v = k + N * Dv; ctx = v + N * Dv; /* [N, Dv] each */
    f = ctx + N * Dv;            /* [N, Fv] */
    for (i = 0; i < Np; i++) {   /* patch i = (py, px), row-major */
        int64_t py = i / side, px = i % side, ch, ky, kx;
        float *dst = patches + i * CPP;
        for (ch = 0; ch < c->num_channels; ch++)
            for (ky = 0; ky < P; ky++)
                for (kx = 0; kx < P; kx++) *dst++ = pixels[(ch * S + py * P + ky) * S + px * P + kx];
    }
    /* token 0 = class embedding, tokens 1.. = patch embeddings; + learned positions */
    memcpy(h, m->class_emb, (size_t)Dv * sizeof(float));
    if ((rc = kosmos2__matmul(h + Dv, patches, Np, &m->patch_w, NULL, nt)) != 0) { KOSMOS2_FREE(buf); return rc; }
    for (i = 0; i < N * Dv; i++) h[i] += m->pos_emb[i];
    kosmos2__layernorm(h, h, N, Dv, &m->pre_ln, c->vision_eps, nt);
    for (l = 0; l < c->vision_layers && rc == 0; l++)
        if ((rc = kosmos2__poll_abort(cx, "the vision encoder", (int)l, c->vision_layers)) == 0)
            rc = kosmos2__vision_layer_fwd(m, &m->vl[l], h, N, a, q, k, v, ctx, f, nt);
    KOSMOS2_FREE(buf);
    return rc;
}

/* ============================================================================================
 *  [10] RESAMPLER: image-to-text projection (64 latent queries attend over [image; latents])
 * ============================================================================================ */
/* vision hidden h [N, Dv] -> image embeddings out [Q, D]. */
static int kosmos2__resampler_fwd(const kosmos2_model *m, const float *h, float *out, int nt) {
    const kosmos2_config *c = &m->cfg;
    int64_t N = (int64_t)(c->image_size / c->patch_size) * (c->image_size / c->patch_size) + 1;
    int64_t Dv = c->vision_hidden, D = c->text_hidden, Q = c->latent_query_num, i, j;
    int hd = c->text_hidden / c->text_heads;
    float scale = (float)pow((double)hd, -0.5), *buf, *x, *kv, *q, *k, *v, *ctx;
    int rc;
    buf = (float *)kosmos2__alloc((size_t)(N * Dv + (N + Q) * D * 3 + Q * D * 2) * sizeof(float));
    if (!buf) return KOSMOS2_E_NOMEM;
    x = buf;                 /* [N, Dv]   post-LN, L2-normalised features */
    kv = x + N * Dv;         /* [N+Q, D]  dense(features) then the raw latent queries */
    k = kv + (N + Q) * D;    /* [N+Q, D] */
    v = k + (N + Q) * D;     /* [N+Q, D] */
    q = v + (N + Q) * D;     /* [Q, D] */
    ctx = q + Q * D;         /* [Q, D] */
    kosmos2__layernorm(x, h, N, Dv, &m->post_ln, c->vision_eps, nt);
    for (i = 0; i < N; i++) { /* F.normalize(dim=-1): x / max(||x||, 1e-12) */
        double ss = 0;
        float nrm;
        for (j = 0; j < Dv; j++) ss += (double)x[i * Dv + j] * x[i * Dv + j];
        nrm = (float)sqrt(ss);
        if (nrm < 1e-12f) nrm = 1e-12f;
        for (j = 0; j < Dv; j++) x[i * Dv + j] /= nrm;
    }
    memcpy(kv + N * D, m->latent_query, (size_t)(Q * D) * sizeof(float));
    if ((rc = kosmos2__linear_fwd(kv, x, N, &m->dense, nt)) == 0 && (rc = kosmos2__linear_fwd(q, m->latent_query, Q, &m->xq, nt)) == 0) {
        if ((rc = kosmos2__linear_fwd(k, kv, N + Q, &m->xk, nt)) == 0 && (rc = kosmos2__linear_fwd(v, kv, N + Q, &m->xv, nt)) == 0 &&
            (rc = kosmos2__attention(ctx, q, D, scale, k, v, KOSMOS2__F32, D, Q, N + Q, c->text_heads, hd, 0, 0, nt)) == 0)
            rc = kosmos2__linear_fwd(out, ctx, Q, &m->xo, nt);
    }
    KOSMOS2_FREE(buf);
    return rc;
}

int kosmos2_encode_image(kosmos2_context *ctx, const float *pixels, float *vision_hidden, float *image_embeds) {
    const kosmos2_model *m;
    const kosmos2_config *c;
    int64_t N;
    float *h;
    int rc;
    double t0;
    if (!ctx || !pixels) return kosmos2__fail(KOSMOS2_E_INVALID, "kosmos2_encode_image: NULL argument");
    m = ctx->m; c = &m->cfg;
    N = (int64_t)(c->image_size / c->patch_size) * (c->image_size / c->patch_size) + 1;
    h = (float *)kosmos2__alloc((size_t)(N * c->vision_hidden) * sizeof(float)); /* [N, Dv] */
    if (!h) return KOSMOS2_E_NOMEM;
    t0 = kosmos2__now_ms();
    rc = kosmos2__vision_fwd(ctx, m, pixels, h, ctx->n_threads);
    ctx->t_vision_ms = kosmos2__now_ms() - t0;
    if (!rc && vision_hidden) memcpy(vision_hidden, h, (size_t)(N * c->vision_hidden) * sizeof(float));
    t0 = kosmos2__now_ms();
    if (!rc) rc = kosmos2__resampler_fwd(m, h, ctx->image_embeds, ctx->n_threads);
    ctx->t_resampler_ms = kosmos2__now_ms() - t0;
    KOSMOS2_FREE(h);
    if (rc) return rc;
    ctx->have_image = 1;
    if (image_embeds) memcpy(image_embeds, ctx->image_embeds, (size_t)c->latent_query_num * (size_t)c->text_hidden * sizeof(float));
    return 0;
}

int kosmos2_set_image_embeds(kosmos2_context *ctx, const float *image_embeds) {
    if (!ctx || !image_embeds) return kosmos2__fail(KOSMOS2_E_INVALID, "kosmos2_set_image_embeds: NULL argument");
    memcpy(ctx->image_embeds, image_embeds, (size_t)ctx->m->cfg.latent_query_num * (size_t)ctx->m->cfg.text_hidden * sizeof(float));
    ctx->have_image = 1;
    return 0;
}

/* ============================================================================================
 *  [11] TEXT DECODER: embeddings (+ image splice), sinusoidal positions, sub-LN blocks, KV cache
 * ============================================================================================ */
/* Row `pos` of the M2M100-style sinusoid table [sin | cos] (float32 as transformers builds it);
 * the padding row (pos == pad) is zero. out [D]. */
static void kosmos2__sinusoid(float *out, int64_t pos, int D, int pad) {
    int half = D / 2, i;
    float negc = (float)-(log(10000.0) / (double)(half - 1));
    if (pos == pad) { memset(out, 0, (size_t)D * sizeof(float)); return; }
    for (i = 0; i < half; i++) {
        float f = expf((float)i * negc), a = (float)pos * f;
        out[i] = sinf(a);
        out[half + i] = cosf(a);
    }
}

/* Run T new tokens through the decoder, appending to the cache kv.
 *   ids [T]; image_mask [T] or NULL: where 1, the row is the next row of image_embeds [Q, D].
 *   logits: NULL, or [V] for the last token, or [T, V] when all_logits. */
static int kosmos2__text_fwd(kosmos2_context *ctx, kosmos2__kv *kv, const int32_t *ids, int T, const uint8_t *image_mask,
                             const float *image_embeds, float *logits, int all_logits) {
    const kosmos2_model *m = ctx->m;
    const kosmos2_config *c = &m->cfg;
    int64_t D = c->text_hidden, F = c->ffn_dim, V = c->vocab_size, t, i, n_img = 0;
    int hd = c->text_hidden / c->text_heads, l, rc, nt = ctx->n_threads, p0 = kv->n, nonpad0 = kv->n_nonpad;
    float scale = (float)pow((double)hd, -0.5);
    float emb_scale = c->scale_embedding ? (float)sqrt((double)D) : 1.0f;
    float *buf, *h, *a, *q, *ctxv, *f;
    if (T <= 0) return kosmos2__fail(KOSMOS2_E_INVALID, "no tokens to decode");
    for (t = 0; t < T; t++)
        if (ids[t] < 0 || ids[t] >= V) return kosmos2__fail(KOSMOS2_E_INVALID, "token id %d at position %d is outside the vocabulary (0..%lld)", ids[t], (int)t, (long long)V - 1);
    if ((rc = kosmos2__kv_reserve(ctx, kv, kv->n + T)) != 0) return rc;
    buf = (float *)kosmos2__alloc((size_t)(T * D * 4 + T * (F > D ? F : D)) * sizeof(float));
    if (!buf) return KOSMOS2_E_NOMEM;
    h = buf; a = h + T * D; q = a + T * D; ctxv = q + T * D; f = ctxv + T * D; /* [T, D] x4, [T, max(F, D)] */
    /* embeddings: token rows or image rows, times sqrt(D); then + sinusoid(position) */
    for (t = 0; t < T; t++) {
        float *row = h + t * D;
        int64_t pos;
        if (image_mask && image_mask[t]) {
            if (n_img >= c->latent_query_num) { KOSMOS2_FREE(buf); return kosmos2__fail(KOSMOS2_E_INVALID, "the image mask has more than %d ones", c->latent_query_num); }
            memcpy(row, image_embeds + n_img * D, (size_t)D * sizeof(float));
            n_img++;
        } else kosmos2__mat_row_f32(&m->embed, ids[t], row);
        for (i = 0; i < D; i++) row[i] *= emb_scale;
        if (ids[t] != c->pad_id) kv->n_nonpad++;
        pos = ids[t] == c->pad_id ? c->pad_id : (int64_t)c->pad_id + kv->n_nonpad;
        kosmos2__sinusoid(a, pos, (int)D, c->pad_id);
        for (i = 0; i < D; i++) row[i] += a[i];
        kv->ids[p0 + t] = ids[t];
    }
    for (l = 0, rc = 0; l < c->text_layers && rc == 0; l++) {
        const kosmos2__text_layer *L = &m->tl[l];
        if ((rc = kosmos2__poll_abort(ctx, "the text decoder", l, c->text_layers)) != 0) break;
        kosmos2__layernorm(a, h, T, D, &L->attn_ln, c->text_eps, nt);
        {
            const kosmos2__linear *qkv[3];
            float *out[3];
            qkv[0] = &L->q; qkv[1] = &L->k; qkv[2] = &L->v;
            out[0] = q;
            if (ctx->kv_dt == KOSMOS2__F32) { /* keys and values straight into this step's cache rows */
                out[1] = (float *)kv->k[l] + (int64_t)p0 * D;
                out[2] = (float *)kv->v[l] + (int64_t)p0 * D;
            } else { /* float16 cache: through ctxv [T, D] and f [T, max(F, D)] (free until the attention
                      * and fc1), rounded into the rows */
                out[1] = ctxv;
                out[2] = f;
            }
            if ((rc = kosmos2__linear3_fwd(out, a, T, qkv, nt)) != 0) break;
            if (ctx->kv_dt != KOSMOS2__F32) {
                kosmos2__kernel_table()->narrow((uint16_t *)kv->k[l] + (int64_t)p0 * D, ctxv, T * D);
                kosmos2__kernel_table()->narrow((uint16_t *)kv->v[l] + (int64_t)p0 * D, f, T * D);
            }
        }
        if ((rc = kosmos2__attention(ctxv, q, D, scale, kv->k[l], kv->v[l], ctx->kv_dt, D, T, p0 + T, c->text_heads, hd, 1, p0, nt)) != 0) break;
        kosmos2__layernorm(ctxv, ctxv, T, D, &L->inner_ln, c->text_eps, nt);
        if ((rc = kosmos2__linear_fwd(a, ctxv, T, &L->o, nt)) != 0) break;
        kosmos2__add(h, a, T * D, nt);
        kosmos2__layernorm(a, h, T, D, &L->ffn_pre_ln, c->text_eps, nt);
        if ((rc = kosmos2__linear_fwd(f, a, T, &L->fc1, nt)) != 0) break;
        kosmos2__activate(f, T * F, c->text_act, nt);
        kosmos2__layernorm(f, f, T, F, &L->ffn_ln, c->text_eps, nt);
        if ((rc = kosmos2__linear_fwd(a, f, T, &L->fc2, nt)) != 0) break;
        kosmos2__add(h, a, T * D, nt);
    }
    if (rc == 0 && logits) {
        int64_t first = all_logits ? 0 : T - 1;
        kosmos2__layernorm(h + first * D, h + first * D, T - first, D, &m->final_ln, c->text_eps, nt);
        rc = kosmos2__matmul(logits, h + first * D, T - first, &m->lm_head, NULL, nt);
    }
    KOSMOS2_FREE(buf);
    if (rc) { /* the cache rows of this call are not valid */
        kv->n_nonpad = nonpad0;
        return rc;
    }
    kv->n += T;
    return 0;
}

int kosmos2_decode(kosmos2_context *ctx, const int32_t *ids, int n, const uint8_t *image_mask, float *logits) {
    if (!ctx || !ids || n <= 0) return kosmos2__fail(KOSMOS2_E_INVALID, "kosmos2_decode: bad arguments");
    if (image_mask && !ctx->have_image) {
        int i;
        for (i = 0; i < n; i++)
            if (image_mask[i]) return kosmos2__fail(KOSMOS2_E_INVALID, "kosmos2_decode: image positions given but no image was encoded");
    }
    return kosmos2__text_fwd(ctx, &ctx->kv, ids, n, image_mask, ctx->image_embeds, logits, 0);
}

void kosmos2_kv_clear(kosmos2_context *ctx) {
    if (!ctx) return;
    ctx->kv.n = 0;
    ctx->kv.n_nonpad = 0;
}

int kosmos2_kv_size(const kosmos2_context *ctx) { return ctx ? ctx->kv.n : 0; }

/* ============================================================================================
 *  [12] GENERATION: greedy, beam search, sampling; no-repeat n-gram ban (transformers' rules)
 * ============================================================================================ */
kosmos2_generate_params kosmos2_generate_default_params(void) {
    kosmos2_generate_params p;
    memset(&p, 0, sizeof p);
    p.max_new_tokens = 128;
    p.num_beams = 1;
    p.length_penalty = 1.0f;
    p.early_stopping = 0;
    p.do_sample = 0;
    p.temperature = 1.0f;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.seed = 0;
    p.no_repeat_ngram_size = -1;
    return p;
}

/* NoRepeatNGramLogitsProcessor: with the last n-1 tokens of seq [len] as a prefix, every token that
 * followed the same prefix earlier in seq gets -inf. Applies only once len + 1 >= n. */
static void kosmos2__ban_ngrams(float *logits, const int32_t *seq, int len, int n) {
    int i, j;
    if (n <= 0 || len + 1 < n) return;
    for (i = 0; i + n <= len; i++) { /* the n-gram seq[i .. i+n-1] */
        for (j = 0; j < n - 1; j++)
            if (seq[i + j] != seq[len - n + 1 + j]) break;
        if (j == n - 1) logits[seq[i + n - 1]] = -INFINITY;
    }
}

static int32_t kosmos2__argmax(const float *x, int64_t n) {
    int64_t i, best = 0;
    for (i = 1; i < n; i++)
        if (x[i] > x[best]) best = i; /* first index wins ties, like torch.argmax */
    return (int32_t)best;
}

/* xorshift64* random numbers for sampling (seeded; not torch's generator). */
static double kosmos2__rand01(uint64_t *s) {
    uint64_t x = *s ? *s : 0x9E3779B97F4A7C15ull;
    x ^= x >> 12; x ^= x << 25; x ^= x >> 27;
    *s = x;
    return (double)((x * 0x2545F4914F6CDD1Dull) >> 11) * (1.0 / 9007199254740992.0);
}

static int kosmos2__cmp_desc(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* Sample from logits [V] after temperature, top-k, top-p (transformers' warper order). scratch [V]. */
static int32_t kosmos2__sample(float *logits, int64_t V, const kosmos2_generate_params *p, uint64_t *rng, float *scratch) {
    int64_t i;
    float maxv = -INFINITY, cut = -INFINITY;
    double sum = 0, r, acc = 0;
    if (p->temperature > 0 && p->temperature != 1.0f)
        for (i = 0; i < V; i++) logits[i] /= p->temperature;
    if (p->top_k > 0 && p->top_k < V) { /* keep logits >= the k-th largest (ties kept) */
        memcpy(scratch, logits, (size_t)V * sizeof(float));
        qsort(scratch, (size_t)V, sizeof(float), kosmos2__cmp_desc);
        cut = scratch[p->top_k - 1];
        for (i = 0; i < V; i++) if (logits[i] < cut) logits[i] = -INFINITY;
    }
    for (i = 0; i < V; i++) if (logits[i] > maxv) maxv = logits[i];
    if (maxv == -INFINITY) return 0;
    for (i = 0; i < V; i++) { scratch[i] = logits[i] == -INFINITY ? 0.0f : expf(logits[i] - maxv); sum += scratch[i]; }
    if (p->top_p > 0 && p->top_p < 1.0f) {
        /* drop the least likely tokens whose cumulative probability (ascending) stays <= 1 - top_p */
        float *sorted = (float *)KOSMOS2_MALLOC((size_t)V * sizeof(float));
        if (sorted) {
            double cum = 0, thresh = 1.0 - p->top_p;
            int64_t kept = V;
            float pcut = 0;
            memcpy(sorted, scratch, (size_t)V * sizeof(float));
            qsort(sorted, (size_t)V, sizeof(float), kosmos2__cmp_desc);
            for (i = V - 1; i > 0; i--) { /* ascending walk; always keep the top one */
                cum += sorted[i] / sum;
                if (cum > thresh) break;
                kept = i;
            }
            pcut = sorted[kept - 1 < 0 ? 0 : kept - 1];
            sum = 0;
            for (i = 0; i < V; i++) { if (scratch[i] < pcut) scratch[i] = 0; sum += scratch[i]; }
            KOSMOS2_FREE(sorted);
        }
    }
    r = kosmos2__rand01(rng) * sum;
    for (i = 0; i < V; i++) {
        acc += scratch[i];
        if (acc > r && scratch[i] > 0) return (int32_t)i;
    }
    return kosmos2__argmax(logits, V);
}

/* log_softmax in float32 over x [n] (in place). */
static void kosmos2__log_softmax(float *x, int64_t n) {
    int64_t i;
    float maxv = -INFINITY;
    double sum = 0;
    float lse;
    for (i = 0; i < n; i++) if (x[i] > maxv) maxv = x[i];
    for (i = 0; i < n; i++) sum += exp((double)(x[i] - maxv));
    lse = maxv + (float)log(sum);
    for (i = 0; i < n; i++) x[i] -= lse;
}

static int kosmos2__check_prompt(kosmos2_context *ctx, const int32_t *ids, const uint8_t *mask, int n, const kosmos2_generate_params *p) {
    const kosmos2_config *c = &ctx->m->cfg;
    int i, ones = 0;
    if (!ids || n <= 0) return kosmos2__fail(KOSMOS2_E_INVALID, "empty prompt");
    if (p->max_new_tokens < 0) return kosmos2__fail(KOSMOS2_E_INVALID, "max_new_tokens must be >= 0");
    if (p->num_beams < 1 || p->num_beams > 64) return kosmos2__fail(KOSMOS2_E_INVALID, "num_beams must be in 1..64");
    if (mask) for (i = 0; i < n; i++) ones += mask[i] != 0;
    if (ones && ones != c->latent_query_num) return kosmos2__fail(KOSMOS2_E_INVALID, "the image mask has %d ones, expected %d", ones, c->latent_query_num);
    if (ones && !ctx->have_image) return kosmos2__fail(KOSMOS2_E_INVALID, "the prompt has image positions but no image was encoded");
    if ((int64_t)n + p->max_new_tokens > ctx->max_ctx)
        return kosmos2__fail(KOSMOS2_E_LIMIT, "prompt (%d tokens) + max_new_tokens (%d) exceeds the context limit of %d positions", n, p->max_new_tokens, ctx->max_ctx);
    {   /* the KV memory this generation will need at most, before any of it is allocated */
        double seqs = p->num_beams > 1 ? 2.0 * p->num_beams : 1.0;
        double need = seqs * (double)(n + p->max_new_tokens) * (double)kosmos2__kv_bytes_per_pos(c, ctx->kv_dt);
        if (need + (p->num_beams > 1 ? (double)ctx->kv_bytes : 0.0) > (double)ctx->max_kv_bytes)
            return kosmos2__fail(KOSMOS2_E_LIMIT, "this generation needs up to %.1f MiB of KV cache, over this context's limit of %.1f MiB (kosmos2_context_params.max_kv_bytes)",
                                 need / 1048576.0, (double)ctx->max_kv_bytes / 1048576.0);
    }
    return 0;
}

/* Greedy decoding or sampling: one sequence. */
static int kosmos2__generate_single(kosmos2_context *ctx, const int32_t *ids, const uint8_t *mask, int n, const kosmos2_generate_params *p,
                                    int ngram, int32_t *out, int cap, int *n_out) {
    const kosmos2_config *c = &ctx->m->cfg;
    int64_t V = c->vocab_size;
    float *logits = (float *)kosmos2__alloc((size_t)V * 2 * sizeof(float)), *scratch; /* [V] + scratch [V] */
    uint64_t rng = p->seed * 0x9E3779B97F4A7C15ull + 1;
    int rc, step;
    double t0;
    if (!logits) return KOSMOS2_E_NOMEM;
    scratch = logits + V;
    t0 = kosmos2__now_ms();
    rc = kosmos2__text_fwd(ctx, &ctx->kv, ids, n, mask, ctx->image_embeds, logits, 0);
    ctx->t_prefill_ms = kosmos2__now_ms() - t0;
    t0 = kosmos2__now_ms();
    for (step = 0; rc == 0 && step < p->max_new_tokens; step++) {
        int32_t tok;
        kosmos2__ban_ngrams(logits, ctx->kv.ids, ctx->kv.n, ngram);
        tok = p->do_sample ? kosmos2__sample(logits, V, p, &rng, scratch) : kosmos2__argmax(logits, V);
        if (*n_out < cap) out[*n_out] = tok;
        (*n_out)++;
        if (p->on_token && p->on_token(tok, p->user_data)) break;
        if (tok == c->eos_id || step + 1 == p->max_new_tokens) break;
        if (p->abort_callback && p->abort_callback(p->user_data)) { rc = kosmos2__fail(KOSMOS2_E_ABORTED, "generation aborted by the callback after %d tokens", *n_out); break; }
        rc = kosmos2__text_fwd(ctx, &ctx->kv, &tok, 1, NULL, NULL, logits, 0);
    }
    ctx->t_decode_ms = kosmos2__now_ms() - t0;
    ctx->n_decoded = *n_out;
    KOSMOS2_FREE(logits);
    return rc;
}

/* Beam search as transformers' BeamSearchScorer (length_penalty, early_stopping True/False). */
typedef struct { float score; int32_t *ids; int n; } kosmos2__hyp; /* a finished hypothesis (generated ids) */

static void kosmos2__hyps_add(kosmos2__hyp *h, int *nh, int K, float *worst, const int32_t *ids, int n, float sum_logprobs, int gen_len, float lp) {
    float score = sum_logprobs / powf((float)gen_len, lp);
    int i, wi = 0;
    if (*nh < K || score > *worst) {
        int32_t *copy = (int32_t *)KOSMOS2_MALLOC((size_t)(n > 0 ? n : 1) * sizeof(int32_t));
        if (!copy) return;
        memcpy(copy, ids, (size_t)n * sizeof(int32_t));
        h[*nh].score = score; h[*nh].ids = copy; h[*nh].n = n;
        (*nh)++;
        if (*nh > K) { /* drop the worst (the first one among equals, like Python's sorted) */
            float second = INFINITY;
            for (i = 1; i < *nh; i++) if (h[i].score < h[wi].score) wi = i;
            KOSMOS2_FREE(h[wi].ids);
            for (i = wi; i + 1 < *nh; i++) h[i] = h[i + 1];
            (*nh)--;
            for (i = 0; i < *nh; i++) if (h[i].score < second) second = h[i].score;
            *worst = second;
        } else if (score < *worst) *worst = score;
    }
}

static int kosmos2__generate_beam(kosmos2_context *ctx, const int32_t *ids, const uint8_t *mask, int n, const kosmos2_generate_params *p,
                                  int ngram, int32_t *out, int cap, int *n_out) {
    const kosmos2_config *c = &ctx->m->cfg;
    int K = p->num_beams, b, i, rc = 0, cur_len = n, max_len = n + p->max_new_tokens, nh = 0, done = 0, best;
    int64_t V = c->vocab_size, j;
    float worst = 1e9f, *logits = NULL, *cand = NULL, *beam_scores = NULL, *next_scores = NULL;
    int32_t *gen = NULL, *next_gen = NULL, *cand_tok = NULL, *cand_beam = NULL, *next_tok = NULL;
    kosmos2__kv *kv = NULL, *kv2 = NULL;
    kosmos2__hyp *hyps = NULL;
    int gcap = p->max_new_tokens + 1;
    logits = (float *)kosmos2__alloc((size_t)K * (size_t)V * sizeof(float));   /* [K, V] */
    cand = (float *)kosmos2__alloc((size_t)2 * K * sizeof(float));              /* [2K] top scores */
    cand_tok = (int32_t *)kosmos2__alloc((size_t)2 * K * sizeof(int32_t));
    cand_beam = (int32_t *)kosmos2__alloc((size_t)2 * K * sizeof(int32_t));
    beam_scores = (float *)kosmos2__alloc((size_t)K * sizeof(float));
    next_scores = (float *)kosmos2__alloc((size_t)K * sizeof(float));
    next_tok = (int32_t *)kosmos2__alloc((size_t)K * sizeof(int32_t));
    gen = (int32_t *)kosmos2__calloc((size_t)K * gcap, sizeof(int32_t));        /* [K, gcap] generated ids */
    next_gen = (int32_t *)kosmos2__calloc((size_t)K * gcap, sizeof(int32_t));
    kv = (kosmos2__kv *)kosmos2__calloc((size_t)K, sizeof *kv);
    kv2 = (kosmos2__kv *)kosmos2__calloc((size_t)K, sizeof *kv2);
    hyps = (kosmos2__hyp *)kosmos2__calloc((size_t)K + 1, sizeof *hyps);
    if (!logits || !cand || !cand_tok || !cand_beam || !beam_scores || !next_scores || !next_tok || !gen || !next_gen || !kv || !kv2 || !hyps) { rc = KOSMOS2_E_NOMEM; goto end; }
    /* prefill once; every beam starts as that sequence, only beam 0 "alive" (others -1e9) */
    rc = kosmos2__text_fwd(ctx, &kv[0], ids, n, mask, ctx->image_embeds, logits, 0);
    for (b = 1; rc == 0 && b < K; b++) {
        rc = kosmos2__kv_copy(ctx, &kv[b], &kv[0]);
        memcpy(logits + b * V, logits, (size_t)V * sizeof(float));
    }
    for (b = 0; b < K; b++) beam_scores[b] = b ? -1e9f : 0.0f;
    while (rc == 0 && cur_len < max_len) {
        int nc = 0, bi = 0, g = cur_len - n;
        float best_next = -INFINITY;
        /* scores = log_softmax(logits) with the n-gram ban, + beam score; keep the top 2K of [K*V] */
        for (b = 0; b < K; b++) {
            float *l = logits + b * V;
            kosmos2__log_softmax(l, V);
            kosmos2__ban_ngrams(l, kv[b].ids, kv[b].n, ngram);
            for (j = 0; j < V; j++) {
                float s = l[j] + beam_scores[b];
                int pos;
                if (nc == 2 * K && !(s > cand[nc - 1])) continue;
                pos = nc < 2 * K ? nc++ : nc - 1;
                while (pos > 0 && s > cand[pos - 1]) { cand[pos] = cand[pos - 1]; cand_tok[pos] = cand_tok[pos - 1]; cand_beam[pos] = cand_beam[pos - 1]; pos--; }
                cand[pos] = s; cand_tok[pos] = (int32_t)j; cand_beam[pos] = b;
            }
        }
        for (i = 0; i < nc && bi < K; i++) {
            if (cand_tok[i] == c->eos_id) {
                if (i >= K) continue;
                kosmos2__hyps_add(hyps, &nh, K, &worst, gen + cand_beam[i] * gcap, g, cand[i], g + 1, p->length_penalty);
            } else {
                next_scores[bi] = cand[i]; next_tok[bi] = cand_tok[i];
                memcpy(next_gen + bi * gcap, gen + cand_beam[i] * gcap, (size_t)g * sizeof(int32_t));
                next_gen[bi * gcap + g] = cand_tok[i];
                if ((rc = kosmos2__kv_copy(ctx, &kv2[bi], &kv[cand_beam[i]])) != 0) goto end;
                bi++;
            }
        }
        if (bi < K) { rc = kosmos2__fail(KOSMOS2_E_INVALID, "beam search: fewer than %d candidates", K); goto end; }
        for (i = 0; i < nc; i++) if (cand[i] > best_next) best_next = cand[i];
        if (nh >= K) done = p->early_stopping ? 1 : worst >= best_next / powf((float)(g + 1), p->length_penalty);
        { kosmos2__kv *t = kv; kv = kv2; kv2 = t; }
        { int32_t *t = gen; gen = next_gen; next_gen = t; }
        memcpy(beam_scores, next_scores, (size_t)K * sizeof(float));
        cur_len++;
        if (done || cur_len >= max_len) break;
        if (p->abort_callback && p->abort_callback(p->user_data)) { rc = kosmos2__fail(KOSMOS2_E_ABORTED, "beam search aborted by the callback"); goto end; }
        for (b = 0; b < K && rc == 0; b++) rc = kosmos2__text_fwd(ctx, &kv[b], &next_tok[b], 1, NULL, NULL, logits + b * V, 0);
    }
    if (rc) goto end;
    if (!done) /* the running beams join the finished ones */
        for (b = 0; b < K; b++) kosmos2__hyps_add(hyps, &nh, K, &worst, gen + b * gcap, cur_len - n, beam_scores[b], cur_len - n, p->length_penalty);
    best = 0; /* the highest score; among equals the one added last (Python's stable sort + pop) */
    for (i = 1; i < nh; i++) if (hyps[i].score >= hyps[best].score) best = i;
    if (nh) {
        for (i = 0; i < hyps[best].n; i++) { if (*n_out < cap) out[*n_out] = hyps[best].ids[i]; (*n_out)++; }
        if (n + hyps[best].n < max_len) { if (*n_out < cap) out[*n_out] = c->eos_id; (*n_out)++; }
    }
    if (p->on_token) for (i = 0; i < *n_out && i < cap; i++) if (p->on_token(out[i], p->user_data)) break;
end:
    for (i = 0; i < nh; i++) KOSMOS2_FREE(hyps[i].ids);
    for (b = 0; kv && kv2 && b < K; b++) { kosmos2__kv_free(ctx, &kv[b]); kosmos2__kv_free(ctx, &kv2[b]); }
    KOSMOS2_FREE(logits); KOSMOS2_FREE(cand); KOSMOS2_FREE(cand_tok); KOSMOS2_FREE(cand_beam); KOSMOS2_FREE(beam_scores);
    KOSMOS2_FREE(next_scores); KOSMOS2_FREE(next_tok); KOSMOS2_FREE(gen); KOSMOS2_FREE(next_gen); KOSMOS2_FREE(kv); KOSMOS2_FREE(kv2); KOSMOS2_FREE(hyps);
    return rc;
}

int kosmos2_generate_ids(kosmos2_context *ctx, const int32_t *prompt_ids, const uint8_t *image_mask, int n_prompt,
                         const kosmos2_generate_params *params, int32_t *out_ids, int cap, int *n_out) {
    kosmos2_generate_params p = params ? *params : kosmos2_generate_default_params();
    int rc, ngram, dummy = 0;
    if (!n_out) n_out = &dummy;
    *n_out = 0;
    if (!ctx) return kosmos2__fail(KOSMOS2_E_INVALID, "kosmos2_generate_ids: context is NULL");
    if (cap < 0 || (cap > 0 && !out_ids)) return kosmos2__fail(KOSMOS2_E_INVALID, "kosmos2_generate_ids: bad output buffer");
    if ((rc = kosmos2__check_prompt(ctx, prompt_ids, image_mask, n_prompt, &p)) != 0) return rc;
    ngram = p.no_repeat_ngram_size >= 0 ? p.no_repeat_ngram_size : ctx->m->cfg.no_repeat_ngram_size;
    kosmos2_kv_clear(ctx);
    if (p.max_new_tokens == 0) return 0;
    if (p.num_beams > 1) return kosmos2__generate_beam(ctx, prompt_ids, image_mask, n_prompt, &p, ngram, out_ids, cap, n_out);
    return kosmos2__generate_single(ctx, prompt_ids, image_mask, n_prompt, &p, ngram, out_ids, cap, n_out);
}

/* ---- the whole pipeline ---------------------------------------------------------------------- */
void kosmos2_result_free(kosmos2_result *r) {
    if (!r) return;
    KOSMOS2_FREE(r->prompt_ids);
    KOSMOS2_FREE(r->ids);
    KOSMOS2_FREE(r->prompt);
    KOSMOS2_FREE(r->text);
    kosmos2_grounding_free(&r->grounding);
    memset(r, 0, sizeof *r);
}

int kosmos2_generate(kosmos2_context *ctx, const kosmos2_image *image, const char *prompt, const kosmos2_phrase_boxes *boxes,
                     int n_box_groups, const kosmos2_generate_params *params, kosmos2_result *out) {
    kosmos2_generate_params p = params ? *params : kosmos2_generate_default_params();
    const kosmos2_model *m;
    const kosmos2_config *c;
    float *pixels = NULL;
    uint8_t *mask = NULL;
    int32_t *all = NULL;
    int rc, n, cap, n_img, tlen;
    double t0;
    if (!out) return kosmos2__fail(KOSMOS2_E_INVALID, "kosmos2_generate: out is NULL");
    memset(out, 0, sizeof *out);
    if (!ctx) return kosmos2__fail(KOSMOS2_E_INVALID, "kosmos2_generate: context is NULL");
    m = ctx->m; c = &m->cfg;
    if (!prompt) prompt = "<grounding>An image of";
    if (p.max_new_tokens < 0) return kosmos2__fail(KOSMOS2_E_INVALID, "max_new_tokens must be >= 0"); /* before sizing buffers by it */
    /* boxes -> markup in the prompt */
    if ((rc = kosmos2_prompt_attach_boxes(prompt, boxes, boxes ? n_box_groups : 0, &out->prompt)) != 0) goto end;
    /* prompt -> ids (+ image slots) */
    n_img = image ? c->latent_query_num : 0;
    if (strlen(out->prompt) > (size_t)INT_MAX / 8) { rc = kosmos2__fail(KOSMOS2_E_LIMIT, "prompt of %zu bytes is too long", strlen(out->prompt)); goto end; }
    cap = (int)strlen(out->prompt) + n_img + 16;
    if (cap > ctx->max_ctx + 1) cap = ctx->max_ctx + 1; /* a longer prompt is refused: no buffer beyond the context */
    for (;;) { /* ids [cap] and image mask [cap]; retried once with the exact size if too small */
        out->prompt_ids = (int32_t *)kosmos2__alloc((size_t)cap * sizeof(int32_t));
        mask = (uint8_t *)kosmos2__alloc((size_t)cap);
        if (!out->prompt_ids || !mask) { rc = KOSMOS2_E_NOMEM; goto end; }
        n = kosmos2_prompt_ids(m->tok, out->prompt, n_img, out->prompt_ids, mask, cap);
        if (n < 0) { rc = n; goto end; }
        if (n <= cap) break;
        if (n > ctx->max_ctx) { rc = kosmos2__fail(KOSMOS2_E_LIMIT, "the prompt (%d tokens) exceeds the context limit of %d positions", n, ctx->max_ctx); goto end; }
        KOSMOS2_FREE(out->prompt_ids); KOSMOS2_FREE(mask); out->prompt_ids = NULL; mask = NULL;
        cap = n;
    }
    out->n_prompt = n;
    if ((int64_t)n + p.max_new_tokens > ctx->max_ctx) {
        rc = kosmos2__fail(KOSMOS2_E_LIMIT, "the prompt (%d tokens) + max_new_tokens (%d) exceeds the context limit of %d positions", n, p.max_new_tokens, ctx->max_ctx);
        goto end;
    }
    /* image -> pixels -> image embeddings */
    if (image) {
        out->image_width = image->width; out->image_height = image->height;
        pixels = (float *)kosmos2__alloc((size_t)3 * (size_t)m->pp.width * (size_t)m->pp.height * sizeof(float));
        if (!pixels) { rc = KOSMOS2_E_NOMEM; goto end; }
        t0 = kosmos2__now_ms();
        if ((rc = kosmos2_image_preprocess(image, &m->pp, pixels)) != 0) goto end;
        out->t_preprocess_ms = kosmos2__now_ms() - t0;
        if ((rc = kosmos2_encode_image(ctx, pixels, NULL, NULL)) != 0) goto end;
        out->t_vision_ms = ctx->t_vision_ms;
        out->t_resampler_ms = ctx->t_resampler_ms;
    }
    /* generate */
    out->ids = (int32_t *)kosmos2__alloc((size_t)(p.max_new_tokens + 1) * sizeof(int32_t));
    if (!out->ids) { rc = KOSMOS2_E_NOMEM; goto end; }
    rc = kosmos2_generate_ids(ctx, out->prompt_ids, image ? mask : NULL, n, &p, out->ids, p.max_new_tokens + 1, &out->n_ids);
    if (out->n_ids > p.max_new_tokens + 1) out->n_ids = p.max_new_tokens + 1;
    out->t_prefill_ms = ctx->t_prefill_ms;
    out->t_decode_ms = ctx->t_decode_ms;
    out->n_decode = out->n_ids;
    if (rc && rc != KOSMOS2_E_ABORTED) goto end;
    /* decode prompt + generation, then the grounding post-processing */
    {
        int r2;
        all = (int32_t *)kosmos2__alloc((size_t)(n + out->n_ids) * sizeof(int32_t));
        if (!all) { rc = KOSMOS2_E_NOMEM; goto end; }
        memcpy(all, out->prompt_ids, (size_t)n * sizeof(int32_t));
        memcpy(all + n, out->ids, (size_t)out->n_ids * sizeof(int32_t));
        tlen = kosmos2_detokenize(m->tok, all, n + out->n_ids, 1, NULL, 0);
        if (tlen < 0) { rc = tlen; goto end; }
        out->text = (char *)kosmos2__alloc((size_t)tlen + 1);
        if (!out->text) { rc = KOSMOS2_E_NOMEM; goto end; }
        kosmos2_detokenize(m->tok, all, n + out->n_ids, 1, out->text, (size_t)tlen + 1);
        if ((r2 = kosmos2_grounding_parse(out->text, &out->grounding)) != 0) { rc = r2; goto end; }
    }
end:
    KOSMOS2_FREE(pixels);
    KOSMOS2_FREE(mask);
    KOSMOS2_FREE(all);
    return rc;
}


/* ============================================================================================
 *  [13] GROUNDING: boxes -> markup, generated markup -> caption + entities
 * ============================================================================================
 *  Reference: transformers models/kosmos2/processing_kosmos2.py (post_process_generation,
 *  clean_text_and_extract_entities_with_bboxes, extract_entities_with_patch_indices,
 *  adjust_entity_positions, _cleanup_spaces, patch_index_to_coordinate, _insert_patch_index_tokens,
 *  coordinate_to_patch_index). Python works on code points, so the parser decodes the caption into
 *  an array of code points first and mirrors each Python step on it; outputs are encoded back.
 *
 *  The regexes, and how they match (Python `re`, no flags):
 *   R1  re.sub("<.*?>", "", s)   at each '<', the shortest run up to the next '>' is removed, unless
 *       a '\n' comes first ('.' does not match newline); then that '<' is kept.
 *   R2  entities: (?:(<phrase>([^<]+)</phrase>))?<object>((?:PP</delimiter_of_multi_objects/>)*PP)</object>
 *       with PP = <patch_index_\d+><patch_index_\d+>. Every quantifier here is followed by a character
 *       it cannot consume ('<' after [^<]+, '>' after \d+), so backtracking never finds another
 *       match: each attempt is one left-to-right pass. An attempt tries the <phrase> variant first,
 *       then the bare <object> one; finditer resumes after a match, else one character further.
 *   R3  prompts: <phrase>.+?</phrase>   the first "</phrase>" at least one character after
 *       "<phrase>", with no '\n' in between.
 *  All three run in linear time here (Python's R1 is quadratic on "<<<<..."). */

/* ---- Unicode facts as Python 3.11 (Unicode 14.0) has them ---------------------------------- */

/* The code point of digit zero of every run of ten decimal digits (category Nd), which Python's
 * regex \d matches and int() converts. */
static const uint32_t kosmos2__gr_digit_zeros[] = {
    0x30,    0x660,   0x6f0,   0x7c0,   0x966,   0x9e6,   0xa66,   0xae6,   0xb66,   0xbe6,   0xc66,
    0xce6,   0xd66,   0xde6,   0xe50,   0xed0,   0xf20,   0x1040,  0x1090,  0x17e0,  0x1810,  0x1946,
    0x19d0,  0x1a80,  0x1a90,  0x1b50,  0x1bb0,  0x1c40,  0x1c50,  0xa620,  0xa8d0,  0xa900,  0xa9d0,
    0xa9f0,  0xaa50,  0xabf0,  0xff10,  0x104a0, 0x10d30, 0x11066, 0x110f0, 0x11136, 0x111d0, 0x112f0,
    0x11450, 0x114d0, 0x11650, 0x116c0, 0x11730, 0x118e0, 0x11950, 0x11c50, 0x11d50, 0x11da0, 0x16a60,
    0x16ac0, 0x16b50, 0x1d7ce, 0x1d7d8, 0x1d7e2, 0x1d7ec, 0x1d7f6, 0x1e140, 0x1e2f0, 0x1e950, 0x1fbf0};

/* Value 0..9 of a decimal digit code point, -1 if c is not one. */
static int kosmos2__gr_digit(uint32_t c) {
    size_t i;
    if (c >= '0' && c <= '9') return (int)(c - '0');
    for (i = 1; i < sizeof kosmos2__gr_digit_zeros / sizeof kosmos2__gr_digit_zeros[0]; i++) {
        uint32_t z = kosmos2__gr_digit_zeros[i];
        if (c >= z && c < z + 10) return (int)(c - z);
    }
    return -1;
}

/* Python's str.isspace(): what str.strip() with no argument removes. */
static int kosmos2__gr_is_space(uint32_t c) {
    if (c < 0x80) return c == ' ' || (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x1f);
    return c == 0x85 || c == 0xa0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 ||
           c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
}

/* ---- UTF-8 <-> code points (invalid bytes as Python's 'surrogateescape': U+DC80..U+DCFF) ---- */

/* Decode s[0..n) into out[] (room for n code points); returns the number of code points. A byte
 * that does not start a valid (shortest-form, non-surrogate, <= U+10FFFF) sequence becomes
 * U+DC00 + byte, and decoding resumes at the next byte, as Python's decoder does. */
static int kosmos2__gr_decode(const unsigned char *s, int n, uint32_t *out) {
    int i = 0, k = 0;
    while (i < n) {
        unsigned c = s[i], lo = 0x80, hi = 0xBF;
        int len = 0, j, ok = 1;
        uint32_t cp = 0;
        if (c < 0x80) {
            out[k++] = c;
            i++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF) {
            len = 2;
            cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            cp = c & 0x0F;
            if (c == 0xE0) lo = 0xA0; /* no overlong forms */
            if (c == 0xED) hi = 0x9F; /* no surrogates */
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            cp = c & 0x07;
            if (c == 0xF0) lo = 0x90;
            if (c == 0xF4) hi = 0x8F; /* <= U+10FFFF */
        }
        if (len == 0 || len > n - i) ok = 0;
        for (j = 1; ok && j < len; j++) {
            unsigned b = s[i + j];
            if (b < (j == 1 ? lo : 0x80u) || b > (j == 1 ? hi : 0xBFu)) ok = 0;
            cp = (cp << 6) | (b & 0x3F);
        }
        if (ok) {
            out[k++] = cp;
            i += len;
        } else {
            out[k++] = 0xDC00 + c;
            i++;
        }
    }
    return k;
}

/* Bytes that code point c takes when encoded back (an escaped byte takes one). */
static int kosmos2__gr_cp_bytes(uint32_t c) {
    if (c < 0x80 || (c >= 0xDC80 && c <= 0xDCFF)) return 1;
    if (c < 0x800) return 2;
    if (c < 0x10000) return 3;
    return 4;
}

/* Encode t[0..n) as UTF-8 (escapes back to their byte) into a new NUL-terminated string. */
static char *kosmos2__gr_encode(const uint32_t *t, int n) {
    size_t bytes = 1;
    int i;
    char *s, *p;
    for (i = 0; i < n; i++) bytes += (size_t)kosmos2__gr_cp_bytes(t[i]);
    s = (char *)kosmos2__alloc(bytes);
    if (!s) return NULL;
    p = s;
    for (i = 0; i < n; i++) {
        uint32_t c = t[i];
        if (c < 0x80 || (c >= 0xDC80 && c <= 0xDCFF)) {
            *p++ = (char)(c < 0x80 ? c : c - 0xDC00);
        } else if (c < 0x800) {
            *p++ = (char)(0xC0 | (c >> 6));
            *p++ = (char)(0x80 | (c & 0x3F));
        } else if (c < 0x10000) {
            *p++ = (char)(0xE0 | (c >> 12));
            *p++ = (char)(0x80 | ((c >> 6) & 0x3F));
            *p++ = (char)(0x80 | (c & 0x3F));
        } else {
            *p++ = (char)(0xF0 | (c >> 18));
            *p++ = (char)(0x80 | ((c >> 12) & 0x3F));
            *p++ = (char)(0x80 | ((c >> 6) & 0x3F));
            *p++ = (char)(0x80 | (c & 0x3F));
        }
    }
    *p = 0;
    return s;
}

/* ---- growable strings and arrays -------------------------------------------------------------- */

typedef struct kosmos2__gr_str {
    char *p; /* [cap] bytes, NUL-terminated once anything was appended */
    size_t n, cap;
    int oom; /* an append failed; the string is incomplete */
} kosmos2__gr_str;

static void kosmos2__gr_append(kosmos2__gr_str *s, const char *data, size_t n) {
    if (s->oom) return;
    if (s->n + n + 1 > s->cap) {
        size_t cap = s->cap ? s->cap : 64;
        char *p;
        while (cap < s->n + n + 1) {
            if (cap > SIZE_MAX / 2) {
                s->oom = 1;
                kosmos2__fail(KOSMOS2_E_NOMEM, "string too long");
                return;
            }
            cap *= 2;
        }
        p = (char *)KOSMOS2_REALLOC(s->p, cap);
        if (!p) {
            s->oom = 1;
            kosmos2__fail(KOSMOS2_E_NOMEM, "out of memory growing a string to %zu bytes", cap);
            return;
        }
        s->p = p;
        s->cap = cap;
    }
    memcpy(s->p + s->n, data, n);
    s->n += n;
    s->p[s->n] = 0;
}

static void kosmos2__gr_append_str(kosmos2__gr_str *s, const char *z) { kosmos2__gr_append(s, z, strlen(z)); }

/* Grow an array of `elem`-byte items to hold at least `need` items. Returns the (possibly moved)
 * array, or NULL (NOMEM recorded) with the old array still valid and *cap unchanged. */
static void *kosmos2__gr_grow(void *arr, int *cap, int need, size_t elem) {
    int c = *cap ? *cap : 16;
    void *p;
    if (need <= *cap) return arr;
    while (c < need) {
        if (c > INT_MAX / 2) {
            kosmos2__fail(KOSMOS2_E_NOMEM, "array too large");
            return NULL;
        }
        c *= 2;
    }
    if ((size_t)c > SIZE_MAX / elem) {
        kosmos2__fail(KOSMOS2_E_NOMEM, "array too large");
        return NULL;
    }
    p = KOSMOS2_REALLOC(arr, (size_t)c * elem);
    if (!p) {
        kosmos2__fail(KOSMOS2_E_NOMEM, "out of memory growing an array to %d items", c);
        return NULL;
    }
    *cap = c;
    return p;
}

/* ---- caption extraction ---------------------------------------------------------------------- */

const char *kosmos2_grounding_raw_caption(const char *generated_text) {
    /* text.split("</image>")[-1]: "</image>" cannot overlap itself, so: after the last occurrence */
    const char *p, *last;
    if (!generated_text) return NULL;
    last = generated_text;
    for (p = strstr(generated_text, "</image>"); p; p = strstr(p + 8, "</image>")) last = p + 8;
    return last;
}

/* ---- the parser's working state ------------------------------------------------------------- */

/* A patch index as Python holds it after int(): an exact, arbitrarily large integer. */
#define KOSMOS2__GR_MAX_DIGITS 4300 /* Python 3.11's int() refuses longer digit strings */
typedef struct kosmos2__gr_index {
    char dec[KOSMOS2__GR_MAX_DIGITS + 2];  /* decimal, ASCII, no leading zeros ("0" for zero) */
    char quot[KOSMOS2__GR_MAX_DIGITS + 2]; /* decimal of index // 32 (the row) */
    int mod;                               /* index % 32 (the column) */
    double row;                            /* float(index // 32), correctly rounded */
} kosmos2__gr_index;

/* One match of regex R2 (before expansion into entities). Positions are code points in t[]. */
typedef struct kosmos2__gr_match {
    int phrase_start, phrase_end; /* group 2, or -1 when there is no <phrase> part */
    int match_start;              /* start of the whole match */
    int first_pair, n_pairs;      /* into pairs[] */
} kosmos2__gr_match;

/* The digit runs of one (ul, lr) pair: code point offsets and lengths in t[]. */
typedef struct kosmos2__gr_pair {
    int a_start, a_len, b_start, b_len;
} kosmos2__gr_pair;

typedef struct kosmos2__gr_parser {
    const uint32_t *t;   /* [n] the raw caption (after the last </image>) as code points */
    int n;
    uint32_t *processed; /* [n_processed] t with every R1 match removed */
    int n_processed;
    int *reg_end;        /* [n_reg] end (exclusive) of each removed tag, increasing */
    int *reg_cum;        /* [n_reg] code points removed by tags 0..r */
    int n_reg, cap_reg_end, cap_reg_cum;
    kosmos2__gr_match *matches; /* [n_matches] */
    int n_matches, cap_matches;
    kosmos2__gr_pair *pairs;    /* [n_pairs] */
    int n_pairs, cap_pairs;
} kosmos2__gr_parser;

/* ---- R1: tag removal -------------------------------------------------------------------------- */

/* Run re.sub("<.*?>", "", t) once over the whole caption, recording where each removed tag ends. */
static int kosmos2__gr_strip_tags(kosmos2__gr_parser *ps) {
    const uint32_t *t = ps->t;
    int i = 0, fail_until = 0, removed = 0;
    while (i < ps->n) {
        if (t[i] == '<' && i >= fail_until) {
            int j = i + 1;
            while (j < ps->n && t[j] != '>' && t[j] != '\n') j++;
            if (j < ps->n && t[j] == '>') {
                int *e = (int *)kosmos2__gr_grow(ps->reg_end, &ps->cap_reg_end, ps->n_reg + 1, sizeof(int)), *c;
                if (!e) return KOSMOS2_E_NOMEM;
                ps->reg_end = e;
                c = (int *)kosmos2__gr_grow(ps->reg_cum, &ps->cap_reg_cum, ps->n_reg + 1, sizeof(int));
                if (!c) return KOSMOS2_E_NOMEM;
                ps->reg_cum = c;
                removed += j + 1 - i;
                ps->reg_end[ps->n_reg] = j + 1;
                ps->reg_cum[ps->n_reg] = removed;
                ps->n_reg++;
                i = j + 1;
                continue;
            }
            /* no '>' before the newline/end at j: every '<' before j fails the same way */
            fail_until = j;
        }
        ps->processed[ps->n_processed++] = t[i++];
    }
    return KOSMOS2_OK;
}

/* len(re.sub("<.*?>", "", t[:c])) (adjust_entity_positions). Scanning the prefix makes the same
 * decisions as the full scan, except that a tag cut by the end of the prefix is kept whole: so it
 * is c minus the length of the full scan's tags that end at or before c. */
static int kosmos2__gr_prefix_len(const kosmos2__gr_parser *ps, int c) {
    int lo = 0, hi = ps->n_reg; /* find the number of tags with reg_end <= c */
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (ps->reg_end[mid] <= c) lo = mid + 1;
        else hi = mid;
    }
    return lo ? c - ps->reg_cum[lo - 1] : c;
}

/* ---- R2: entity matching --------------------------------------------------------------------- */

/* Length of the ASCII literal `lit` if t[i..] starts with it, else 0. */
static int kosmos2__gr_lit(const kosmos2__gr_parser *ps, int i, const char *lit) {
    int k;
    for (k = 0; lit[k]; k++)
        if (i + k >= ps->n || ps->t[i + k] != (uint32_t)(unsigned char)lit[k]) return 0;
    return k;
}

/* "<patch_index_" \d+ ">" at t[i]: returns the position after '>' and the digit run, or -1. */
static int kosmos2__gr_patch_tag(const kosmos2__gr_parser *ps, int i, int *dstart, int *dlen) {
    int k = kosmos2__gr_lit(ps, i, "<patch_index_"), j;
    if (!k) return -1;
    j = i + k;
    while (j < ps->n && kosmos2__gr_digit(ps->t[j]) >= 0) j++;
    if (j == i + k || j >= ps->n || ps->t[j] != '>') return -1;
    *dstart = i + k;
    *dlen = j - (i + k);
    return j + 1;
}

/* The object content at t[i] (just after "<object>"): (?:PP DELIM)* PP "</object>". Appends the
 * pairs and returns the position after "</object>"; -1 for no match (the pairs appended are then
 * stale: the caller drops them), -2 for NOMEM. */
static int kosmos2__gr_object_body(kosmos2__gr_parser *ps, int i) {
    for (;;) {
        kosmos2__gr_pair pr, *grown;
        int k;
        i = kosmos2__gr_patch_tag(ps, i, &pr.a_start, &pr.a_len);
        if (i < 0) return -1;
        i = kosmos2__gr_patch_tag(ps, i, &pr.b_start, &pr.b_len);
        if (i < 0) return -1;
        grown = (kosmos2__gr_pair *)kosmos2__gr_grow(ps->pairs, &ps->cap_pairs, ps->n_pairs + 1, sizeof pr);
        if (!grown) return -2;
        ps->pairs = grown;
        ps->pairs[ps->n_pairs++] = pr;
        if ((k = kosmos2__gr_lit(ps, i, "</object>")) != 0) return i + k;
        if ((k = kosmos2__gr_lit(ps, i, "</delimiter_of_multi_objects/>")) == 0) return -1;
        i += k;
    }
}

/* One regex attempt at t[i]: returns the end of the match, -1 for no match, -2 for NOMEM. */
static int kosmos2__gr_match_at(kosmos2__gr_parser *ps, int i) {
    int first = ps->n_pairs, k, end = -1;
    kosmos2__gr_match m, *grown;
    m.phrase_start = m.phrase_end = -1;
    m.match_start = i;
    if ((k = kosmos2__gr_lit(ps, i, "<phrase>")) != 0) { /* <phrase>([^<]+)</phrase><object>... */
        int q = i + k, r = q;
        while (r < ps->n && ps->t[r] != '<') r++;
        if (r > q && kosmos2__gr_lit(ps, r, "</phrase>") && kosmos2__gr_lit(ps, r + 9, "<object>")) {
            end = kosmos2__gr_object_body(ps, r + 9 + 8);
            if (end == -2) return -2;
            if (end >= 0) {
                m.phrase_start = q;
                m.phrase_end = r;
            } else {
                ps->n_pairs = first;
            }
        }
    }
    if (end < 0 && (k = kosmos2__gr_lit(ps, i, "<object>")) != 0) { /* bare <object>... */
        end = kosmos2__gr_object_body(ps, i + k);
        if (end == -2) return -2;
        if (end < 0) ps->n_pairs = first;
    }
    if (end < 0) return -1;
    m.first_pair = first;
    m.n_pairs = ps->n_pairs - first;
    grown = (kosmos2__gr_match *)kosmos2__gr_grow(ps->matches, &ps->cap_matches, ps->n_matches + 1, sizeof m);
    if (!grown) return -2;
    ps->matches = grown;
    ps->matches[ps->n_matches++] = m;
    return end;
}

/* re.finditer over the whole caption. */
static int kosmos2__gr_find_entities(kosmos2__gr_parser *ps) {
    int i = 0;
    while (i < ps->n) {
        int end = ps->t[i] == '<' ? kosmos2__gr_match_at(ps, i) : -1;
        if (end == -2) return KOSMOS2_E_NOMEM;
        i = end >= 0 ? end : i + 1;
    }
    return KOSMOS2_OK;
}

/* ---- patch indices -> boxes ------------------------------------------------------------------ */

/* int() of a digit run, then what patch_index_to_coordinate derives from it: index % 32, index // 32
 * (exact, by long division in decimal) and float(index // 32). Errors where Python raises. */
static int kosmos2__gr_index_parse(const uint32_t *d, int len, kosmos2__gr_index *ix) {
    int i, nd = 0, nq = 0, rem = 0;
    char *end;
    if (len > KOSMOS2__GR_MAX_DIGITS)
        return kosmos2__fail(KOSMOS2_E_INVALID, "patch index of %d digits (Python's int() refuses more than %d: "
                             "ValueError)", len, KOSMOS2__GR_MAX_DIGITS);
    for (i = 0; i < len; i++) {
        int v = kosmos2__gr_digit(d[i]), cur = rem * 10 + v;
        if (nd || v) ix->dec[nd++] = (char)('0' + v);
        if (nq || cur / 32) ix->quot[nq++] = (char)('0' + cur / 32);
        rem = cur % 32;
    }
    if (!nd) ix->dec[nd++] = '0';
    if (!nq) ix->quot[nq++] = '0';
    ix->dec[nd] = ix->quot[nq] = 0;
    ix->mod = rem;
    /* Python converts int -> float with correct rounding; so does strtod for a decimal integer */
    errno = 0;
    ix->row = strtod(ix->quot, &end);
    if (errno == ERANGE || !(ix->row <= DBL_MAX))
        return kosmos2__fail(KOSMOS2_E_INVALID,
                             "patch index of %d digits is too large for a double (Python: OverflowError)", nd);
    return KOSMOS2_OK;
}

/* patch_index_to_coordinate(ul, lr, 32) on exact indices. mod*cell and row*cell are exact (cell =
 * 1/32), so the result does not depend on whether the compiler fuses the multiply-adds. */
static kosmos2_box kosmos2__gr_indices_box(const kosmos2__gr_index *ul, const kosmos2__gr_index *lr) {
    const double cell = 1.0 / 32;
    kosmos2_box b;
    if (strcmp(ul->dec, lr->dec) == 0 || ul->mod == lr->mod || strcmp(ul->quot, lr->quot) == 0) {
        b.x1 = ul->mod * cell; /* same cell, column or row: cell edges */
        b.y1 = ul->row * cell;
        b.x2 = lr->mod * cell + cell;
        b.y2 = lr->row * cell + cell;
    } else {
        b.x1 = ul->mod * cell + cell / 2; /* otherwise: cell centres */
        b.y1 = ul->row * cell + cell / 2;
        b.x2 = lr->mod * cell + cell / 2;
        b.y2 = lr->row * cell + cell / 2;
    }
    return b;
}

kosmos2_box kosmos2_patch_indices_to_box(int ul, int lr) {
    const double cell = 1.0 / 32;
    long long u = ul, l = lr;
    long long ux = ((u % 32) + 32) % 32, lx = ((l % 32) + 32) % 32; /* Python's % and // (floor) */
    long long uy = (u - ux) / 32, ly = (l - lx) / 32;
    kosmos2_box b;
    if (u == l || ux == lx || uy == ly) {
        b.x1 = (double)ux * cell;
        b.y1 = (double)uy * cell;
        b.x2 = (double)lx * cell + cell;
        b.y2 = (double)ly * cell + cell;
    } else {
        b.x1 = (double)ux * cell + cell / 2;
        b.y1 = (double)uy * cell + cell / 2;
        b.x2 = (double)lx * cell + cell / 2;
        b.y2 = (double)ly * cell + cell / 2;
    }
    return b;
}

/* ---- assembling the result ------------------------------------------------------------------- */

/* Leading / trailing whitespace of t[0..n); an all-space string counts fully for both, as
 * len(s) - len(s.lstrip()) and len(s) - len(s.rstrip()) do. */
static int kosmos2__gr_lead(const uint32_t *t, int n) {
    int k = 0;
    while (k < n && kosmos2__gr_is_space(t[k])) k++;
    return k;
}
static int kosmos2__gr_trail(const uint32_t *t, int n) {
    int k = 0;
    while (k < n && kosmos2__gr_is_space(t[n - 1 - k])) k++;
    return k;
}

static int kosmos2__gr_clamp(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

/* Fill entity e from match m, boxes pairs[pair0 .. pair0+npair): name (the stripped phrase, or
 * fake_name), span (adjust_entity_positions + _cleanup_spaces), byte span, boxes.
 * cap_off[cap_len + 1] are the byte offsets of the caption's code points; ix[2] is scratch. */
static int kosmos2__gr_entity(const kosmos2__gr_parser *ps, const kosmos2__gr_match *m, int pair0, int npair,
                              const char *fake_name, int lead_spaces, const int *cap_off, int cap_len,
                              kosmos2__gr_index *ix, kosmos2_entity *e) {
    int has_phrase = m->phrase_start >= 0;
    int start = kosmos2__gr_prefix_len(ps, has_phrase ? m->phrase_start : m->match_start);
    int end = kosmos2__gr_prefix_len(ps, has_phrase ? m->phrase_end : m->match_start);
    int k, name_lead = 0, name_trail = 0;
    if (has_phrase) {
        const uint32_t *nm = ps->t + m->phrase_start;
        int nn = m->phrase_end - m->phrase_start;
        name_lead = kosmos2__gr_lead(nm, nn);
        name_trail = kosmos2__gr_trail(nm, nn);
        e->phrase = kosmos2__gr_encode(nm + name_lead, name_lead == nn ? 0 : nn - name_lead - name_trail);
    } else {
        e->phrase = kosmos2__strdup(fake_name);
    }
    if (!e->phrase) return KOSMOS2_E_NOMEM;
    e->start = start - lead_spaces + name_lead;
    e->end = end - lead_spaces - name_trail;
    e->byte_start = cap_off[kosmos2__gr_clamp(e->start, 0, cap_len)];
    e->byte_end = cap_off[kosmos2__gr_clamp(e->end, 0, cap_len)];
    if (e->byte_end < e->byte_start) e->byte_end = e->byte_start;
    e->boxes = (kosmos2_box *)kosmos2__calloc((size_t)npair, sizeof(kosmos2_box));
    if (!e->boxes) return KOSMOS2_E_NOMEM;
    e->n_boxes = npair;
    for (k = 0; k < npair; k++) {
        const kosmos2__gr_pair *p = &ps->pairs[pair0 + k];
        int rc = kosmos2__gr_index_parse(ps->t + p->a_start, p->a_len, &ix[0]);
        if (!rc) rc = kosmos2__gr_index_parse(ps->t + p->b_start, p->b_len, &ix[1]);
        if (rc) return rc;
        e->boxes[k] = kosmos2__gr_indices_box(&ix[0], &ix[1]);
    }
    return KOSMOS2_OK;
}

/* Expand the matches into entities (one per box for phrase-less objects) and strip spaces. */
static int kosmos2__gr_build(const kosmos2__gr_parser *ps, kosmos2_grounding *out) {
    int lead = kosmos2__gr_lead(ps->processed, ps->n_processed);
    int trail = lead == ps->n_processed ? 0 : kosmos2__gr_trail(ps->processed, ps->n_processed);
    int cap_len = ps->n_processed - lead - trail, total = 0, i, k, rc = KOSMOS2_OK;
    int *cap_off = NULL;          /* [cap_len + 1] byte offset of each caption code point */
    kosmos2__gr_index *ix = NULL; /* [2] scratch for (ul, lr) */
    kosmos2__gr_str name;         /* scratch for fake names */
    memset(&name, 0, sizeof name);
    /* Python runs int() on every index before computing any box: report its ValueError first */
    for (i = 0; i < ps->n_pairs; i++)
        if (ps->pairs[i].a_len > KOSMOS2__GR_MAX_DIGITS || ps->pairs[i].b_len > KOSMOS2__GR_MAX_DIGITS)
            return kosmos2__fail(KOSMOS2_E_INVALID, "patch index of more than %d digits (Python's int() "
                                 "raises ValueError)", KOSMOS2__GR_MAX_DIGITS);
    out->caption = kosmos2__gr_encode(ps->processed + lead, cap_len);
    cap_off = (int *)kosmos2__alloc(((size_t)cap_len + 1) * sizeof(int));
    ix = (kosmos2__gr_index *)kosmos2__alloc(2 * sizeof(kosmos2__gr_index));
    for (i = 0; i < ps->n_matches; i++) total += ps->matches[i].phrase_start >= 0 ? 1 : ps->matches[i].n_pairs;
    out->entities = (kosmos2_entity *)kosmos2__calloc((size_t)total, sizeof(kosmos2_entity));
    if (!out->caption || !cap_off || !ix || !out->entities) {
        rc = KOSMOS2_E_NOMEM;
        goto done;
    }
    cap_off[0] = 0;
    for (i = 0; i < cap_len; i++) cap_off[i + 1] = cap_off[i] + kosmos2__gr_cp_bytes(ps->processed[lead + i]);
    for (i = 0; i < ps->n_matches && !rc; i++) {
        const kosmos2__gr_match *m = &ps->matches[i];
        if (m->phrase_start >= 0) {
            rc = kosmos2__gr_entity(ps, m, m->first_pair, m->n_pairs, NULL, lead, cap_off, cap_len, ix,
                                    &out->entities[out->n_entities++]);
            continue;
        }
        for (k = 0; k < m->n_pairs && !rc; k++) { /* fake name "<patch_index_{a}><patch_index_{b}>" */
            const kosmos2__gr_pair *p = &ps->pairs[m->first_pair + k];
            name.n = 0;
            rc = kosmos2__gr_index_parse(ps->t + p->a_start, p->a_len, &ix[0]);
            if (!rc) rc = kosmos2__gr_index_parse(ps->t + p->b_start, p->b_len, &ix[1]);
            if (rc) break;
            kosmos2__gr_append_str(&name, "<patch_index_");
            kosmos2__gr_append_str(&name, ix[0].dec);
            kosmos2__gr_append_str(&name, "><patch_index_");
            kosmos2__gr_append_str(&name, ix[1].dec);
            kosmos2__gr_append_str(&name, ">");
            if (name.oom) {
                rc = KOSMOS2_E_NOMEM;
                break;
            }
            rc = kosmos2__gr_entity(ps, m, m->first_pair + k, 1, name.p, lead, cap_off, cap_len, ix,
                                    &out->entities[out->n_entities++]);
        }
    }
done:
    KOSMOS2_FREE(name.p);
    KOSMOS2_FREE(cap_off);
    KOSMOS2_FREE(ix);
    return rc;
}

#define KOSMOS2__GR_MAX_INPUT (256u << 20) /* bytes of caption accepted by the parser */

int kosmos2_grounding_parse(const char *generated_text, kosmos2_grounding *out) {
    kosmos2__gr_parser ps;
    uint32_t *t = NULL; /* [nbytes + 1] the caption's code points */
    const char *cap;
    size_t nbytes;
    int rc;
    if (!out) return kosmos2__fail(KOSMOS2_E_INVALID, "kosmos2_grounding_parse: out is NULL");
    memset(out, 0, sizeof *out);
    if (!generated_text) return kosmos2__fail(KOSMOS2_E_INVALID, "kosmos2_grounding_parse: text is NULL");
    cap = kosmos2_grounding_raw_caption(generated_text);
    nbytes = strlen(cap);
    if (nbytes > KOSMOS2__GR_MAX_INPUT)
        return kosmos2__fail(KOSMOS2_E_LIMIT, "kosmos2_grounding_parse: caption of %zu bytes (limit %u)", nbytes,
                             KOSMOS2__GR_MAX_INPUT);
    memset(&ps, 0, sizeof ps);
    t = (uint32_t *)kosmos2__alloc((nbytes + 1) * sizeof(uint32_t));
    ps.processed = (uint32_t *)kosmos2__alloc((nbytes + 1) * sizeof(uint32_t));
    if (!t || !ps.processed) {
        rc = KOSMOS2_E_NOMEM;
        goto done;
    }
    ps.n = kosmos2__gr_decode((const unsigned char *)cap, (int)nbytes, t);
    ps.t = t;
    rc = kosmos2__gr_strip_tags(&ps);
    if (!rc) rc = kosmos2__gr_find_entities(&ps);
    if (!rc) rc = kosmos2__gr_build(&ps, out);
done:
    if (rc) {
        kosmos2__wrap(rc, "kosmos2_grounding_parse: ");
        kosmos2_grounding_free(out);
    }
    KOSMOS2_FREE(t);
    KOSMOS2_FREE(ps.processed);
    KOSMOS2_FREE(ps.reg_end);
    KOSMOS2_FREE(ps.reg_cum);
    KOSMOS2_FREE(ps.matches);
    KOSMOS2_FREE(ps.pairs);
    return rc;
}

void kosmos2_grounding_free(kosmos2_grounding *g) {
    int i;
    if (!g) return;
    for (i = 0; g->entities && i < g->n_entities; i++) {
        KOSMOS2_FREE(g->entities[i].phrase);
        KOSMOS2_FREE(g->entities[i].boxes);
    }
    KOSMOS2_FREE(g->entities);
    KOSMOS2_FREE(g->caption);
    memset(g, 0, sizeof *g);
}

/* ---- boxes <-> pixels ------------------------------------------------------------------------ */

void kosmos2_box_to_pixels(const kosmos2_box *box, int image_width, int image_height, double out_px[4]) {
    if (!box || !out_px) return;
    out_px[0] = box->x1 * image_width;
    out_px[1] = box->y1 * image_height;
    out_px[2] = box->x2 * image_width;
    out_px[3] = box->y2 * image_height;
}

kosmos2_box kosmos2_box_from_pixels(double x1, double y1, double x2, double y2, int image_width,
                                    int image_height) {
    kosmos2_box b;
    memset(&b, 0, sizeof b);
    if (image_width <= 0 || image_height <= 0) return b;
    b.x1 = x1 / image_width;
    b.y1 = y1 / image_height;
    b.x2 = x2 / image_width;
    b.y2 = y2 / image_height;
    return b;
}

/* ---- referring: boxes -> prompt markup ------------------------------------------------------- */

int kosmos2_box_to_patch_indices(const kosmos2_box *box, int *ul, int *lr) {
    const double lim = 1e6;
    double c[4];
    int k;
    long long ulx, uly, lrx, lry;
    if (!box || !ul || !lr) return kosmos2__fail(KOSMOS2_E_INVALID, "kosmos2_box_to_patch_indices: NULL argument");
    if (!(box->x2 > box->x1 && box->y2 > box->y1))
        return kosmos2__fail(KOSMOS2_E_INVALID, "box (%g, %g, %g, %g) must have x2 > x1 and y2 > y1", box->x1,
                             box->y1, box->x2, box->y2);
    c[0] = box->x1;
    c[1] = box->y1;
    c[2] = box->x2;
    c[3] = box->y2;
    for (k = 0; k < 4; k++)
        if (!(c[k] >= -lim && c[k] <= lim))
            return kosmos2__fail(KOSMOS2_E_INVALID, "box coordinate %g is out of the supported range +-1e6", c[k]);
    ulx = (long long)floor(box->x1 * 32); /* x*32 is exact: same as Python's math.floor(x1 * 32) */
    uly = (long long)floor(box->y1 * 32);
    lrx = (long long)ceil(box->x2 * 32 - 1);
    lry = (long long)ceil(box->y2 * 32 - 1);
    *ul = (int)(uly * 32 + ulx); /* |.| <= 1.1e9: fits */
    *lr = (int)(lry * 32 + lrx);
    return KOSMOS2_OK;
}

/* Append "<object> <patch_index_%04d> <patch_index_%04d>[ </delimiter_of_multi_objects/> ...] </object>"
 * for one phrase's boxes (nothing for none). %04d pads like Python's str(i).zfill(4), sign included. */
static int kosmos2__gr_object_markup(kosmos2__gr_str *s, const kosmos2_phrase_boxes *pb) {
    int k;
    if (pb->n_boxes < 0) return kosmos2__fail(KOSMOS2_E_INVALID, "negative box count %d", pb->n_boxes);
    if (pb->n_boxes > 0 && !pb->boxes && !pb->patch_pairs)
        return kosmos2__fail(KOSMOS2_E_INVALID, "%d boxes but neither boxes nor patch_pairs given", pb->n_boxes);
    for (k = 0; k < pb->n_boxes; k++) {
        char tmp[96];
        int ul, lr;
        if (pb->patch_pairs) {
            ul = pb->patch_pairs[2 * k];
            lr = pb->patch_pairs[2 * k + 1];
        } else {
            int rc = kosmos2_box_to_patch_indices(&pb->boxes[k], &ul, &lr);
            if (rc) return kosmos2__wrap(rc, "box %d: ", k);
        }
        snprintf(tmp, sizeof tmp, "%s<patch_index_%04d> <patch_index_%04d>",
                 k == 0 ? "<object> " : " </delimiter_of_multi_objects/> ", ul, lr);
        kosmos2__gr_append_str(s, tmp);
    }
    if (pb->n_boxes > 0) kosmos2__gr_append_str(s, " </object>");
    return s->oom ? KOSMOS2_E_NOMEM : KOSMOS2_OK;
}

/* End (byte offset after "</phrase>") of the R3 match starting at s[i], or 0 when none starts
 * there; then *fail_at is where to look next (past a failed search: every "<phrase>" before the
 * newline or end where it stopped fails the same way). Bytes work as well as code points here:
 * all the characters that matter are ASCII. */
static size_t kosmos2__gr_phrase_at(const char *s, size_t n, size_t i, size_t *fail_at) {
    size_t k = i + 8;
    *fail_at = i + 1;
    if (n - i < 8 || memcmp(s + i, "<phrase>", 8) != 0) return 0;
    if (k >= n || s[k] == '\n') return 0; /* '.+?' needs one non-newline character */
    for (k = k + 1; k < n && s[k] != '\n'; k++)
        if (s[k] == '<' && n - k >= 9 && memcmp(s + k, "</phrase>", 9) == 0) return k + 9;
    *fail_at = k;
    return 0;
}

int kosmos2_prompt_attach_boxes(const char *prompt, const kosmos2_phrase_boxes *per_phrase, int n_phrases,
                                char **out_prompt) {
    kosmos2__gr_str s;
    size_t n, i, cur = 0, *ends = NULL; /* [n_match] end of each <phrase>...</phrase> match */
    int n_match = 0, cap_match = 0, k, rc = KOSMOS2_OK;
    if (!out_prompt) return kosmos2__fail(KOSMOS2_E_INVALID, "kosmos2_prompt_attach_boxes: out_prompt is NULL");
    *out_prompt = NULL;
    if (!prompt || n_phrases < 0 || (n_phrases > 0 && !per_phrase))
        return kosmos2__fail(KOSMOS2_E_INVALID, "kosmos2_prompt_attach_boxes: bad arguments");
    if (n_phrases == 0) { /* bboxes None or []: the text as it is */
        *out_prompt = kosmos2__strdup(prompt);
        return *out_prompt ? KOSMOS2_OK : KOSMOS2_E_NOMEM;
    }
    n = strlen(prompt);
    for (i = 0; i < n;) { /* re.finditer(r"<phrase>.+?</phrase>", prompt) */
        size_t fail_at, end = kosmos2__gr_phrase_at(prompt, n, i, &fail_at), *grown;
        if (!end) {
            i = fail_at;
            continue;
        }
        grown = (size_t *)kosmos2__gr_grow(ends, &cap_match, n_match + 1, sizeof *ends);
        if (!grown) {
            KOSMOS2_FREE(ends);
            return KOSMOS2_E_NOMEM;
        }
        ends = grown;
        ends[n_match++] = end;
        i = end;
    }
    if (n_match != n_phrases) {
        KOSMOS2_FREE(ends);
        return kosmos2__fail(KOSMOS2_E_INVALID,
                             "%d box groups given for %d <phrase>...</phrase> pairs in the prompt (must be equal)",
                             n_phrases, n_match);
    }
    memset(&s, 0, sizeof s);
    for (k = 0; k < n_match && !rc; k++) {
        kosmos2__gr_append(&s, prompt + cur, ends[k] - cur);
        cur = ends[k];
        rc = kosmos2__gr_object_markup(&s, &per_phrase[k]);
        if (rc) kosmos2__wrap(rc, "phrase %d: ", k);
    }
    kosmos2__gr_append(&s, prompt + cur, n - cur);
    if (!rc && s.oom) rc = KOSMOS2_E_NOMEM;
    KOSMOS2_FREE(ends);
    if (rc) {
        KOSMOS2_FREE(s.p);
        return rc;
    }
    *out_prompt = s.p;
    return KOSMOS2_OK;
}

int kosmos2_phrase_markup(const char *phrase, const kosmos2_box *boxes, int n_boxes, char **out) {
    kosmos2__gr_str s;
    kosmos2_phrase_boxes pb;
    int rc;
    if (!out) return kosmos2__fail(KOSMOS2_E_INVALID, "kosmos2_phrase_markup: out is NULL");
    *out = NULL;
    if (!phrase) return kosmos2__fail(KOSMOS2_E_INVALID, "kosmos2_phrase_markup: phrase is NULL");
    memset(&s, 0, sizeof s);
    kosmos2__gr_append_str(&s, "<phrase>");
    kosmos2__gr_append_str(&s, phrase);
    kosmos2__gr_append_str(&s, "</phrase>");
    if (s.oom) {
        KOSMOS2_FREE(s.p);
        return KOSMOS2_E_NOMEM;
    }
    pb.n_boxes = n_boxes;
    pb.boxes = boxes;
    pb.patch_pairs = NULL;
    rc = kosmos2_prompt_attach_boxes(s.p, &pb, 1, out); /* exactly the processor's path */
    KOSMOS2_FREE(s.p);
    return rc;
}

#ifdef KOSMOS2__POP_PRAGMAS
#pragma GCC diagnostic pop
#endif
#endif /* KOSMOS2_IMPLEMENTATION_DONE */
#endif /* KOSMOS2_IMPLEMENTATION */

/* ============================================================================================
 *  LICENCE
 * ============================================================================================
 *  MIT License. Copyright (c) 2026 the kosmos2.h authors.
 *  Permission is hereby granted, free of charge, to any person obtaining a copy of this software
 *  and associated documentation files (the "Software"), to deal in the Software without
 *  restriction, including without limitation the rights to use, copy, modify, merge, publish,
 *  distribute, sublicense, and/or sell copies of the Software, and to permit persons to whom the
 *  Software is furnished to do so, subject to the following conditions: The above copyright
 *  notice and this permission notice shall be included in all copies or substantial portions of
 *  the Software. THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
 *  IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A
 *  PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE
 *  LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR
 *  OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS
 *  IN THE SOFTWARE.
 */
