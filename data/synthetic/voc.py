"""Synthetic detection and segmentation sets in the VOC devkit layout: ``VOCdevkit/VOC2007``
(JPEGImages, Annotations XML, ImageSets/Main) and ``VOCdevkit/VOC2012`` (JPEGImages, palette PNG
SegmentationClass with 255 on object boundaries, ImageSets/Segmentation).
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from data.synthetic.folders import (
    SYNTHETIC_FORMAT_VERSION, _check_counts, _check_image_size, _check_num_classes,
    _check_scene_mix, _DEFAULT_SCENE_MIX, _save_jpeg, _STREAM_DETECTION, _STREAM_SEGMENTATION,
    _write_once,
)
from data.synthetic.scenes import (
    SYNTHETIC_CLASSES, RenderedObject, RenderedScene, render_voc_scene, voc_colormap,
)


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
