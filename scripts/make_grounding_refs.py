"""Reference fixtures for the grounding section of kosmos2.h ([11] GROUNDING, parts/grounding.h).

Run from the repository root:
    . /opt/kosmos2-ref/env.sh && $PY scripts/make_grounding_refs.py

Ground truth is transformers' Kosmos2Processor (processing_kosmos2.py, transformers ~4.41 source tree in
/opt/kosmos2-ref), built from the REAL tokenizer ../shared/assets/sentencepiece.bpe.model with the slow
XLMRobertaTokenizer (the only one available here; it encodes like the fast one on these prompts, and the
§5.4 "Two puppies" ids of KOSMOS2-SPEC.md are asserted below).

Files written to tests/fixtures/grounding/ (line-based so the C test reads them without a JSON parser):

  post_process.txt  one record per markup string:
      case<TAB><name><TAB><input>
      raw<TAB><processor.post_process_generation(text, cleanup_and_extract=False)>
      caption<TAB><clean text>          or   error<TAB><Python exception name>
      entity<TAB><name><TAB><start><TAB><end><TAB><n_boxes>{<TAB>x1<TAB>y1<TAB>x2<TAB>y2}*   (0..n lines)
      end
    from processor.post_process_generation(text, cleanup_and_extract=True). Strings are the UTF-8 bytes
    (invalid bytes via Python's 'surrogateescape') with every byte outside 0x20..0x7e and the backslash
    written as \\xHH. Spans are Python's (code points). Box coordinates are float.hex() (exact doubles; C
    strtod reads them). Inputs: hand-written edge cases, the official snowman outputs (KOSMOS2-SPEC.md §8.2,
    decoded from the official ids with the fast tokenizer's decode rules of §6.4 and checked against the
    official expected caption/entities), generated well-formed markup, random tag soup, truncations.

  referring.txt  one record per (prompt, bboxes):
      case<TAB><name><TAB><prompt>
      phrases<TAB><k>                    k = len(bboxes); -1 for bboxes=None
      group<TAB>none | group<TAB>f<TAB><n>{<TAB>x1<TAB>y1<TAB>x2<TAB>y2}* | group<TAB>p<TAB><n>{<TAB>ul<TAB>lr}*
      text<TAB><processor._insert_patch_index_tokens(prompt, bboxes)>   or   error<TAB><exception name>
      pre<TAB><processor.preprocess_examples(prompt, None, bboxes)>     (adds the prompt.strip())
      ids<TAB><processor(text=prompt, bboxes=bboxes)["input_ids"]>       (text only, "<s>" prepended)
      ids_eos<TAB><processor(text=prompt, bboxes=bboxes, add_eos_token=True)["input_ids"]>
      ids_img<TAB><processor(text=prompt, images=<8x8 black RGB>, bboxes=bboxes)["input_ids"]> (with the
               <image> tags, placeholder ids 4..67 and the prompt.strip(): what kosmos2_generate feeds)
      end
    The ids come from the slow tokenizer with the real spm model; they are for the end-to-end checks of the
    tokenizer owner / lead (the grounding tests only compare text).

A larger random differential check (not committed; same formats, no ids):
    $PY scripts/make_grounding_refs.py --random 20000 /tmp/gr/ [SEED]
    KOSMOS2_GROUNDING_FIXTURES=/tmp/gr/ ./build/test grounding_
"""
import math
import os
import random
import re
import sys

from PIL import Image
from transformers import CLIPImageProcessor, Kosmos2Processor, XLMRobertaTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "grounding")
SPM = os.path.join(ROOT, "..", "shared", "assets", "sentencepiece.bpe.model")

tok = XLMRobertaTokenizer(SPM)
DUMMY_IMAGE = Image.new("RGB", (8, 8))  # only for the ids of the image layout (ids_img)
proc = Kosmos2Processor(CLIPImageProcessor(), tok)


