/* part: [11] GROUNDING (owned by the grounding work; inlined into kosmos2.h later) */
#ifdef KOSMOS2__PART_API
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

/* Free memory the library returned (strings from kosmos2_prompt_attach_boxes, ...).
 * NOTE FOR THE LEAD: belongs in the platform section; defined here until the parts are merged. */
void kosmos2_free(void *p);

#else
/* ============================================================================================
 *  [11] GROUNDING: boxes -> markup, generated markup -> caption + entities
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

/* NOTE FOR THE LEAD: move to [1] PLATFORM when merging. */
void kosmos2_free(void *p) { KOSMOS2_FREE(p); }

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

#endif
