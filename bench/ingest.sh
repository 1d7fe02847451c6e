#!/usr/bin/env bash
# bench/ingest.sh: end-to-end `evident ingest` throughput with the default (hashed TF-IDF) embedder.
#   bench/ingest.sh [BUILD_DIR]          both corpora: SciFact (one file per abstract) and 200 MB of generated text
#   CORPUS=scifact|generated bench/ingest.sh
#   GEN_MB=200 TMP=/tmp bench/ingest.sh
#   DATA=/tmp/ingest-data bench/ingest.sh   keep the written-out corpora in DATA and reuse them (same inputs across
#                                           builds); BIN=path/to/evident overrides BUILD_DIR's binary
#   PROFILE=1 bench/ingest.sh               also print the run's EVIDENT_INGEST_PROFILE line (writer/FTS thread CPU)
# Prints one line per corpus: files, MB, chunks, wall seconds, MB/s, chunks/s, CPU seconds (user+sys) and the load
# average at the start (the numbers are only comparable on an otherwise idle machine). Record results in
# bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-${BUILD_DIR:-build}}
BIN=${BIN:-$BUILD/api/evident}
[ -x "$BIN" ] || { echo "bench/ingest: $BIN not built (cmake --build $BUILD --target evident)" >&2; exit 1; }
SCIFACT=${SCIFACT:-../shared/data/beir-scifact/corpus.jsonl}
WORK=$(mktemp -d "${TMP:-/tmp}/evident-bench-ingest.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
GEN_MB=${GEN_MB:-200}
CORPUS=${CORPUS:-all}

make_scifact() {
  [ -f "$SCIFACT" ] || { echo "bench/ingest: missing $SCIFACT" >&2; exit 1; }
  python3 - "$SCIFACT" "$1" <<'PY'
import json, os, sys
src, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
for line in open(src, encoding="utf-8"):
    d = json.loads(line)
    with open(os.path.join(out, d["_id"] + ".txt"), "w", encoding="utf-8") as f:
        f.write(d.get("title", "") + "\n\n" + d["text"] + "\n")
PY
}

# Generated corpus: 50-200 KB files of sentences drawn from SciFact's vocabulary (word frequencies kept), with
# paragraph breaks, so tokenisation, sentence segmentation and FTS see realistic English-like text.
make_generated() {
  python3 - "$SCIFACT" "$1" "$GEN_MB" <<'PY'
import json, os, random, sys
src, out, mb = sys.argv[1], sys.argv[2], int(sys.argv[3])
words = []
for line in open(src, encoding="utf-8"):
    words.extend(json.loads(line)["text"].split())
    if len(words) > 2_000_000: break
rng = random.Random(42)
os.makedirs(out, exist_ok=True)
total, i = 0, 0
target = mb * 1_000_000
while total < target:
    size = rng.randint(50_000, 200_000)
    parts, n = [], 0
    while n < size:
        k = rng.randint(8, 30)
        s = " ".join(words[rng.randrange(len(words))] for _ in range(k))
        s = s[0].upper() + s[1:] + ". "
        if rng.random() < 0.15: s += "\n\n"
        parts.append(s); n += len(s)
    text = "".join(parts)
    sub = os.path.join(out, f"g{i // 200:03d}")
    os.makedirs(sub, exist_ok=True)
    with open(os.path.join(sub, f"doc{i:05d}.txt"), "w", encoding="utf-8") as f:
        f.write(text)
    total += len(text.encode()); i += 1
PY
}

run() {  # name dir
  local name=$1 dir=$2 store=$WORK/store-$1
  local files mb load
  files=$(find "$dir" -type f | wc -l)
  mb=$(du -sb "$dir" | awk '{printf "%.1f", $1/1e6}')
  load=$(cut -d' ' -f1 /proc/loadavg)
  sync
  EVIDENT_INGEST_PROFILE=${PROFILE:-0} /usr/bin/time -f "%e %U %S" -o "$WORK/time" "$BIN" ingest "$dir" --store "$store" \
    --json > "$WORK/out.json" 2> "$WORK/err" || { echo "bench/ingest.sh: evident ingest failed on $name:" >&2
                                                   cat "$WORK/err" >&2; exit 1; }
  grep -h "ingest profile" "$WORK/err" || true
  python3 - "$name" "$files" "$mb" "$load" "$WORK/out.json" "$WORK/time" <<'PY'
import json, sys
name, files, mb, load, out, tm = sys.argv[1:]
j = json.load(open(out)); wall, user, sys_ = map(float, open(tm).read().split()[-3:])
mbytes = j["bytes"] / 1e6
print(f"{name}: {files} files, {mbytes:.1f} MB, {j['chunks']} chunks, {wall:.1f} s wall, "
      f"{mbytes / wall:.1f} MB/s, {j['chunks'] / wall:.0f} chunks/s, {user + sys_:.1f} s CPU "
      f"({mbytes / (user + sys_):.1f} MB per CPU-second), load {load} at start")
PY
  rm -rf "$store"
}

DATA=${DATA:-$WORK}
if [ "$CORPUS" = all ] || [ "$CORPUS" = scifact ]; then
  [ -d "$DATA/scifact" ] || { make_scifact "$DATA/scifact.tmp" && mv "$DATA/scifact.tmp" "$DATA/scifact"; }
  run scifact "$DATA/scifact"
fi
if [ "$CORPUS" = all ] || [ "$CORPUS" = generated ]; then
  [ -d "$DATA/generated-${GEN_MB}MB" ] || { make_generated "$DATA/g.tmp" && mv "$DATA/g.tmp" "$DATA/generated-${GEN_MB}MB"; }
  run "generated-${GEN_MB}MB" "$DATA/generated-${GEN_MB}MB"
fi
