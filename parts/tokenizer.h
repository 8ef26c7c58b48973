/* part: [4] TOKENIZER (owned by the tokenizer work; inlined into kosmos2.h later) */
#ifdef KOSMOS2__PART_API
typedef struct kosmos2_tokenizer kosmos2_tokenizer;
#else
/* ============================================================================================
 *  [4] TOKENIZER
 * ============================================================================================ */
#endif
