"""Data: readers to NumPy arrays, stratified splits, device-side augmentation, in-memory indexed datasets."""

from .augment import apply_crop_flip, draw_crop_flip, random_crop_flip
from .dataset import InMemoryDataset, from_raw
from .readers import RawData, read_cifar, read_dataset, read_digits, read_npz
from .split import stratified_split
from .files import FileDataset, balanced_quotas
from .image_lists import ImageList, ImageSets, read_image_folder, read_label_files
from .images import ImageTransform
from .real import read_clothing1m, read_webvision

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
    "FileDataset",
    "balanced_quotas",
    "ImageList",
    "ImageSets",
    "ImageTransform",
    "read_image_folder",
    "read_label_files",
    "read_clothing1m",
    "read_webvision",
]
