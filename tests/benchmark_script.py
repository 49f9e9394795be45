"""A script of benchmarks/ loaded as a module, for the tests of its pieces."""

import contextlib
import importlib.util
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@contextlib.contextmanager
def benchmark_script(stem: str):
    """benchmarks/<stem>.py as a module, in sys.modules while in use (its dataclasses look their module up there)."""
    spec = importlib.util.spec_from_file_location(stem, BENCHMARKS / f"{stem}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[stem] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[stem]