def esc(s):
    """str (may hold surrogate escapes) -> one-line ASCII field."""
    out = []
    for b in s.encode("utf-8", "surrogateescape"):
        if 0x20 <= b <= 0x7E and b != 0x5C:
            out.append(chr(b))
        else:
            out.append("\\x%02x" % b)
    return "".join(out)


def fast_decode(ids):
    """KOSMOS2-SPEC.md §6.4: what the fast tokenizer's batch_decode(skip_special_tokens=True) returns."""
    toks = tok.convert_ids_to_tokens([i for i in ids if i not in (0, 1, 2, 3, 64001)])
    s = "".join(t.replace("\u2581", "") if k == 0 else t.replace("\u2581", " ") for k, t in enumerate(toks))
    for a, b in [(" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                 (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")]:
        s = s.replace(a, b)
    return s


# ---------------------------------------------------------------------------------------------------
# Official snowman facts (transformers tests/models/kosmos2/test_modeling_kosmos2.py, KOSMOS2-SPEC.md §8.2)
IMG = list(range(4, 68))
SHORT_IDS = [0, 64003] + IMG + [64004, 64012, 712, 1648, 9, 64007, 10, 43867, 64008, 64009, 64057, 64876,
                                 64010, 5950, 597, 32, 64007, 10, 646, 64008, 64009, 64018, 64924, 64010, 4, 2]
LONG_IDS = [0, 64003] + IMG + [64004, 64012, 34645, 247, 38, 1648, 12, 3391, 55, 24, 1648, 1338, 10, 43867,
    1280, 32, 64007, 10, 30879, 64008, 64009, 64018, 65020, 64010, 12, 5, 1842, 4, 71, 17, 1679, 64007, 10,
    3958, 64008, 64009, 64061, 64263, 64010, 6, 64007, 15719, 64008, 64009, 64253, 64617, 64010, 6, 8, 64007,
    9626, 64008, 64009, 64413, 64545, 64010, 6, 23, 64007, 10, 4363, 64008, 64009, 64623, 64885, 64010, 2255,
    8, 64007, 10, 3486, 64008, 64009, 64809, 65036, 64010, 1560, 2255, 4, 24, 43867, 1684, 7, 27, 3774, 5,
    10356, 9, 5, 646, 6, 8, 22, 1684, 7, 30, 10, 2007, 8, 16239, 4337, 4, 2]
SHORT_TEXT = fast_decode(SHORT_IDS)
LONG_TEXT = fast_decode(LONG_IDS)
assert proc.post_process_generation(SHORT_TEXT) == (
    "An image of a snowman warming himself by a fire.",
    [("a snowman", (12, 21), [(0.390625, 0.046875, 0.984375, 0.828125)]),
     ("a fire", (41, 47), [(0.171875, 0.015625, 0.484375, 0.890625)])])
assert proc.post_process_generation(LONG_TEXT) == (
    "Describe this image in detail: The image features a snowman sitting by a campfire in the snow. He is "
    "wearing a hat, scarf, and gloves, with a pot nearby and a cup placed nearby. The snowman appears to be "
    "enjoying the warmth of the fire, and it appears to have a warm and cozy atmosphere.",
    [("a campfire", (71, 81), [(0.171875, 0.015625, 0.484375, 0.984375)]),
     ("a hat", (109, 114), [(0.515625, 0.046875, 0.828125, 0.234375)]),
     ("scarf", (116, 121), [(0.515625, 0.234375, 0.890625, 0.578125)]),
     ("gloves", (127, 133), [(0.515625, 0.390625, 0.640625, 0.515625)]),
     ("a pot", (140, 145), [(0.078125, 0.609375, 0.265625, 0.859375)]),
     ("a cup", (157, 162), [(0.890625, 0.765625, 0.984375, 0.984375)])])

# ---------------------------------------------------------------------------------------------------
# post_process_generation cases
P = "<patch_index_%04d>"


def obj(*pairs):
    return "<object>" + "</delimiter_of_multi_objects/>".join(P % a + P % b for a, b in pairs) + "</object>"


def sb(b):  # bytes -> str with surrogate escapes
    return b.decode("utf-8", "surrogateescape")


