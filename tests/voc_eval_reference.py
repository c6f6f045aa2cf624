"""Reference PASCAL VOC evaluation, ported from py-faster-rcnn's ``lib/datasets/voc_eval.py``.

Source: https://github.com/rbgirshick/py-faster-rcnn/blob/master/lib/datasets/voc_eval.py
(written by Bharath Hariharan). ``voc_ap`` and the matching loop of ``voc_eval`` are kept line
by line; only the I/O differs and four changes are made, each marked ``# CHANGED``:

1. Annotations and detections come from memory instead of XML files, a pickle cache and a
   detection text file. ``recs`` is what ``parse_rec`` returns per image (1-based inclusive
   integer ``bbox``, ``difficult`` 0/1, ``name``); ``detections`` are the lines of the class's
   detection file (image id, confidence, 4 box coordinates), in file order.
2. ``np.argsort(-confidence, kind="stable")``: the original's default quicksort leaves the
   order of equal scores unspecified; stable keeps the file order.
3. ``prec = tp / np.maximum(tp + fp, eps)`` as in Detectron's copy of this file
   (facebookresearch/Detectron, detectron/datasets/voc_eval.py): without it a top-ranked
   detection on a difficult box makes the precision 0/0 = NaN and the AP NaN.
4. Python 3 / current NumPy: ``astype(bool)`` (``np.bool`` is gone), no prints, and an empty
   detection list gives ``BB`` the shape [0, 4] (the original crashes indexing it).

Copyright (c) Microsoft Corporation (py-faster-rcnn). MIT License:

Permission is hereby granted, free of charge, to any person obtaining a copy of this software
and associated documentation files (the "Software"), to deal in the Software without
restriction, including without limitation the rights to use, copy, modify, merge, publish,
distribute, sublicense, and/or sell copies of the Software, and to permit persons to whom the
Software is furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all copies or
substantial portions of the Software.

THE SOFTWARE IS PROVIDED *AS IS*, WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING
BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND
NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM,
DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
"""
import numpy as np


def voc_ap(rec, prec, use_07_metric=False):
    """ ap = voc_ap(rec, prec, [use_07_metric])
    Compute VOC AP given precision and recall.
    If use_07_metric is true, uses the
    VOC 07 11 point method (default:False).
    """
    if use_07_metric:
        # 11 point metric
        ap = 0.
        for t in np.arange(0., 1.1, 0.1):
            if np.sum(rec >= t) == 0:
                p = 0
            else:
                p = np.max(prec[rec >= t])
            ap = ap + p / 11.
    else:
        # correct AP calculation
        # first append sentinel values at the end
        mrec = np.concatenate(([0.], rec, [1.]))
        mpre = np.concatenate(([0.], prec, [0.]))

        # compute the precision envelope
        for i in range(mpre.size - 1, 0, -1):
            mpre[i - 1] = np.maximum(mpre[i - 1], mpre[i])

        # to calculate area under PR curve, look for points
        # where X axis (recall) changes value
        i = np.where(mrec[1:] != mrec[:-1])[0]

        # and sum (\Delta recall) * prec
        ap = np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1])
    return ap


def voc_eval(recs, detections, classname, ovthresh=0.5, use_07_metric=False):
    """rec, prec, ap = voc_eval(recs, detections, classname, [ovthresh], [use_07_metric])

    recs: {imagename: [{'name', 'difficult', 'bbox': [xmin, ymin, xmax, ymax]}, ...]}, all images.
    detections: [(imagename, confidence, [x1, y1, x2, y2]), ...] for classname, 1-based coords.
    """
    # CHANGED (1): images are the keys of recs, in order
    imagenames = list(recs)

    # extract gt objects for this class
    class_recs = {}
    npos = 0
    for imagename in imagenames:
        R = [obj for obj in recs[imagename] if obj['name'] == classname]
        bbox = np.array([x['bbox'] for x in R])
        difficult = np.array([x['difficult'] for x in R]).astype(bool)  # CHANGED (4)
        det = [False] * len(R)
        npos = npos + sum(~difficult)
        class_recs[imagename] = {'bbox': bbox,
                                 'difficult': difficult,
                                 'det': det}

    # read dets  # CHANGED (1): from memory
    image_ids = [x[0] for x in detections]
    confidence = np.array([float(x[1]) for x in detections])
    BB = np.array([[float(z) for z in x[2]] for x in detections]).reshape(-1, 4)  # CHANGED (4)

    # sort by confidence
    sorted_ind = np.argsort(-confidence, kind="stable")  # CHANGED (2)
    BB = BB[sorted_ind, :]
    image_ids = [image_ids[x] for x in sorted_ind]

    # go down dets and mark TPs and FPs
    nd = len(image_ids)
    tp = np.zeros(nd)
    fp = np.zeros(nd)
    for d in range(nd):
        R = class_recs[image_ids[d]]
        bb = BB[d, :].astype(float)
        ovmax = -np.inf
        BBGT = R['bbox'].astype(float)

        if BBGT.size > 0:
            # compute overlaps
            # intersection
            ixmin = np.maximum(BBGT[:, 0], bb[0])
            iymin = np.maximum(BBGT[:, 1], bb[1])
            ixmax = np.minimum(BBGT[:, 2], bb[2])
            iymax = np.minimum(BBGT[:, 3], bb[3])
            iw = np.maximum(ixmax - ixmin + 1., 0.)
            ih = np.maximum(iymax - iymin + 1., 0.)
            inters = iw * ih

            # union
            uni = ((bb[2] - bb[0] + 1.) * (bb[3] - bb[1] + 1.) +
                   (BBGT[:, 2] - BBGT[:, 0] + 1.) *
                   (BBGT[:, 3] - BBGT[:, 1] + 1.) - inters)

            overlaps = inters / uni
            ovmax = np.max(overlaps)
            jmax = np.argmax(overlaps)

        if ovmax > ovthresh:
            if not R['difficult'][jmax]:
                if not R['det'][jmax]:
                    tp[d] = 1.
                    R['det'][jmax] = 1
                else:
                    fp[d] = 1.
        else:
            fp[d] = 1.

    # compute precision recall
    fp = np.cumsum(fp)
    tp = np.cumsum(tp)
    rec = tp / float(npos)
    # CHANGED (3): avoid divide by zero in case the first detection matches a difficult
    # ground truth (Detectron)
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    ap = voc_ap(rec, prec, use_07_metric)

    return rec, prec, ap
