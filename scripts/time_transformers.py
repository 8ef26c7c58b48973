#!/usr/bin/env python3
"""Time transformers' Kosmos-2 (PyTorch, float32, eager attention) stage by stage, for the README's
side-by-side table with `make bench`.

Run:  . /opt/kosmos2-ref/env.sh && $PY scripts/time_transformers.py MODEL_DIR [IMAGE] [N_NEW] [THREADS]

Uses the same checkpoint directory, image, prompt ("<grounding>An image of"), number of new tokens
(no n-gram ban, as `make bench`) and thread count as tests/bench.c. PyTorch should use OpenBLAS
(Debian's libopenblas0-pthread; the reference BLAS is ~25x slower and no fair baseline):
`python3 -c "import torch; print(torch.__config__.show())"` tells which BLAS is loaded.
Prints one line per stage in milliseconds (median of `--repeat` runs, default 3).
"""
import argparse, statistics, sys, time

import torch
from PIL import Image
from transformers import Kosmos2ForConditionalGeneration, Kosmos2Processor


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("image", nargs="?", default="../shared/assets/snowman.png")
    ap.add_argument("n_new", nargs="?", type=int, default=32)
    ap.add_argument("threads", nargs="?", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    model = Kosmos2ForConditionalGeneration.from_pretrained(a.model, torch_dtype=torch.float32).eval()
    processor = Kosmos2Processor.from_pretrained(a.model, use_fast=False)
    t_load = (time.perf_counter() - t0) * 1e3
    image = Image.open(a.image)
    runs = []
    for _ in range(a.repeat):
        r = {}
        t = time.perf_counter()
        inputs = processor(text="<grounding>An image of", images=image, return_tensors="pt")
        r["preprocess"] = (time.perf_counter() - t) * 1e3
        with torch.no_grad():
            t = time.perf_counter()
            vis = model.vision_model(pixel_values=inputs["pixel_values"])
            r["vision"] = (time.perf_counter() - t) * 1e3
            t = time.perf_counter()
            feats = model.vision_model.model.post_layernorm(vis[0])
            feats = torch.nn.functional.normalize(feats, dim=-1)
            image_embeds, _ = model.image_to_text_projection(feats)
            r["resampler"] = (time.perf_counter() - t) * 1e3
            t = time.perf_counter()
            out = model.text_model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], image_embeds=image_embeds,
                                   image_embeds_position_mask=inputs["image_embeds_position_mask"], use_cache=True)
            r["prefill"] = (time.perf_counter() - t) * 1e3
            past, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
            ids = torch.cat([inputs["input_ids"], tok], dim=1)
            t = time.perf_counter()
            for _ in range(a.n_new - 1):
                pos = torch.tensor([[ids.shape[1] + 1]])
                o = model.text_model(input_ids=tok, past_key_values=past, position_ids=pos, use_cache=True)
                past, tok = o.past_key_values, o.logits[:, -1:].argmax(-1)
                ids = torch.cat([ids, tok], dim=1)
            r["decode_per_token"] = (time.perf_counter() - t) * 1e3 / max(1, a.n_new - 1)
        runs.append(r)
    med = {k: statistics.median(x[k] for x in runs) for k in runs[0]}
    print(f"transformers {__import__('transformers').__version__}, torch {torch.__version__}, {a.threads} threads, {a.n_new} new tokens")
    print(f"load              {t_load:10.1f} ms")
    for k, v in med.items():
        print(f"{k:17s} {v:10.1f} ms")
    e2e = t_load + med["preprocess"] + med["vision"] + med["resampler"] + med["prefill"] + med["decode_per_token"] * (a.n_new - 1)
    print(f"end to end        {e2e:10.1f} ms (load + one run)")


if __name__ == "__main__":
    sys.exit(main())
