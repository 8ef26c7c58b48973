"""Make the image fixtures and their Pillow / transformers references (tests/test_image.c).

Run from the repository root:
    . /opt/kosmos2-ref/env.sh && $PY scripts/make_image_refs.py

Reference environment: Pillow 9.4.0 (Debian, libjpeg-turbo 2.1.5), numpy, transformers ~4.41 source
(CLIPImageProcessor, PIL path). Everything below is deterministic (numpy seed 1234).

Files written to tests/fixtures/images/:
  *.png/.bmp/.gif/.ppm/.pgm/.tga/.jpg  small synthetic images made here with numpy + Pillow's encoders
      (lossless formats; PNMs with odd maxvals written by hand; four JPEGs: baseline, progressive,
      gray, CMYK); the comments in make_fixtures() say what each one exercises.
  two_dogs_224.png, corgi_224.png  Pillow's uint8 224x224 bicubic squash of the shared assets
      two_dogs.jpg / corgi.jpg (decoded by Pillow's libjpeg-turbo); the C test decodes the JPEGs with
      stb_image and measures how far its pixel_values are from these.
  refs.txt  one record per line, whitespace separated:
      img NAME W H DECODED_FNV RESIZED_FNV PV_FNV N i0 v0 i1 v1 ...
          NAME is `fixture:FILE` (this directory) or `asset:FILE` (../shared/assets, not copied);
          W H the decoded size; DECODED_FNV = FNV-1a 64 of Pillow's `image.convert("RGB")` bytes
          [H,W,3]; RESIZED_FNV = FNV-1a 64 of `image.resize((224,224), BICUBIC, reducing_gap=None)`
          bytes [224,224,3] (what CLIPImageProcessor feeds to rescale/normalize); PV_FNV = FNV-1a 64 of
          the float32 bytes of CLIPImageProcessor's pixel_values[0] [3,224,224] (configured as
          microsoft/kosmos-2-patch14-224's preprocessor_config.json, use_square_size=True); then N
          samples (flat index into [3,224,224], value as %.9g) of those pixel_values.
      resize NAME OUT_W OUT_H RESIZED_FNV
          Pillow's resize of the decoded RGB image to OUT_W x OUT_H (BICUBIC, reducing_gap=None).
Note: for the 1x1 image the processor is given input_data_format="channels_last": transformers would
otherwise infer a (1,1,3) array as channels-first (a transformers quirk for heights of 1 or 3).

The script also checks the processor facts of KOSMOS2-SPEC.md section 5.1 (two_dogs.jpg re-saved as
JPEG by Pillow and reloaded, as transformers' test_full_processor does) and prints the result.
"""
import io
import os
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, "/opt/kosmos2-ref/transformers/src")
from transformers import CLIPImageProcessor  # noqa: E402

OUT = "tests/fixtures/images"
ASSETS = os.environ.get("KOSMOS2_ASSETS", "../shared/assets")
RNG = np.random.default_rng(1234)

# microsoft/kosmos-2-patch14-224 preprocessor_config.json (534 bytes), KOSMOS2-SPEC.md 1.5
PROCESSOR = CLIPImageProcessor(
    crop_size={"height": 224, "width": 224}, do_center_crop=True, do_convert_rgb=True, do_normalize=True,
    do_rescale=True, do_resize=True, image_mean=[0.48145466, 0.4578275, 0.40821073],
    image_std=[0.26862954, 0.26130258, 0.27577711], resample=3, rescale_factor=0.00392156862745098,
    size={"shortest_edge": 224}, use_square_size=True)


