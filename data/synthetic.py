"""Embedded synthetic dataset: procedural shape scenes written in the real on-disk formats.

One scene renderer feeds four writers, so the synthetic data goes through exactly the readers
used for the real datasets:

- :func:`write_image_folder`      -> ``root/<class>/<idx>.jpg`` (Flowers / Caltech style)
- :func:`write_voc_detection`     -> ``root/VOCdevkit/VOC2007`` (JPEGImages, Annotations XML,
  ImageSets/Main/{trainval,test}.txt)
- :func:`write_voc_segmentation`  -> ``root/VOCdevkit/VOC2012`` (JPEGImages, palette PNG
  SegmentationClass with 255 on object boundaries, ImageSets/Segmentation/{train,val}.txt)
- :func:`write_cifar10`           -> ``root/cifar-10-batches-py`` (CIFAR-10's python pickle
  batches: data_batch_1..5, test_batch, batches.meta; 32x32 images)

A scene is a noisy gradient background with clutter (lines, irregular blobs that are not
objects) and objects whose class is a shape; each class also has a colour family that is used
most of the time, so colour helps but does not decide the class. Objects vary in scale,
position, rotation, aspect, colour and shading, and may occlude each other or be cut by the
image border.

Everything is drawn from a seeded ``numpy.random.Generator`` per image, so the same seed and
parameters give byte-identical files (with the same Pillow/libjpeg/zlib builds; other builds
may rasterise or encode a few pixels differently). A dataset is written into a temporary folder and renamed
into place with a marker file (``.synthetic_done.json`` holding the parameters) as the last
step: a complete dataset is reused, a different parameter set regenerates it, and an
interrupted run never leaves a folder that looks complete.
"""
from __future__ import annotations

import colorsys
import json
import os
import pickle
import re
import secrets
import shutil
import socket
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from data.errors import DataFolderInUseError, DataFolderWriteError
from errors import ConfigError

SYNTHETIC_CLASSES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "cross",
    "ring",
    "crescent",
    "bar",
    "hexagon",
    "arrow",
)
# Bump when the renderer or the file layout changes: datasets written by an older version are
# then regenerated instead of silently reused.
SYNTHETIC_FORMAT_VERSION = 2
MARKER_NAME = ".synthetic_done.json"
JPEG_QUALITY = 90

# Probability that an object takes its class's colour family rather than a random hue.
_COLOUR_FAMILY_PROBABILITY = 0.8
# Every n-th image of each class in the image folder is stored as a grayscale ("L") JPEG so
# the RGB conversion path of the readers is exercised.
_GRAYSCALE_EVERY = 20
_GRAYSCALE_OFFSET = 3
# Streams of the per-image random generators, so the three writers never share draws.
_STREAM_IMAGE_FOLDER, _STREAM_DETECTION, _STREAM_SEGMENTATION, _STREAM_CIFAR = 1, 2, 3, 4


# ----------------------------------------------------------------------------------------------
# Shapes: outlines in unit coordinates (inside the unit circle). Each shape is a list of
# (polygon, fill) drawn in order on a mask; fill 255 adds area, fill 0 cuts a hole.
# ----------------------------------------------------------------------------------------------
def _ellipse(radius: float, centre: tuple[float, float] = (0.0, 0.0), points: int = 64) -> np.ndarray:
    angles = np.linspace(0.0, 2.0 * np.pi, points, endpoint=False)
    return np.stack([centre[0] + radius * np.cos(angles), centre[1] + radius * np.sin(angles)], 1)


def _regular_polygon(sides: int, radius: float = 1.0, phase: float = 0.0) -> np.ndarray:
    angles = phase + np.linspace(0.0, 2.0 * np.pi, sides, endpoint=False)
    return np.stack([radius * np.cos(angles), radius * np.sin(angles)], 1)


def _star(points: int = 5, inner: float = 0.45) -> np.ndarray:
    angles = -np.pi / 2 + np.arange(2 * points) * np.pi / points
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], 1)


def _rectangle(half_width: float, half_height: float) -> np.ndarray:
    return np.array(
        [[-half_width, -half_height], [half_width, -half_height], [half_width, half_height], [-half_width, half_height]]
    )


def _cross(arm: float = 0.3) -> np.ndarray:
    a, b = arm, 1.0
    return np.array(
        [[-a, -b], [a, -b], [a, -a], [b, -a], [b, a], [a, a], [a, b], [-a, b], [-a, a], [-b, a], [-b, -a], [-a, -a]]
    )


def _arrow() -> np.ndarray:
    return np.array([[-1.0, -0.22], [0.2, -0.22], [0.2, -0.62], [1.0, 0.0], [0.2, 0.62], [0.2, 0.22], [-1.0, 0.22]])


