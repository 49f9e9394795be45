"""Data-parallel training on CPU with gloo and 2 processes launched by torchrun: target banks, 1- vs 2-process
equivalence, ELR+ and kill-and-resume.

This file is also the worker script: ``python -m torch.distributed.run ... tests/test_distributed.py CASE OUT``
trains the case through ``elr.runs.train`` and writes, per rank, a checksum of every target bank after every
update (and of the EMA copies after every EMA update) to ``OUT/rank<r>.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from elr import rundir
from elr.checkpoint import load_checkpoint
from elr.config import Config
from elr.distributed import first_occurrences, shard_positions
from elr.methods import Runtime
from test_elr_plus import assert_same_state

HERE = Path(__file__).resolve()
BETA = 0.7


def standard_config() -> dict:
    # ~1400 examples: every global batch of 64 splits evenly over 2 ranks, no padding;
    # no dropout, so both runs draw nothing from the global RNG and see exactly the same batches
    return {
        "seed": 3,
        "data": {"dataset": "digits", "train_size": 1400},
        "noise": {"type": "symmetric", "rate": 0.4},
        "model": {"name": "mlp", "hidden": [32]},
        "loss": {"name": "elr", "lam": 3.0, "beta": BETA},
        "optim": {"lr": 0.05, "batch_size": 64, "epochs": 3, "schedule": "cosine"},
        "monitor": {"memorization": False},
        "device": "cpu",
    }


def elr_plus_config(root: str) -> dict:
    # ResNet-8 (BatchNorm) on augmented images: 237 examples, so the last global batch (45) is padded by one
    return {
        "seed": 1,
        "method": "elr_plus",
        "data": {"dataset": "npz", "root": root, "val_fraction": 0.0, "augment": True},
        "noise": {"type": "symmetric", "rate": 0.2},
        "model": {"name": "resnet8"},
        "loss": {"name": "elr", "lam": 3.0, "beta": BETA},
        "optim": {"lr": 0.02, "batch_size": 64, "epochs": 2, "schedule": "constant"},
        "elr_plus": {"ema_ramp_steps": 4},
        "monitor": {"memorization": False},
        "eval_batch_size": 64,
        "device": "cpu",
    }


def tiny_npz(path: Path) -> Path:
    rng = np.random.default_rng(0)

    def make(n):
        y = rng.integers(0, 10, size=n)
        x = rng.integers(0, 128, size=(n, 32, 32, 3)) + (y * 12)[:, None, None, None]
        return x.astype(np.uint8), y.astype(np.int64)

    x_train, y_train = make(237)
    x_test, y_test = make(40)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


def _digest(tensors) -> str:
    h = hashlib.sha1()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def worker(case: str, out: Path) -> None:
    """Train ``case`` in this rank, recording bank and EMA checksums after every update."""
    from elr.elr_plus import ELRPlus
    from elr.losses import ELRLoss
    from elr.runs import train

    records: list[str] = []
    update, update_emas = ELRLoss.update_targets, ELRPlus._update_emas

    def record_update(self, index, probs):
        update(self, index, probs)
        records.append("targets " + _digest([self.targets]))

    def record_emas(self):
        update_emas(self)
        records.append("emas " + _digest([t for ema in self.emas for t in (*ema.parameters(), *ema.buffers())]))

    ELRLoss.update_targets, ELRPlus._update_emas = record_update, record_emas
    raw = json.loads((out / "config.json").read_text())
    train(Config.from_dict(raw).validate(), out / "run")
    (out / f"rank{os.environ['RANK']}.json").write_text(json.dumps(records))


def torchrun(args: list[str], **kwargs) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and its descendants (torchrun starts its workers in sessions of their own)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    kids = [int(c) for c in children.read_text().split()] if children.exists() else []
    os.kill(pid, signal.SIGKILL)
    for kid in kids:
        kill_tree(kid)


def run_case(case: str, raw: dict, out: Path) -> tuple[list[str], list[str]]:
    out.mkdir()
    (out / "config.json").write_text(json.dumps(raw))
    proc = torchrun([str(HERE), case, str(out)])
    log, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, log[-3000:]
    return json.loads((out / "rank0.json").read_text()), json.loads((out / "rank1.json").read_text())


# ---- pieces ----------------------------------------------------------------------------------------


def test_shards_are_disjoint_equal_and_padded_from_the_same_batch():
    for m in (64, 56, 45, 1):
        parts = [shard_positions(m, r, 2) for r in range(2)]
        assert len(parts[0]) == len(parts[1]) == -(-m // 2)
        joined = torch.cat(parts)
        assert joined[:m].tolist() == list(range(m))  # rank order = the one-process batch
        assert set(joined[m:].tolist()) <= set(range(m))  # padding repeats examples of the same step


def _shards_rebuild_batches(dataset, batch_size):
    """Concatenated in rank order, the two ranks' slices (augmentation included) are the one-process batches."""
    whole = list(dataset.batches(batch_size, shuffle=True, generator=torch.Generator().manual_seed(5)))
    parts = [list(dataset.batches(batch_size, shuffle=True, generator=torch.Generator().manual_seed(5),
                                  shard=(rank, 2))) for rank in range(2)]
    assert len(parts[0]) == len(parts[1]) == len(whole)
    for (x, y, index), (x0, y0, i0), (x1, y1, i1) in zip(whole, *parts):
        m = len(index)
        assert len(i0) == len(i1) == -(-m // 2)
        assert torch.equal(torch.cat([i0, i1])[:m], index) and torch.equal(torch.cat([y0, y1])[:m], y)
        assert torch.equal(torch.cat([x0, x1])[:m], x)


def test_in_memory_and_file_shards_rebuild_the_one_process_batches(tmp_path):
    from elr.data import InMemoryDataset
    from elr.data import FileDataset, ImageTransform, read_image_folder

    rng = np.random.default_rng(0)
    images = InMemoryDataset(rng.integers(0, 255, size=(45, 8, 8, 3), dtype=np.uint8), rng.integers(0, 3, 45),
                             augment=True, padding=2)
    _shards_rebuild_batches(images, 16)  # last batch 13: padded by one
    from PIL import Image

    for part, count in (("train", 5), ("test", 1)):
        for c, name in enumerate(("cat", "dog")):
            (tmp_path / part / name).mkdir(parents=True)
            for k in range(count):
                pixels = rng.integers(0, 255, size=(12, 12, 3), dtype=np.uint8) // (c + 1)
                Image.fromarray(pixels).save(tmp_path / part / name / f"{k}.png")
    files = read_image_folder(tmp_path).train
    _shards_rebuild_batches(FileDataset(files, transform=ImageTransform(12, 10, "random_crop"), mean=(0.5,) * 3,
                                        std=(0.25,) * 3, num_classes=2), 4)  # last batch 2


def test_first_occurrences_keeps_rank_order():
    index = torch.tensor([5, 2, 9, 5, 7, 2])  # rank 0: 5 2 9, rank 1: 5 7 2 (two padding repeats)
    assert first_occurrences(index).tolist() == [0, 1, 2, 4]


def test_sync_batchnorm_is_refused_on_cpu():
    runtime = Runtime(torch.device("cpu"), distributed=True, sync_batchnorm=True)
    with pytest.raises(ValueError, match="sync_batchnorm needs CUDA"):
        runtime.prepare_model(torch.nn.BatchNorm1d(3))


# ---- 2 processes -------------------------------------------------------------------------------------


def test_two_processes_match_one_process(tmp_path):
    from elr.runs import train

    raw = standard_config()
    rank0, rank1 = run_case("standard", raw, tmp_path / "ddp")
    steps = 3 * -(-1398 // 64)  # train_size=1400 keeps 1398 (stratified)
    assert len(rank0) == steps and rank0 == rank1  # identical banks on both ranks after every step

    single = train(Config.from_dict(raw).validate(), tmp_path / "single")
    two = json.loads((tmp_path / "ddp" / "run" / "summary.json").read_text())
    one_state = load_checkpoint(tmp_path / "single" / "checkpoint.pt")
    two_state = load_checkpoint(tmp_path / "ddp" / "run" / "checkpoint.pt")
    assert two_state["world_size"] == 2 and "world_size" not in one_state
    t1, t2 = one_state["method"]["loss"]["targets"], two_state["method"]["loss"]["targets"]
    # same batches and the same target updates; only the order of float additions differs (DDP sums
    # two half-batch gradients then halves, one process sums 64 at once), ~1e-7 per step
    assert (t1 - t2).abs().max() < 1e-4
    n = t1.shape[0]
    assert n % 64 % 2 == 0  # the stratified subset keeps 1398: no padding anywhere
    assert torch.allclose(t1.sum(1), torch.full((n,), 1 - BETA**3), atol=1e-5)
    print("max target difference", float((t1 - t2).abs().max()), "test acc", single["last"]["test_acc"],
          two["last"]["test_acc"])
    assert abs(two["last"]["test_acc"] - single["last"]["test_acc"]) <= 1 / 360 + 1e-9  # at most one test image
    one_hist = [json.loads(line) for line in (tmp_path / "single" / "metrics.jsonl").read_text().splitlines()]
    two_hist = [json.loads(line) for line in (tmp_path / "ddp" / "run" / "metrics.jsonl").read_text().splitlines()]
    for a, b in zip(one_hist, two_hist):  # training loss and accuracy are reduced over both ranks
        assert abs(a["train_loss"] - b["train_loss"]) < 1e-4 and abs(a["train_acc"] - b["train_acc"]) < 2e-3
    assert not (tmp_path / "ddp" / "run" / "rank1").exists()
    # rank 0 writes the label-issue evidence: the gathered targets (and held-out rows) of the whole set
    from elr.rundir import read_targets

    (p1, s1), (p2, s2) = read_targets(tmp_path / "single"), read_targets(tmp_path / "ddp" / "run")
    assert p1.shape == p2.shape and (s1 == s2).all() and np.abs(p1 - p2).max() < 1e-3


def test_elr_plus_two_processes_with_padding(tmp_path):
    raw = elr_plus_config(str(tiny_npz(tmp_path / "tiny.npz")))
    rank0, rank1 = run_case("elr_plus", raw, tmp_path / "ddp")
    steps = 2 * -(-237 // 64)
    assert sum(r.startswith("targets") for r in rank0) == 2 * steps  # two banks
    assert sum(r.startswith("emas") for r in rank0) == steps
    assert rank0 == rank1  # both banks and both EMA networks (weights and BatchNorm statistics) identical
    state = load_checkpoint(tmp_path / "ddp" / "run" / "checkpoint.pt")
    for bank in state["method"]["losses"]:
        # every example updated exactly once per epoch: the padding repeat was de-duplicated
        assert torch.allclose(bank["targets"].sum(1), torch.full((237,), 1 - BETA**2), atol=1e-5)


def test_kill_and_resume_two_processes(tmp_path):
    raw = standard_config()
    raw["data"].update(train_size=600, val_fraction=0.1)  # a validation split: each rank keeps the selected epoch
    raw["optim"].update(batch_size=8, epochs=12)
    cfg = tmp_path / "run.yaml"
    cfg.write_text(json.dumps(raw))  # JSON is YAML
    run = tmp_path / "run"
    proc = torchrun(["-m", "elr", "train", "--config", str(cfg), "--out", str(run)])
    metrics = run / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:
            kill_tree(proc.pid)
            break
        time.sleep(0.05)
    proc.communicate()
    before = metrics.read_text().splitlines()
    assert 2 <= len(before) < 12, "the run was not killed part way"

    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    single = subprocess.run([sys.executable, "-m", "elr", "train", "--resume", str(run)],
                            capture_output=True, text=True, env=env, timeout=120)
    assert single.returncode != 0 and "was trained by 2 process(es) and this resume has 1" in single.stderr

    proc = torchrun(["-m", "elr", "train", "--resume", str(run)])
    log, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, log[-3000:]
    assert log.count("wrote ") == 1  # rank 0 alone reports
    after = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [r["epoch"] for r in after] == list(range(1, 13))
    kept = [json.loads(line) for line in before]
    assert after[: len(kept)] == kept  # the epochs before the kill are unchanged
    assert load_checkpoint(run / "checkpoint.pt")["epoch"] == 12
    chosen = rundir.read_selected_targets(run)  # rank 0 wrote the rows of the selected epoch, killed or not
    assert chosen.epoch == rundir.selected_record(after)["epoch"] == rundir.read_summary(run)["selected"]["epoch"]
    assert len(chosen.sources) == len(rundir.read_noisy_labels(run)) and set(chosen.sources) == {"targets", "held_out_model"}

    # the whole resumed run is the run that was never killed: every epoch's record (times aside), the final
    # weights, targets and optimizer state, the selected epoch's rows
    straight = tmp_path / "straight"
    proc = torchrun(["-m", "elr", "train", "--config", str(cfg), "--out", str(straight)])
    log, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, log[-3000:]
    untimed = [{k: v for k, v in r.items() if not k.endswith("seconds")} for r in after]
    assert untimed == [{k: v for k, v in r.items() if not k.endswith("seconds")}
                       for r in rundir.read_metrics(straight)]
    resumed, uninterrupted = load_checkpoint(run / "checkpoint.pt"), load_checkpoint(straight / "checkpoint.pt")
    assert_same_state(resumed["method"], uninterrupted["method"], "method")  # model, loss (targets), optimizer
    again = rundir.read_selected_targets(straight)
    assert again.epoch == chosen.epoch and np.array_equal(again.probs, chosen.probs)
    assert np.array_equal(again.sources, chosen.sources)
    ours, theirs = rundir.read_summary(run), rundir.read_summary(straight)
    assert (ours["last"], ours["selected"]) == (theirs["last"], theirs["selected"])


def test_a_held_run_directory_stops_every_rank_at_once(tmp_path):
    """Rank 0 alone takes the lock; when another process holds it, every rank stops instead of waiting."""
    cfg = tmp_path / "run.yaml"
    cfg.write_text(json.dumps(standard_config()))
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom elr import rundir\n"
                               "with rundir.lock(sys.argv[1]):\n    print('locked', flush=True)\n    time.sleep(600)",
                               str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        proc = torchrun(["-m", "elr", "train", "--config", str(cfg), "--out", str(run)])
        log, _ = proc.communicate(timeout=120)
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
    assert proc.returncode != 0
    # rank 0 says it once; rank 1 stops with it, quietly
    line = f"elr train: error: {run} is in use by another elr process (pid {holder.pid}"
    assert log.count(line) == 1 and log.count("elr train: error:") == 1, log[-3000:]
    assert os.listdir(run) == [".elr.lock"]  # nothing written

    # any other error of rank 0's at the lock reaches rank 1 too (no rank left waiting for the others)
    (tmp_path / "afile").write_text("x")
    proc = torchrun(["-m", "elr", "train", "--config", str(cfg), "--out", str(tmp_path / "afile" / "run")])
    log, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "Connection reset" not in log, log[-3000:]
    assert log.count("elr train: error:") == 1 and "Traceback" not in log.split("elr train: error:")[0], log[-3000:]


if __name__ == "__main__":
    torch.set_num_threads(1)
    worker(sys.argv[1], Path(sys.argv[2]))
