#!/usr/bin/env python3
"""Reference fixtures for the Kosmos-2 model tests: two tiny random checkpoints of the REAL architecture.

Run:  . /opt/kosmos2-ref/env.sh && $PY scripts/make_fixtures.py [--only tiny_f32|tiny_bf16] [--check]

Everything comes from transformers (Kosmos2Config, Kosmos2ForConditionalGeneration, Kosmos2Processor,
CLIPImageProcessor, slow XLMRobertaTokenizer; eager attention, float32 math) and is deterministic
(fixed seeds, single-threaded SentencePiece trainer, torch.set_num_threads(1)).

For each model M in {tiny_f32, tiny_bf16} it writes tests/fixtures/M/:

  sentencepiece.bpe.model   A small SentencePiece UNIGRAM model (nmt_nfkc, unk 0 / bos 1 / eos 2, no pad),
                            trained here on a synthetic English corpus that `make_corpus()` generates from a
                            seeded PRNG (so it is regenerated identically).  Vocabulary size per MODELS.
  tokenizer_config.json, special_tokens_map.json, added_tokens.json, processor_config.json
                            `Kosmos2Processor(CLIPImageProcessor, XLMRobertaTokenizer).save_pretrained(M)`:
                            XLM-R id mapping (0 <s>, 1 <pad>, 2 </s>, 3 <unk>, spm piece j>=3 -> j+1,
                            <mask> = len(spm)+1) then the 11 Kosmos tags and 1024 <patch_index_XXXX> tokens.
  preprocessor_config.json  The same save, then rewritten to the hub's layout: size {"shortest_edge": S},
                            crop_size {height S, width S}, "use_square_size": true, resample 3, CLIP mean/std.
  config.json, generation_config.json, model.safetensors
                            `model.save_pretrained(M, safe_serialization=True)` of a Kosmos2ForConditional-
                            Generation whose parameters are all re-drawn by `init_params()` (every bias and
                            LayerNorm perturbed; projection dense weight scaled up so the image matters).
                            tiny_bf16 is `model.to(torch.bfloat16)` before saving.  No lm_head key (tied).
  synthetic.png             A 97x61 RGB test image drawn with numpy by `synthetic_image()`.
  ref/tensors.json          {name: {"dtype": "F32"|"BF16", "shape": [...], "sum": f64, "abs_sum": f64}} for every
                            tensor of model.safetensors, computed from the raw file bytes (values upcast to f64).
  ref/case<k>/              One directory per (image, prompt) case, see CASES.  All references are computed
                            from the SAVED checkpoint loaded back with from_pretrained(torch_dtype=float32)
                            (for bf16: bf16 weights upcast to f32, f32 math - what kosmos2.h does):
    pixel_values.npy        [1,3,S,S] f32, processor output.
    vision_hidden.npy       [1,N+1,Dv] f32, vision encoder last_hidden_state (BEFORE post_layernorm).
    image_embeds.npy        [1,64,D] f32, image_to_text_projection output (what generate splices in).
    prompt_logits.npy       [V] f32, logits at the last prompt position of the prefill.
    step_logits.npy         [R,V] f32, R = min(5, len(greedy_ids)): RAW logits (before the no-repeat-ngram
                            processor) of the first R greedy decode steps (row 0 = prefill's last row = prompt_logits), from generate(
                            output_logits=True) with the KV cache.
    case.json               image (file name: "snowman.png" = ../shared/assets/snowman.png, "synthetic.png" = in
                            the fixture dir), prompt, prompt_ids, image_mask (image_embeds_position_mask),
                            greedy_ids (generated ids only, generate(max_new_tokens=48, no_repeat_ngram_size=3,
                            num_beams=1, do_sample=False)), greedy_margins (per step: top1 - top2 of the
                            processed scores, to judge how robust each argmax is), beam3_ids (num_beams=3, same
                            other args, generated ids only), text (decode of prompt_ids+greedy_ids with the
                            FAST tokenizer rules of KOSMOS2-SPEC.md 6.4, emulated by `fast_decode()`),
                            processed_text / caption / entities (processor.post_process_generation(text,
                            cleanup_and_extract=False) and (text); entities as [[name, [start, end],
                            [[x1, y1, x2, y2], ...]], ...]), and the same for beam3 (beam3_text,
                            beam3_processed_text, beam3_caption, beam3_entities); also max_new_tokens and
                            no_repeat_ngram_size.
  ref/summary.json          the model's config values and the list of cases.

`--check` (also run at the end of a normal run) reloads each directory with from_pretrained and verifies that
every saved array and id list is reproduced.  `fast_decode()` is verified at start-up on the official snowman
ids of KOSMOS2-SPEC.md 8.2 with the real tokenizer (../shared/assets/sentencepiece.bpe.model).
"""
import argparse
import json
import math
import os
import random
import shutil
import struct
import sys
import tempfile