_SHAPES: dict[str, list[tuple[np.ndarray, int]]] = {
    "circle": [(_ellipse(1.0), 255)],
    "square": [(_rectangle(0.72, 0.72), 255)],
    "triangle": [(_regular_polygon(3, 1.0, -np.pi / 2), 255)],
    "star": [(_star(), 255)],
    "cross": [(_cross(), 255)],
    "ring": [(_ellipse(1.0), 255), (_ellipse(0.5), 0)],
    "crescent": [(_ellipse(1.0), 255), (_ellipse(0.85, (0.45, -0.1)), 0)],
    "bar": [(_rectangle(1.0, 0.24), 255)],
    "hexagon": [(_regular_polygon(6, 1.0), 255)],
    "arrow": [(_arrow(), 255)],
}
assert set(_SHAPES) == set(SYNTHETIC_CLASSES)


def voc_colormap(size: int = 256) -> np.ndarray:
    """The PASCAL VOC label colormap (``size x 3`` uint8): index bits spread over R, G, B."""
    colormap = np.zeros((size, 3), dtype=np.uint8)
    for index in range(size):
        red = green = blue = 0
        code = index
        for bit in range(8):
            red |= ((code >> 0) & 1) << (7 - bit)
            green |= ((code >> 1) & 1) << (7 - bit)
            blue |= ((code >> 2) & 1) << (7 - bit)
            code >>= 3
        colormap[index] = (red, green, blue)
    return colormap


# ----------------------------------------------------------------------------------------------
# Scene renderer
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ObjectRequest:
    """One object to place: its class and the range of its diameter relative to min(H, W)."""

    class_index: int
    scale_range: tuple[float, float]
    min_inside: float = 0.4  # fraction of its area that must lie inside the image


@dataclass
class RenderedObject:
    class_index: int
    full_area: int  # pixels of the whole shape, including parts outside the image
    visible_area: int  # pixels left visible after occlusion and border clipping
    truncated: bool  # the image border cuts the shape

    @property
    def visible_fraction(self) -> float:
        return self.visible_area / max(self.full_area, 1)


@dataclass
class RenderedScene:
    image: np.ndarray  # HxWx3 uint8
    instance_map: np.ndarray  # HxW uint8: 0 background, k + 1 for objects[k]
    objects: list[RenderedObject]

    def object_mask(self, index: int) -> np.ndarray:
        return self.instance_map == index + 1


def _random_colour(rng: np.random.Generator, hue: float, saturation: tuple[float, float], value: tuple[float, float]) -> np.ndarray:
    rgb = colorsys.hsv_to_rgb(hue % 1.0, rng.uniform(*saturation), rng.uniform(*value))
    return np.array(rgb, dtype=np.float32) * 255.0


def _object_colour(rng: np.random.Generator, class_index: int) -> np.ndarray:
    if rng.random() < _COLOUR_FAMILY_PROBABILITY:
        hue = class_index / len(SYNTHETIC_CLASSES) + rng.uniform(-0.035, 0.035)
    else:
        hue = rng.random()
    return _random_colour(rng, hue, (0.55, 1.0), (0.5, 1.0))


def _background(rng: np.random.Generator, width: int, height: int, clutter: bool = True) -> np.ndarray:
    """Gradient between two muted colours + low-frequency blotches + clutter (uint8 HxWx3)."""
    start = _random_colour(rng, rng.random(), (0.0, 0.35), (0.3, 0.9))
    end = _random_colour(rng, rng.random(), (0.0, 0.35), (0.3, 0.9))
    angle = rng.uniform(0.0, 2.0 * np.pi)
    # Both are smooth, so they are built on a coarse grid and upsampled once (cheap at any size).
    cells = int(rng.integers(3, 7))
    ys, xs = np.mgrid[0:cells, 0:cells].astype(np.float32) / (cells - 1)
    ramp = xs * np.cos(angle) + ys * np.sin(angle)
    ramp = (ramp - ramp.min()) / max(float(ramp.max() - ramp.min()), 1e-6)
    coarse = start + (end - start) * ramp[..., None]
    coarse += (rng.random((cells, cells, 3), dtype=np.float32) - 0.5) * 255.0 * rng.uniform(0.05, 0.2)
    coarse = Image.fromarray(np.clip(coarse, 0, 255).astype(np.uint8))
    image = coarse.resize((width, height), Image.Resampling.BICUBIC)
    if not clutter:
        return np.asarray(image)
    draw = ImageDraw.Draw(image)
    side = min(width, height)
    for _ in range(int(rng.integers(2, 8))):  # thin lines
        points = [tuple(p) for p in (rng.random((2, 2)) * (width, height)).tolist()]
        colour = tuple(int(c) for c in _random_colour(rng, rng.random(), (0.0, 1.0), (0.1, 1.0)))
        draw.line(points, fill=colour, width=int(rng.integers(1, 3)))
    for _ in range(int(rng.integers(0, 4))):  # irregular blobs
        vertices = int(rng.integers(7, 13))
        angles = np.sort(rng.uniform(0, 2 * np.pi, vertices))
        radii = rng.uniform(0.4, 1.0, vertices) * side * rng.uniform(0.03, 0.08)
        centre = rng.random(2) * (width, height)
        outline = centre + np.stack([radii * np.cos(angles), radii * np.sin(angles)], 1)
        colour = tuple(int(c) for c in _random_colour(rng, rng.random(), (0.0, 0.8), (0.1, 1.0)))
        draw.polygon([tuple(p) for p in outline.tolist()], fill=colour)
    return np.asarray(image)