CASES = [
    ("snowman_short_full", SHORT_TEXT),
    ("snowman_short_processed", SHORT_TEXT.split("</image>")[-1]),
    ("snowman_long_full", LONG_TEXT),
    ("empty", ""),
    ("plain", "just a caption"),
    ("image_only", "</image>"),
    ("several_image_tags", "a</image>b</image><phrase> c</phrase>" + obj((1, 66)) + " d</image> e<phrase> f</phrase>" + obj((33, 34))),
    ("multi_box_phrase", "<grounding> Two<phrase> dogs</phrase>" + obj((79, 1016), (135, 1008)) + " play."),
    ("three_boxes", "<phrase>cats</phrase>" + obj((0, 1023), (5, 5), (40, 47))),
    ("phraseless", "<grounding> A<object><patch_index_0044><patch_index_0863></object> thing."),
    ("phraseless_multi", "x <object>" + P % 7 + P % 900 + "</delimiter_of_multi_objects/>" + P % 12 + P % 12 + "</object> y"),
    ("phraseless_unpadded", "<object><patch_index_44><patch_index_0863></object>"),
    ("space_before_object", "<phrase> a dog</phrase> <object><patch_index_0001><patch_index_0066></object>"),
    ("unicode", "Ein Bild von<phrase> einem Schneemann \u2603</phrase>" + obj((44, 863)) + " \u2014 \u65e5\u672c\u8a9e<phrase> \u72ac</phrase>" + obj((3, 99)) + "."),
    ("astral", "\U0001F600\U0001F600<phrase> \U0001F436 dog</phrase>" + obj((100, 300)) + " \U0001F525"),
    ("leading_trailing_spaces", "   <phrase>  a cat  </phrase>" + obj((64, 200)) + "   "),
    ("unicode_whitespace", "\u3000\u00a0 text <phrase>\u2003x\u2028</phrase>" + obj((10, 20)) + "\x1c\x85"),
    ("zero_width_space", "\u200b<phrase>\u200bx\u200b</phrase>" + obj((10, 20)) + "\u200b"),
    ("whitespace_only_phrase", "a <phrase>   </phrase>" + obj((10, 20)) + " b"),
    ("nested_phrase", "<phrase><phrase> a</phrase>" + obj((1, 2)) + "</phrase>"),
    ("unclosed_phrase", "<phrase> a dog" + obj((1, 2)) + " z"),
    ("lone_index", "<object><patch_index_0044></object> and <patch_index_0044>"),
    ("trailing_delimiter", "<object>" + P % 1 + P % 2 + "</delimiter_of_multi_objects/></object>"),
    ("out_of_range", "<phrase> big</phrase><object><patch_index_5000><patch_index_99999></object>"),
    ("edge_1023_1024", "<phrase> e</phrase><object><patch_index_1023><patch_index_1024></object>"),
    ("same_row", "<phrase> r</phrase>" + obj((32, 40))),
    ("same_col", "<phrase> c</phrase>" + obj((33, 993))),
    ("same_cell", "<phrase> s</phrase>" + obj((500, 500))),
    ("reversed", "<phrase> v</phrase>" + obj((900, 10))),
    ("long_leading_zeros", "<phrase> z</phrase><object><patch_index_00000000000000000044><patch_index_0000000000863></object>"),
    ("big_30_digits", "<object><patch_index_123456789012345678901234567890><patch_index_98765432109876543210987654321></object>"),
    ("big_300_digits", "<object><patch_index_" + "9" * 300 + "><patch_index_" + "1" * 300 + "></object>"),
    ("overflow_320_digits", "<phrase> o</phrase><object><patch_index_" + "9" * 320 + "><patch_index_1></object>"),
    ("too_many_digits", "<object><patch_index_" + "0" * 4301 + "><patch_index_1></object>"),
    ("unicode_digits", "<phrase> u</phrase><object><patch_index_\u0664\u0664><patch_index_\u0668\u0666\u0663></object>"),
    ("unicode_digits_phraseless", "<object><patch_index_\uff14\uff14><patch_index_\U0001D7D8\U0001D7E1></object>"),
    ("newline_in_tag", "<a\nb> text <phrase> x\ny</phrase>" + obj((5, 6)) + "\n<c>\n"),
    ("newline_tag_name", "<phrase\n> q</phrase>" + obj((5, 6))),
    ("angle_soup", "<> < > << >> <<a>> a<b <c>d> e"),
    ("straddle", "a <b<object><patch_index_0001><patch_index_0002></object> c"),
    ("straddle_newline", "a <b\n<object><patch_index_0001><patch_index_0002></object> c"),
    ("consecutive_objects", "<phrase> a</phrase>" + obj((1, 2)) + obj((3, 4)) + "<phrase> b</phrase>" + obj((5, 6))),
    ("invalid_utf8", sb(b"\xff<phrase> \xc3</phrase>") + obj((1, 40)) + sb(b"\xa9 \xed\xa0\x80 \xf4\x90\x80\x80")),
    ("joined_escapes", sb(b"\xc3<a>\xa9 <phrase> x\xe2\x82</phrase>") + obj((1, 40)) + sb(b"\xc2<b>\xa0")),
    ("truncated_utf8_end", "caf\u00e9 <phrase> x</phrase>" + obj((1, 40)) + sb(b" \xe6\x97")),
    ("tags_only", "<grounding><phrase></phrase><object></object></image>"),
    ("ascii_separators_ws", "\x1d\x1e\x1f\x0b\x0c\r text <phrase>\x1f y \x1d</phrase>" + obj((2, 70)) + "\x1f"),
    ("non_space_lookalikes", "\u180e\ufeff<phrase>\u180e a\ufeff</phrase>" + obj((2, 70)) + "\u180e"),
    ("invalid_before_phrase", sb(b"\xed\xa0\x80\xed\xbf\xbf \xe0\x80\x80 \xf0\x80\x80\x80 \xc0\xaf \xf4\x90\x80\x80 \xf5<phrase> q</phrase>") + obj((1, 2))),
    ("math_digits", "<object><patch_index_\U0001D7CE\U0001D7CF><patch_index_\U0001D7FF\U0001FBF9></object>"),
    ("eos_tags", "<grounding> A cat</s><pad><phrase> x</phrase>" + obj((1, 40)) + "</doc>"),
]

