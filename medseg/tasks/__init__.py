"""What each task predicts, its loss, its metrics, its post-processing; and its pipeline entry points.

Each task module (``segmentation``, ``detection``, ``classification``) exposes
``train(cfg, run, resume=False) -> dict`` and ``run_demo(out, quick=False) -> dict``; the CLI and
the demo dispatch to them by name.
"""