def _shape_patch(shape: str, radius: float, angle: float, aspect: float, centre: tuple[float, float]) -> tuple[np.ndarray, int, int]:
    """Rasterise a shape into a small boolean patch; returns (mask, patch x0, patch y0)."""
    half = int(np.ceil(radius * max(aspect, 1.0))) + 2
    x0, y0 = int(np.floor(centre[0])) - half, int(np.floor(centre[1])) - half
    local = np.array([centre[0] - x0, centre[1] - y0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    patch = Image.new("L", (2 * half + 1, 2 * half + 1), 0)
    draw = ImageDraw.Draw(patch)
    for outline, fill in _SHAPES[shape]:
        points = (outline * (aspect, 1.0)) @ rotation.T * radius + local
        draw.polygon([tuple(p) for p in points.tolist()], fill=fill)
    return np.asarray(patch) > 0, x0, y0


def _object_fill(rng: np.random.Generator, class_index: int, height: int, width: int) -> np.ndarray:
    """Colour with linear shading and, sometimes, stripes (float32 HxWx3)."""
    colour = _object_colour(rng, class_index)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    ys = ys / max(height - 1, 1) - 0.5
    xs = xs / max(width - 1, 1) - 0.5
    direction = rng.uniform(0.0, 2.0 * np.pi)
    shading = 1.0 + rng.uniform(0.1, 0.5) * (xs * np.cos(direction) + ys * np.sin(direction))
    if rng.random() < 0.3:
        stripe_angle = rng.uniform(0.0, np.pi)
        stripes = np.sin(rng.uniform(12.0, 30.0) * (xs * np.cos(stripe_angle) + ys * np.sin(stripe_angle))) > 0
        shading = shading * np.where(stripes, 1.0, rng.uniform(0.6, 0.85))
    return colour * shading[..., None]


def render_scene(
    rng: np.random.Generator,
    width: int,
    height: int,
    requests: Sequence[ObjectRequest],
    min_visible: float = 0.35,
    attempts: int = 30,
    noise_sigma: tuple[float, float] = (3.0, 10.0),
    clutter: bool = True,
) -> RenderedScene:
    """Draw the background, then the requested objects back to front.

    Each object is placed by rejection sampling: it must keep ``min_inside`` of itself in the
    image and leave at least ``min_visible`` of every earlier object visible; after a few
    failed tries the object shrinks, and after ``attempts`` it is dropped (so a scene may hold
    fewer objects than requested, never zero when one was requested: the first object has
    nothing to occlude).
    """
    canvas = np.array(_background(rng, width, height, clutter))  # writable uint8 copy
    instance_map = np.zeros((height, width), dtype=np.uint8)
    side = min(width, height)
    objects: list[RenderedObject] = []
    for request in requests:
        scale = float(np.exp(rng.uniform(np.log(request.scale_range[0]), np.log(request.scale_range[1]))))
        shape = SYNTHETIC_CLASSES[request.class_index]
        aspect = rng.uniform(0.85, 1.15)
        for attempt in range(attempts):
            if attempt >= attempts // 3:
                scale *= 0.93
            # At least 14 px across, so even the thin parts of rings survive the void band.
            radius = max(scale * side / 2.0, 7.0)
            centre = (rng.uniform(0, width), rng.uniform(0, height))
            mask, x0, y0 = _shape_patch(shape, radius, rng.uniform(0, 2 * np.pi), aspect, centre)
            full_area = int(mask.sum())
            # Intersection of the patch with the image.
            ix0, iy0 = max(x0, 0), max(y0, 0)
            ix1, iy1 = min(x0 + mask.shape[1], width), min(y0 + mask.shape[0], height)
            if ix0 >= ix1 or iy0 >= iy1 or full_area == 0:
                continue
            inside = mask[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0]
            inside_area = int(inside.sum())
            if inside_area < max(request.min_inside * full_area, 12):
                continue
            covered = np.bincount(instance_map[iy0:iy1, ix0:ix1][inside], minlength=len(objects) + 1)
            if any(obj.visible_area - covered[k + 1] < min_visible * obj.full_area for k, obj in enumerate(objects)):
                continue
            for k, obj in enumerate(objects):
                obj.visible_area -= int(covered[k + 1])
            instance_map[iy0:iy1, ix0:ix1][inside] = len(objects) + 1
            fill = _object_fill(rng, request.class_index, iy1 - iy0, ix1 - ix0)
            canvas[iy0:iy1, ix0:ix1][inside] = np.clip(fill[inside], 0, 255).astype(np.uint8)
            objects.append(
                RenderedObject(request.class_index, full_area, inside_area, truncated=inside_area < full_area)
            )
            break
    image = Image.fromarray(canvas)
    # A slight blur softens the aliased polygon edges the way a camera would.
    image = np.asarray(image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.8))), np.float32)
    image = image + rng.standard_normal(image.shape, dtype=np.float32) * rng.uniform(*noise_sigma)
    return RenderedScene(np.clip(image, 0, 255).astype(np.uint8), instance_map, objects)