rng = random.Random(1234)
WORDS = [" a", " dog", "cat ", "\u00e9", "\u65e5", "\U0001F600", "  ", "\n", "\u3000", "\u00a0", ".", "x", "\t", "1", "\u0664"]
TAGS = ["<phrase>", "</phrase>", "<object>", "</object>", "</delimiter_of_multi_objects/>", "<grounding>",
        "</image>", "<image>", "<", ">", "<patch_index_", "<patch_index_0044>", "<patch_index_12>",
        "<patch_index_1023>", "<patch_index_7777>", "<patch_index_\u0664\u0665>", "<x\n>", "<>"]
for i in range(150):
    parts = []
    for _ in range(rng.randint(1, 25)):
        r = rng.random()
        if r < 0.45:
            parts.append(rng.choice(TAGS))
        elif r < 0.8:
            parts.append(rng.choice(WORDS))
        else:  # a well-formed (or nearly) entity
            n = rng.randint(1, 3)
            pairs = [(rng.randint(0, 1100), rng.randint(0, 1100)) for _ in range(n)]
            s = obj(*pairs)
            if rng.random() < 0.7:
                s = "<phrase>" + rng.choice(WORDS) + rng.choice(WORDS) + "</phrase>" + s
            if rng.random() < 0.15:
                cut = rng.randint(0, len(s))
                s = s[:cut]
            parts.append(s)
    CASES.append(("soup_%03d" % i, "".join(parts)))

