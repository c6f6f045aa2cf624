"""Image reading helpers shared by the dataset readers."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

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


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode (L, 1, P, CMYK, YCbCr, RGBA, LA, I;16 ...) to 8-bit RGB."""
    if image.mode == "RGB":
        return image
    if _has_alpha(image):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _ALPHA_BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


# ``draft(width, height)`` -> the smallest (width, height) the caller needs decoded, or None.
DraftRequest = Callable[[int, int], "tuple[int, int] | None"]


def read_rgb(path: str | Path, draft: DraftRequest | None = None) -> np.ndarray:
    """Read an image file as an ``HxWx3`` ``uint8`` RGB array (writable copy).

    ``draft``: called with the stored size before decoding; a JPEG is then decoded at the
    smallest of libjpeg's DCT scales (1/2, 1/4, 1/8) that still gives at least the size it
    returns (PIL's ``draft``), several times faster than a full decode. The caller reads the
    scale from the returned array's shape.

    Grayscale, CMYK, palette and alpha images are converted to RGB. A missing file raises
    ``FileNotFoundError``; a file that cannot be decoded raises :class:`ImageDecodeError`
    naming it.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            if draft is not None and image.format == "JPEG":
                wanted = draft(*image.size)
                if wanted is not None:
                    image.draft("RGB", wanted)
            rgb = to_rgb(image)
            array = np.array(rgb, dtype=np.uint8)
    except FileNotFoundError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ImageDecodeError(
            f"Cannot decode image '{path}': {error}. The file is corrupt, truncated or not an "
            "image; re-download the dataset or delete this file."
        ) from error
    if array.ndim != 3 or array.shape[2] != 3:  # defensive: PIL guarantees this for mode RGB
        raise ImageDecodeError(f"Image '{path}' decoded to shape {array.shape}, expected HxWx3.")
    return array