def _random_size(rng: np.random.Generator, base: int, spread: tuple[float, float] = (0.75, 1.25)) -> tuple[int, int]:
    """(width, height), each independently ``spread`` x base: non-square, varied sizes."""
    width = int(round(base * rng.uniform(*spread)))
    height = int(round(base * rng.uniform(*spread)))
    return max(width, 16), max(height, 16)


def render_classification_scene(rng: np.random.Generator, image_size: int, class_index: int, class_pool: Sequence[int]) -> RenderedScene:
    """One dominant, mostly visible object of ``class_index`` plus up to two small distractors."""
    others = [c for c in class_pool if c != class_index]
    requests = [ObjectRequest(class_index, (0.45, 0.85), min_inside=0.85)]
    for _ in range(int(rng.integers(0, 3)) if others else 0):
        requests.append(ObjectRequest(int(rng.choice(others)), (0.1, 0.2), min_inside=0.5))
    return render_scene(rng, image_size, image_size, requests, min_visible=0.75)


def render_voc_scene(rng: np.random.Generator, image_size: int, num_classes: int,
                     objects: tuple[int, int] = (1, 6), object_scale: tuple[float, float] = (0.1, 0.6),
                     clutter: bool = True) -> RenderedScene:
    """``objects`` (default 1-6) objects of random classes, ``object_scale`` (default 10-60 %) of
    the shorter side, on a varied-size image; ``clutter=False`` leaves out the background's
    distractor lines and blobs."""
    width, height = _random_size(rng, image_size)
    count = int(rng.integers(objects[0], objects[1] + 1))
    classes = rng.integers(0, num_classes, count)
    requests = [ObjectRequest(int(c), tuple(object_scale), min_inside=0.4) for c in classes]
    return render_scene(rng, width, height, requests, clutter=clutter)


# ----------------------------------------------------------------------------------------------
# Writing datasets once, atomically
# ----------------------------------------------------------------------------------------------
def _read_marker(folder: Path) -> dict | None:
    try:
        return json.loads((folder / MARKER_NAME).read_text())
    except (OSError, ValueError):
        return None


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: existence check only
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


_STALE_FOREIGN_TEMPORARY_S = 24 * 3600


def _temporary_name(final_dir: Path) -> str:
    """``.<name>.tmp-<host>-<pid>-<random>``: unique beyond the PID, since processes in separate
    PID namespaces (containers sharing a volume) can have the same PID."""
    host = re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname()) or "host"
    return f".{final_dir.name}.tmp-{host}-{os.getpid()}-{secrets.token_hex(4)}"


def _remove_stale_temporaries(final_dir: Path) -> None:
    """Delete temp folders left by interrupted writers: on this host, those whose process is
    gone; any other (another host, or a PID we cannot tell apart from ours: containers sharing
    a volume may all be PID 1) only when untouched for a day."""
    host = re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname()) or "host"
    for stale in final_dir.parent.glob(f".{final_dir.name}.tmp-*"):
        parts = stale.name.rsplit("-", 3)
        try:
            pid = int(parts[2]) if len(parts) == 4 and parts[1] == host else None
        except ValueError:
            pid = None
        if pid is not None and pid != os.getpid():
            if _process_alive(pid):
                continue
        else:
            try:
                if time.time() - stale.stat().st_mtime < _STALE_FOREIGN_TEMPORARY_S:
                    continue
            except OSError:
                continue
        shutil.rmtree(stale, ignore_errors=True)