for i in range(40):
    parts = [rng.choice(["<grounding>", "", " ", "<grounding> "])]
    for _ in range(rng.randint(1, 6)):
        parts.append("".join(rng.choice(WORDS) for _ in range(rng.randint(0, 4))))
        n = rng.randint(1, 4)
        pairs = [(rng.randint(0, 1023), rng.randint(0, 1023)) for _ in range(n)]
        name = "".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3))).replace("\n", " ")
        if rng.random() < 0.8:
            parts.append("<phrase>" + name + "</phrase>")
        parts.append(obj(*pairs))
    parts.append(rng.choice([".", "", " .", "  "]))
    CASES.append(("wellformed_%02d" % i, "".join(parts)))

for cut in range(0, len(SHORT_TEXT), 7):
    CASES.append(("snowman_prefix_%03d" % cut, SHORT_TEXT[:cut]))

names = [c[0] for c in CASES]
assert len(names) == len(set(names))


def fmt_float(x):
    return float(x).hex()


def write_post_process(path, cases):
    with open(path, "w", encoding="ascii") as f:
        f.write("# made by scripts/make_grounding_refs.py (see its docstring); do not edit\n")
        for name, text in cases:
            # the C side sees bytes: the string must survive a round trip through them
            assert text.encode("utf-8", "surrogateescape").decode("utf-8", "surrogateescape") == text, name
            f.write("case\t%s\t%s\n" % (name, esc(text)))
            f.write("raw\t%s\n" % esc(proc.post_process_generation(text, cleanup_and_extract=False)))
            try:
                caption, ents = proc.post_process_generation(text)
            except Exception as e:  # ValueError (int digit limit), OverflowError (int too large for float)
                f.write("error\t%s\n" % type(e).__name__)
            else:
                f.write("caption\t%s\n" % esc(caption))
                for ename, (s, e), boxes in ents:
                    fields = [esc(ename), str(s), str(e), str(len(boxes))]
                    for b in boxes:
                        fields += [fmt_float(v) for v in b]
                    f.write("entity\t%s\n" % "\t".join(fields))
            f.write("end\n")


