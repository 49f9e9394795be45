"""Data: readers to NumPy arrays or file lists, stratified splits, batch augmentation, and the data sets the engine reads."""

from .augment import apply_crop_flip, draw_crop_flip, random_crop_flip
from .batches import Batches, TrainData
from .in_memory_dataset import InMemoryDataset, from_raw
from .readers import RawData, read_cifar, read_dataset, read_digits, read_npz
from .split import stratified_split
from .features import read_features
from .standardize import Standardization
from .file_dataset import FileDataset, balanced_quotas
from .file_lists import ImageList, ImageSets, read_image_folder, read_label_files
from .image_transform import ImageTransform
from .clothing1m import read_clothing1m
from .webvision import read_webvision

__all__ = [
    "RawData",
    "read_cifar",
    "read_npz",
    "read_digits",
    "read_dataset",
    "read_features",
    "Standardization",
    "stratified_split",
    "random_crop_flip",
    "draw_crop_flip",
    "apply_crop_flip",
    "Batches",
    "TrainData",
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
