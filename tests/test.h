/* tests/test.h - a tiny test harness: TEST functions, CHECK assertions, one closing line.
 * A test passes when none of its CHECKs failed. The runner prints "N passed, N failed". */
#ifndef KOSMOS2_TEST_H
#define KOSMOS2_TEST_H
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

static int test__failed_checks; /* CHECK failures inside the current test */
static int test__passed, test__failed;
static const char *test__filter; /* run only tests whose name contains this (argv[1]) */

#define CHECK(cond, ...)                                                                   \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            test__failed_checks++;                                                         \
            printf("    FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                     \
            printf(__VA_ARGS__);                                                           \
            printf("\n");                                                                  \
        }                                                                                  \
    } while (0)

/* CHECK that a kosmos2 call returned 0, printing kosmos2_last_error() otherwise. */
#define CHECK_OK(expr)                                                                     \
    do {                                                                                   \
        int check_ok_rc_ = (expr);                                                         \
        CHECK(check_ok_rc_ == 0, "rc=%d (%s)", check_ok_rc_, kosmos2_last_error());       \
    } while (0)

/* Whether the test named name runs: no filter, or one of the filter's comma-separated parts is
 * a substring of the name. */
__attribute__((unused)) static int test__selected(const char *name) {
    const char *f = test__filter;
    if (!f || !*f) return 1;
    while (*f) {
        size_t n = strcspn(f, ",");
        const char *h;
        for (h = name; n > 0 && strlen(h) >= n; h++)
            if (strncmp(h, f, n) == 0) return 1;
        f += n + (f[n] == ',');
    }
    return 0;
}

#define RUN(fn)                                                                            \
    do {                                                                                   \
        if (test__selected(#fn)) {                                                         \
            test__failed_checks = 0;                                                       \
            fn();                                                                          \
            if (test__failed_checks) {                                                     \
                test__failed++;                                                            \
                printf("FAIL %s\n", #fn);                                                  \
            } else {                                                                       \
                test__passed++;                                                            \
                printf("ok   %s\n", #fn);                                                  \
            }                                                                              \
            fflush(stdout);                                                                \
        }                                                                                  \
    } while (0)

/* Where the shared assets live (the real tokenizer, demo images). CI has ../shared/assets. */
__attribute__((unused)) static const char *test_assets_dir(void) {
    const char *d = getenv("KOSMOS2_ASSETS");
    return d ? d : "../shared/assets";
}

/* Read a whole file; NULL if absent. */
__attribute__((unused)) static unsigned char *test_read_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    unsigned char *buf;
    long n;
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = (unsigned char *)malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) { free(buf); buf = NULL; }
    if (buf) buf[n] = 0;
    fclose(f);
    if (size) *size = (size_t)n;
    return buf;
}

/* Load a float32 little-endian .npy file written by numpy (C order). Returns the element count
 * in *n and the shape in shape[0..*ndim-1]; NULL on failure. Only what the fixture script writes. */
__attribute__((unused)) static float *test_load_npy(const char *path, size_t *n, int shape[8], int *ndim) {
    size_t size, hlen, count = 1;
    unsigned char *buf = test_read_file(path, &size);
    const char *h, *p;
    float *out;
    int d = 0;
    if (!buf) return NULL;
    if (size < 10 || memcmp(buf, "\x93NUMPY", 6) != 0) { free(buf); return NULL; }
    if (buf[6] == 1) { hlen = buf[8] | (buf[9] << 8); h = (const char *)buf + 10; }
    else { hlen = buf[8] | (buf[9] << 8) | ((size_t)buf[10] << 16) | ((size_t)buf[11] << 24); h = (const char *)buf + 12; }
    if (!strstr(h, "'<f4'") || strstr(h, "'fortran_order': True")) { free(buf); return NULL; }
    p = strstr(h, "'shape': (");
    if (!p) { free(buf); return NULL; }
    p += 10;
    while (*p && *p != ')' && d < 8) {
        char *e;
        long v = strtol(p, &e, 10);
        if (e == p) break;
        shape[d++] = (int)v;
        count *= (size_t)v;
        p = e;
        while (*p == ',' || *p == ' ') p++;
    }
    if ((size_t)(h - (const char *)buf) + hlen + count * 4 > size) { free(buf); return NULL; }
    out = (float *)malloc(count * 4 + 4);
    memcpy(out, h + hlen, count * 4);
    free(buf);
    *n = count;
    if (ndim) *ndim = d;
    return out;
}

/* max |a-b| / max(max|b|, tiny): relative to the reference's largest magnitude. */
__attribute__((unused)) static double test_max_rel_err(const float *a, const float *b, size_t n) {
    double maxdiff = 0, maxref = 1e-30;
    size_t i;
    for (i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > maxdiff || d != d) maxdiff = d != d ? INFINITY : d;
        if (fabs((double)b[i]) > maxref) maxref = fabs((double)b[i]);
    }
    return maxdiff / maxref;
}
#endif
