"""Image classification task: fine-tune a (pretrained) network, choose clinical operating points.

``train(cfg, run)`` reads a datalist of 2D images with image-level labels, fine-tunes the
configured network (default: ImageNet EfficientNet-Lite0) with the shared
:class:`medseg.engine.trainer.Trainer` (checkpoints, exact resume, early stopping on validation
AUC), then on the best checkpoint fits a softmax temperature and chooses the operating points on
the **validation** set and reports them on the **test** set (Gulshan et al. 2016).

Datalist (MSD-style JSON): ``{"training": [{"image": "a.png", "label": 1}, ...], "validation":
[...], "test": [...]}``; ``label`` is a class index or a class name from ``class_names``. Without
a ``validation`` list, ``data.val_fraction`` of the training list is held out (stratified).

Run folder: ``checkpoints/``, ``metrics.csv``, ``training_curve.png``, ``classifier.json``
(preprocessing, temperature, thresholds: what ``classify`` needs), ``evaluation/``
(metrics.json, operating_points.csv, confusion_matrix.csv, reliability.png, test_predictions.csv).

Modules, one job each: :mod:`~.data` (datalists, reading images, the training set),
:mod:`~.finetune` (network parameters, fine-tuning strategies), :mod:`~.train`,
:mod:`~.report` (calibration, operating points, ``classifier.json``), :mod:`~.predict`
(:func:`load_classifier`, ``medseg classify``), :mod:`~.evaluate` (``medseg evaluate``).
Preprocessing and augmentation live below the tasks, in :mod:`medseg.transforms.classification`
(re-exported here for the old import paths).
"""

from __future__ import annotations

from medseg.tasks.classification.data import read_images
from medseg.tasks.classification.evaluate import evaluate
from medseg.tasks.classification.finetune import configure_finetuning
from medseg.tasks.classification.predict import classify, load_classifier, predict_logits
from medseg.tasks.classification.train import train
from medseg.transforms.classification import augmentation_transforms, prepare_images, preprocess

__all__ = [
    "train",
    "classify",
    "evaluate",
    "load_classifier",
    "read_images",
    "predict_logits",
    "configure_finetuning",
    "preprocess",
    "prepare_images",
    "augmentation_transforms",
]
