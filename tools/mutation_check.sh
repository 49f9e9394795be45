#!/usr/bin/env bash
# Mutation check of the noise models and the target storage against their own tests (dev-only: mutmut is
# not a dependency of elr). Works on a copy of the committed tree in a scratch folder with its own venv,
# in which elr is NOT installed: mutmut runs the tests on its mutated copy of src/ (an editable install
# would hand them the unmutated code). Prints the counts and the surviving mutants' diffs.
#
#   tools/mutation_check.sh [SCRATCH]     (default /tmp/elr-mutation; ~2 min on 2 cores, one torch thread)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
scratch="${1:-/tmp/elr-mutation}"
python="${PYTHON:-python3}"
torch="${TORCH:-torch==2.13.0}"
rm -rf "$scratch"
git clone -q "$repo" "$scratch"
cd "$scratch"
"$python" -m venv .venv
quiet() { "$@" 2>&1 | grep -v '^WARNING: Location' || true; }  # this machine's registry notes
quiet .venv/bin/pip install -q "$torch"
quiet .venv/bin/pip install -q numpy pyyaml tqdm pytest "mutmut>=3.2,<4"
cat >> pyproject.toml <<'TOML'

[tool.mutmut]
paths_to_mutate = ["src/elr/targets.py", "src/elr/noise.py"]
pytest_add_cli_args_test_selection = ["tests/test_noise.py", "tests/test_target_storage.py"]
also_copy = ["src/elr", "configs"]
TOML
OMP_NUM_THREADS=1 .venv/bin/mutmut run --max-children 1 > mutmut-run.log 2>&1 || { tail -c 2000 mutmut-run.log; exit 1; }
.venv/bin/mutmut results 2>/dev/null > mutmut-results.txt || true
total=$(grep -o '[0-9]\+/[0-9]\+' mutmut-run.log | tail -1 | cut -d/ -f2)  # the progress line's N/N
left=$(grep -cE ': (survived|no tests)$' mutmut-results.txt || true)
echo "mutants: $total, killed: $((total - left)), survived or untested: $left"
for name in $(grep -E ': (survived|no tests)$' mutmut-results.txt | cut -d: -f1); do
    echo "--- $name"
    .venv/bin/mutmut show "$name" 2>/dev/null | grep -E '^[-+][^-+]' || true
done
