#!/usr/bin/env bash
# Mutation check of the noise models and the target storage against their own tests (dev-only: mutmut is
# not a dependency of elr). Works on a copy of the committed tree in a scratch folder with its own venv,
# in which elr is NOT installed: mutmut runs the tests on its mutated copy of src/ (an editable install
# would hand them the unmutated code). Prints the counts and the surviving mutants' diffs.
#
#   tools/mutation_check.sh [SCRATCH]     (default: a new folder from mktemp; ~2 min on 2 cores, one torch thread)
#
# SCRATCH must be new or a folder this script made before (it holds .elr-mutation-scratch): it is emptied.
# TORCH names the torch to install (default torch==2.13.0, the CPU wheel on our CI machine; elsewhere a
# CPU build avoids a multi-GB CUDA download, e.g. TORCH="torch --index-url https://download.pytorch.org/whl/cpu").
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
scratch="${1:-$(mktemp -d /tmp/elr-mutation.XXXXXX)}"
python="${PYTHON:-python3}"
torch="${TORCH:-torch==2.13.0}"
marker=".elr-mutation-scratch"
if [ -e "$scratch" ] && [ -n "$(ls -A "$scratch")" ] && [ ! -e "$scratch/$marker" ]; then
    echo "error: $scratch is not empty and was not made by this script; give a new folder" >&2
    exit 2
fi
rm -rf "$scratch"
git clone -q "$repo" "$scratch"
touch "$scratch/$marker"
cd "$scratch"
quiet() { "$@" 2>&1 | { grep -v '^WARNING: Location' || true; }; }  # pip's own status still counts
"$python" -m venv .venv
# shellcheck disable=SC2086  # TORCH may carry pip options
quiet .venv/bin/pip install -q $torch
quiet .venv/bin/pip install -q numpy pyyaml tqdm pytest "mutmut>=3.2,<4"
cat >> pyproject.toml <<'TOML'

[tool.mutmut]
paths_to_mutate = ["src/elr/targets.py", "src/elr/noise.py"]
pytest_add_cli_args_test_selection = ["tests/test_noise.py", "tests/test_target_storage.py"]
also_copy = ["src/elr", "configs"]
TOML
if ! OMP_NUM_THREADS=1 .venv/bin/mutmut run --max-children 1 > mutmut-run.log 2>&1; then
    tail -c 2000 mutmut-run.log
    exit 1
fi
.venv/bin/mutmut results 2>/dev/null > mutmut-results.txt || true
total=$(grep -o '[0-9]\+/[0-9]\+' mutmut-run.log | tail -1 | cut -d/ -f2 || true)  # the progress line's N/N
if [ -z "$total" ]; then
    echo "error: no progress line in $scratch/mutmut-run.log" >&2
    exit 1
fi
alive=': (survived|no tests|timeout|suspicious)$'  # a mutant that timed out or looked odd is not counted killed
left=$(grep -cE "$alive" mutmut-results.txt || true)
echo "mutants: $total, killed: $((total - left)), survived, untested, timed out or suspicious: $left"
for name in $(grep -E "$alive" mutmut-results.txt | cut -d: -f1); do
    echo "--- $name ($(grep -F "$name:" mutmut-results.txt | cut -d: -f2 | xargs))"
    .venv/bin/mutmut show "$name" 2>/dev/null | grep -E '^[-+][^-+]' || true
done
echo "scratch folder (venv ~1 GB): $scratch"
