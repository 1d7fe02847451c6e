#!/usr/bin/env bash
# bench/ingest-ab.sh: two (or more) builds of `evident ingest` alternated on the same SciFact files, for comparisons
# on this shared 2-core machine, where the host's speed drifts between series: a round runs each binary once, and
# starts only when no other process uses more than 20% of a CPU (waiting up to 200 s).
#   bench/ingest-ab.sh ROUNDS NAME=PATH/TO/evident [NAME=PATH ...]
#   DATA=DIR: where bench/ingest.sh keeps the written-out corpora (DATA=DIR CORPUS=scifact bench/ingest.sh makes
#   DIR/scifact); default /tmp/ingest-data.
# Prints per binary: median / min / max wall seconds, median MB/s, runs at or above 10 MB/s, median CPU seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: bench/ingest-ab.sh ROUNDS NAME=BIN [NAME=BIN ...]" >&2; exit 2; }
ROUNDS=$1; shift
DATA=${DATA:-/tmp/ingest-data}
[ -d "$DATA/scifact" ] || DATA="$DATA" CORPUS=scifact bench/ingest.sh "${BUILD_DIR:-build}" > /dev/null
[ -d "$DATA/scifact" ] || { echo "bench/ingest-ab: $DATA/scifact missing" >&2; exit 1; }
WORK=$(mktemp -d "${TMP:-/tmp}/evident-ingest-ab.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
for r in $(seq 1 "$ROUNDS"); do
  for k in $(seq 1 40); do
    busy=$(ps -eo pcpu=,comm= --sort=-pcpu | awk '$1 > 20 && $2 != "ps"' | head -n 1)
    [ -z "$busy" ] && break
    sleep 5
  done
  for nb in "$@"; do
    name=${nb%%=*}; bin=${nb#*=}
    rm -rf "$WORK/store"; sync
    /usr/bin/time -f "%e %U %S" -o "$WORK/time" "$bin" ingest "$DATA/scifact" --store "$WORK/store" --json \
      > "$WORK/out.json" 2> "$WORK/err" || { echo "bench/ingest-ab: $name failed:" >&2; cat "$WORK/err" >&2; exit 1; }
    echo "$name $(cat "$WORK/time") $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["bytes"])' "$WORK/out.json")" \
      >> "$WORK/results"
  done
done
python3 - "$WORK/results" <<'PY'
import collections, statistics, sys
d = collections.defaultdict(list)
for line in open(sys.argv[1]):
    name, wall, user, sys_, nbytes = line.split()
    d[name].append((float(wall), float(user) + float(sys_), int(nbytes)))
for name, runs in d.items():
    walls = [w for w, _, _ in runs]
    mb = runs[0][2] / 1e6
    med = statistics.median(walls)
    print(f"{name}: {len(runs)} runs, wall median {med:.3f} s (min {min(walls):.3f}, max {max(walls):.3f}), "
          f"{mb / med:.2f} MB/s median, {sum(mb / w >= 10 for w in walls)}/{len(runs)} runs >= 10 MB/s, "
          f"CPU median {statistics.median(c for _, c, _ in runs):.2f} s")
PY