import numpy as np
import torch
from PIL import Image

import sentencepiece as spm
from transformers import (CLIPImageProcessor, Kosmos2Config, Kosmos2ForConditionalGeneration,
                          Kosmos2Processor, XLMRobertaTokenizer)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ASSETS = os.path.normpath(os.path.join(ROOT, "..", "shared", "assets"))
if not os.path.isdir(ASSETS):
    ASSETS = "/work/shared/assets"
FIX = os.path.join(ROOT, "tests", "fixtures")

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

MODELS = {
    "tiny_f32": dict(
        dtype="float32", seed=1234, spm_vocab=1000,
        text=dict(embed_dim=36, attention_heads=3, layers=2, ffn_dim=52, max_position_embeddings=2048),
        vision=dict(hidden_size=30, num_attention_heads=3, num_hidden_layers=2, intermediate_size=44,
                    image_size=42, patch_size=14),
        proj_gain=20.0,
    ),
    "tiny_bf16": dict(
        dtype="bfloat16", seed=4321, spm_vocab=900,
        text=dict(embed_dim=40, attention_heads=5, layers=3, ffn_dim=72, max_position_embeddings=2048),
        vision=dict(hidden_size=32, num_attention_heads=2, num_hidden_layers=3, intermediate_size=48,
                    image_size=56, patch_size=14),
        proj_gain=20.0,
    ),
}

CASES = [
    ("snowman.png", "<grounding>An image of"),
    ("snowman.png", "An image of"),
    ("synthetic.png", "<grounding>Describe this image in detail:"),
    ("synthetic.png", "An image of"),
    # a referring prompt with markup and patch-index tokens: post_process_generation finds its entity
    ("snowman.png", "<grounding><phrase> a snowman</phrase><object><patch_index_0044><patch_index_0863></object> is"),
]

GEN = dict(max_new_tokens=48, no_repeat_ngram_size=3, do_sample=False, use_cache=True)
N_STEPS = 5  # rows of step_logits (fewer when generation stops at EOS earlier)
EOS_GAIN = 2.0


# --------------------------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------------------------
WORDS = """the a an of in on by with to and or is are was were be been has have had it its this that these those
there here he she they we you I his her their our my your who what which when where why how image picture photo
photograph snowman fire campfire dog dogs puppy puppies cat cats field grass tree trees sky cloud clouds snow
winter summer man woman child children boy girl people person street road car bus train house building window door
table chair cup pot hat scarf gloves ball bird birds water river lake sea beach sand mountain hill rock flower
flowers garden park bench light lamp shadow sun moon star night day morning evening red green blue yellow white
black brown orange purple gray small large big little tall short old young happy warm cold bright dark cozy
sitting standing walking running playing looking wearing holding eating drinking warming enjoying smiling
jumping lying near next behind front top bottom left right middle center corner side background foreground
describe detail details features appears seems shows contains depicts scene view close together himself
herself itself atmosphere warmth placed nearby around above below between under over into from up down out
one two three four five several many some all both each other another first second third last
""".split()

EXTRA = ["Describe this image in detail:", "An image of", "The image features", "It appears to be",
         "café", "naïve", "résumé", "Zürich", "1st", "2nd", "3rd", "42", "1024", "(a)", "[b]", "{c}",
         "don't", "it's", "we're", "I'm", "they've", "e.g.", "i.e.", "x-ray", "co-op", "ＡＢＣ", "①", "ﬁne",
         "“quoted”", "‘single’", "—", "…", "½", "™"]