def _write_once(final_dir: Path, params: dict, write: Callable[[Path], None]) -> bool:
    """Run ``write`` into a temp folder and rename it to ``final_dir`` unless the marker matches.

    Returns True when files were written, False when the existing dataset was reused.
    """
    final_dir = Path(final_dir)
    if _read_marker(final_dir) == params:
        return False
    if final_dir.exists() and (not final_dir.is_dir() or (any(final_dir.iterdir()) and _read_marker(final_dir) is None)):
        raise DataFolderInUseError(
            f"'{final_dir}' exists and is not a synthetic dataset written by this project (no "
            f"{MARKER_NAME}); refusing to overwrite it. Choose another data.root for the "
            "synthetic data or remove that folder."
        )
    temporary = final_dir.parent / _temporary_name(final_dir)
    try:
        final_dir.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(final_dir)
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir()
    except OSError as error:
        raise _not_writable(final_dir, error) from error
    try:
        write(temporary)
        # The marker is written last: its presence means the folder is complete.
        (temporary / MARKER_NAME).write_text(json.dumps(params, indent=2, sort_keys=True) + "\n")
        if _read_marker(final_dir) == params:  # another process finished the same dataset first
            shutil.rmtree(temporary)
            return False
        if final_dir.exists():  # an older synthetic dataset with other parameters
            shutil.rmtree(final_dir)
        os.replace(temporary, final_dir)
    except OSError as error:
        shutil.rmtree(temporary, ignore_errors=True)
        raise _not_writable(final_dir, error) from error
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return True


def _not_writable(final_dir: Path, error: OSError) -> DataFolderWriteError:
    where = f" ({error.filename})" if error.filename else ""
    return DataFolderWriteError(
        f"cannot write the synthetic dataset to '{final_dir}': {error.strerror or error}{where}. "
        "Make that folder writable or point paths.synthetic_dir (or paths.data_dir) at a writable "
        "folder.")


def _check_counts(**counts: int) -> None:
    for name, value in counts.items():
        if not isinstance(value, (int, np.integer)) or value < 0:
            raise ConfigError(f"{name} must be a non-negative integer, got {value!r}.")


def _check_num_classes(num_classes: int) -> list[str]:
    if not 1 <= num_classes <= len(SYNTHETIC_CLASSES):
        raise ConfigError(
            f"num_classes={num_classes} is not supported by the synthetic dataset: choose "
            f"1..{len(SYNTHETIC_CLASSES)} (classes: {', '.join(SYNTHETIC_CLASSES)})."
        )
    return list(SYNTHETIC_CLASSES[:num_classes])


_DEFAULT_SCENE_MIX = {"objects": [1, 6], "object_scale": [0.1, 0.6], "clutter": True}


def _check_scene_mix(objects: Sequence[int], object_scale: Sequence[float]) -> tuple[list[int], list[float]]:
    objects, object_scale = [int(v) for v in objects], [float(v) for v in object_scale]
    if len(objects) != 2 or not 1 <= objects[0] <= objects[1]:
        raise ValueError(f"objects must be [min, max] with 1 <= min <= max, got {objects}")
    if len(object_scale) != 2 or not 0 < object_scale[0] <= object_scale[1] <= 1:
        raise ValueError(f"object_scale must be [min, max] fractions of the shorter side in (0, 1], "
                         f"got {object_scale}")
    return objects, object_scale


def _check_image_size(image_size: int) -> None:
    if not isinstance(image_size, (int, np.integer)) or image_size < 32:
        raise ConfigError(f"image_size must be an integer >= 32, got {image_size!r}.")


def _save_jpeg(image: Image.Image, path: Path) -> None:
    # Fixed encoder settings (no optimise / progressive) keep the bytes reproducible.
    image.save(path, "JPEG", quality=JPEG_QUALITY)


def write_image_folder(
    root: str | Path,
    num_classes: int = len(SYNTHETIC_CLASSES),
    images_per_class: int = 40,
    image_size: int = 128,
    seed: int = 0,
) -> list[str]:
    """Write ``root/<class>/<idx>.jpg`` (square ``image_size`` JPEGs); returns the class names in
    the image-folder readers' label order (sorted by name).

    Each image holds one dominant object of its class plus small distractors of other classes.
    Every 20th image of a class (index 3, 23, ...) is a grayscale JPEG. Reuses an existing
    dataset written with the same parameters.
    """
    class_names = _check_num_classes(num_classes)
    _check_counts(images_per_class=images_per_class)
    _check_image_size(image_size)
    params = {
        "kind": "image_folder",
        "format_version": SYNTHETIC_FORMAT_VERSION,
        "num_classes": int(num_classes),
        "images_per_class": int(images_per_class),
        "image_size": int(image_size),
        "seed": int(seed),
        "class_names": class_names,
    }
    pool = list(range(num_classes))

    def write(folder: Path) -> None:
        for class_index, name in enumerate(class_names):
            (folder / name).mkdir()
            for index in range(images_per_class):
                rng = np.random.default_rng([seed, _STREAM_IMAGE_FOLDER, class_index, index])
                scene = render_classification_scene(rng, image_size, class_index, pool)
                image = Image.fromarray(scene.image)
                if index % _GRAYSCALE_EVERY == _GRAYSCALE_OFFSET:
                    image = image.convert("L")
                _save_jpeg(image, folder / name / f"{index:05d}.jpg")

    _write_once(Path(root), params, write)
    return sorted(class_names)


