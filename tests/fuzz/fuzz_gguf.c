/* Fuzz target: a GGUF file as kosmos2_model_load reads it (header, metadata, tensor infos,
 * alignment, offsets), then its embedded config.json / preprocessor config / SentencePiece model,
 * then weight binding and the repacking of ggml-layout q8_0/q4_0 matrices. The same steps as
 * kosmos2__load_gguf, from memory instead of a file. */
#include "fuzz.h"

static int fuzz_gguf(const uint8_t *data, size_t size) {
    kosmos2_model *m = (kosmos2_model *)calloc(1, sizeof *m);
    kosmos2__gguf_meta meta;
    if (!m) abort();
    m->files[0].data = fuzz_copy(data, size, 0);
    m->files[0].size = size;
    m->n_files = 1;
    if (kosmos2__gguf_parse("fuzz.gguf", &m->files[0], &m->tensors, &m->n_tensors, &meta) == 0) {
        m->config_json = kosmos2__strndup(meta.config_json, meta.config_len);
        m->preproc_json = kosmos2__strndup(meta.preproc_json ? meta.preproc_json : "", meta.preproc_len);
        m->spm = (unsigned char *)kosmos2__strndup(meta.spm, meta.spm_len);
        m->spm_size = meta.spm_len;
        if (!m->config_json || !m->preproc_json || !m->spm) abort();
        if (kosmos2__setup_from_texts(m, "fuzz.gguf: ") == 0 && kosmos2__bind_weights(m) == 0) kosmos2__repack_weights(m);
    }
    kosmos2_model_free(m);
    return 0;
}

#ifndef FUZZ_NO_MAIN /* tests/test_hostile.c includes the targets to replay their inputs */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_gguf(data, size); }
#endif
