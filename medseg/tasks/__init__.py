"""The tasks: what each predicts, its training, inference and evaluation, as pipeline entry points.

One subpackage per task (``segmentation``, ``detection``, ``classification``, ``weak_supervision``,
and ``explain`` for the Grad-CAM command), each exposing ``train(cfg, run, resume=False) -> dict``
(where the task trains) and its predict / evaluate functions; the CLI dispatches to them by name.
Shared by every predict command: :mod:`medseg.tasks.inputs` (what the inputs expand to). Demo
stages live in :mod:`medseg.demo`.
"""