PREFIXES = ["", "", "un", "re", "pre", "over", "out", "sub", "inter", "mis"]
SUFFIXES = ["", "s", "ed", "ing", "er", "est", "ly", "ness", "ful", "less", "able", "ment", "ish", "ward"]


def make_corpus(n_sentences=6000, seed=20261122):
    """Deterministic synthetic English: random sentences over WORDS with punctuation, numbers and a few
    non-ASCII strings (exercising nmt_nfkc).  About 300 KB."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n_sentences):
        n = rng.randint(4, 16)
        words = [rng.choice(WORDS) for _ in range(n)]
        for i in range(n):  # some morphology, so there are enough distinct substrings for ~1000 pieces
            if rng.random() < 0.25:
                words[i] = rng.choice(PREFIXES) + words[i] + rng.choice(SUFFIXES)
        if rng.random() < 0.3:
            words.insert(rng.randint(0, n), rng.choice(EXTRA))
        if rng.random() < 0.1:
            words.insert(rng.randint(0, n), str(rng.randint(0, 2000)))
        s = " ".join(words)
        s = s[0].upper() + s[1:]
        if rng.random() < 0.2:
            k = rng.randint(1, len(words) - 1)
            s = " ".join(s.split(" ")[:k]) + ", " + " ".join(s.split(" ")[k:])
        s += rng.choice([".", ".", ".", "!", "?", ":", ";"])
        lines.append(s)
    return "\n".join(lines) + "\n"


def train_spm(out_path, vocab_size):
    """Train a UNIGRAM SentencePiece model like the real one (nmt_nfkc, unk 0, bos 1, eos 2, no pad)."""
    tmp = tempfile.mkdtemp()
    try:
        corpus = os.path.join(tmp, "corpus.txt")
        with open(corpus, "w", encoding="utf-8") as f:
            f.write(make_corpus())
        prefix = os.path.join(tmp, "sp")
        # relative names: the trainer records input/model_prefix in the .model file (keep it reproducible)
        cwd = os.getcwd()
        os.chdir(tmp)
        try:
            spm.SentencePieceTrainer.train(
                input="corpus.txt", model_prefix="sp", vocab_size=vocab_size, model_type="unigram",
                normalization_rule_name="nmt_nfkc", character_coverage=0.99999, max_sentencepiece_length=16,
                unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=1, shuffle_input_sentence=False,
                input_sentence_size=0, split_digits=False, byte_fallback=False, minloglevel=2)
        finally:
            os.chdir(cwd)
        shutil.copyfile(prefix + ".model", out_path)
    finally:
        shutil.rmtree(tmp)


def fast_decode(tokenizer, ids):
    """What the FAST tokenizer's batch_decode(ids, skip_special_tokens=True) returns (KOSMOS2-SPEC.md 6.4):
    drop special ids, map to pieces, Metaspace decoder (first piece: remove '▁'; others: '▁' -> ' '),
    concatenate, clean_up_tokenization."""
    special = set(tokenizer.all_special_ids)
    toks = tokenizer.convert_ids_to_tokens([i for i in ids if i not in special])
    out = []
    for k, t in enumerate(toks):
        out.append(t.replace("\u2581", "") if k == 0 else t.replace("\u2581", " "))
    s = "".join(out)
    for a, b in [(" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                 (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")]:
        s = s.replace(a, b)
    return s


def check_fast_decode():
    """Verify fast_decode on the official snowman facts (KOSMOS2-SPEC.md 8.2) with the real tokenizer."""
    tok = XLMRobertaTokenizer(vocab_file=os.path.join(ASSETS, "sentencepiece.bpe.model"))
    proc = Kosmos2Processor(CLIPImageProcessor(), tok)
    ids = ([0, 64003] + list(range(4, 68)) + [64004, 64012, 712, 1648, 9, 64007, 10, 43867, 64008, 64009, 64057,
           64876, 64010, 5950, 597, 32, 64007, 10, 646, 64008, 64009, 64018, 64924, 64010, 4, 2])
    assert len(ids) == 92
    text = fast_decode(proc.tokenizer, ids)
    raw = proc.post_process_generation(text, cleanup_and_extract=False)
    assert raw == ("<grounding> An image of<phrase> a snowman</phrase><object><patch_index_0044><patch_index_0863>"
                   "</object> warming himself by<phrase> a fire</phrase><object><patch_index_0005>"
                   "<patch_index_0911></object>."), raw
    cap, ents = proc.post_process_generation(text)
    assert cap == "An image of a snowman warming himself by a fire.", cap
    assert ents == [("a snowman", (12, 21), [(0.390625, 0.046875, 0.984375, 0.828125)]),
                    ("a fire", (41, 47), [(0.171875, 0.015625, 0.484375, 0.890625)])], ents
    # the prompt encodes as in the spec, too
    enc = proc(text="<grounding>An image of", images=Image.new("RGB", (224, 224)))
    assert list(enc["input_ids"]) == ids[:71], enc["input_ids"]
    print("fast_decode: verified on the official snowman example")


# --------------------------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------------------------
def synthetic_image():
    """97x61 RGB: smooth gradients, a bright disc, a dark bar and a checker patch (non-square, so the
    processor squashes and downscales with antialiasing)."""
    h, w = 61, 97
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 255 * x / (w - 1)
    g = 255 * y / (h - 1)
    b = 128 + 100 * np.sin(x / 7.0) * np.cos(y / 5.0)
    img = np.stack([r, g, b], -1)
    disc = (x - 30) ** 2 + (y - 20) ** 2 < 12 ** 2
    img[disc] = [250, 240, 30]
    img[40:48, 50:90] = [10, 20, 60]
    checker = ((x.astype(int) // 3 + y.astype(int) // 3) % 2 == 0) & (x > 70) & (y < 25)
    img[checker] = [255, 255, 255]
    return Image.fromarray(np.clip(np.round(img), 0, 255).astype(np.uint8), "RGB")


def load_image(name, fixdir):
    path = os.path.join(ASSETS, name) if name == "snowman.png" else os.path.join(fixdir, name)
    return Image.open(path)


# --------------------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------------------
def make_config(spec, vocab_size):
    text = dict(spec["text"], vocab_size=vocab_size, no_repeat_ngram_size=3)
    return Kosmos2Config(text_config=text, vision_config=dict(spec["vision"]), latent_query_num=64)


@torch.no_grad()
def init_params(model, seed, proj_gain):
    """Re-draw every parameter from a seeded generator, in sorted-name order:
    LayerNorm weight 1 + 0.2 N(0,1), except the text model's FINAL layer_norm weight: N(0,1) (random signs, so
    that the tied lm_head does not just predict the current token again and greedy text varies); every bias
    (LayerNorm or Linear) 0.1 N(0,1); Linear/conv weights N(0,1)/sqrt(fan_in); text embeddings 0.5 N(0,1);
    class/position embeddings 0.5 N(0,1); latent queries 0.2 N(0,1); image_to_text_projection.dense.weight
    additionally scaled by proj_gain (so the image changes the logits by several units); finally the
    embedding row of </s> (id 2) is multiplied by EOS_GAIN so that some cases stop at EOS."""
    g = torch.Generator().manual_seed(seed)
    ln_names = set()
    for mname, m in model.named_modules():
        if isinstance(m, torch.nn.LayerNorm):
            ln_names.add(mname + ".weight")
            ln_names.add(mname + ".bias")
    for name, p in sorted(model.named_parameters(), key=lambda t: t[0]):
        z = torch.randn(p.shape, generator=g, dtype=torch.float32)
        if name == "text_model.model.layer_norm.weight":
            v = z
        elif name in ln_names and name.endswith(".weight"):
            v = 1.0 + 0.2 * z
        elif name.endswith(".bias"):
            v = 0.1 * z
        elif name.endswith("embed_tokens.weight"):
            v = 0.5 * z
        elif name.endswith(("class_embedding", "position_embedding.weight")):
            v = 0.5 * z
        elif name.endswith("latent_query"):
            v = 0.2 * z
        elif p.dim() >= 2:
            fan_in = int(np.prod(p.shape[1:]))
            v = z / math.sqrt(fan_in)
            if name == "image_to_text_projection.dense.weight":
                v = v * proj_gain
        else:
            raise RuntimeError("unhandled parameter " + name)
        p.copy_(v)
    model.text_model.model.embed_tokens.weight[2] *= EOS_GAIN


def save_processor(outdir, sp_path, image_size):
    """Kosmos2Processor(CLIPImageProcessor, slow XLMRobertaTokenizer(sp_path)).save_pretrained(outdir), then
    preprocessor_config.json rewritten to the hub's layout (size {"shortest_edge": S}, use_square_size true).
    Returns the tokenizer."""
    S = image_size
    tok = XLMRobertaTokenizer(vocab_file=sp_path)
    ip = CLIPImageProcessor(size={"shortest_edge": S}, crop_size={"height": S, "width": S}, use_square_size=True,
                            do_center_crop=True, resample=3, image_mean=CLIP_MEAN, image_std=CLIP_STD)
    proc = Kosmos2Processor(ip, tok)
    n_spm = tok.sp_model.get_piece_size()
    assert len(tok) == n_spm + 1 + 1 + 11 + 1024, (len(tok), n_spm)
    assert tok.convert_tokens_to_ids("<mask>") == n_spm + 1
    assert tok.convert_tokens_to_ids("</doc>") == n_spm + 2
    assert tok.convert_tokens_to_ids("<grounding>") == n_spm + 12
    assert tok.convert_tokens_to_ids("<patch_index_0000>") == n_spm + 13
    assert tok.convert_tokens_to_ids("<patch_index_1023>") == len(tok) - 1
    proc.save_pretrained(outdir)
    pp_path = os.path.join(outdir, "preprocessor_config.json")
    with open(pp_path) as f:
        pp = json.load(f)
    pp["size"] = {"shortest_edge": S}
    pp["use_square_size"] = True
    pp.pop("_valid_processor_keys", None)  # an attribute this transformers version leaks into the file
    with open(pp_path, "w") as f:
        json.dump(pp, f, indent=2, sort_keys=True)
        f.write("\n")
    return tok


def build(name, spec):
    fixdir = os.path.join(FIX, name)
    if os.path.isdir(fixdir):
        shutil.rmtree(fixdir)
    os.makedirs(fixdir)
    sp_path = os.path.join(fixdir, "sentencepiece.bpe.model")
    train_spm(sp_path, spec["spm_vocab"])
    tok = save_processor(fixdir, sp_path, spec["vision"]["image_size"])

    synthetic_image().save(os.path.join(fixdir, "synthetic.png"), optimize=True)

    torch.manual_seed(spec["seed"])
    config = make_config(spec, len(tok))
    model = Kosmos2ForConditionalGeneration(config)
    init_params(model, spec["seed"], spec["proj_gain"])
    model.tie_weights()
    model.eval()
    if spec["dtype"] == "bfloat16":
        model = model.to(torch.bfloat16)
    model.save_pretrained(fixdir, safe_serialization=True)
    return fixdir


# --------------------------------------------------------------------------------------------------------------
# References
# --------------------------------------------------------------------------------------------------------------
def safetensors_stats(path):
    """Parse model.safetensors directly: {name: dtype, shape, sum, abs_sum} (values upcast to float64)."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        base = 8 + n
        out = {}
        for name in sorted(k for k in header if k != "__metadata__"):
            info = header[name]
            a, b = info["data_offsets"]
            f.seek(base + a)
            raw = f.read(b - a)
            if info["dtype"] == "F32":
                v = np.frombuffer(raw, dtype="<f4").astype(np.float64)
            elif info["dtype"] == "BF16":
                v = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32).astype(np.float64)
            else:
                raise RuntimeError("unexpected dtype " + info["dtype"])
            assert v.size == int(np.prod(info["shape"])), name
            out[name] = {"dtype": info["dtype"], "shape": info["shape"], "sum": float(v.sum()),
                         "abs_sum": float(np.abs(v).sum())}
    return out


