#!/usr/bin/env python3
"""A random checkpoint with the REAL full-size Kosmos-2 configuration (KOSMOS2-SPEC.md 1.2/1.3), for loader,
memory and speed tests when the real weights are not available.  NEVER commit its output (6.66 GB in f32).

Run:  . /opt/kosmos2-ref/env.sh && $PY scripts/make_fullsize.py OUT_DIR [--dtype float32|bfloat16] [--seed N]
                                   [--verify-load]

OUT_DIR receives what a hub download holds:
  sentencepiece.bpe.model   copied from ../shared/assets (the real 64,000-piece tokenizer);
  tokenizer_config.json, special_tokens_map.json, added_tokens.json, processor_config.json,
  preprocessor_config.json (hub layout: size {"shortest_edge": 224}, use_square_size true)
                            via make_fixtures.save_processor (Kosmos2Processor.save_pretrained);
  config.json               Kosmos2Config() defaults + text_config.no_repeat_ngram_size = 3, torch_dtype, and
                            architectures ["Kosmos2ForConditionalGeneration"]; generation_config.json;
  model.safetensors         885 tensors (no tied text_model.lm_head.weight), written by this script directly
                            (streamed in chunks with numpy, so memory stays ~100 MB): names and shapes are
                            taken from a transformers model of the same config with 1 layer per tower
                            (layer 0 replicated to all 24), then checked against the table in the spec.
Values (numpy PCG64 seeded with (seed, tensor index in sorted-name order)), the same scheme as the tiny
fixtures of make_fixtures.py, scaled to the full sizes (--branch-scale S: out_proj/fc2 of every layer times S):
  LayerNorm weights 1 + 0.2 N(0,1) (the text model's final layer_norm: N(0,1)); every bias 0.1 N(0,1);
  Linear/conv weights N(0,1)/sqrt(fan_in); text embed_tokens 3/sqrt(2048) N(0,1); class/position embeddings
  0.5 N(0,1); latent_query 0.2 N(0,1); image_to_text_projection.dense.weight 3.5 N(0,1) (scaled up so the
  image matters); embed_tokens row 2 (</s>) times make_fixtures.EOS_GAIN.  bfloat16 = the float32 values
  rounded to nearest-even.
--refs 0,2 additionally writes OUT_DIR/ref/ (tensors.json, case<k>/ for make_fixtures.CASES[k], and
synthetic.png in OUT_DIR), same files and meaning as the tiny fixtures but greedy only (no beam3_* keys).
Note: Debian's torch here uses the netlib reference BLAS (~0.25 GFLOP/s): a full-size prefill takes ~15 min.
For --refs, use OpenBLAS for this process only (results differ from netlib only by rounding):
  apt-get download libopenblas0-pthread && dpkg -x libopenblas0-pthread_*.deb ob
  LD_LIBRARY_PATH=$PWD/ob/usr/lib/x86_64-linux-gnu/openblas-pthread $PY scripts/make_fullsize.py OUT --refs 0,2
--verify-load additionally loads OUT_DIR with Kosmos2ForConditionalGeneration.from_pretrained and compares a
few tensors with the file (needs ~2x the checkpoint size in RAM for float32; slow).
"""
import argparse
import json
import math
import os
import shutil
import struct
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as mf  # noqa: E402

import torch  # noqa: E402
from transformers import GenerationConfig, Kosmos2Config, Kosmos2ForConditionalGeneration  # noqa: E402

N_LAYERS = 24
CHUNK = 1 << 24  # values per generated chunk (64 MB of float32)


def full_config(dtype):
    cfg = Kosmos2Config(text_config={"no_repeat_ngram_size": 3})
    cfg.architectures = ["Kosmos2ForConditionalGeneration"]
    cfg.torch_dtype = dtype
    return cfg


