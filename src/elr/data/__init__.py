"""Data: readers to NumPy arrays, stratified splits, device-side augmentation, in-memory indexed datasets."""

from .augment import apply_crop_flip, draw_crop_flip, random_crop_flip
from .dataset import InMemoryDataset, from_raw
from .readers import RawData, read_cifar, read_dataset, read_digits, read_npz
from .split import stratified_split

__all__ = [
    "RawData",
    "read_cifar",
    "read_npz",
    "read_digits",
    "read_dataset",
    "stratified_split",
    "random_crop_flip",
    "draw_crop_flip",
    "apply_crop_flip",
    "InMemoryDataset",
    "from_raw",
]