# ---------------------------------------------------------------------------------------------------
# referring (bboxes=) cases
TWO = "<grounding> <phrase> Two puppies </phrase> sit in a field of <phrase> grass </phrase>."
REF = [
    # the four rows of transformers' processor test (KOSMOS2-SPEC.md §5.4)
    ("puppies_no_phrase", "<grounding> Two puppies sit in a field of grass.", None),
    ("puppies_one_phrase_no_box", "<grounding> <phrase> Two puppies </phrase> sit in a field of grass.", [None]),
    ("puppies_one_phrase_one_box", "<grounding> <phrase> Two puppies </phrase> sit in a field of grass.", [(79, 1016)]),
    ("puppies_two_phrases", TWO, [[(79, 1016), (135, 1008)], (480, 1023)]),
    ("floats_snowman", "<grounding> An image of<phrase> a snowman</phrase> warming himself by<phrase> a fire</phrase>.",
     [(0.390625, 0.046875, 0.984375, 0.828125), (0.171875, 0.015625, 0.484375, 0.890625)]),
    ("floats_full_image", "<phrase>it</phrase>", [(0.0, 0.0, 1.0, 1.0)]),
    ("floats_multi", TWO, [[(0.1, 0.2, 0.3, 0.4), (0.5, 0.5, 0.9, 0.99)], [(0.03125, 0.0625, 0.09375, 0.125)]]),
    ("floats_outside", "<phrase> x</phrase> and <phrase> y</phrase>", [(-0.5, -0.25, 0.25, 1.5), (1.5, 2.0, 3.0, 4.0)]),
    ("floats_tiny", "<phrase> x</phrase>", [(0.5, 0.5, 0.5000001, 0.5000001)]),
    ("empty_list_group", TWO, [[], (1, 2)]),
    ("none_groups", TWO, [None, None]),
    ("empty_bboxes", TWO, []),
    ("no_bboxes_with_phrases", TWO, None),
    ("count_mismatch", TWO, [(1, 2)]),
    ("count_mismatch_more", "<phrase> a</phrase>", [(1, 2), (3, 4)]),
    ("bad_box_x", "<phrase> a</phrase>", [(0.5, 0.1, 0.5, 0.9)]),
    ("bad_box_y", "<phrase> a</phrase>", [(0.1, 0.9, 0.5, 0.2)]),
    ("bad_box_nan", "<phrase> a</phrase>", [(float("nan"), 0.1, 0.5, 0.9)]),
    ("raw_pairs_odd", "<phrase> a</phrase>", [[(-5, 12345), (0, 7)]]),
    ("unicode_prompt", " \u65e5\u672c<phrase> \u72ac \U0001F436</phrase>\u3000caf\u00e9 <phrase>\u00e9t\u00e9</phrase> ",
     [(0.2, 0.2, 0.6, 0.7), [(0.0, 0.5, 0.5, 1.0), (0.5, 0.0, 1.0, 0.5)]]),
    ("newline_in_phrase", "<phrase> a\nb</phrase> <phrase> c</phrase>", [(1, 2)]),
    ("lazy_empty_phrase", "<phrase></phrase>x</phrase> end", [(3, 4)]),
    ("unclosed_phrase", "<phrase> a <phrase> b</phrase>", [(3, 4)]),
    ("adjacent_phrases", "<phrase>a</phrase><phrase>b</phrase>", [(1, 2), (3, 4)]),
    ("text_after_last", "  <phrase> a</phrase> tail  ", [(0.25, 0.25, 0.75, 0.75)]),
    ("spaces_kept", "\t<phrase>  spaced  </phrase>\n", [(0.25, 0.25, 0.75, 0.75)]),
]
for i in range(20):
    n = rng.randint(1, 4)
    prompt = "<grounding>"
    boxes = []
    for k in range(n):
        prompt += rng.choice([" the", " a big", " \u00e9l\u00e8ve", ""]) + "<phrase>" + rng.choice([" dog", " cat ", "x", " \u72ac"]) + "</phrase>"
        g = []
        for _ in range(rng.randint(0, 3)):
            x1, x2 = sorted(rng.random() for _ in range(2))
            y1, y2 = sorted(rng.random() for _ in range(2))
            if x2 > x1 and y2 > y1:
                g.append((x1, y1, x2, y2))
        boxes.append(g if len(g) != 1 or rng.random() < 0.5 else g[0])
    prompt += rng.choice([".", "", " on the grass."])
    REF.append(("random_%02d" % i, prompt, boxes))

check = proc(text=TWO, bboxes=[[(79, 1016), (135, 1008)], (480, 1023)], add_eos_token=True)["input_ids"]
assert check == [0, 64012, 64007, 1264, 17772, 64008, 64009, 64092, 65029, 64011, 64148, 65021, 64010, 1357,
                 12, 10, 770, 9, 64007, 4464, 64008, 64009, 64493, 65036, 64010, 106, 4, 2], check


def group_line(g):
    if g is None:
        return "group\tnone"
    if isinstance(g, tuple):
        g = [g]
    if len(g) and len(g[0]) == 2:
        return "group\tp\t%d\t%s" % (len(g), "\t".join("%d\t%d" % b for b in g))
    return "group\tf\t%d%s" % (len(g), "".join("\t" + "\t".join(fmt_float(v) for v in b) for b in g))


def write_referring(path, ref, with_ids=True):
    with open(path, "w", encoding="ascii") as f:
        f.write("# made by scripts/make_grounding_refs.py (see its docstring); do not edit\n")
        for name, prompt, boxes in ref:
            f.write("case\t%s\t%s\n" % (name, esc(prompt)))
            f.write("phrases\t%d\n" % (-1 if boxes is None else len(boxes)))
            for g in boxes or []:
                f.write(group_line(g) + "\n")
            try:
                text = proc._insert_patch_index_tokens(prompt, boxes)
            except Exception as e:
                f.write("error\t%s\n" % type(e).__name__)
            else:
                f.write("text\t%s\n" % esc(text))
                if with_ids:
                    f.write("pre\t%s\n" % esc(proc.preprocess_examples(prompt, None, boxes)))
                    f.write("ids\t%s\n" % " ".join(map(str, proc(text=prompt, bboxes=boxes)["input_ids"])))
                    f.write("ids_eos\t%s\n" % " ".join(
                        map(str, proc(text=prompt, bboxes=boxes, add_eos_token=True)["input_ids"])))
                    f.write("ids_img\t%s\n" % " ".join(
                        map(str, proc(text=prompt, images=DUMMY_IMAGE, bboxes=boxes)["input_ids"])))
            f.write("end\n")