def image_folder_files(root: str | Path) -> list[Path]:
    """Every image a complete synthetic image folder at ``root`` holds, from its marker
    (empty when there is no marker)."""
    params = _read_marker(Path(root)) or {}
    return [Path(root) / name / f"{index:05d}.jpg"
            for name in params.get("class_names", []) for index in range(params.get("images_per_class", 0))]


def prepare_synthetic_classification(
    root: str | Path,
    image_size: int = 128,
    num_classes: int = len(SYNTHETIC_CLASSES),
    images_per_class: int = 40,
    seed: int = 0,
) -> Path:
    """Write (once) the synthetic image folder under ``root`` and return its path.

    Read the returned folder with ``ImageFolderDataModule(root=..., layout="imagefolder")``.
    """
    folder = Path(root) / "synthetic_imagefolder"
    write_image_folder(folder, num_classes=num_classes, images_per_class=images_per_class, image_size=image_size, seed=seed)
    return folder


CIFAR_IMAGE_SIZE = 32
CIFAR_TRAIN_BATCHES = 5


def _cifar_rows(images: Sequence[np.ndarray]) -> np.ndarray:
    """CIFAR's row format: [N, 3072] uint8, each row the red, green, then blue plane (row-major)."""
    return np.stack([image.transpose(2, 0, 1).reshape(-1) for image in images]).astype(np.uint8)


def _write_pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as handle:
        pickle.dump(obj, handle, protocol=2)  # the official files are Python 2 pickles


