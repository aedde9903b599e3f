"""PNG overlays for review: label maps, detections and heat maps drawn over an image.

Everything here is pure NumPy + scikit-image (contours: the inner class boundaries of
:func:`skimage.segmentation.find_boundaries`, found in one pass by
:func:`medseg.review.windowing.label_edges`; physical aspect ratio with
:func:`skimage.transform.resize`, markers with :mod:`skimage.draw`), text with Pillow's built-in
font (headless, no GUI, no font files needed) and colour maps from matplotlib (no figure is made).

Conventions
-----------
- 2D images are ``(H, W)`` (rows, columns) gray or ``(H, W, 3)`` RGB; label maps ``(H, W)`` int,
  0 = background. ``spacing`` of a 2D image is ``(row spacing, column spacing)`` in mm.
- 3D volumes are medseg's ``(X, Y, Z)`` arrays (or MONAI MetaTensors ``(1, X, Y, Z)``) with a
  voxel->RAS affine. Views are drawn **in voxel order**: the affine only decides which voxel axis
  is which (axial: rows = the voxel axis nearest A/P, columns = the one nearest R/L; coronal:
  rows S/I, columns R/L; sagittal: rows S/I, columns A/P); the in-plane voxel axes (0, 1) run
  left-to-right / top-to-bottom as a DICOM slice's pixel array is shown, the slice axis (2) runs
  left-to-right or bottom-to-top. Each edge is then labelled with the patient direction the affine
  says it points to (R/L, A/P, S/I). A standard DICOM axial stack therefore shows in the
  radiological convention in all three views (patient's right on the left of the screen, anterior
  and superior at the top), a natively sagittal or coronal series shows its slices as the scanner
  stored them, and a flipped affine moves the letters: a flip is visible to a human.
- Pixels are made square in millimetres (display follows spacing, not voxel counts).
- Every function returns an ``(H, W, 3)`` uint8 RGB array; :func:`save_png` writes it atomically.

This module is the public face of the review pictures; the work is done, one job per module, in
:mod:`~medseg.review.windowing` (windows, colour blending), :mod:`~medseg.review.annotate` (letters,
captions, legend), :mod:`~medseg.review.orientation` (which voxel axis goes where),
:mod:`~medseg.review.draw2d` (2D overlays, markers, heat maps), :mod:`~medseg.review.views`
(volume views, montage, lesion view) and :mod:`~medseg.review.png` (PNG files). The palette is
:mod:`medseg.palette`.
"""

from __future__ import annotations

from medseg.palette import CLASS_COLORS, class_color
from medseg.review.draw2d import heatmap_2d, markers_2d, overlay_2d, shrink
from medseg.review.orientation import orientation_letters
from medseg.review.png import save_png
from medseg.review.views import lesion_view, montage, overlay_volume, save_case_overlays
from medseg.review.windowing import WINDOWS, window_image

__all__ = [
    "WINDOWS",
    "CLASS_COLORS",
    "class_color",
    "window_image",
    "orientation_letters",
    "overlay_2d",
    "overlay_volume",
    "lesion_view",
    "montage",
    "heatmap_2d",
    "markers_2d",
    "shrink",
    "save_png",
    "save_case_overlays",
]
