/* part: [11] GROUNDING (owned by the grounding work; inlined into kosmos2.h later) */
#ifdef KOSMOS2__PART_API
#else
/* ============================================================================================
 *  [11] GROUNDING: boxes -> markup, generated markup -> caption + entities
 * ============================================================================================ */
#endif
