/* tests for the image section: decoding, Pillow-exact resize, CLIPImageProcessor pixel_values.
 * References: tests/fixtures/images/refs.txt and *_224.png, made by scripts/make_image_refs.py with
 * Pillow 9.4 (libjpeg-turbo 2.1.5) and transformers' CLIPImageProcessor (see its docstring).
 * JPEGs are exact only when built with -DKOSMOS2_USE_LIBJPEG (-ljpeg); with stb_image they are
 * checked against a bound and the measured difference is printed. */

#define IMG_FIXTURES "tests/fixtures/images/"

/* FNV-1a 64, the hash refs.txt uses. */
static uint64_t img_fnv64(const void *data, size_t n) {
    const unsigned char *p = (const unsigned char *)data;
    uint64_t h = 0xCBF29CE484222325ull;
    size_t i;
    for (i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001B3ull;
    return h;
}

/* "fixture:x.png" -> tests/fixtures/images/x.png, "asset:x.jpg" -> <assets>/x.jpg */
static void img_resolve(const char *name, char *path, size_t cap) {
    if (strncmp(name, "fixture:", 8) == 0) snprintf(path, cap, IMG_FIXTURES "%s", name + 8);
    else snprintf(path, cap, "%s/%s", test_assets_dir(), strncmp(name, "asset:", 6) == 0 ? name + 6 : name);
}

static int img_is_jpeg(const char *name) { return strstr(name, ".jpg") != NULL; }

/* Read refs.txt into a NUL-terminated buffer (records are split with strtok_r by the callers). */
static char *img_read_refs(void) {
    char *text = (char *)test_read_file(IMG_FIXTURES "refs.txt", NULL);
    CHECK(text != NULL, "missing " IMG_FIXTURES "refs.txt (run scripts/make_image_refs.py)");
    return text;
}

/* Every "img" record: decode, resize to 224 and preprocess; compare with Pillow/transformers.
 * jpeg_mode 0: skip JPEGs; 1: JPEGs must be exact too (libjpeg build). */
static void img_check_records(int jpeg_mode) {
    char *text = img_read_refs(), *save_line = NULL, *line;
    kosmos2_preprocess_config cfg = kosmos2_preprocess_default_config();
    float *pv = (float *)malloc(3 * 224 * 224 * sizeof(float)); /* [3, 224, 224] */
    int records = 0;
    if (!text || !pv) { free(text); free(pv); return; }
    for (line = strtok_r(text, "\n", &save_line); line; line = strtok_r(NULL, "\n", &save_line)) {
        char name[256], path[512], dec_s[32], res_s[32], pv_s[32];
        int w, h, n, used, i;
        kosmos2_image img, resized;
        const char *p;
        if (strncmp(line, "img ", 4) != 0) continue;
        if (sscanf(line, "img %255s %d %d %31s %31s %31s %d%n", name, &w, &h, dec_s, res_s, pv_s, &n, &used) != 7) {
            CHECK(0, "bad refs.txt line: %.60s", line);
            continue;
        }
        if (img_is_jpeg(name) != (jpeg_mode == 1)) continue;
        records++;
        img_resolve(name, path, sizeof path);
        {
            int rc = kosmos2_image_load_file(path, 0, &img);
            CHECK(rc == 0, "%s: rc=%d (%s)", name, rc, kosmos2_last_error());
            if (rc) continue;
        }
        CHECK(img.width == w && img.height == h, "%s: %dx%d, Pillow %dx%d", name, img.width, img.height, w, h);
        CHECK(img_fnv64(img.rgb, (size_t)w * h * 3) == strtoull(dec_s, NULL, 16),
              "%s: decoded RGB differs from Pillow's convert(\"RGB\")", name);
        CHECK_OK(kosmos2_image_resize(&img, 224, 224, &resized));
        if (resized.rgb)
            CHECK(img_fnv64(resized.rgb, 224 * 224 * 3) == strtoull(res_s, NULL, 16),
                  "%s: resized pixels differ from Pillow's", name);
        CHECK_OK(kosmos2_image_preprocess(&img, &cfg, pv));
        CHECK(img_fnv64(pv, sizeof(float) * 3 * 224 * 224) == strtoull(pv_s, NULL, 16),
              "%s: pixel_values are not bit-identical to CLIPImageProcessor's", name);
        p = line + used;
        for (i = 0; i < n; i++) {
            int idx, k;
            float v;
            if (sscanf(p, "%d %f%n", &idx, &v, &k) != 2 || idx < 0 || idx >= 3 * 224 * 224) {
                CHECK(0, "%s: bad sample %d", name, i);
                break;
            }
            p += k;
            CHECK(fabsf(pv[idx] - v) <= 1e-6f, "%s: pixel_values[%d] = %.9g, processor %.9g", name, idx, pv[idx], v);
        }
        kosmos2_image_free(&resized);
        kosmos2_image_free(&img);
    }
    CHECK(records >= (jpeg_mode ? 6 : 20), "only %d records checked", records);
    free(text);
    free(pv);
}

/* Lossless images (PNG 8/16-bit, gray, gray+alpha, palette, RGBA, BMP, GIF, PNM, TGA; odd sizes,
 * 1x1, 3x500, 1000x7, upscaling, one axis kept, snowman.png): identical to Pillow/transformers. */
static void test_image_lossless_matches_pillow(void) { img_check_records(0); }

/* Pillow's resize to other sizes: 1x1, 640x1, 7x300, enlarging, one axis unchanged. */
static void test_image_resize_any_size(void) {
    char *text = img_read_refs(), *save_line = NULL, *line;
    int records = 0;
    if (!text) return;
    for (line = strtok_r(text, "\n", &save_line); line; line = strtok_r(NULL, "\n", &save_line)) {
        char name[256], path[512], hash[32];
        int w, h;
        kosmos2_image img, out;
        if (strncmp(line, "resize ", 7) != 0) continue;
        if (sscanf(line, "resize %255s %d %d %31s", name, &w, &h, hash) != 4) { CHECK(0, "bad line"); continue; }
        records++;
        img_resolve(name, path, sizeof path);
        CHECK_OK(kosmos2_image_load_file(path, 0, &img));
        if (!img.rgb) continue;
        CHECK_OK(kosmos2_image_resize(&img, w, h, &out));
        if (out.rgb) {
            CHECK(out.width == w && out.height == h, "%s: size", name);
            CHECK(img_fnv64(out.rgb, (size_t)w * h * 3) == strtoull(hash, NULL, 16),
                  "%s -> %dx%d differs from Pillow", name, w, h);
        }
        kosmos2_image_free(&out);
        kosmos2_image_free(&img);
    }
    CHECK(records >= 8, "only %d resize records", records);
    free(text);
}

/* Max |pixel_values difference| between an image decoded here and a Pillow-resized reference PNG. */
static double img_jpeg_pv_diff(const char *asset, const char *ref_png) {
    char path[512];
    kosmos2_image a, b;
    kosmos2_preprocess_config cfg = kosmos2_preprocess_default_config();
    float *pa = (float *)malloc(2 * 3 * 224 * 224 * sizeof(float)), *pb = pa + 3 * 224 * 224;
    double maxd = -1;
    size_t i;
    snprintf(path, sizeof path, "%s/%s", test_assets_dir(), asset);
    if (kosmos2_image_load_file(path, 0, &a) != 0) {
        CHECK(0, "%s: %s", path, kosmos2_last_error());
        free(pa);
        return -1;
    }
    CHECK_OK(kosmos2_image_load_file(ref_png, 0, &b));
    if (b.rgb && b.width == 224 && b.height == 224 && kosmos2_image_preprocess(&a, &cfg, pa) == 0 &&
        kosmos2_image_preprocess(&b, &cfg, pb) == 0) {
        maxd = 0;
        for (i = 0; i < 3 * 224 * 224; i++)
            if (fabs((double)pa[i] - pb[i]) > maxd) maxd = fabs((double)pa[i] - pb[i]);
    }
    kosmos2_image_free(&a);
    kosmos2_image_free(&b);
    free(pa);
    return maxd;
}

#ifndef KOSMOS2_USE_LIBJPEG
/* stb_image decodes JPEG slightly differently from libjpeg-turbo: measure and bound it. */
static void test_image_jpeg_stb_close_to_pillow(void) {
    double d1 = img_jpeg_pv_diff("two_dogs.jpg", IMG_FIXTURES "two_dogs_224.png");
    double d2 = img_jpeg_pv_diff("corgi.jpg", IMG_FIXTURES "corgi_224.png");
    printf("    stb_image vs Pillow, max |pixel_values diff|: two_dogs.jpg %.4f, corgi.jpg %.4f\n", d1, d2);
    CHECK(d1 >= 0 && d1 < 0.06, "two_dogs.jpg: %g (measured 0.030)", d1);
    CHECK(d2 >= 0 && d2 < 0.06, "corgi.jpg: %g (measured 0.030)", d2);
}
#else
/* With libjpeg-turbo decoding as Pillow does, JPEGs (baseline, progressive, gray, CMYK, the two
 * demo photos) are bit-identical too. */
static void test_image_jpeg_libjpeg_exact(void) {
    double d1 = img_jpeg_pv_diff("two_dogs.jpg", IMG_FIXTURES "two_dogs_224.png");
    double d2 = img_jpeg_pv_diff("corgi.jpg", IMG_FIXTURES "corgi_224.png");
    CHECK(d1 == 0 && d2 == 0, "two_dogs %g corgi %g", d1, d2);
    img_check_records(1);
}
#endif

/* Caller pixels: gray replicated, alpha dropped (not composited), row stride honoured. */
static void test_image_from_pixels(void) {
    static const uint8_t la[12] = {10, 0, 20, 255, 99, 99, /* stride 6: 2 pad bytes */ 30, 7, 40, 128, 99, 99};
    static const uint8_t rgba[2 * 4] = {1, 2, 3, 0, 4, 5, 6, 200};
    kosmos2_image img;
    CHECK_OK(kosmos2_image_from_pixels(la, 2, 2, 2, 6, &img));
    if (img.rgb) {
        CHECK(img.rgb[0] == 10 && img.rgb[1] == 10 && img.rgb[2] == 10 && img.rgb[3] == 20, "LA row 0");
        CHECK(img.rgb[6] == 30 && img.rgb[9] == 40 && img.rgb[11] == 40, "LA row 1 (stride)");
    }
    kosmos2_image_free(&img);
    CHECK(img.rgb == NULL && img.width == 0, "free zeroes");
    kosmos2_image_free(&img); /* twice is fine */
    CHECK_OK(kosmos2_image_from_pixels(rgba, 2, 1, 4, 0, &img));
    if (img.rgb) CHECK(memcmp(img.rgb, "\1\2\3\4\5\6", 6) == 0, "RGBA: alpha dropped");
    kosmos2_image_free(&img);
    CHECK(kosmos2_image_from_pixels(rgba, 0, 1, 4, 0, &img) == KOSMOS2_E_INVALID, "0 width");
    CHECK(kosmos2_image_from_pixels(rgba, 1, 1, 5, 0, &img) == KOSMOS2_E_INVALID, "5 channels");
    CHECK(kosmos2_image_from_pixels(rgba, 2, 1, 4, 7, &img) == KOSMOS2_E_INVALID, "stride too small");
    CHECK(kosmos2_image_from_pixels(NULL, 2, 1, 4, 0, &img) == KOSMOS2_E_INVALID, "NULL pixels");
}

/* Errors: missing file, empty and non-image data, pixel limit checked from the header (also a
 * header announcing 15000 x 15000 pixels), bad sizes and configs. */
static void test_image_errors(void) {
    kosmos2_image img, out;
    kosmos2_preprocess_config cfg = kosmos2_preprocess_default_config();
    float pv[3];
    /* PNG signature + IHDR announcing 15000 x 15000 RGB (225 megapixels), then nothing */
    static const uint8_t huge_png[] = {0x89, 'P', 'N', 'G', 13, 10, 26, 10, 0, 0, 0, 13, 'I', 'H', 'D', 'R',
                                       0, 0, 0x3A, 0x98, 0, 0, 0x3A, 0x98, 8, 2, 0, 0, 0, 0x51, 0x76, 0x5E, 0xF2};
    CHECK(kosmos2_image_load_file("tests/fixtures/images/no_such_file.png", 0, &img) == KOSMOS2_E_IO, "missing");
    CHECK(strstr(kosmos2_last_error(), "no_such_file.png") != NULL, "message names the file: %s", kosmos2_last_error());
    CHECK(kosmos2_image_load_memory("", 0, 0, &img) == KOSMOS2_E_FORMAT, "empty");
    CHECK(kosmos2_image_load_memory("hello, world", 12, 0, &img) == KOSMOS2_E_FORMAT, "not an image");
    CHECK(img.rgb == NULL && img.width == 0, "out zeroed on failure");
    CHECK(kosmos2_image_load_file(IMG_FIXTURES "rgb_643x427.png", 643 * 427 - 1, &img) == KOSMOS2_E_LIMIT,
          "max_pixels");
    CHECK_OK(kosmos2_image_load_file(IMG_FIXTURES "rgb_643x427.png", 643 * 427, &img));
    kosmos2_image_free(&img);
    {
        int rc = kosmos2_image_load_memory(huge_png, sizeof huge_png, 0, &img);
        CHECK(rc == KOSMOS2_E_LIMIT, "huge header: rc=%d %s", rc, kosmos2_last_error());
    }
    {   /* 100000 x 100000: stb_image itself refuses it as unknown; still a limit error here */
        uint8_t png2[sizeof huge_png];
        int rc;
        memcpy(png2, huge_png, sizeof png2);
        png2[17] = png2[21] = 0x01, png2[18] = png2[22] = 0x86, png2[19] = png2[23] = 0xA0;
        rc = kosmos2_image_load_memory(png2, sizeof png2, 0, &img);
        CHECK(rc == KOSMOS2_E_LIMIT, "100000^2 header: rc=%d %s", rc, kosmos2_last_error());
    }
    CHECK(kosmos2_image_load_memory("P3\n1 1\n255\n0 0 0\n", 17, 0, &img) == KOSMOS2_E_UNSUPPORTED, "plain PPM");
    CHECK(kosmos2_image_load_memory("P6\n2 2\n255\nabc", 15, 0, &img) == KOSMOS2_E_FORMAT, "short PPM");
    CHECK(strstr(kosmos2_last_error(), "truncated") != NULL, "message: %s", kosmos2_last_error());
    CHECK(kosmos2_image_resize(&img, 10, 10, &out) == KOSMOS2_E_INVALID, "resize of an empty image");
    CHECK_OK(kosmos2_image_load_file(IMG_FIXTURES "rgb_50x40.png", 0, &img));
    CHECK(kosmos2_image_resize(&img, 0, 10, &out) == KOSMOS2_E_INVALID, "resize to 0 width");
    cfg.resample = 2;
    CHECK(kosmos2_image_preprocess(&img, &cfg, pv) == KOSMOS2_E_UNSUPPORTED, "bilinear not supported");
    cfg = kosmos2_preprocess_default_config();
    cfg.do_resize = 0;
    CHECK(kosmos2_image_preprocess(&img, &cfg, pv) == KOSMOS2_E_INVALID, "wrong size without resize");
    kosmos2_image_free(&img);
}

/* Every fixture truncated at many lengths and with bytes corrupted: an error or an image, never a
 * crash or an out-of-bounds read (run under `make asan`). Truncated PNGs must be errors. */
static void test_image_truncated_and_corrupt(void) {
    static const char *files[] = {"rgb_50x40.png", "palette_trns_64x48.png", "rgb16_40x30.png",
                                  "gray16_33x21.png", "graya_80x45.png", "bmp_70x50.bmp", "gif_60x40.gif",
                                  "pnm_45x37.ppm", "pnm_16bit_26x19.ppm", "pnm_max4000_19x11.pgm", "pnm_p4_37x23.pbm", "tga_rle_47x35.tga", "tga_52x33.tga", "jpeg_257x181.jpg",
                                  "jpeg_progressive_199x263.jpg", "jpeg_gray_73x91.jpg", "jpeg_cmyk_64x48.jpg"};
    size_t f;
    uint32_t lcg = 12345;
    for (f = 0; f < sizeof files / sizeof *files; f++) {
        char path[256];
        size_t size = 0, len, step;
        unsigned char *data, *copy;
        int trial;
        snprintf(path, sizeof path, IMG_FIXTURES "%s", files[f]);
        data = test_read_file(path, &size);
        CHECK(data != NULL, "%s missing", path);
        if (!data) continue;
        step = size / 97 + 1;
        for (len = 0; len < size; len += (len < 64 ? 1 : step)) {
            kosmos2_image img;
            int rc;
            copy = (unsigned char *)malloc(len ? len : 1); /* exact size: ASan sees overreads */
            memcpy(copy, data, len);
            rc = kosmos2_image_load_memory(copy, len, 0, &img);
            CHECK(rc == 0 || rc == KOSMOS2_E_FORMAT || rc == KOSMOS2_E_LIMIT, "%s[:%zu]: rc=%d", files[f], len, rc);
            if (rc == 0) CHECK(img.width > 0 && img.height > 0 && img.rgb, "%s[:%zu]", files[f], len);
            else CHECK(img.rgb == NULL && kosmos2_last_error()[0], "%s[:%zu]: no message", files[f], len);
            if (strstr(files[f], ".png") && len < size - 12) /* without IEND a PNG may still decode */
                CHECK(rc != 0, "%s truncated to %zu bytes decoded", files[f], len);
#ifdef KOSMOS2_USE_LIBJPEG
            if (strstr(files[f], ".jpg") && len < size - 2)
                CHECK(rc != 0, "%s truncated to %zu bytes decoded (Pillow refuses it)", files[f], len);
#endif
            kosmos2_image_free(&img);
            free(copy);
        }
        copy = (unsigned char *)malloc(size);
        for (trial = 0; trial < 200; trial++) { /* a few random bytes changed */
            kosmos2_image img;
            int k, rc;
            memcpy(copy, data, size);
            for (k = 0; k < 1 + trial % 4; k++) {
                lcg = lcg * 1664525u + 1013904223u;
                copy[(lcg >> 8) % size] = (unsigned char)(lcg >> 24);
            }
            rc = kosmos2_image_load_memory(copy, size, 1u << 20, &img);
            CHECK(rc == 0 || rc == KOSMOS2_E_FORMAT || rc == KOSMOS2_E_LIMIT, "%s corrupt: rc=%d", files[f], rc);
            kosmos2_image_free(&img);
        }
        free(copy);
        free(data);
    }
}

/* .npy writer: numpy-readable header, data round-trips through the harness's reader. */
static void test_image_write_npy(void) {
    float data[2 * 3 * 4];
    int64_t shape[3] = {2, 3, 4};
    int got_shape[8], nd = 0, i;
    size_t n = 0;
    float *back;
    const char *path = "build/test_image_npy.npy";
    for (i = 0; i < 24; i++) data[i] = (float)i * 0.5f - 3.25f;
    CHECK_OK(kosmos2_write_npy_f32(path, data, shape, 3));
    back = test_load_npy(path, &n, got_shape, &nd);
    CHECK(back != NULL, "read back");
    if (back) {
        CHECK(n == 24 && nd == 3 && got_shape[0] == 2 && got_shape[1] == 3 && got_shape[2] == 4, "shape");
        CHECK(memcmp(back, data, sizeof data) == 0, "data");
        free(back);
    }
    {
        size_t size = 0;
        unsigned char *raw = test_read_file(path, &size);
        CHECK(raw && size == 128 + 24 * 4 && raw[127] == '\n', "header padded to 64 bytes (size %zu)", size);
        free(raw);
    }
    remove(path);
}

/* tests for the image section. */
static void tests_image(void) {
    RUN(test_image_lossless_matches_pillow);
    RUN(test_image_resize_any_size);
#ifndef KOSMOS2_USE_LIBJPEG
    RUN(test_image_jpeg_stb_close_to_pillow);
#else
    RUN(test_image_jpeg_libjpeg_exact);
#endif
    RUN(test_image_from_pixels);
    RUN(test_image_errors);
    RUN(test_image_truncated_and_corrupt);
    RUN(test_image_write_npy);
}