def load(fixdir):
    try:
        model = Kosmos2ForConditionalGeneration.from_pretrained(fixdir, torch_dtype=torch.float32,
                                                                attn_implementation="eager")
    except TypeError:  # a transformers without the argument has only eager attention anyway
        model = Kosmos2ForConditionalGeneration.from_pretrained(fixdir, torch_dtype=torch.float32)
    model.eval()
    assert all(p.dtype == torch.float32 for p in model.parameters())
    proc = Kosmos2Processor.from_pretrained(fixdir, use_fast=False)
    return model, proc


def entities_json(ents):
    return [[n, list(span), [list(b) for b in boxes]] for n, span, boxes in ents]


@torch.no_grad()
def run_case(model, proc, fixdir, image_name, prompt, with_beam=True):
    image = load_image(image_name, fixdir)
    enc = proc(text=prompt, images=image, return_tensors="pt")
    pv, ids, am, im = enc["pixel_values"], enc["input_ids"], enc["attention_mask"], enc["image_embeds_position_mask"]
    vout = model.vision_model(pixel_values=pv)
    vision_hidden = vout.last_hidden_state
    emb = model.vision_model.model.post_layernorm(vision_hidden)
    emb = torch.nn.functional.normalize(emb, dim=-1)
    image_embeds, _ = model.image_to_text_projection(emb)
    # prefill through the full model (the same path generate takes)
    out = model(pixel_values=pv, input_ids=ids, attention_mask=am, image_embeds_position_mask=im)
    prompt_logits = out.logits[0, -1]
    g = model.generate(pixel_values=pv, input_ids=ids, attention_mask=am, image_embeds=None,
                       image_embeds_position_mask=im, num_beams=1, output_logits=True, output_scores=True,
                       return_dict_in_generate=True, **GEN)
    plen = ids.shape[1]
    greedy = g.sequences[0, plen:].tolist()
    step_logits = torch.stack([g.logits[k][0] for k in range(min(N_STEPS, len(g.logits)))])
    margins = []
    for s in g.scores:
        top = torch.topk(s[0], 2).values
        margins.append(float(top[0] - top[1]))
    beam = None
    if with_beam:
        b = model.generate(pixel_values=pv, input_ids=ids, attention_mask=am, image_embeds=None,
                           image_embeds_position_mask=im, num_beams=3, **GEN)
        beam = b[0, plen:].tolist()
    arrays = {
        "pixel_values": pv.numpy().astype("<f4"),
        "vision_hidden": vision_hidden.numpy().astype("<f4"),
        "image_embeds": image_embeds.numpy().astype("<f4"),
        "prompt_logits": prompt_logits.numpy().astype("<f4"),
        "step_logits": step_logits.numpy().astype("<f4"),
    }
    prompt_ids = ids[0].tolist()
    info = {"image": image_name, "prompt": prompt, "prompt_ids": prompt_ids, "image_mask": im[0].tolist(),
            "max_new_tokens": GEN["max_new_tokens"], "no_repeat_ngram_size": GEN["no_repeat_ngram_size"],
            "greedy_ids": greedy, "greedy_margins": margins, "beam3_ids": beam}
    if beam is None:
        del info["beam3_ids"]
    for key, gen_ids in (("", greedy), ("beam3_", beam)) if beam is not None else (("", greedy),):
        text = fast_decode(proc.tokenizer, prompt_ids + gen_ids)
        cap, ents = proc.post_process_generation(text)
        info[key + "text"] = text
        info[key + "processed_text"] = proc.post_process_generation(text, cleanup_and_extract=False)
        info[key + "caption"] = cap
        info[key + "entities"] = entities_json(ents)
    return arrays, info


