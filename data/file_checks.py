"""Checks of single image and mask files, run when a dataset is indexed.

Each returns what is wrong in words (None when the file is fine), so the dataset readers can
add how to fix it for their layout.

Images: the header is read (format, size, mode) and the pixel data is decoded. A header read
with ``Image.verify()`` alone is not enough: for JPEG ``verify()`` checks nothing. Of 600
random corruptions (truncation, overwritten or flipped bytes, zeroed header) of the genuine
VOC/Caltech fixture JPEGs, the reader failed on 440; header + ``verify()`` caught only 161 of
those, this check caught all 440 and flagged none of the 160 the reader reads. JPEGs are
decoded through libjpeg's DCT scaling (``Image.draft`` to 1/8 of the size), which still walks
the whole entropy-coded stream but skips most of the inverse DCT and colour conversion; other
formats are decoded fully.
"""
from __future__ import annotations

import functools
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from data.io import HIGH_BIT_DEPTH_MODES, PixelValueError, high_bit_depth_to_8bit, to_rgb

MASK_MODES = ("P", "L")


@functools.lru_cache(maxsize=None)
def _converts_to_rgb(mode: str) -> bool:
    """Whether the reader (``data.io.to_rgb``) can turn an image of ``mode`` into RGB."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            to_rgb(Image.new(mode, (1, 1)))
    except (ValueError, OSError):
        return False
    return True


def _decode_problem(error: BaseException) -> str:
    return f"cannot be decoded ({type(error).__name__}: {error})"


def image_problem(path: Path) -> tuple[tuple[int, int] | None, str | None]:
    """``((width, height), None)`` for a readable image, ``(None, problem)`` otherwise."""
    try:
        if Path(path).stat().st_size == 0:
            return None, "is empty (0 bytes)"
        with Image.open(path) as image:
            size, mode = image.size, image.mode
            if not _converts_to_rgb(mode):
                return None, f"has pixel mode {mode!r}, which cannot be converted to RGB"
            if image.format == "JPEG":
                image.draft(mode, (max(1, size[0] // 8), max(1, size[1] // 8)))
            image.load()
            if mode in HIGH_BIT_DEPTH_MODES:  # NaN or an unknown range: the reader would refuse it
                high_bit_depth_to_8bit(image)
    except PixelValueError as error:
        return None, f"cannot be read as an 8-bit image ({mode} pixels): {error}"
    except FileNotFoundError:
        return None, "is missing"
    except Image.DecompressionBombError as error:
        return None, f"is too large to decode safely ({error})"
    except Exception as error:  # noqa: BLE001 - PIL raises many types (OSError, SyntaxError, ...) for bad files
        return None, _decode_problem(error)
    if size[0] < 1 or size[1] < 1:
        return None, f"has no pixels ({size[0]}x{size[1]})"
    return size, None


def mask_problem(path: Path, image_size: tuple[int, int] | None, num_classes: int,
                 ignore_index: int) -> str | None:
    """What is wrong with a class-index mask: missing, not decodable, a colour (RGB) mask,
    another mode, a size other than its image's, or class ids outside ``0..num_classes-1``
    (``ignore_index`` aside)."""
    try:
        with Image.open(path) as mask:
            mode = mask.mode
            if mode in ("RGB", "RGBA"):
                return (f"is an {mode} colour mask; masks must hold class indices (palette 'P' PNGs as in "
                        "VOC2012 SegmentationClass, or 8-bit 'L' PNGs as in SegmentationClassAug)")
            if mode not in MASK_MODES:
                return f"has pixel mode {mode!r}; masks must be palette 'P' or 8-bit 'L' index PNGs"
            if image_size is not None and mask.size != tuple(image_size):
                return (f"is {mask.size[0]}x{mask.size[1]} but its image is "
                        f"{image_size[0]}x{image_size[1]}")
            values = np.asarray(mask)
    except FileNotFoundError:
        return "is missing"
    except Exception as error:  # noqa: BLE001 - as in image_problem
        return _decode_problem(error)
    outside = values[(values >= num_classes) & (values != ignore_index)]
    if outside.size:
        bad = np.unique(outside).tolist()
        return (f"holds class ids {bad}, outside 0..{num_classes - 1} (and {ignore_index} = ignore); "
                "check num_classes/class_names for this dataset")
    return None
