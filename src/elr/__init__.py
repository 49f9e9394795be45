"""elr: Early-Learning Regularization (ELR, Liu et al., NeurIPS 2020) for training classifiers on noisy labels."""

from .version import __version__
from . import noise
from .config import Config, ConfigError
from .data import InMemoryDataset, read_dataset, stratified_split
from .losses import (
    BootstrapLoss,
    CrossEntropyLoss,
    ELRKLLoss,
    ELRLoss,
    ForwardLoss,
    GCELoss,
    SCELoss,
    create_loss,
    estimate_transition_matrix,
    list_losses,
)
from .elr_plus import ELRPlus
from .models import create_model, list_models
from . import rundir
from .runs import evaluate_run, resume
from .two_stage import train, train_or_resume
from .label_issues import (
    TopKProbs,
    cleanlab_label_issues,
    detection_quality,
    flag_label_issues,
    label_issue_table,
    label_quality_scores,
    suggest_labels,
)
from .detect import detect_label_issues, read_run_evidence

__all__ = [
    "__version__",
    "noise",
    "Config",
    "ConfigError",
    "InMemoryDataset",
    "read_dataset",
    "stratified_split",
    "ELRLoss",
    "ELRKLLoss",
    "CrossEntropyLoss",
    "BootstrapLoss",
    "ForwardLoss",
    "GCELoss",
    "SCELoss",
    "create_loss",
    "list_losses",
    "estimate_transition_matrix",
    "ELRPlus",
    "create_model",
    "list_models",
    "rundir",
    "train",
    "train_or_resume",
    "resume",
    "evaluate_run",
    "label_quality_scores",
    "flag_label_issues",
    "suggest_labels",
    "label_issue_table",
    "detection_quality",
    "cleanlab_label_issues",
    "TopKProbs",
    "detect_label_issues",
    "read_run_evidence",
    "ELRClassifier",
]


def __getattr__(name: str):
    # imported on first use: scikit-learn is an optional extra and slow to import
    if name == "ELRClassifier":
        from .estimator import ELRClassifier

        return ELRClassifier
    raise AttributeError(f"module 'elr' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), "ELRClassifier"})