def write_refs(fixdir):
    model, proc = load(fixdir)
    ref = os.path.join(fixdir, "ref")
    if os.path.isdir(ref):
        shutil.rmtree(ref)
    os.makedirs(ref)
    with open(os.path.join(ref, "tensors.json"), "w") as f:
        json.dump(safetensors_stats(os.path.join(fixdir, "model.safetensors")), f, indent=1, sort_keys=True)
    cases = []
    for k, (image_name, prompt) in enumerate(CASES):
        arrays, info = run_case(model, proc, fixdir, image_name, prompt)
        cdir = os.path.join(ref, "case%d" % k)
        os.makedirs(cdir)
        for n, a in arrays.items():
            np.save(os.path.join(cdir, n + ".npy"), np.ascontiguousarray(a))
        with open(os.path.join(cdir, "case.json"), "w") as f:
            json.dump(info, f, indent=1, ensure_ascii=False)
        cases.append({"dir": "case%d" % k, "image": image_name, "prompt": prompt})
        print("  case%d %-14s %-45r greedy %s... min margin %.4g" % (
            k, image_name, prompt, info["greedy_ids"][:8], min(info["greedy_margins"])))
    tc, vc = model.config.text_config, model.config.vision_config
    summary = {
        "dtype": str(next(iter(safetensors_stats(os.path.join(fixdir, "model.safetensors")).values()))["dtype"]),
        "vocab_size": tc.vocab_size, "embed_dim": tc.embed_dim, "layers": tc.layers,
        "attention_heads": tc.attention_heads, "ffn_dim": tc.ffn_dim,
        "max_position_embeddings": tc.max_position_embeddings, "no_repeat_ngram_size": tc.no_repeat_ngram_size,
        "vision_hidden_size": vc.hidden_size, "vision_layers": vc.num_hidden_layers,
        "vision_heads": vc.num_attention_heads, "vision_intermediate_size": vc.intermediate_size,
        "image_size": vc.image_size, "patch_size": vc.patch_size, "latent_query_num": model.config.latent_query_num,
        "cases": cases,
    }
    with open(os.path.join(ref, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)


def check(fixdir):
    """Reload the saved directory and verify every saved reference is reproduced."""
    model, proc = load(fixdir)
    ref = os.path.join(fixdir, "ref")
    stats = safetensors_stats(os.path.join(fixdir, "model.safetensors"))
    with open(os.path.join(ref, "tensors.json")) as f:
        assert json.load(f) == stats
    assert "text_model.lm_head.weight" not in stats
    with open(os.path.join(ref, "summary.json")) as f:
        summary = json.load(f)
    worst = 0.0
    for c in summary["cases"]:
        cdir = os.path.join(ref, c["dir"])
        with open(os.path.join(cdir, "case.json")) as f:
            info = json.load(f)
        arrays, info2 = run_case(model, proc, fixdir, info["image"], info["prompt"])
        info2 = json.loads(json.dumps(info2, ensure_ascii=False))
        assert info == info2, (c, [k for k in info if info[k] != info2.get(k)])
        for n, a in arrays.items():
            b = np.load(os.path.join(cdir, n + ".npy"))
            assert b.dtype == np.float32 and b.shape == a.shape, (n, b.dtype, b.shape)
            worst = max(worst, float(np.abs(a - b).max()))
        sl = np.load(os.path.join(cdir, "step_logits.npy"))
        pl = np.load(os.path.join(cdir, "prompt_logits.npy"))
        assert np.allclose(sl[0], pl, rtol=1e-4, atol=1e-4), "step 0 differs from prefill"
        assert int(np.argmax(pl)) >= 0
    assert worst <= 1e-5, worst
    print("check %s: OK (%d cases, max abs diff %.3g)" % (os.path.basename(fixdir), len(summary["cases"]), worst))


def sizes(fixdir):
    total = 0
    for dp, _, fns in sorted(os.walk(fixdir)):
        for fn in sorted(fns):
            p = os.path.join(dp, fn)
            s = os.path.getsize(p)
            total += s
            print("  %8d  %s" % (s, os.path.relpath(p, FIX)))
    print("  %8d  total %s" % (total, os.path.basename(fixdir)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=sorted(MODELS))
    ap.add_argument("--check", action="store_true", help="only verify existing fixtures")
    args = ap.parse_args()
    torch.set_num_threads(1)
    names = [args.only] if args.only else list(MODELS)
    if args.check:
        for n in names:
            check(os.path.join(FIX, n))
        return
    check_fast_decode()
    for n in names:
        print("building", n)
        fixdir = build(n, MODELS[n])
        write_refs(fixdir)
        check(fixdir)
        sizes(fixdir)


if __name__ == "__main__":
    main()
