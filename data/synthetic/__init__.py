"""Embedded synthetic dataset: procedural shape scenes written in the real on-disk formats.

One scene renderer (``scenes``) feeds four writers, one module per on-disk format
(``image_folder``, ``cifar``, ``voc``; ``folders`` writes each set once, atomically), so the synthetic data goes through exactly the readers
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

Every name is importable from ``data.synthetic`` as before the split into modules.
"""
from __future__ import annotations

from data.synthetic.scenes import (  # noqa: F401
    SYNTHETIC_CLASSES, _COLOUR_FAMILY_PROBABILITY, _ellipse, _regular_polygon, _star,
    _rectangle, _cross, _arrow, _SHAPES, voc_colormap, ObjectRequest, RenderedObject,
    RenderedScene, _random_colour, _object_colour, _background, _shape_patch, _object_fill,
    render_scene, _random_size, render_classification_scene, render_voc_scene,
)
from data.synthetic.folders import (  # noqa: F401
    SYNTHETIC_FORMAT_VERSION, MARKER_NAME, JPEG_QUALITY, _STREAM_IMAGE_FOLDER,
    _STREAM_DETECTION, _STREAM_SEGMENTATION, _STREAM_CIFAR, _read_marker, _process_alive,
    _STALE_FOREIGN_TEMPORARY_S, _temporary_name, _remove_stale_temporaries, _write_once,
    _not_writable, _check_counts, _check_num_classes, _DEFAULT_SCENE_MIX, _check_scene_mix,
    _check_image_size, _save_jpeg,
)
from data.synthetic.image_folder import (  # noqa: F401
    _GRAYSCALE_EVERY, _GRAYSCALE_OFFSET, write_image_folder, image_folder_files,
    prepare_synthetic_classification,
)
from data.synthetic.cifar import (  # noqa: F401
    CIFAR_IMAGE_SIZE, CIFAR_TRAIN_BATCHES, _cifar_rows, _write_pickle, write_cifar10,
)
from data.synthetic.voc import (  # noqa: F401
    _box_of, _is_difficult, _sub, voc_annotation_xml, _write_split, write_voc_detection,
    boundary_band, segmentation_mask, write_voc_segmentation,
)