def fnv64(b: bytes) -> str:
    """FNV-1a 64 of a byte string, as 16 hex digits (the C test computes the same)."""
    h = 0xCBF29CE484222325
    for x in b:
        h = ((h ^ x) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return "%016x" % h


def smooth(w, h, c, noise=12.0):
    """A picture-like test image: gradients, a disc, a sharp stripe, and some noise."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    base = []
    for k in range(c):
        v = 128 + 100 * np.sin(x / max(w, 2) * (3 + k) + y / max(h, 2) * (2 + 2 * k))
        v += 60 * (((x - w * 0.4) ** 2 + (y - h * 0.6) ** 2) < (min(w, h) * 0.3) ** 2)
        v[:, (w // 3):(w // 3) + max(1, w // 20)] = 255 * (k % 2)
        v += RNG.normal(0, noise, size=(h, w))
        base.append(v)
    return np.clip(np.stack(base, -1), 0, 255).round().astype(np.uint8)


def blocky(w, h, c, block=8):
    """A larger image that still compresses well: random blocks (sharp edges) plus linear ramps."""
    small = RNG.integers(0, 256, ((h + block - 1) // block, (w + block - 1) // block, c))
    v = small.repeat(block, 0).repeat(block, 1)[:h, :w].astype(np.float64)
    y, x = np.mgrid[0:h, 0:w]
    v = v * 0.7 + ((x + 2 * y) % 77)[:, :, None]
    return np.clip(v, 0, 255).astype(np.uint8)


def png_raw(path, w, h, bitdepth, ctype, rows):
    """A PNG written by hand (Pillow cannot write 16-bit RGB/RGBA)."""
    import struct
    import zlib

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + r for r in rows)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bitdepth, ctype, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def make_fixtures():
    """Writes the synthetic images; returns their names."""
    names = []

    def pnm_raw(name, magic, maxval, arr):  # Pillow writes only maxval 255 (and 65535 for "I")
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(b"%s\n%d %d\n%d\n" % (magic, arr.shape[1], arr.shape[0], maxval) + arr.tobytes())
        names.append(name)

    def save(im, name, **kw):
        im.save(os.path.join(OUT, name), **kw)
        names.append(name)

    save(Image.fromarray(smooth(1, 1, 3)), "rgb_1x1.png")                    # 1x1 -> 224x224
    save(Image.fromarray(smooth(3, 500, 3)), "rgb_3x500.png")                # very tall and thin
    save(Image.fromarray(smooth(1000, 7, 3)), "rgb_1000x7.png")              # very wide and flat
    save(Image.fromarray(smooth(50, 40, 3)), "rgb_50x40.png")                # upscale both axes
    save(Image.fromarray(blocky(224, 301, 3)), "rgb_224x301.png")            # horizontal pass skipped
    save(Image.fromarray(blocky(389, 224, 3, 5)), "rgb_389x224.png")            # vertical pass skipped
    save(Image.fromarray(blocky(224, 224, 3, 3)), "rgb_224x224.png")   # no resize at all
    save(Image.fromarray(blocky(643, 427, 3, 11)), "rgb_643x427.png")   # plain downscale
    save(Image.fromarray(smooth(97, 61, 1)[:, :, 0], mode="L"), "gray_97x61.png")
    save(Image.fromarray(smooth(80, 45, 2), mode="LA"), "graya_80x45.png")
    save(Image.fromarray(smooth(120, 90, 4, noise=4), mode="RGBA"), "rgba_120x90.png")  # alpha dropped
    pal = Image.fromarray(smooth(64, 48, 3)).quantize(colors=50, dither=Image.Dither.NONE)
    save(pal, "palette_64x48.png")
    save(pal, "palette_trns_64x48.png", transparency=0)  # tRNS ignored by convert
    a16 = (smooth(40, 30, 3).astype(np.uint16) * 257 + RNG.integers(0, 257, (30, 40, 3))).astype(">u2")
    png_raw(os.path.join(OUT, "rgb16_40x30.png"), 40, 30, 16, 2, [r.tobytes() for r in a16])
    names.append("rgb16_40x30.png")
    a16 = (smooth(36, 22, 4).astype(np.uint16) * 257).astype(">u2")
    png_raw(os.path.join(OUT, "rgba16_36x22.png"), 36, 22, 16, 6, [r.tobytes() for r in a16])
    names.append("rgba16_36x22.png")
    g16 = RNG.integers(0, 600, (21, 33)).astype(np.uint16)  # mode "I": values > 255 clip to 255
    save(Image.fromarray(g16, mode="I;16"), "gray16_33x21.png")
    save(Image.fromarray(smooth(70, 50, 3)), "bmp_70x50.bmp")
    save(Image.fromarray(smooth(60, 40, 3)).quantize(colors=64, dither=Image.Dither.NONE), "gif_60x40.gif")
    save(Image.fromarray(smooth(45, 37, 3)), "pnm_45x37.ppm")
    save(Image.fromarray(smooth(31, 29, 1)[:, :, 0], mode="L"), "pnm_31x29.pgm")
    save(Image.fromarray(smooth(40, 20, 1)[:, :, 0] // 16, mode="L").convert("P"), "palette4_40x20.png", bits=4)
    save(Image.fromarray(smooth(37, 23, 1)[:, :, 0] > 128), "bilevel_37x23.png")   # mode "1"
    save(Image.fromarray(smooth(37, 23, 1)[:, :, 0] > 100), "pnm_p4_37x23.pbm")    # P4
    pnm_raw("pnm_16bit_29x17.pgm", b"P5", 65535, (smooth(29, 17, 1)[:, :, 0].astype(np.uint32) * 7).astype(">u2"))
    pnm_raw("pnm_16bit_26x19.ppm", b"P6", 65535, (smooth(26, 19, 3).astype(np.uint16) * 257).astype(">u2"))
    pnm_raw("pnm_max100_23x15.pgm", b"P5", 100, (smooth(23, 15, 1)[:, :, 0] // 2.55).astype(np.uint8))
    pnm_raw("pnm_max1000_21x13.ppm", b"P6", 1000, (smooth(21, 13, 3).astype(np.uint16) * 4).astype(">u2"))
    pnm_raw("pnm_max4000_19x11.pgm", b"P5 # comment\n", 4000, (smooth(19, 11, 1)[:, :, 0] * 15.7).astype(">u2"))
    save(Image.fromarray(smooth(52, 33, 3)), "tga_52x33.tga")
    save(Image.fromarray(smooth(47, 35, 3)), "tga_rle_47x35.tga", compression="tga_rle")
    # JPEGs: exact only when decoded with libjpeg-turbo (KOSMOS2_USE_LIBJPEG)
    save(Image.fromarray(smooth(257, 181, 3)), "jpeg_257x181.jpg", quality=90)
    save(Image.fromarray(smooth(199, 263, 3)), "jpeg_progressive_199x263.jpg", quality=80, progressive=True)
    save(Image.fromarray(smooth(73, 91, 1)[:, :, 0], mode="L"), "jpeg_gray_73x91.jpg", quality=85)
    save(Image.fromarray(smooth(64, 48, 4), mode="CMYK"), "jpeg_cmyk_64x48.jpg", quality=90)
    return names


def pixel_values(im):
    kw = {}
    if im.size[1] in (1, 3):  # transformers would guess channels-first for a (1|3, W, 3) array
        kw["input_data_format"] = "channels_last"
    pv = PROCESSOR(im, return_tensors="np", **kw)["pixel_values"][0]
    assert pv.dtype == np.float32 and pv.shape == (3, 224, 224)
    return pv


def img_record(name, im):
    rgb = np.asarray(im.convert("RGB"))
    resized = np.asarray(Image.fromarray(rgb).resize((224, 224), Image.BICUBIC, reducing_gap=None))
    pv = pixel_values(im)
    # the processor's own uint8 path is the same resize: check, so that RESIZED_FNV means what it says
    again = (pv.transpose(1, 2, 0) * np.array(PROCESSOR.image_std, np.float32)
             + np.array(PROCESSOR.image_mean, np.float32)) * 255
    assert np.abs(again - resized).max() < 0.01, name
    flat = pv.reshape(-1)
    idx = sorted(set([0, 1, 223, 224, 50175, 50176, 100351, 100352, flat.size - 1]
                     + RNG.integers(0, flat.size, 23).tolist()))
    samples = " ".join("%d %.9g" % (i, flat[i]) for i in idx)
    return "img %s %d %d %s %s %s %d %s" % (name, rgb.shape[1], rgb.shape[0], fnv64(rgb.tobytes()),
                                            fnv64(resized.tobytes()), fnv64(pv.astype("<f4").tobytes()),
                                            len(idx), samples)


def resize_record(name, im, w, h):
    r = np.asarray(im.convert("RGB").resize((w, h), Image.BICUBIC, reducing_gap=None))
    return "resize %s %d %d %s" % (name, w, h, fnv64(r.tobytes()))


def check_spec_facts():
    """KOSMOS2-SPEC.md 5.1 processor facts: two_dogs.jpg re-saved as JPEG and reloaded."""
    im = Image.open(os.path.join(ASSETS, "two_dogs.jpg"))
    buf = io.BytesIO()
    im.save(buf, format="JPEG")
    buf.seek(0)
    pv = pixel_values(Image.open(buf))
    top = [[-0.6535852551460266, -0.6389868259429932, -0.6243883967399597],
           [-0.6535852551460266, -0.6389868259429932, -0.6243883967399597],
           [-0.6243883967399597, -0.6243883967399597, -0.5951915383338928]]
    corner2 = [[-0.5701355338096619, -0.641235888004303, -0.7549964189529419],
               [-0.5843556523323059, -0.641235888004303, -0.7834365367889404],
               [-0.5559154152870178, -0.641235888004303, -0.7834365367889404]]
    d1 = np.abs(pv[0, :3, :3] - np.array(top)).max()
    d2 = np.abs(pv[2, -3:, -3:] - np.array(corner2)).max()
    print("spec 5.1 facts (two_dogs.jpg re-saved): max |diff| ch0[:3,:3] = %.3g, ch2[-3:,-3:] = %.3g" % (d1, d2))
    return max(d1, d2) < 1e-6


def main():
    os.makedirs(OUT, exist_ok=True)
    lines = []
    for name in make_fixtures():
        im = Image.open(os.path.join(OUT, name))
        lines.append(img_record("fixture:" + name, im))
        print(name, im.mode, im.size)
    for name in ["snowman.png", "two_dogs.jpg", "corgi.jpg"]:
        im = Image.open(os.path.join(ASSETS, name))
        lines.append(img_record("asset:" + name, im))
    for name in ["two_dogs.jpg", "corgi.jpg"]:
        im = Image.open(os.path.join(ASSETS, name)).convert("RGB")
        im.resize((224, 224), Image.BICUBIC, reducing_gap=None).save(
            os.path.join(OUT, name.split(".")[0] + "_224.png"), optimize=True)
    for name, w, h in [("fixture:rgb_50x40.png", 7, 300), ("fixture:rgb_1000x7.png", 1, 1),
                       ("fixture:rgb_1000x7.png", 13, 2), ("fixture:rgb_3x500.png", 640, 1),
                       ("fixture:rgb_643x427.png", 643, 17), ("fixture:rgb_643x427.png", 31, 427),
                       ("fixture:rgb_643x427.png", 1000, 999), ("fixture:rgb_1x1.png", 5, 3),
                       ("fixture:rgba_120x90.png", 119, 91), ("asset:snowman.png", 333, 97)]:
        path = os.path.join(OUT, name[8:]) if name.startswith("fixture:") else os.path.join(ASSETS, name[6:])
        lines.append(resize_record(name, Image.open(path), w, h))
    with open(os.path.join(OUT, "refs.txt"), "w") as f:
        f.write("# made by scripts/make_image_refs.py (Pillow %s); format in its docstring\n"
                % Image.__version__)
        f.write("\n".join(lines) + "\n")
    ok = check_spec_facts()
    print("spec facts reproduced:", ok)
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print("fixtures: %d files, %d bytes" % (len(os.listdir(OUT)), total))


if __name__ == "__main__":
    main()
