"""Decode one image file with Pillow and crop it for training or evaluation, reproducibly from a seed."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["IMAGE_EXTENSIONS", "IMAGENET_MEAN_STD", "ImageTransform", "load_rgb", "pillow"]

# What an image folder may hold; any other (non-hidden) file there is reported, never skipped silently.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

# Per-channel (mean, std) in [0, 1] pixel units: WebVision and the user's own images, as in the authors' transforms.
IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

TRAIN_CROPS = ("random_crop", "random_resized_crop", "none")


def pillow():
    """The ``PIL.Image`` module, or an ImportError that says which extra to install."""
    try:
        from PIL import Image
    except ImportError as exc:
        raise ImportError("reading image files needs Pillow: pip install 'elr[vision]'") from exc
    return Image


def load_rgb(path: str):
    """Open and fully decode ``path`` as an RGB ``PIL.Image`` (grayscale, palette, RGBA are converted)."""
    Image = pillow()
    with Image.open(path) as img:
        return img.convert("RGB")  # convert() loads the pixels, so a truncated file fails here


@dataclass(frozen=True)
class ImageTransform:
    """Resize and crop to ``crop_size`` x ``crop_size``; training adds a random crop and a flip.

    Attributes
    ----------
    image_size : int
        Length of the shorter side after resizing (evaluation, and ``random_crop`` training).
    crop_size : int
        Side of the square output, at most ``image_size``.
    train_crop : {"random_crop", "random_resized_crop", "none"}
        ``random_crop``: resize, then a uniformly placed crop (the authors' Clothing1M and
        WebVision pipelines). ``random_resized_crop``: a crop of 8-100% of the area with aspect
        ratio in [3/4, 4/3], resized to ``crop_size`` (the usual ImageNet pipeline). ``none``:
        training images get the evaluation crop and no flip.
    """

    image_size: int
    crop_size: int
    train_crop: str = "random_crop"

    def __post_init__(self) -> None:
        for name in ("image_size", "crop_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.crop_size > self.image_size:
            raise ValueError(f"crop_size ({self.crop_size}) must not exceed image_size ({self.image_size})")
        if self.train_crop not in TRAIN_CROPS:
            raise ValueError(f"train_crop must be one of {', '.join(TRAIN_CROPS)}; got {self.train_crop!r}")

    @property
    def augments(self) -> bool:
        return self.train_crop != "none"

    def __call__(self, img, seed: tuple[int, int] | None = None) -> np.ndarray:
        """Return uint8 pixels of shape (crop_size, crop_size, 3).

        ``seed`` (two ints: the epoch's draw and the example's place in the epoch) selects the
        training transform; ``None`` gives the evaluation transform (resize + centre crop).
        """
        Image = pillow()
        if seed is None or not self.augments:
            out = _center_crop(_resize_shorter(img, self.image_size), self.crop_size)
        else:
            rng = np.random.default_rng(list(seed))
            if self.train_crop == "random_crop":
                img = _resize_shorter(img, self.image_size)
                w, h = img.size
                top = int(rng.integers(0, h - self.crop_size + 1))
                left = int(rng.integers(0, w - self.crop_size + 1))
                out = img.crop((left, top, left + self.crop_size, top + self.crop_size))
            else:
                left, top, cw, ch = _resized_crop_box(img.size, rng)
                out = img.resize((self.crop_size, self.crop_size), Image.BILINEAR, box=(left, top, left + cw, top + ch))
            if rng.random() < 0.5:
                out = out.transpose(Image.FLIP_LEFT_RIGHT)
        return np.asarray(out, dtype=np.uint8)


def _resize_shorter(img, size: int):
    w, h = img.size
    if min(w, h) == size:
        return img
    scale = size / min(w, h)
    new = (size, max(size, int(h * scale))) if w <= h else (max(size, int(w * scale)), size)
    return img.resize(new, pillow().BILINEAR)


def _center_crop(img, size: int):
    w, h = img.size
    left, top = int(round((w - size) / 2)), int(round((h - size) / 2))
    return img.crop((left, top, left + size, top + size))


def _resized_crop_box(size: tuple[int, int], rng: np.random.Generator) -> tuple[int, int, int, int]:
    """(left, top, width, height) of a crop covering 8-100% of the area, aspect ratio in [3/4, 4/3]."""
    w, h = size
    area = w * h
    log_lo, log_hi = math.log(3 / 4), math.log(4 / 3)
    for _ in range(10):
        target = area * rng.uniform(0.08, 1.0)
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        cw = int(round(math.sqrt(target * aspect)))
        ch = int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            return int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1)), cw, ch
    # fall back to the largest centred crop within the ratio bounds
    ratio = w / h
    if ratio < 3 / 4:
        cw, ch = w, int(round(w / (3 / 4)))
    elif ratio > 4 / 3:
        cw, ch = int(round(h * (4 / 3))), h
    else:
        cw, ch = w, h
    return (w - cw) // 2, (h - ch) // 2, cw, ch
