/* part: [5] IMAGE (owned by the image work; inlined into kosmos2.h later) */
#ifdef KOSMOS2__PART_API
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

#else
/* ============================================================================================
 *  [5] IMAGE: decode (stb_image / libjpeg), Pillow-exact bicubic resize, normalise
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
 * than 256 codes. Walk the JPEG's segments first and refuse such files. Returns 0 or an error. */
static int kosmos2__jpeg_check_huffman_tables(const uint8_t *d, size_t n) {
    size_t p = 2; /* after SOI */
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
        if (end > n) return KOSMOS2_OK;              /* truncated: stb reports it */
        if (marker == 0xC4) {                        /* DHT: [class/id, 16 counts, symbols]... */
            size_t q = p + 4;
            while (q < end) {
                size_t codes = 0;
                int i;
                if (q + 17 > end) return kosmos2__fail(KOSMOS2_E_FORMAT, "JPEG: short Huffman table at byte %zu", q);
                for (i = 1; i <= 16; i++) codes += d[q + (size_t)i];
                if (codes > 256 || q + 17 + codes > end)
                    return kosmos2__fail(KOSMOS2_E_FORMAT, "JPEG: Huffman table with %zu codes at byte %zu", codes, q);
                q += 17 + codes;
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

static int kosmos2__decode_stb(const uint8_t *data, size_t size, size_t max_pixels, kosmos2_image *out) {
    int w = 0, h = 0, comp = 0, rc;
    uint8_t *pixels;
    if (size > (size_t)INT_MAX) return kosmos2__fail(KOSMOS2_E_LIMIT, "encoded image of %zu bytes is too large", size);
    if (size >= 2 && data[0] == 0xFF && data[1] == 0xD8 && (rc = kosmos2__jpeg_check_huffman_tables(data, size)))
        return rc;
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
#endif
