"""Weak supervision: segment lesions having only image-level labels, via Grad-CAM pseudo-masks.

``train(cfg, run)`` (``medseg train`` with ``task: weak_supervision``; ``pipelines/weak_supervision.py``):

1. data: a lesion datalist (``image``, image-level ``label``; ``mask`` used **only to evaluate**),
   or the synthetic lesion set (:func:`medseg.data.lesions.make_lesion_dataset`);
2. a classifier trained on the image-level labels (``weak.classifier_run``, or trained here with
   :func:`medseg.tasks.classification.train`);
3. Grad-CAM maps of the training images (:func:`medseg.explain.maps.classifier_cams`) -> pseudo-masks
   (:func:`medseg.explain.weak.pseudo_masks`: Otsu threshold, largest component, optional intensity
   refinement);
4. the configured 2D segmenter (default medseg ``unet``) trained on the pseudo-masks and, for
   comparison, the same network with the same budget on the true masks;
5. both scored on the held-out test images against the true masks, plus the maps' localisation
   figures (pointing game, thresholded-map Dice, deletion AUC vs random deletion, randomisation
   sanity check).

Run folder: ``data/`` (synthetic), ``classifier/`` (its run), ``seg_pseudo/`` and ``seg_true/``
(segmenter runs: checkpoints, metrics.csv), ``pseudo_masks.png`` (examples),
``localisation.json`` (the maps' figures, written before the segmenters train),
``weak_supervision.json`` (every figure, also returned by ``train``).

Modules: :mod:`~.data` (one datalist split: images, labels, masks), :mod:`~.localisation` (the
maps' figures), :mod:`~.segmenter` (train and score the 2D segmenter), :mod:`~.pipeline` (``train``).
"""

from __future__ import annotations

from medseg.tasks.weak_supervision.data import load_lesion_split
from medseg.tasks.weak_supervision.localisation import localisation_report
from medseg.tasks.weak_supervision.pipeline import train
from medseg.tasks.weak_supervision.segmenter import segmenter_dice, train_segmenter

__all__ = ["train", "load_lesion_split", "localisation_report", "train_segmenter", "segmenter_dice"]
