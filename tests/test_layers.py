"""The house's written interfaces and import directions: the dataset protocol, data preparation below the
runs, an engine that imports no method or loss, and no import cycle anywhere in ``src/elr``."""

from __future__ import annotations

import ast
import functools
import inspect
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from elr.data import Batches, FileDataset, ImageList, ImageTransform, InMemoryDataset

SRC = Path(__file__).resolve().parents[1] / "src" / "elr"


def import_graph(root: Path, package: str = "elr") -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Which modules of the package at ``root`` each module imports: ``(every import, imports inside functions)``.

    ``from X import name`` is an import of ``X.name`` when that is a module, else of ``X``; importing
    ``a.b.c`` first runs the subpackage ``a.b`` (its ``__init__``), counted too, but not the root
    package: importing the root from one of its own modules is what the cycle check looks for.
    """
    names = {}
    for path in root.rglob("*.py"):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        names[path] = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    modules = set(names.values())
    every: dict[str, set[str]] = {name: set() for name in modules}
    inside: dict[str, set[str]] = {name: set() for name in modules}
    for path, name in names.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        in_function = {id(node) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                       for node in ast.walk(f)}  # a module-level `try:` or `if` import is at import time
        here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = ".".join([*here[: len(here) - node.level + 1], *([node.module] if node.module else [])]) \
                    if node.level else node.module
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            for target in targets:
                parts = target.split(".")
                parents = [".".join(parts[:k]) for k in range(2, len(parts))]  # run first, unless ours already
                for t in [target, *(p for p in parents if not name.startswith(p + "."))]:
                    if t in modules and t != name:
                        every[name].add(t)
                        if id(node) in in_function:
                            inside[name].add(t)
    return every, inside


@functools.cache
def elr_graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """:func:`import_graph` of ``src/elr``, read once for every test."""
    return import_graph(SRC)


def reached(start: str) -> dict[str, str]:
    """Every elr module ``start`` reaches through imports of imports, each with the chain that reaches it."""
    every = elr_graph()[0]
    chains: dict[str, str] = {}
    todo = [(start, start)]
    while todo:
        module, chain = todo.pop()
        for name in sorted(every[module] - chains.keys()):
            chains[name] = f"{chain} -> {name}"
            todo.append((name, chains[name]))
    return chains


def _allowed(name: str, allowed: set[str]) -> bool:
    return name in ("elr", "elr.data") or any(name == a or name.startswith(a + ".") for a in allowed)


def test_the_import_reader_sees_every_form_of_import(tmp_path):
    every, inside = elr_graph()
    assert "elr.distributed" in every["elr.data.in_memory_dataset"]  # `from ..distributed import shard_positions`
    assert "elr.data.augment" in every["elr.data.in_memory_dataset"]
    assert "elr.noise" in every["elr.prepare"]  # `from . import noise`
    assert "elr.runs" in every["elr.two_stage"]  # `from . import rundir, runs`
    (tmp_path / "pkg").mkdir()
    for name, text in {"__init__.py": "", "runs.py": "", "engine.py": "",
                       "probe.py": "def f():\n    from pkg import runs\n    import pkg.engine\n"}.items():
        (tmp_path / "pkg" / name).write_text(text)
    assert import_graph(tmp_path / "pkg", "pkg")[1]["pkg.probe"] == {"pkg.runs", "pkg.engine"}
    assert "elr.runs" in reached("elr.two_stage")


def test_the_data_package_reaches_nothing_above_itself():
    modules = [name for name in elr_graph()[0] if name.startswith("elr.data.")]
    assert len(modules) >= 11
    allowed = {"elr.data", "elr.device", "elr.distributed"}  # copies to the device, the rank's share of a batch
    wrong = [chain for m in modules for name, chain in reached(m).items() if not _allowed(name, allowed)]
    assert not wrong, sorted(wrong)


def test_preparing_data_imports_only_config_noise_and_data():
    allowed = {"elr.config", "elr.noise", "elr.data"}
    wrong = [name for name in elr_graph()[0]["elr.prepare"] if not _allowed(name, allowed)]
    assert not wrong, wrong
    assert not (SRC / "file_data.py").exists()  # the second copy of the spine is gone


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles of ``graph``: its strongly connected components of two or more modules (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle_closed_inside_a_function(tmp_path):
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    files = {"__init__.py": "from . import a\n", "a.py": "try:\n    from .sub.b import f\nexcept ImportError:\n    pass\n",
             "sub/__init__.py": "", "sub/b.py": "def f():\n    from ..c import g\n", "c.py": "import os\n"}
    for name, text in files.items():
        (tmp_path / "pkg" / name).write_text(text)
    every, inside = import_graph(tmp_path / "pkg", "pkg")
    assert every["pkg.a"] == {"pkg.sub", "pkg.sub.b"} and inside["pkg.a"] == set() and inside["pkg.sub.b"] == {"pkg.c"}
    assert cycles(every) == []
    (tmp_path / "pkg" / "c.py").write_text("def g():\n    from pkg import __version__\n")  # back into the package
    every, _ = import_graph(tmp_path / "pkg", "pkg")
    assert cycles(every) == [["pkg", "pkg.a", "pkg.c", "pkg.sub.b"]]


def test_no_import_cycle_among_the_modules_of_elr_inside_functions_included():
    every, inside = elr_graph()
    assert len(every) >= 50 and "elr.runs" in every["elr.two_stage"]
    assert cycles(every) == []
    # one import inside a function: the package's ELRClassifier, as scikit-learn is an optional extra; any
    # other would be there to hide a cycle
    lazy = {name: sorted(targets) for name, targets in inside.items() if targets}
    assert lazy == {"elr": ["elr.estimator"]}, lazy


def test_the_engine_imports_no_method_and_no_loss():
    every, _ = elr_graph()
    # directly, or through anything but config (which checks that a config's loss and model names exist)
    below = {name: set() if name == "elr.config" else targets for name, targets in every.items()}
    reach, todo = set(), ["elr.engine"]
    while todo:
        for t in below[todo.pop()] - reach:
            reach.add(t)
            todo.append(t)
    assert "elr.config" in reach and "elr.monitor" in reach
    assert not reach & {"elr.losses", "elr.methods", "elr.elr_plus", "elr.build", "elr.runs"}, sorted(reach)
    assert {"elr.targets", "elr.errors", "elr.monitor"} <= every["elr.engine"]  # the interfaces it reads through
    # nothing below the runs reaches back up into them; the two-stage run is the one module that composes runs
    composers = {name for name, targets in every.items() if "elr.two_stage" in targets}
    assert composers <= {"elr", "elr.cli", "elr.demo", "elr.experiments"}, composers


def test_the_readme_picture_of_the_layers_is_the_import_graph():
    """Every module imports only from the rows below its own in the README's picture (its own package aside)."""
    readme = (SRC.parents[1] / "README.md").read_text(encoding="utf-8")
    block = readme.split("Imports flow one way", 1)[1].split("```", 2)[1]
    # a row: module names two spaces apart, then (three spaces or more on) what they do; a continuation
    # line of the description starts blank
    rows = [re.split(r"\s{3,}", line)[0].split() for line in block.strip().splitlines() if line[:1].strip()]
    assert rows[0] == ["cli"] and rows[-1][0] == "targets"
    every, _ = elr_graph()
    pictured = [name for names in rows for name in names]
    assert len(pictured) == len(set(pictured)), "a module drawn twice"
    row_of, entry = {}, {}  # a module's row, and the name in the picture that stands for it ("data/")
    for depth, names in enumerate(rows):
        for name in names:
            drawn = [m for m in every if m == f"elr.{name.rstrip('/')}" or
                     (name.endswith("/") and m.startswith(f"elr.{name[:-1]}."))]
            assert drawn, f"{name} in the picture is no module of elr"
            row_of.update(dict.fromkeys(drawn, depth))
            entry.update(dict.fromkeys(drawn, name))
    assert set(every) - set(row_of) == {"elr", "elr.__main__"}, "modules missing from the picture"
    upward = [f"{m} (row {row_of[m]}) imports {t} (row {row_of[t]})" for m in row_of for t in every[m]
              if t in row_of and row_of[t] <= row_of[m] and not (entry[t] == entry[m] and entry[m].endswith("/"))]
    assert not upward, upward


