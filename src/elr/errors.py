"""The error both a loss (NaN logits) and the engine (a NaN epoch loss) raise when training diverges.

It lives below both, so the engine need not import the losses to raise it.
"""


class DivergedError(ValueError):
    """The logits or the training loss became NaN or infinite: a learning rate or loss weight too large."""