def tensor_table():
    """[(name, shape, layernorm?)] of the full model, sorted by name, without the tied lm_head."""
    small = Kosmos2Config(text_config={"no_repeat_ngram_size": 3, "layers": 1},
                          vision_config={"num_hidden_layers": 1})
    torch.manual_seed(0)
    with torch.no_grad():
        m = Kosmos2ForConditionalGeneration(small)
    ln = set()
    for mname, mod in m.named_modules():
        if isinstance(mod, torch.nn.LayerNorm):
            ln.add(mname + ".weight")
            ln.add(mname + ".bias")
    table = []
    for name, p in m.state_dict().items():
        if name == "text_model.lm_head.weight" or name.endswith("position_ids") or "embed_positions" in name:
            continue
        for marker in (".layers.0.",):
            if marker in name:
                for i in range(N_LAYERS):
                    n = name.replace(marker, ".layers.%d." % i)
                    table.append((n, list(p.shape), name in ln))
                break
        else:
            table.append((name, list(p.shape), name in ln))
    del m
    table.sort(key=lambda t: t[0])
    n_params = sum(int(np.prod(s)) for _, s, _ in table)
    assert len(table) == 885, len(table)
    assert n_params == 1664485376, n_params
    shapes = {n: s for n, s, _ in table}
    assert shapes["text_model.model.embed_tokens.weight"] == [65037, 2048]
    assert shapes["vision_model.model.embeddings.position_embedding.weight"] == [257, 1024]
    assert shapes["image_to_text_projection.latent_query"] == [64, 2048]
    assert shapes["text_model.model.layers.23.ffn.ffn_layernorm.weight"] == [8192]
    return table


BRANCH_SCALE = 1.0  # --branch-scale


def value_rule(name, shape, is_ln):
    """(scale, offset): value = offset + scale * N(0,1)."""
    if BRANCH_SCALE != 1.0 and ".layers." in name and name.endswith(("out_proj.weight", "fc2.weight")):
        return BRANCH_SCALE / math.sqrt(int(np.prod(shape[1:]))), 0.0
    if name == "text_model.model.layer_norm.weight":
        return 1.0, 0.0
    if is_ln and name.endswith(".weight"):
        return 0.2, 1.0
    if name.endswith(".bias"):
        return 0.1, 0.0
    if name.endswith("embed_tokens.weight"):
        return 3.0 / math.sqrt(shape[1]), 0.0
    if name.endswith(("class_embedding", "position_embedding.weight")):
        return 0.5, 0.0
    if name.endswith("latent_query"):
        return 0.2, 0.0
    if name == "image_to_text_projection.dense.weight":
        return 3.5, 0.0
    if len(shape) >= 2:
        return 1.0 / math.sqrt(int(np.prod(shape[1:]))), 0.0
    raise RuntimeError("unhandled tensor " + name)


def to_bf16_bits(x):
    """float32 array -> uint16 bfloat16 bits, round to nearest even (finite inputs)."""
    u = x.view(np.uint32)
    return ((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)).astype("<u2")