LABELS, TRUE = [0, 1, 2, 0, 1, 2, 2], [0, 1, 2, 0, 1, 1, 2]


def _tiny_files(tmp_path: Path) -> FileDataset:
    from PIL import Image

    paths = []
    for i in range(len(LABELS)):
        name = f"{i}.png"
        Image.fromarray(np.full((10, 12, 3), 30 * i, dtype=np.uint8)).save(tmp_path / name)
        paths.append(name.encode())
    images = ImageList(str(tmp_path), np.array(paths), np.array(LABELS, dtype=np.int64), np.array(TRUE, dtype=np.int64))
    return FileDataset(images, transform=ImageTransform(8, 8, "random_crop"), mean=(0.5,) * 3, std=(0.25,) * 3,
                       num_classes=3)


def _members() -> list[str]:
    return [name for name in Batches.__dict__ if not name.startswith("_") or name == "__len__"]


def test_both_datasets_implement_the_written_protocol_as_the_engine_reads_it(tmp_path):
    pytest.importorskip("PIL")
    rng = np.random.default_rng(0)
    datasets = [InMemoryDataset(rng.integers(0, 256, (7, 8, 8, 3), dtype=np.uint8), LABELS, true_labels=TRUE,
                                augment=True, num_classes=3),
                InMemoryDataset(rng.normal(size=(7, 4)).astype(np.float32), LABELS, true_labels=TRUE, num_classes=3),
                _tiny_files(tmp_path)]
    members = _members()
    assert {"batches", "num_batches", "__len__", "labels", "true_labels", "num_classes", "device", "to",
            "subset", "sample_shape"} <= set(members)

    class Half:  # labels and a length, but no batches: not a data set
        labels = torch.zeros(3, dtype=torch.int64)

        def __len__(self) -> int:
            return 3

    assert not isinstance(Half(), Batches)
    for ds in datasets:
        name = type(ds).__name__
        assert isinstance(ds, Batches), name
        for member in members:  # the methods take exactly the protocol's parameters
            spec = Batches.__dict__[member]
            if isinstance(spec, property):
                continue
            ours, theirs = inspect.signature(spec), inspect.signature(getattr(type(ds), member))
            assert [(p.name, p.kind, p.default) for p in ours.parameters.values()] == \
                   [(p.name, p.kind, p.default) for p in theirs.parameters.values()], (name, member)
        # the properties, as the engine and the monitor read them
        assert len(ds) == 7 and ds.num_classes == 3 and ds.device == torch.device("cpu")
        assert ds.labels.dtype == torch.int64 and ds.labels.tolist() == LABELS
        assert ds.true_labels.dtype == torch.int64 and ds.true_labels.tolist() == TRUE
        # a training epoch visits every position once, with its label
        epoch = list(ds.batches(3, shuffle=True, generator=torch.Generator().manual_seed(0)))
        assert len(epoch) == ds.num_batches(3) == 3
        x, y, index = (torch.cat(parts) for parts in zip(*epoch))
        assert sorted(index.tolist()) == list(range(7)) and torch.equal(y, ds.labels[index])
        assert tuple(x.shape[1:]) == tuple(ds.sample_shape) and x.dtype == torch.float32
        # drop_last, and two shards that together are each global batch
        assert ds.num_batches(3, drop_last=True) == len(list(ds.batches(3, shuffle=False, drop_last=True))) == 2
        whole = [i.tolist() for _, _, i in ds.batches(4, shuffle=False)]
        halves = [[i.tolist() for _, _, i in ds.batches(4, shuffle=False, shard=(r, 2))] for r in (0, 1)]
        assert [sorted(set(a + b)) for a, b in zip(*halves)] == whole, name
        part = ds.subset(torch.tensor([1, 5]))
        assert isinstance(part, Batches) and part.labels.tolist() == [1, 2] and part.true_labels.tolist() == [1, 1]
        moved = ds.to("cpu")
        assert isinstance(moved, Batches) and torch.equal(moved.labels, ds.labels)


def test_the_readme_rooms_name_every_module_and_only_modules_that_exist():
    readme = (SRC.parents[1] / "README.md").read_text(encoding="utf-8")
    block = readme.split("Rooms of `src/elr/`", 1)[1].split("```", 2)[1]
    listed, folder = set(), ""
    for line in block.splitlines():
        words = [w.rstrip(":;,") for w in line.split()]
        if not words:
            continue
        if line.startswith("  "):  # a module of the folder above
            listed.add(folder + words[0])
            continue
        if words[0].endswith("/"):
            folder = words[0]
        listed.update(w for w in words if w.endswith(".py"))  # a room, and any named beside it ("; plots.py: ...")
    modules = {str(p.relative_to(SRC)) for p in SRC.glob("*.py")} | {str(p.relative_to(SRC)) for p in SRC.glob("data/*.py")}
    modules -= {"__init__.py", "__main__.py", "data/__init__.py"}
    assert modules - listed == set(), "modules missing from the README's rooms"
    assert {n for n in listed if n.endswith(".py")} - modules == set(), "rooms in the README that do not exist"
