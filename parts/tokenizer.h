/* part: [4] TOKENIZER (owned by the tokenizer work; inlined into kosmos2.h later) */
#ifdef KOSMOS2__PART_API
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
#else
/* ============================================================================================
 *  [4] TOKENIZER: SentencePiece protobuf, normaliser, unigram/BPE, ids, decode
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
#endif