def random_tables(n, seed):
    """Many random tag-soup / referring cases (for --random; not committed)."""
    rng = random.Random(seed)
    fr = ["<phrase>", "</phrase>", "<object>", "</object>", "</delimiter_of_multi_objects/>", "<patch_index_",
          "<patch_index_0044>", "<patch_index_1>", "<patch_index_99999>", ">", "<", "\n", " ", "\u3000", "\u00a0",
          "\udcff", "\udcc3", "\udca9", "7", "</image>", "<grounding>", " a dog", "\u65e5", "<>", "<x\n>", "\u0664",
          "\x1c", "\t", "\U0001F600", "<patch_index_0044><patch_index_0863>",
          "<object><patch_index_0001><patch_index_0002></object>", "<phrase> z</phrase>"]
    cases = []
    for i in range(n):
        s = "".join(rng.choice(fr) for _ in range(rng.randint(0, 40)))
        cases.append(("r%d" % i, s.encode("utf-8", "surrogateescape").decode("utf-8", "surrogateescape")))
    rf = ["<phrase>", "</phrase>", "\n", " a", "x", "<", "\u00e9", "<phrase></phrase>", "</phrase></phrase>",
          "<phrase> b</phrase>"]
    ref = []
    for i in range(n // 4):
        s = "".join(rng.choice(rf) for _ in range(rng.randint(0, 15)))
        k = max(0, len(re.findall(r"<phrase>.+?</phrase>", s)) + (rng.choice([-1, 1]) if rng.random() < 0.2 else 0))
        boxes = []
        for _ in range(k):
            r = rng.random()
            if r < 0.2:
                boxes.append(None)
            elif r < 0.5:
                boxes.append((rng.randint(-50, 2000), rng.randint(0, 1100)))
            else:
                g = []
                for _ in range(rng.randint(0, 3)):
                    x1, y1 = rng.uniform(-0.2, 1.2), rng.uniform(-0.2, 1.2)
                    g.append((x1, y1, x1 + rng.choice([rng.uniform(-0.1, 1), 0.0, 1e-9]), y1 + rng.uniform(-0.1, 1)))
                boxes.append(g)
        ref.append(("q%d" % i, s, None if rng.random() < 0.1 else boxes))
    return cases, ref


if len(sys.argv) >= 3 and sys.argv[1] == "--random":
    # Differential check beyond the committed table:
    #   $PY scripts/make_grounding_refs.py --random 20000 /tmp/gr [SEED]
    #   KOSMOS2_GROUNDING_FIXTURES=/tmp/gr/ ./build/test grounding_   (the minimum-count checks only
    #   apply to the committed fixtures)
    n, out = int(sys.argv[2]), sys.argv[3]
    os.makedirs(out, exist_ok=True)
    cases, ref = random_tables(n, int(sys.argv[4]) if len(sys.argv) > 4 else 7)
    write_post_process(os.path.join(out, "post_process.txt"), cases)
    write_referring(os.path.join(out, "referring.txt"), ref, with_ids=False)
    print("wrote %d random post-process cases, %d referring cases to %s" % (len(cases), len(ref), out))
    sys.exit(0)

write_post_process(os.path.join(OUT, "post_process.txt"), CASES)
write_referring(os.path.join(OUT, "referring.txt"), REF)
print("wrote %d post-process cases, %d referring cases to %s" % (len(CASES), len(REF), OUT))
