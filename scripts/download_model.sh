#!/bin/sh
# scripts/download_model.sh [DIR] - fetch microsoft/kosmos-2-patch14-224 and run the snowman demo.
#
#   1. builds build/kosmos2 (make),
#   2. downloads config.json, model.safetensors (about 6.66 GB), sentencepiece.bpe.model,
#      preprocessor_config.json and the model card's snowman.jpg from the Hugging Face hub
#      (https://huggingface.co/microsoft/kosmos-2-patch14-224/resolve/main/<file>) into DIR
#      (default models/kosmos-2-patch14-224), with curl (or wget),
#   3. runs: build/kosmos2 -m DIR --image DIR/snowman.jpg -o snowman_annotated.png
#
# Downloads go to <file>.part and are resumed (curl -C - / wget -c) when interrupted; a file is
# renamed to its final name only when complete, so a file present under its final name is skipped.
# When the hub is reachable the size of a present file is also compared with the hub's (HTTP HEAD:
# x-linked-size for LFS files, else content-length); a file of another size is renamed to
# <file>.stale and fetched again. Offline, present files are used as they are.
#
# Without network: if every file is already in DIR the demo just runs; otherwise the script says
# which files are missing and exits with status 1. To use a copy you already have:
#     make demo MODEL=/path/to/kosmos-2-patch14-224     (or: scripts/download_model.sh /path/to/it)
#
# Environment: KOSMOS2_OFFLINE=1 never touches the network (only present files are used);
#              KOSMOS2_DEMO_OUT=FILE.png writes the annotated image elsewhere (default
#              snowman_annotated.png in the current directory);
#              KOSMOS2_BIN=PROGRAM runs that kosmos2 binary instead of building build/kosmos2.
set -eu

REPO_URL="https://huggingface.co/microsoft/kosmos-2-patch14-224/resolve/main"
FILES="config.json preprocessor_config.json sentencepiece.bpe.model snowman.jpg model.safetensors"
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=${1:-models/kosmos-2-patch14-224}
OUT=${KOSMOS2_DEMO_OUT:-snowman_annotated.png}
OFFLINE=${KOSMOS2_OFFLINE:-0}

say() { echo "download_model: $*" >&2; }

# Sizes we know for sure (from the hub's file listing), to check a download when HEAD gives none.
known_size() {
    case "$1" in
        preprocessor_config.json) echo 534 ;;
        *) echo "" ;;
    esac
}

file_size() { wc -c < "$1" | tr -d ' '; }

# Is the hub reachable? Asked once (a HEAD request for config.json); never with KOSMOS2_OFFLINE=1.
HUB=unknown
hub_reachable() {
    if [ "$HUB" = unknown ]; then
        HUB=no
        if [ "$OFFLINE" != 1 ]; then
            if command -v curl >/dev/null 2>&1; then
                curl -sfIL --connect-timeout 10 --max-time 30 "$REPO_URL/config.json" >/dev/null 2>&1 && HUB=yes
            elif command -v wget >/dev/null 2>&1; then
                wget -q --spider --timeout=30 "$REPO_URL/config.json" >/dev/null 2>&1 && HUB=yes
            fi
        fi
    fi
    [ "$HUB" = yes ]
}

# The hub's size of a file (HEAD, following the redirect), or "" when it cannot be told.
remote_size() {
    url="$REPO_URL/$1"
    if command -v curl >/dev/null 2>&1; then
        headers=$(curl -sIL --connect-timeout 10 --max-time 30 "$url" 2>/dev/null || true)
    else
        headers=$(wget -q -S --spider --timeout=30 "$url" 2>&1 || true)
    fi
    size=$(printf '%s\n' "$headers" | tr -d '\r' | awk 'tolower($1) == "x-linked-size:" { print $2; exit }')
    if [ -z "$size" ]; then
        size=$(printf '%s\n' "$headers" | tr -d '\r' | awk 'tolower($1) == "content-length:" { v = $2 } END { print v }')
    fi
    echo "$size"
}

# Download (resuming a .part file) to its final name.
fetch() {
    name=$1 expect=$2
    url="$REPO_URL/$name"
    part="$DIR/$name.part"
    say "fetching $name${expect:+ ($expect bytes)}"
    if command -v curl >/dev/null 2>&1; then
        curl -fL --connect-timeout 10 --retry 3 -C - -o "$part" "$url" || return 1
    elif command -v wget >/dev/null 2>&1; then
        wget -q --show-progress -c -O "$part" "$url" || return 1
    else
        say "neither curl nor wget is installed"
        return 1
    fi
    if [ -n "$expect" ] && [ "$(file_size "$part")" != "$expect" ]; then
        say "$name: got $(file_size "$part") bytes, expected $expect; run again to resume"
        return 1
    fi
    mv "$part" "$DIR/$name"
}

BIN=${KOSMOS2_BIN:-}
if [ -z "$BIN" ]; then
    make -s -C "$ROOT" build/kosmos2 >&2
    BIN="$ROOT/build/kosmos2"
fi
mkdir -p "$DIR"

missing=""
for name in $FILES; do
    expect=$(known_size "$name")
    if [ -f "$DIR/$name" ]; then
        have=$(file_size "$DIR/$name")
        remote=""
        hub_reachable && remote=$(remote_size "$name")
        if [ -z "$remote" ] || [ "$have" = "$remote" ]; then
            say "$name: present ($have bytes${remote:+, as on the hub}), skipped"
            continue
        fi
        say "$name: $have bytes but the hub has $remote; keeping it as $name.stale and fetching it again"
        mv "$DIR/$name" "$DIR/$name.stale"
        expect=$remote
    fi
    if ! hub_reachable; then missing="$missing $name"; continue; fi
    [ -z "$expect" ] && expect=$(remote_size "$name")
    fetch "$name" "$expect" || missing="$missing $name"
done
if [ -n "$missing" ]; then
    if [ "$HUB" = yes ]; then
        say "could not fetch$missing into $DIR; run again to resume, or use a local copy: make demo MODEL=/path/to/kosmos-2-patch14-224"
    else
        say "cannot reach huggingface.co (offline?) to fetch$missing into $DIR; copy them there by hand, or use a local copy: make demo MODEL=/path/to/kosmos-2-patch14-224"
    fi
    exit 1
fi

say "running: $BIN -m $DIR --image $DIR/snowman.jpg -o $OUT"
exec "$BIN" -m "$DIR" --image "$DIR/snowman.jpg" -o "$OUT"