def write_safetensors(path, table, dtype, seed):
    st_dtype, esize = ("F32", 4) if dtype == "float32" else ("BF16", 2)
    header, off = {"__metadata__": {"format": "pt"}}, 0
    for name, shape, _ in table:
        n = int(np.prod(shape)) * esize
        header[name] = {"dtype": st_dtype, "shape": shape, "data_offsets": [off, off + n]}
        off += n
    hjson = json.dumps(header, separators=(",", ":")).encode()
    hjson += b" " * ((8 - len(hjson) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for idx, (name, shape, is_ln) in enumerate(table):
            rng = np.random.Generator(np.random.PCG64([seed, idx]))
            scale, offset = value_rule(name, shape, is_ln)
            left = int(np.prod(shape))
            while left:
                k = min(left, CHUNK)
                v = rng.standard_normal(k, dtype=np.float32)
                v *= np.float32(scale)
                if offset:
                    v += np.float32(offset)
                if name == "text_model.model.embed_tokens.weight" and left == int(np.prod(shape)):
                    v[2 * shape[1]:3 * shape[1]] *= np.float32(mf.EOS_GAIN)  # row of </s>, as in the fixtures
                f.write((v.astype("<f4") if esize == 4 else to_bf16_bits(v)).tobytes())
                left -= k
    return 8 + len(hjson) + off


def verify_load(out, table, dtype):
    model = Kosmos2ForConditionalGeneration.from_pretrained(out, torch_dtype=torch.float32)
    sd = model.state_dict()
    with open(os.path.join(out, "model.safetensors"), "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        for name in ["text_model.model.layer_norm.weight", "image_to_text_projection.latent_query",
                     "vision_model.model.encoder.layers.23.mlp.fc2.bias"]:
            a, b = header[name]["data_offsets"]
            f.seek(8 + n + a)
            raw = f.read(b - a)
            if dtype == "float32":
                v = np.frombuffer(raw, "<f4")
            else:
                v = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
            assert np.array_equal(v.reshape(header[name]["shape"]), sd[name].numpy()), name
    assert torch.equal(sd["text_model.lm_head.weight"], sd["text_model.model.embed_tokens.weight"])
    print("verify-load: OK")


def write_refs(out, cases):
    """OUT_DIR/ref/: tensors.json and case<k>/ for the chosen make_fixtures.CASES, same layout and meaning as
    the tiny fixtures (computed by make_fixtures.run_case on the checkpoint loaded back in float32)."""
    ref = os.path.join(out, "ref")
    os.makedirs(ref, exist_ok=True)
    mf.synthetic_image().save(os.path.join(out, "synthetic.png"), optimize=True)
    with open(os.path.join(ref, "tensors.json"), "w") as f:
        json.dump(mf.safetensors_stats(os.path.join(out, "model.safetensors")), f, indent=1, sort_keys=True)
    model, proc = mf.load(out)
    for k in cases:
        t = time.time()
        image_name, prompt = mf.CASES[k]
        arrays, info = mf.run_case(model, proc, out, image_name, prompt, with_beam=False)
        cdir = os.path.join(ref, "case%d" % k)
        os.makedirs(cdir, exist_ok=True)
        for n, a in arrays.items():
            np.save(os.path.join(cdir, n + ".npy"), np.ascontiguousarray(a))
        with open(os.path.join(cdir, "case.json"), "w") as f:
            json.dump(info, f, indent=1, ensure_ascii=False)
        print("  case%d %r: greedy %s... min margin %.3g (%.1fs)" % (
            k, prompt, info["greedy_ids"][:8], min(info["greedy_margins"]), time.time() - t))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    ap.add_argument("--seed", type=int, default=2306)
    ap.add_argument("--verify-load", action="store_true")
    ap.add_argument("--refs", default="", help="comma-separated make_fixtures.CASES indices (e.g. 0,2): also write "
                    "OUT_DIR/ref/ like the tiny fixtures (slow: minutes per case)")
    ap.add_argument("--refs-only", action="store_true", help="skip writing the checkpoint (it exists already)")
    ap.add_argument("--branch-scale", type=float, default=1.0,
                    help="multiply the weights that end each residual branch (attention out_proj, fc2) of every "
                    "encoder/decoder layer by this (e.g. 0.144 = 1/sqrt(2*24), GPT-2-style): a less chaotic "
                    "random model, for judging quantization error (issue 7); default 1 = the standard checkpoint")
    args = ap.parse_args()
    global BRANCH_SCALE
    BRANCH_SCALE = args.branch_scale
    torch.set_num_threads(os.cpu_count() or 1)
    if args.refs_only:
        write_refs(args.out, [int(k) for k in args.refs.split(",") if k])
        return
    t0 = time.time()
    os.makedirs(args.out, exist_ok=True)
    sp_path = os.path.join(args.out, "sentencepiece.bpe.model")
    shutil.copyfile(os.path.join(mf.ASSETS, "sentencepiece.bpe.model"), sp_path)
    tok = mf.save_processor(args.out, sp_path, 224)
    assert len(tok) == 65037, len(tok)
    cfg = full_config(args.dtype)
    cfg.save_pretrained(args.out)
    GenerationConfig.from_model_config(cfg).save_pretrained(args.out)
    table = tensor_table()
    t1 = time.time()
    size = write_safetensors(os.path.join(args.out, "model.safetensors"), table, args.dtype, args.seed)
    t2 = time.time()
    print("wrote %s: %d tensors, %d bytes; setup %.1fs, tensors %.1fs, total %.1fs" % (
        args.out, len(table), size, t1 - t0, t2 - t1, t2 - t0))
    if args.verify_load:
        verify_load(args.out, table, args.dtype)
        print("verify-load took %.1fs" % (time.time() - t2))
    if args.refs:
        write_refs(args.out, [int(k) for k in args.refs.split(",") if k])


if __name__ == "__main__":
    main()
