"""The README's ELRLoss example runs as written and its targets move."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_loop_example_runs():
    text = README.read_text()
    section = text.split("## ELR in your own training loop", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "README example", "exec"), namespace)
    targets = namespace["criterion"].targets
    # after 5 epochs every example was visited 5 times: rows sum to 1 - 0.7**5
    assert abs(float(targets.sum(dim=1).mean()) - (1 - 0.7**5)) < 1e-5


def test_every_repository_path_the_readme_names_exists():
    text = README.read_text()
    root = README.parent
    named = set(re.findall(r"(?<![\w/.])((?:configs|benchmarks|docs|src|tests)/[\w./-]+\.(?:yaml|py|png|md))", text))
    assert len(named) > 10  # the pattern finds the README's paths
    missing = sorted(p for p in named if not (root / p).is_file())
    assert not missing, missing
