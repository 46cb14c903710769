#!/usr/bin/env bash
# Fix the files check_deliverables.sh found out of sync: write a copy with the audio re-timed
# (video stream copied, never re-encoded), then check the copies.
#
#   examples/fix_deliverables.sh FAILURES_TXT FIXED_DIR [JOBS]
#
# FAILURES_TXT has one path per line. FIXED_DIR/<name> is written for each (same container);
# FIXED_DIR/fix.jsonl records what was done. Files whose offset cannot be measured with
# confidence are reported, not guessed: fix those by hand with
#   avsync detect-offset FILE --fix OUT --shift-ms MS
set -uo pipefail
failures=${1:?usage: $0 FAILURES_TXT FIXED_DIR [JOBS]}
fixed=${2:?usage: $0 FAILURES_TXT FIXED_DIR [JOBS]}
jobs=${3:-2}
mkdir -p "$fixed"
manifest="$fixed/fix-manifest.jsonl"

# One manifest row per file: detect-offset with an output = measure, then write the fixed copy.
python3 - "$failures" "$fixed" "$manifest" <<'PY'
import json, os, sys
failures, fixed, manifest = sys.argv[1:]
with open(manifest, "w") as m:
    for line in open(failures):
        src = line.strip()
        if src:
            out = os.path.join(os.path.abspath(fixed), os.path.basename(src))
            m.write(json.dumps({"command": "detect-offset", "clip": os.path.abspath(src), "output": out}) + "\n")
PY

avsync batch "$manifest" --jobs "$jobs" --results "$fixed/fix.jsonl" --resume
status=$?

# Verify: the fixed copies must now pass the check.
rm -f "$fixed/verify.jsonl"
avsync batch --command detect-offset --video-dir "$fixed" -O check=true --jobs "$jobs" \
  --results "$fixed/verify.jsonl" || status=1
python3 - "$fixed/verify.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    print(("ok    " if r["status"] == "ok" else "STILL ") + r["inputs"][0] + ("" if r["status"] == "ok" else f": {r['error']}"))
PY
exit $status
