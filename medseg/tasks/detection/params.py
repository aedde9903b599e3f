"""The pixel-unit parameters of a detection config (the config is in micrometres)."""

from __future__ import annotations

from dataclasses import dataclass

from medseg.config import DetectionConfig
from medseg.errors import ConfigError
from medseg.metrics.detection import radius_in_pixels

__all__ = ["DetectionParams"]


@dataclass
class DetectionParams:
    """What training, detection and evaluation need from a :class:`DetectionConfig`, in pixels.

    Attributes
    ----------
    method : ``"proximity"`` or ``"mitosis"``.
    target_ids : class ids (indices of ``class_names``) the detector learns to find.
    output_class : class name written on the detections.
    radius_px : proximity-map radius (``target.radius_um``).
    min_distance_px : NMS distance (``postprocess.min_distance_um``).
    sigma_px : score-map smoothing (``postprocess.smooth_sigma_um``).
    match_px : matching radius of validation / test scores (``evaluate.match_radius_um``).
    """

    method: str
    target_ids: list[int]
    output_class: str
    radius_px: float
    min_distance_px: float
    sigma_px: float
    match_px: float

    @classmethod
    def from_config(cls, cfg: DetectionConfig) -> DetectionParams:
        """Derive the pixel parameters; ConfigError when ``target.classes`` names an unknown class."""
        names = list(cfg.class_names)
        if cfg.target.classes is not None:
            targets = list(cfg.target.classes)
        else:
            targets = ["mitosis"] if cfg.method == "mitosis" and "mitosis" in names else names
        bad = [t for t in targets if t not in names]
        if bad:
            raise ConfigError(f"target.classes {bad} not in class_names {names}")
        out = cfg.target.output_class or ("mitosis" if cfg.method == "mitosis" else "nucleus")
        # None only before training resolved it from the images (medseg.tasks.detection.data.resolve_microscopy)
        ps = cfg.data.pixel_size_um if cfg.data.pixel_size_um is not None else 0.5
        return cls(
            method=cfg.method,
            target_ids=[names.index(t) for t in targets],
            output_class=out,
            radius_px=radius_in_pixels(cfg.target.radius_um, ps),
            min_distance_px=radius_in_pixels(cfg.postprocess.min_distance_um, ps),
            sigma_px=radius_in_pixels(cfg.postprocess.smooth_sigma_um, ps),
            match_px=radius_in_pixels(cfg.evaluate.match_radius_um, ps),
        )
