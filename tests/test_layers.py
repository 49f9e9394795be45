"""The house's written interfaces and import directions: the dataset protocol, and data preparation below the runs."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import numpy as np
import pytest
import torch

from elr.data import Batches, FileDataset, ImageList, ImageTransform, InMemoryDataset

SRC = Path(__file__).resolve().parents[1] / "src" / "elr"

# what preparing data may not reach, even inside a function: it sits below the runs and the engine
ABOVE_DATA = {"elr.runs", "elr.engine", "elr.two_stage", "elr.experiments"}


def imported_modules(path: Path) -> dict[str, int]:
    """Every elr module ``path`` imports (top level or inside functions), with the line of the first import."""
    package = "elr" if path.parent == SRC else "elr." + ".".join(path.parent.relative_to(SRC).parts)
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            base = base[: len(base) - node.level + 1] if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            # "from . import noise" imports the module elr.noise
            names = [module] if node.module else [f"{module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name == "elr" or name.startswith("elr."):
                found.setdefault(name, node.lineno)
    return found


def test_the_import_reader_sees_relative_and_function_level_imports():
    dataset = imported_modules(SRC / "data" / "in_memory_dataset.py")
    assert "elr.distributed" in dataset  # `from ..distributed import shard_positions` inside a method
    assert "elr.data.augment" in dataset
    assert "elr.noise" in imported_modules(SRC / "prepare.py")  # `from . import noise`
    assert "elr.runs" in imported_modules(SRC / "two_stage.py")  # a function-level import, above the data


def test_preparing_data_imports_nothing_from_runs_engine_or_experiments():
    files = [SRC / "prepare.py", *sorted((SRC / "data").glob("*.py"))]
    assert len(files) >= 12
    wrong = [f"{p.relative_to(SRC)} line {line}: {name}" for p in files for name, line in imported_modules(p).items()
             if any(name == above or name.startswith(above + ".") for above in ABOVE_DATA)]
    assert not wrong, sorted(wrong)
    assert not (SRC / "file_data.py").exists()  # the second copy of the spine is gone


def _tiny_files(tmp_path: Path) -> FileDataset:
    from PIL import Image

    paths = []
    for i in range(6):
        name = f"{i}.png"
        Image.fromarray(np.full((10, 12, 3), 40 * i, dtype=np.uint8)).save(tmp_path / name)
        paths.append(name.encode())
    images = ImageList(str(tmp_path), np.array(paths), np.array([0, 1, 2, 0, 1, 2], dtype=np.int64))
    return FileDataset(images, transform=ImageTransform(8, 8, "random_crop"), mean=(0.5,) * 3, std=(0.25,) * 3,
                       num_classes=3)


def _members() -> list[str]:
    return [name for name in Batches.__dict__ if not name.startswith("_") or name == "__len__"]


def test_both_datasets_implement_the_written_protocol_with_its_signatures(tmp_path):
    pytest.importorskip("PIL")
    rng = np.random.default_rng(0)
    datasets = [InMemoryDataset(rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8), [0, 1, 2, 0, 1, 2], augment=True),
                InMemoryDataset(rng.normal(size=(5, 4)).astype(np.float32), [0, 1, 0, 1, 1]),
                _tiny_files(tmp_path)]
    members = _members()
    assert {"batches", "num_batches", "__len__", "labels", "true_labels", "num_classes", "device", "to",
            "subset", "sample_shape"} <= set(members)
    for ds in datasets:
        assert isinstance(ds, Batches), type(ds).__name__
        for name in members:
            spec = Batches.__dict__[name]
            if isinstance(spec, property):
                continue
            ours, theirs = inspect.signature(spec), inspect.signature(getattr(type(ds), name))
            assert [(p.name, p.kind, p.default) for p in ours.parameters.values()] == \
                   [(p.name, p.kind, p.default) for p in theirs.parameters.values()], (type(ds).__name__, name)
        # what the members return, as the engine reads them
        assert ds.labels.dtype == torch.int64 and ds.labels.shape == (len(ds),)
        x, y, index = next(iter(ds.batches(4, shuffle=True, generator=torch.Generator().manual_seed(0))))
        assert tuple(x.shape[1:]) == tuple(ds.sample_shape) and x.dtype == torch.float32
        assert torch.equal(y, ds.labels[index])
        assert ds.num_batches(4) == -(-len(ds) // 4)
        part = ds.subset(torch.tensor([1, 3]))
        assert isinstance(part, Batches) and torch.equal(part.labels, ds.labels[[1, 3]])
        assert isinstance(ds.to("cpu"), Batches)


def test_something_without_batches_is_not_a_dataset():
    class Half:  # labels and a length, but no batches
        labels = torch.zeros(3, dtype=torch.int64)

        def __len__(self) -> int:
            return 3

    assert not isinstance(Half(), Batches)


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
