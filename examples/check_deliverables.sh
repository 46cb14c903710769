#!/usr/bin/env bash
# Check a folder of deliverables for audio/picture sync (ITU-R BT.1359 window: audio at most
# 45 ms early, 125 ms late) and list the ones that fail.
#
#   examples/check_deliverables.sh DELIVERABLES_DIR [REPORT_DIR] [JOBS]
#
# REPORT_DIR (default ./sync-report) receives check.jsonl (one measurement per file) and
# failures.txt (one path per line, the input of fix_deliverables.sh). Exit 0 when every file is
# in sync, 1 when some are not (or could not be measured).
set -uo pipefail
dir=${1:?usage: $0 DELIVERABLES_DIR [REPORT_DIR] [JOBS]}
report=${2:-sync-report}
jobs=${3:-2}
mkdir -p "$report"
rm -f "$report/check.jsonl"

# The same measurement as `avsync detect-offset --check FILE`, one worker per job, each file once.
avsync batch --command detect-offset --video-dir "$dir" -O check=true \
  --jobs "$jobs" --results "$report/check.jsonl"
status=$?

python3 - "$report/check.jsonl" "$report/failures.txt" <<'PY'
import json, sys
recs = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
bad = [r for r in recs if r["status"] != "ok"]
with open(sys.argv[2], "w") as f:
    for r in bad:
        f.write(r["inputs"][0] + "\n")
        m = r.get("result") or {}
        how = f"{m['offset_ms']:+.0f} ms" if "offset_ms" in m else "not measured"
        print(f"FAIL  {r['inputs'][0]}  ({how}): {r['error']}")
print(f"{len(recs) - len(bad)} of {len(recs)} in sync; failures listed in {sys.argv[2]}")
PY
exit $status
