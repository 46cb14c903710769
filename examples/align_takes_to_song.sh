#!/usr/bin/env bash
# Align every take in a folder to one song; resumable (run it again after a crash or from cron).
#
#   examples/align_takes_to_song.sh TAKES_DIR SONG OUT_DIR [JOBS]
#
# Writes OUT_DIR/<take>.mp4 for every video in TAKES_DIR and OUT_DIR/results.jsonl (one JSON line
# per take). Takes that fail are listed at the end; fix or drop them and run the script again:
# finished takes are skipped.
set -uo pipefail
takes=${1:?usage: $0 TAKES_DIR SONG OUT_DIR [JOBS]}
song=${2:?usage: $0 TAKES_DIR SONG OUT_DIR [JOBS]}
out=${3:?usage: $0 TAKES_DIR SONG OUT_DIR [JOBS]}
jobs=${4:-2}
mkdir -p "$out"

avsync batch --command align --video-dir "$takes" --audio "$song" -o "$out" \
  --jobs "$jobs" --results "$out/results.jsonl" --resume
status=$?

# The last record of each take decides; list the ones that failed.
python3 - "$out/results.jsonl" <<'PY'
import json, sys
last = {}
for line in open(sys.argv[1]):
    try:
        r = json.loads(line)
    except ValueError:
        continue
    last[r["id"]] = r
bad = [r for r in last.values() if r["status"] != "ok"]
for r in bad:
    print(f"FAILED {r['inputs'][0]}: {r['error']}")
print(f"{len(last) - len(bad)} aligned, {len(bad)} failed")
PY
exit $status
