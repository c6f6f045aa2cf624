"""The scene renderer every synthetic format draws from: shapes, colour families, backgrounds
with clutter, objects with masks, and the VOC palette.
"""
from __future__ import annotations

import colorsys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


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

# Probability that an object takes its class's colour family rather than a random hue.
_COLOUR_FAMILY_PROBABILITY = 0.8



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
