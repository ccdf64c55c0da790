#!/usr/bin/env bash
# Rehearse the Kaggle offline route on this machine, as a Kaggle code competition runs it:
#   1. a fresh Python 3.12 venv with Kaggle's preinstalled stack (constraints/kaggle.txt; online, as the
#      image ships it);
#   2. `pip install --no-index --find-links WHEELHOUSE 'lsdc[dali-cu12]'` with no index and no pip
#      configuration at all (this machine's own find-links and constraints are switched off);
#   3. check that Kaggle's torch is still the one installed;
#   4. `lsdc predict` with the given runs on the given study folder, timed, and the submission compared
#      with a reference one (written by another install) to ATOL.
# Usage: tools/kaggle_rehearsal.sh WHEELHOUSE DATA_DIR RUNS_DIR LOCALIZER_DIR REFERENCE_CSV OUT_DIR
set -euo pipefail
if [ $# -ne 6 ]; then sed -n 2,12p "$0" >&2; exit 2; fi
wheelhouse=$(realpath "$1"); data=$(realpath "$2"); runs=$(realpath "$3"); localizer=$(realpath "$4")
reference=$(realpath "$5"); out=$(realpath -m "$6")
root=$(cd "$(dirname "$0")/.." && pwd)
py=$(make -s -C "$root" --no-print-directory kaggle-python)  # the Makefile's one interpreter lookup
mkdir -p "$out"
venv=$out/venv
rm -rf "$venv"
"$py" -m venv "$venv"
kaggle=$(grep -v '^\s*#' "$root/constraints/kaggle.txt" | sed 's/[=<>!~].*//' | tr '\n' ' ')
echo "== Kaggle's image: $kaggle"
"$venv/bin/pip" install -q -c "$root/constraints/kaggle.txt" $kaggle
torch_before=$("$venv/bin/python" -c 'import torch; print(torch.__version__)')
echo "== offline install from $wheelhouse ($(du -sh "$wheelhouse" | cut -f1))"
env -u PIP_FIND_LINKS -u PIP_CONSTRAINT PIP_CONFIG_FILE=/dev/null \
    "$venv/bin/pip" install -q --no-index --find-links "$wheelhouse" 'lsdc[dali-cu12]'
torch_after=$("$venv/bin/python" -c 'import torch; print(torch.__version__)')
echo "== torch before $torch_before, after $torch_after"
[ "$torch_before" = "$torch_after" ] || { echo "the offline install replaced Kaggle's torch" >&2; exit 1; }
"$venv/bin/python" -c 'import nvidia.dali, zarr, numba, lsdc; print("imports: dali", nvidia.dali.__version__, "zarr", zarr.__version__, "numba", numba.__version__)'
echo "== lsdc predict"
cd "$out"
export NUMBA_CACHE_DIR=$out/numba_cache
start=$(date +%s.%N)
"$venv/bin/lsdc" predict "$data" --split test --runs "$runs"/* --localizer "$localizer" \
    --out "$out/submission.csv" --no-progress | tee "$out/predict.log"
end=$(date +%s.%N)
"$venv/bin/python" - "$out/submission.csv" "$reference" "$start" "$end" <<'PY'
import sys
import numpy as np
import pandas as pd
ours, ref = (pd.read_csv(p).sort_values("row_id").reset_index(drop=True) for p in sys.argv[1:3])
assert list(ours.row_id) == list(ref.row_id), "the two submissions have different rows"
cols = ["normal_mild", "moderate", "severe"]
diff = float(np.abs(ours[cols].to_numpy() - ref[cols].to_numpy()).max())
studies = ours.row_id.str.split("_").str[0].nunique()
wall = float(sys.argv[4]) - float(sys.argv[3])
print(f"== {len(ours)} rows, {studies} studies; max |difference| to the reference {diff:.2e}; "
      f"predict {wall:.1f} s wall, {wall / studies:.2f} s per study (incl. start-up)")
sys.exit(0 if diff <= 1e-5 else 1)
PY
