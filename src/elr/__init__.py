"""elr: Early-Learning Regularization for training classifiers on noisy labels."""

__version__ = "0.1.0"
