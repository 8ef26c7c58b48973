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
 *  The smallest program:
 *
 *      kosmos2_model *m; kosmos2_context *c;
 *      if (kosmos2_model_load("kosmos-2-patch14-224", NULL, &m)) { puts(kosmos2_last_error()); return 1; }
 *      kosmos2_context_new(m, NULL, &c);
 *      ... see examples/minimal.c ...
 *      kosmos2_context_free(c); kosmos2_model_free(m);
 *
 *  Contract:
 *   - Every function that can fail returns 0 (KOSMOS2_OK) or a negative KOSMOS2_E_* code, and
 *     kosmos2_last_error() (per thread) says what failed and where (file, tensor, byte offset).
 *   - The library never exits, never prints (unless a callback you pass prints), never aborts
 *     on bad input. Every file it reads is treated as hostile and bounds-checked.
 *   - A kosmos2_model is read-only after loading and may be shared by many threads; a
 *     kosmos2_context (KV cache, scratch) belongs to one thread at a time.
 *
 *  Configuration macros (define before the implementation include):
 *   KOSMOS2_MALLOC(n) / KOSMOS2_REALLOC(p,n) / KOSMOS2_FREE(p)   allocator (default: libc)
 *   KOSMOS2_NO_STB_IMAGE        do not include stb_image (no image file decoding)
 *   KOSMOS2_STB_IMAGE_INCLUDE   the header to include for stb_image (default <stb/stb_image.h>)
 *   KOSMOS2_STB_IMAGE_IMPLEMENTED  stb_image's implementation is already compiled elsewhere
 *   KOSMOS2_USE_LIBJPEG         decode JPEG with libjpeg(-turbo) as Pillow does (-ljpeg)
 *
 * ============================================================================================
 *  TABLE OF CONTENTS  (search for the banner text, e.g. "[7] VISION ENCODER")
 * ============================================================================================
 *   PUBLIC API
 *     errors, model & context, tokenizer, images, generation
 *   IMPLEMENTATION
 *     [1] PLATFORM        allocation, errors, files, mmap, threads
 *     [2] PARSERS         JSON, safetensors
 *     [3] CHECKPOINT      config.json, tensors by name, shapes checked
 *     [4] TOKENIZER       SentencePiece protobuf, normaliser, unigram/BPE, ids, decode
 *     [5] IMAGE           decode, Pillow-exact bicubic resize, normalise
 *     [6] KERNELS         matmul, layernorm, softmax, activations
 *     [7] VISION ENCODER  CLIP ViT
 *     [8] RESAMPLER       image-to-text projection (64 latent queries)
 *     [9] TEXT DECODER    sub-LN transformer with KV cache
 *     [10] GENERATION     greedy / beam / sampling, no-repeat n-gram
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

/* During development the tokenizer and image sections live in parts/ and are inlined later. */
#define KOSMOS2__PART_API
#include "parts/tokenizer.h"
#include "parts/image.h"
#include "parts/grounding.h"
#include "parts/kernels.h"
#undef KOSMOS2__PART_API
/* [[KOSMOS2_MODEL_API]] */

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
#else
#define KOSMOS2__PRINTF(a, b)
#define KOSMOS2__UNUSED
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
    size_t n = strlen(s) + 1;
    char *p = (char *)kosmos2__alloc(n);
    if (p) memcpy(p, s, n);
    return p;
}

/* [[KOSMOS2_PARSERS]] */

#include "parts/tokenizer.h"
#include "parts/image.h"
#include "parts/kernels.h"

/* [[KOSMOS2_MODEL_IMPL]] */

#include "parts/grounding.h"

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