def write_cifar10(
    root: str | Path,
    num_classes: int = len(SYNTHETIC_CLASSES),
    images_per_class: int = 50,
    test_images_per_class: int | None = None,
    image_size: int = 64,
    seed: int = 0,
) -> list[str]:
    """Write ``root/cifar-10-batches-py`` in CIFAR-10's python layout: ``data_batch_1``..``5``
    (the training images, shuffled and split evenly), ``test_batch`` and ``batches.meta``
    (``label_names``), pickled dicts with CIFAR's keys (``data`` [N, 3072] uint8, ``labels``,
    ``filenames``, ``batch_label``). Returns the class names (label order).

    Scenes are rendered at ``image_size`` and reduced to 32x32 (box filter).
    ``test_images_per_class`` defaults to a fifth of ``images_per_class`` (at least 1).
    """
    class_names = _check_num_classes(num_classes)
    if test_images_per_class is None:
        test_images_per_class = max(1, images_per_class // 5)
    _check_counts(images_per_class=images_per_class, test_images_per_class=test_images_per_class)
    _check_image_size(image_size)
    params = {
        "kind": "cifar10",
        "format_version": SYNTHETIC_FORMAT_VERSION,
        "num_classes": int(num_classes),
        "images_per_class": int(images_per_class),
        "test_images_per_class": int(test_images_per_class),
        "image_size": int(image_size),
        "seed": int(seed),
        "class_names": class_names,
    }
    pool = list(range(num_classes))

    def render(class_index: int, index: int) -> np.ndarray:
        rng = np.random.default_rng([seed, _STREAM_CIFAR, class_index, index])
        scene = render_classification_scene(rng, image_size, class_index, pool)
        small = Image.fromarray(scene.image).resize((CIFAR_IMAGE_SIZE, CIFAR_IMAGE_SIZE), Image.Resampling.BOX)
        return np.asarray(small)

    def batch(label_text: str, samples: Sequence[tuple[int, int]]) -> dict:
        return {
            "batch_label": label_text,
            "labels": [class_index for class_index, _ in samples],
            "data": _cifar_rows([render(c, i) for c, i in samples]),
            "filenames": [f"{class_names[c]}_{i:05d}.png" for c, i in samples],
        }

    def write(folder: Path) -> None:
        # Image indices: training images first, then the test images of each class.
        train = [(c, i) for c in range(num_classes) for i in range(images_per_class)]
        test = [(c, images_per_class + i) for c in range(num_classes) for i in range(test_images_per_class)]
        order = np.random.default_rng([seed, _STREAM_CIFAR]).permutation(len(train))
        chunks = np.array_split(order, CIFAR_TRAIN_BATCHES)
        for number, chunk in enumerate(chunks, start=1):
            _write_pickle(folder / f"data_batch_{number}",
                          batch(f"training batch {number} of {CIFAR_TRAIN_BATCHES}", [train[k] for k in chunk]))
        _write_pickle(folder / "test_batch", batch("testing batch 1 of 1", test))
        _write_pickle(folder / "batches.meta", {"num_cases_per_batch": len(chunks[0]),
                                                "label_names": class_names, "num_vis": 3 * CIFAR_IMAGE_SIZE ** 2})

    _write_once(Path(root) / "cifar-10-batches-py", params, write)
    return class_names


def _box_of(mask: np.ndarray) -> tuple[int, int, int, int]:
    """VOC box of a boolean mask: 1-based inclusive (xmin, ymin, xmax, ymax)."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]) + 1, int(rows[0]) + 1, int(cols[-1]) + 1, int(rows[-1]) + 1


def _is_difficult(obj: RenderedObject, box: tuple[int, int, int, int], width: int, height: int) -> bool:
    """Small (longer box side < 10 % of the shorter image side) or mostly hidden objects."""
    longer_side = max(box[2] - box[0] + 1, box[3] - box[1] + 1)
    return obj.visible_fraction < 0.5 or longer_side < 0.1 * min(width, height)


def _sub(parent: ET.Element, tag: str, text: object | None = None) -> ET.Element:
    element = ET.SubElement(parent, tag)
    if text is not None:
        element.text = str(text)
    return element


def voc_annotation_xml(folder: str, filename: str, width: int, height: int, objects: Sequence[dict], segmented: bool = False) -> str:
    """A VOC annotation document. ``objects``: dicts with name, truncated, difficult, bndbox."""
    annotation = ET.Element("annotation")
    _sub(annotation, "folder", folder)
    _sub(annotation, "filename", filename)
    source = _sub(annotation, "source")
    _sub(source, "database", "Synthetic Shapes Database")
    _sub(source, "annotation", "procedural (cogsuite data.synthetic)")
    _sub(source, "image", "rendered")
    size = _sub(annotation, "size")
    _sub(size, "width", width)
    _sub(size, "height", height)
    _sub(size, "depth", 3)
    _sub(annotation, "segmented", int(segmented))
    for obj in objects:
        element = _sub(annotation, "object")
        _sub(element, "name", obj["name"])
        _sub(element, "pose", "Unspecified")
        _sub(element, "truncated", int(obj["truncated"]))
        _sub(element, "difficult", int(obj["difficult"]))
        bndbox = _sub(element, "bndbox")
        for key, value in zip(("xmin", "ymin", "xmax", "ymax"), obj["bndbox"]):
            _sub(bndbox, key, value)
    ET.indent(annotation, space="\t")
    return ET.tostring(annotation, encoding="unicode") + "\n"


def _write_split(path: Path, ids: Sequence[str]) -> None:
    path.write_text("".join(f"{image_id}\n" for image_id in ids))


def write_voc_detection(
    root: str | Path,
    num_train: int = 200,
    num_test: int = 50,
    image_size: int = 160,
    seed: int = 0,
    num_classes: int = len(SYNTHETIC_CLASSES),
    objects: Sequence[int] = (1, 6),
    object_scale: Sequence[float] = (0.1, 0.6),
    clutter: bool = True,
) -> list[str]:
    """Write ``root/VOCdevkit/VOC2007`` (JPEGImages, Annotations, ImageSets/Main/{trainval,test}.txt).

    Images are 0.75-1.25 x ``image_size`` per side, with ``objects`` (min, max; default 1-6)
    objects each of ``object_scale`` (default 10-60 %) of the shorter side; ``clutter=False``
    drops the distractor lines and blobs. Boxes are the visible extent, small or mostly hidden
    objects are ``difficult``. Returns the class names (the ``<name>`` values, label i + 1 for
    class_names[i]).
    """
    class_names = _check_num_classes(num_classes)
    _check_counts(num_train=num_train, num_test=num_test)
    _check_image_size(image_size)
    objects, object_scale = _check_scene_mix(objects, object_scale)
    scene_mix = {"objects": objects, "object_scale": object_scale, "clutter": bool(clutter)}
    params = {
        "kind": "voc_detection",
        "format_version": SYNTHETIC_FORMAT_VERSION,
        "num_train": int(num_train),
        "num_test": int(num_test),
        "image_size": int(image_size),
        "seed": int(seed),
        "class_names": class_names,
        # Recorded only when it differs from the default, so existing datasets stay valid.
        **({"scene_mix": scene_mix} if scene_mix != _DEFAULT_SCENE_MIX else {}),
    }
    ids = [f"{n + 1:06d}" for n in range(num_train + num_test)]

    def write(folder: Path) -> None:
        for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
            (folder / sub).mkdir(parents=True)
        for n, image_id in enumerate(ids):
            rng = np.random.default_rng([seed, _STREAM_DETECTION, n])
            scene = render_voc_scene(rng, image_size, num_classes, objects, object_scale, clutter)
            height, width = scene.instance_map.shape
            annotated = []
            for k, obj in enumerate(scene.objects):
                box = _box_of(scene.object_mask(k))
                annotated.append(
                    {
                        "name": class_names[obj.class_index],
                        "truncated": obj.truncated,
                        "difficult": _is_difficult(obj, box, width, height),
                        "bndbox": box,
                    }
                )
            _save_jpeg(Image.fromarray(scene.image), folder / "JPEGImages" / f"{image_id}.jpg")
            xml = voc_annotation_xml("VOC2007", f"{image_id}.jpg", width, height, annotated)
            (folder / "Annotations" / f"{image_id}.xml").write_text(xml)
        _write_split(folder / "ImageSets/Main/trainval.txt", ids[:num_train])
        _write_split(folder / "ImageSets/Main/test.txt", ids[num_train:])

    _write_once(Path(root) / "VOCdevkit" / "VOC2007", params, write)
    return class_names


def boundary_band(instance_map: np.ndarray, width: int) -> np.ndarray:
    """Pixels whose ``width x width`` neighbourhood (odd width) holds more than one instance id
    (at the edges the window is cut: "nearest" padding repeats values already in it)."""
    from scipy import ndimage

    size = 2 * max(width // 2, 1) + 1
    highest = ndimage.maximum_filter(instance_map, size=size, mode="nearest")
    lowest = ndimage.minimum_filter(instance_map, size=size, mode="nearest")
    return highest != lowest


def segmentation_mask(scene: RenderedScene) -> np.ndarray:
    """Class-index mask (0 background, c + 1 objects, 255 on a thin band at every boundary)."""
    lookup = np.zeros(256, dtype=np.uint8)
    for k, obj in enumerate(scene.objects):
        lookup[k + 1] = obj.class_index + 1
    mask = lookup[scene.instance_map]
    # VOC's void band is about 5 px on 500 px images; keep roughly that proportion.
    band_width = 3 if min(scene.instance_map.shape) < 320 else 5
    mask[boundary_band(scene.instance_map, band_width)] = 255
    return mask


def write_voc_segmentation(
    root: str | Path,
    num_train: int = 200,
    num_val: int = 50,
    image_size: int = 160,
    seed: int = 0,
    num_classes: int = len(SYNTHETIC_CLASSES),
) -> list[str]:
    """Write ``root/VOCdevkit/VOC2012`` (JPEGImages, SegmentationClass palette PNGs,
    ImageSets/Segmentation/{train,val,trainval}.txt). Mask value c + 1 is class_names[c];
    returns the class names."""
    class_names = _check_num_classes(num_classes)
    _check_counts(num_train=num_train, num_val=num_val)
    _check_image_size(image_size)
    params = {
        "kind": "voc_segmentation",
        "format_version": SYNTHETIC_FORMAT_VERSION,
        "num_train": int(num_train),
        "num_val": int(num_val),
        "image_size": int(image_size),
        "seed": int(seed),
        "class_names": class_names,
    }
    ids = [f"2012_{n + 1:06d}" for n in range(num_train + num_val)]
    palette = voc_colormap().reshape(-1).tolist()

    def write(folder: Path) -> None:
        for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
            (folder / sub).mkdir(parents=True)
        for n, image_id in enumerate(ids):
            rng = np.random.default_rng([seed, _STREAM_SEGMENTATION, n])
            scene = render_voc_scene(rng, image_size, num_classes)
            _save_jpeg(Image.fromarray(scene.image), folder / "JPEGImages" / f"{image_id}.jpg")
            mask = Image.fromarray(segmentation_mask(scene))
            mask.putpalette(palette)  # turns the "L" image into a "P" image with the VOC colours
            mask.save(folder / "SegmentationClass" / f"{image_id}.png")
        _write_split(folder / "ImageSets/Segmentation/train.txt", ids[:num_train])
        _write_split(folder / "ImageSets/Segmentation/val.txt", ids[num_train:])
        _write_split(folder / "ImageSets/Segmentation/trainval.txt", ids)

    _write_once(Path(root) / "VOCdevkit" / "VOC2012", params, write)
    return class_names
