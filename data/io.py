"""Image reading helpers shared by the dataset readers."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from data.errors import ImageDecodeError

# Transparent pixels are composited onto this colour instead of keeping whatever RGB value the
# file happens to store under alpha = 0 (often black), so a logo on transparency looks as it
# would on a page.
_ALPHA_BACKGROUND = (255, 255, 255)


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
        image.mode == "P" and "transparency" in image.info
    )


# PIL's convert() clips high-bit-depth pixels to 0..255 instead of scaling them: a full-range
# 16-bit grayscale PNG turns almost all white, a 0..1 float TIFF almost all black.
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
HIGH_BIT_DEPTH_MODES = (*SIXTEEN_BIT_MODES, "I", "F")


class PixelValueError(ValueError):
    """Pixel values that have no faithful 8-bit reading (NaN, infinity, an unknown range)."""


def _to_uint8(values: np.ndarray, scale: float) -> Image.Image:
    return Image.fromarray(np.clip(np.rint(values * scale), 0, 255).astype(np.uint8), mode="L")


def high_bit_depth_to_8bit(image: Image.Image) -> Image.Image:
    """A grayscale image of mode I;16 / I / F as 8-bit 'L', scaled by the range its format holds.

    - 16-bit (I;16*, and I from a PNG, which Pillow uses only for 16-bit grayscale): 0..65535
      -> 0..255 (divided by 257, so 65535 is 255 exactly).
    - 32-bit integers (I, e.g. TIFF): values within 0..255 as they are, within 0..65535 as
      16-bit; anything else is refused.
    - float (F, e.g. TIFF): NaN / infinity refused; values within 0..1 scaled by 255, within
      0..255 as they are; anything else is refused.
    Raises :class:`PixelValueError` with the reason.
    """
    values = np.asarray(image, dtype=np.float64)
    if image.mode in SIXTEEN_BIT_MODES or (image.mode == "I" and image.format == "PNG"):
        return _to_uint8(values, 255 / 65535)
    if not np.isfinite(values).all():
        bad = int((~np.isfinite(values)).sum())
        raise PixelValueError(f"{bad} of its {values.size} pixels are NaN or infinite")
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if image.mode == "F" and low >= 0 and high <= 1:
        return _to_uint8(values, 255)
    if low >= 0 and high <= 255:
        return _to_uint8(values, 1)
    if image.mode == "I" and low >= 0 and high <= 65535:
        return _to_uint8(values, 255 / 65535)
    kind = "float" if image.mode == "F" else "32-bit integer"
    ranges = "0..1 or 0..255" if image.mode == "F" else "0..255 or 0..65535"
    raise PixelValueError(f"its {kind} pixel values run from {low:g} to {high:g}, outside {ranges}, so "
                          f"their brightness is unknown")


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode (L, 1, P, CMYK, YCbCr, RGBA, LA, I;16, I, F ...) to 8-bit RGB;
    high-bit-depth grayscale is scaled to 8 bits (:func:`high_bit_depth_to_8bit`)."""
    if image.mode == "RGB":
        return image
    if image.mode in HIGH_BIT_DEPTH_MODES:
        return high_bit_depth_to_8bit(image).convert("RGB")
    if _has_alpha(image):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _ALPHA_BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


# OpenCV's imdecode flag per DCT scale; IGNORE_ORIENTATION: PIL does not apply EXIF rotation either.
_OPENCV_REDUCED = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
                   8: cv2.IMREAD_REDUCED_COLOR_8}


def _decode_jpeg_opencv(path: Path, size: tuple[int, int], wanted: tuple[int, int] | None) -> np.ndarray | None:
    """An RGB or grayscale JPEG decoded by OpenCV at the smallest DCT scale giving ``wanted``;
    None where PIL should decode it instead (no end-of-image marker: PIL reports truncation,
    OpenCV would fill the rest grey; or OpenCV cannot read it).

    OpenCV's libjpeg-turbo gives the same pixels as PIL's, 25 % faster on VOC images, mostly
    because PIL's image -> numpy step copies (measured in docs/data_pipeline.md)."""
    data = np.fromfile(path, dtype=np.uint8)
    if data.size < 4 or data[-2] != 0xFF or data[-1] != 0xD9:
        return None
    factor = 1
    if wanted is not None:
        width, height = size
        for k in (8, 4, 2):
            if -(-width // k) >= wanted[0] and -(-height // k) >= wanted[1]:
                factor = k
                break
    bgr = cv2.imdecode(data, _OPENCV_REDUCED[factor] | cv2.IMREAD_IGNORE_ORIENTATION)
    if bgr is None or bgr.ndim != 3:
        return None
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


# ``draft(width, height)`` -> the smallest (width, height) the caller needs decoded, or None.
DraftRequest = Callable[[int, int], "tuple[int, int] | None"]


def read_rgb(path: str | Path, draft: DraftRequest | None = None) -> np.ndarray:
    """Read an image file as an ``HxWx3`` ``uint8`` RGB array (writable copy).

    ``draft``: called with the stored size before decoding; a JPEG is then decoded at the
    smallest of libjpeg's DCT scales (1/2, 1/4, 1/8) that still gives at least the size it
    returns, several times faster than a full decode, and by OpenCV (the fastest decoder here)
    when it is RGB or grayscale. The caller reads the scale from the returned array's shape.

    Grayscale, CMYK, palette and alpha images are converted to RGB. A missing file raises
    ``FileNotFoundError``; a file that cannot be decoded raises :class:`ImageDecodeError`
    naming it.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            if draft is not None and image.format == "JPEG":
                wanted = draft(*image.size)
                if image.mode in ("RGB", "L"):
                    array = _decode_jpeg_opencv(path, image.size, wanted)
                    if array is not None:
                        return array
                if wanted is not None:
                    image.draft("RGB", wanted)
            rgb = to_rgb(image)
            array = np.array(rgb, dtype=np.uint8)
    except FileNotFoundError:
        raise
    except PixelValueError as error:
        raise ImageDecodeError(
            f"Cannot read image '{path}' ({image.mode} pixels): {error}. Convert it to an 8-bit "
            "image or delete this file."
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ImageDecodeError(
            f"Cannot decode image '{path}': {error}. The file is corrupt, truncated or not an "
            "image; re-download the dataset or delete this file."
        ) from error
    if array.ndim != 3 or array.shape[2] != 3:  # defensive: PIL guarantees this for mode RGB
        raise ImageDecodeError(f"Image '{path}' decoded to shape {array.shape}, expected HxWx3.")
    return array
