#!/usr/bin/env python
"""Benchmark: medseg's defaults vs nnU-Net v2 at the same wall-clock training budget on this machine.

Data sets (written in a temporary folder, the same files for both tools):

- ``ct_phantoms``: 12 + 4 synthetic CT phantoms (48 x 48 x 24 at 4 x 4 x 6 mm, the set-up of
  ``configs/seg_ct_phantom.yaml``), class liver (lesions merged into it).
- ``mr_phantoms``: 8 + 3 synthetic skull-stripped MR heads (``medseg.data.synthetic.mr_phantom``),
  grey and white matter, background exactly 0.
- ``mni152``: a real labelled MR shipped in a PyPI package: the ICBM 2009 symmetric MNI152 T1
  template (skull-stripped, 78 % zero voxels) and its grey / white matter probability maps, inside
  the ``nilearn`` wheel (``nilearn/datasets/data/mni_icbm152_*_tal_nlin_sym_09a_converted.nii.gz``).
  Labels: the tissue with the highest probability (background = 1 - GM - WM). Downsampled to 2 mm
  (``--mni-mm``) so both tools fit a CPU budget; training on the left hemisphere, scored on the
  right one (the case of issue 17). The wheel is read from ``--nilearn-wheel`` or downloaded with
  ``pip download --no-deps nilearn``.

medseg: ``medseg.tasks.segmentation.train`` with the default config (only ``modality``,
``class_names``, the datalist and ``train.max_minutes`` set), then ``predict_case`` on the test
cases. nnU-Net: its own CLI from the venv given by ``--nnunet-python`` (``nnUNetv2_plan_and_preprocess``
for ``2d`` and ``3d_fullres``, ``nnUNetv2_train ... all -tr nnUNetTrainerMedsegBudget``,
``nnUNetv2_predict --disable_tta``). The trainer subclass (written into that venv's nnunetv2) only
shortens the schedule: 10 iterations per epoch, 2 validation iterations, the epoch count (and so
the poly LR) fitted to the budget from the measured epoch time, training stopped when the budget is
spent (checked after every iteration), and no post-training validation pass. Both are scored by the same code
(``medseg.tasks.segmentation.evaluate.dice_per_class``) on the same test label maps.

Figures per data set and class: ``dice_<class>`` (medseg) vs nnU-Net's best configuration at
equal budget (goal ratio >= 1.0), and ``train_seconds`` (time to the checkpoint used) per tool.
Also ``machine_load`` (1-minute load average at the start and end). Exit code 0 always.

Usage::

    python benchmarks/vs_nnunet.py --budget-min 4 --nnunet-python /work/nnunet-venv/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _model_selection import emit as figure  # noqa: E402  (the one figure writer)

from medseg.config import SegmentationConfig  # noqa: E402
from medseg.data.synthetic import ct_phantom, mr_phantom  # noqa: E402
from medseg.engine.checkpoint import load_run_model  # noqa: E402
from medseg.runs import Run  # noqa: E402
from medseg.tasks import segmentation as seg  # noqa: E402
from medseg.tasks.segmentation.evaluate import dice_per_class  # noqa: E402

TRAINER = "nnUNetTrainerMedsegBudget"
TRAINER_SRC = '''
import os
import time

import numpy as np
import torch

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class nnUNetTrainerMedsegBudget(nnUNetTrainer):
    """nnU-Net's trainer with only its schedule shortened to a wall-clock budget (medseg benchmark)."""

    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.budget_s = float(os.environ.get("MEDSEG_BUDGET_S", "600"))
        self.num_iterations_per_epoch = 10
        self.num_val_iterations_per_epoch = 2
        self.num_epochs = 1000

    def run_training(self):
        self.on_train_start()
        t0 = time.time()
        epoch = self.current_epoch
        while epoch < self.num_epochs:
            self.on_epoch_start()
            self.on_train_epoch_start()
            outs = []
            for _ in range(self.num_iterations_per_epoch):
                outs.append(self.train_step(next(self.dataloader_train)))
                if time.time() - t0 >= self.budget_s:  # the budget ends training, mid-epoch if need be
                    break
            self.on_train_epoch_end(outs)
            with torch.no_grad():
                self.on_validation_epoch_start()
                n_val = self.num_val_iterations_per_epoch
                vals = [self.validation_step(next(self.dataloader_val)) for _ in range(n_val)]
                self.on_validation_epoch_end(vals)
            self.on_epoch_end()
            epoch = self.current_epoch
            spent = time.time() - t0
            per_epoch = spent / epoch
            # fit the epoch count (and with it the poly LR) to the budget, re-estimated every epoch
            self.num_epochs = max(epoch + 1, int(epoch + (self.budget_s - spent) / per_epoch))
            self.lr_scheduler.max_steps = self.num_epochs
            if spent + 0.5 * per_epoch >= self.budget_s:
                break
        self.print_to_log_file(f"medseg budget: {epoch} epochs in {time.time() - t0:.1f} s")
        with open(os.path.join(self.output_folder, "medseg_budget.txt"), "w") as f:
            f.write(f"{time.time() - t0:.1f}")
        self.on_train_end()

    def perform_actual_validation(self, save_probabilities: bool = False):
        return  # fold 'all' validates on its training cases: skipped (not part of the model)
'''


def emit(dataset: str, metric: str, value, unit, baseline, baseline_value, goal, met, device="cpu") -> None:
    figure(f"vs_nnunet/{dataset}", metric, value, unit, baseline, baseline_value, goal, met, device)


# ----------------------------------------------------------------------------- data sets
def _save(arr: np.ndarray, affine: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nii = nib.Nifti1Image(arr, affine)
    nii.set_qform(affine, code=1)
    nii.set_sform(affine, code=1)
    nib.save(nii, str(path))


def make_phantoms(folder: Path, kind: str) -> dict:
    cases = []
    if kind == "ct":
        n, n_test = 16, 4
        for i in range(n):
            ph = ct_phantom(seed=i, shape=(48, 48, 24), spacing=(4.0, 4.0, 6.0))
            lab = np.isin(ph.label, (1, 4)).astype(np.uint8)  # liver with its lesions
            cases.append((ph.image.astype(np.int16), lab, ph.affine))
        names = ["background", "liver"]
    else:
        n, n_test = 11, 3
        for i in range(n):
            ph = mr_phantom(seed=i)
            cases.append((ph.image, ph.label, ph.affine))
        names = ["background", "grey_matter", "white_matter"]
    return _write_split(folder, cases[: n - n_test], cases[n - n_test :], names, "CT" if kind == "ct" else "MR")


def make_mni(folder: Path, wheel: Path, mm: int) -> dict:
    data = {}
    with zipfile.ZipFile(wheel) as z:
        for k in ("t1", "gm", "wm"):
            name = f"nilearn/datasets/data/mni_icbm152_{k}_tal_nlin_sym_09a_converted.nii.gz"
            out = folder / "src" / Path(name).name
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(z.read(name))
            data[k] = nib.load(str(out))
    aff = data["t1"].affine
    t1, gm, wm = (np.asarray(data[k].dataobj, np.float32) for k in ("t1", "gm", "wm"))
    if mm > 1:  # mean over mm^3 blocks (the labels from the averaged probabilities)
        s = [(n // mm) * mm for n in t1.shape]

        def down(a: np.ndarray) -> np.ndarray:
            a = a[: s[0], : s[1], : s[2]]
            return a.reshape(s[0] // mm, mm, s[1] // mm, mm, s[2] // mm, mm).mean(axis=(1, 3, 5))

        nonzero = down((t1 > 0).astype(np.float32)) >= 0.5
        t1, gm, wm = down(t1), down(gm), down(wm)
        t1 = np.where(nonzero, t1, 0.0)
        aff = aff.copy()
        aff[:3, :3] = aff[:3, :3] * mm
        aff[:3, 3] = aff[:3, 3] + aff[:3, :3] @ np.full(3, (1 - 1 / mm) / 2)
    bg = np.clip(255.0 - gm - wm, 0, None)
    lab = np.stack([bg, gm, wm]).argmax(0).astype(np.uint8)
    lab[t1 == 0] = 0
    mid = t1.shape[0] // 2
    halves = []
    for sl in (slice(0, mid), slice(mid, t1.shape[0])):
        a = aff.copy()
        a[:3, 3] = aff[:3, 3] + aff[:3, 0] * sl.start
        halves.append((t1[sl].astype(np.float32), lab[sl], a))
    return _write_split(folder, halves[:1], halves[1:], ["background", "grey_matter", "white_matter"], "MR")


def _write_split(folder: Path, train, test, names, modality) -> dict:
    tr, ts = [], []
    for split, cases, items in (("Tr", train, tr), ("Ts", test, ts)):
        for i, (img, lab, aff) in enumerate(cases):
            ip, lp = folder / f"images{split}/case_{i:03d}.nii.gz", folder / f"labels{split}/case_{i:03d}.nii.gz"
            _save(img, aff, ip)
            _save(lab.astype(np.uint8), aff, lp)
            items.append({"image": str(ip), "label": str(lp)})
    dl = folder / "dataset.json"
    dl.write_text(json.dumps({"training": tr, "test": ts}))
    return {"datalist": dl, "train": tr, "test": ts, "names": names, "modality": modality}


# ----------------------------------------------------------------------------- medseg
def run_medseg(ds: dict, work: Path, budget_min: float) -> tuple[list[np.ndarray], float, dict]:
    cfg = SegmentationConfig.model_validate(
        {
            "task": "segmentation",
            "name": "medseg",
            "output_dir": str(work),
            "device": "cpu",
            "modality": ds["modality"],
            "class_names": ds["names"],
            "data": {"datalist": str(ds["datalist"])},
            "train": {"max_minutes": budget_min},
        }
    )
    with Run.create(work / "medseg", cfg, force=True) as run:
        summary = seg.train(cfg, run)
    model, _, ck = load_run_model(work / "medseg", "best")
    preds = [
        seg.predict_case(model, it["image"], meta=ck["meta"], infer=cfg.infer, device=torch.device("cpu"))["labels"]
        for it in ds["test"]
    ]
    hist = ck["state"]["history"]
    best = ck["state"].get("best_epoch") or ck["state"]["epoch"]
    t_best = next((r["elapsed_seconds"] for r in hist if r["epoch"] == best), summary["train_seconds"])
    return preds, float(t_best), summary


# ----------------------------------------------------------------------------- nnU-Net
def install_trainer(py: str) -> None:
    out = subprocess.run(
        [py, "-c", "import nnunetv2, os; print(os.path.dirname(nnunetv2.__file__))"],
        capture_output=True,
        text=True,
        check=True,
    )
    # top level of the trainer package: nnU-Net's class search looks at its modules before the
    # sub-packages (whose imports need a torchvision built for the CPU torch; see docs/real-data.md)
    dest = Path(out.stdout.strip()) / "training" / "nnUNetTrainer" / "medseg_budget.py"
    if not dest.is_file() or dest.read_text() != TRAINER_SRC:
        dest.write_text(TRAINER_SRC)


def reuse_nnunet(ds: dict, work: Path, configs: list[str], did: int) -> dict:
    """The nnU-Net results of an earlier run in ``work`` (``--reuse-nnunet``): predictions and train seconds."""
    out: dict = {}
    for c in configs:
        folder = work / "res" / f"Dataset{did:03d}_medseg" / f"{TRAINER}__nnUNetPlans__{c}" / "fold_all"
        pred = work / f"pred_{c}"
        files = [pred / f"case_{i:03d}.nii.gz" for i in range(len(ds["test"]))]
        if (folder / "medseg_budget.txt").is_file() and all(f.is_file() for f in files):
            out[c] = {
                "train_seconds": float((folder / "medseg_budget.txt").read_text()),
                "preds": [np.asarray(nib.load(str(f)).dataobj).astype(np.uint8) for f in files],
            }
    return out


def run_nnunet(ds: dict, work: Path, budget_min: float, py: str, configs: list[str], did: int) -> dict:
    bindir = Path(py).parent
    env = {
        **os.environ,
        "nnUNet_raw": str(work / "raw"),
        "nnUNet_preprocessed": str(work / "pre"),
        "nnUNet_results": str(work / "res"),
        "nnUNet_n_proc_DA": "1",
        "MEDSEG_BUDGET_S": str(budget_min * 60),
        "PATH": f"{bindir}:{os.environ.get('PATH', '')}",
    }
    name = f"Dataset{did:03d}_medseg"
    raw = work / "raw" / name
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (raw / sub).mkdir(parents=True, exist_ok=True)
    for i, it in enumerate(ds["train"]):
        shutil.copy(it["image"], raw / "imagesTr" / f"case_{i:03d}_0000.nii.gz")
        shutil.copy(it["label"], raw / "labelsTr" / f"case_{i:03d}.nii.gz")
    for i, it in enumerate(ds["test"]):
        shutil.copy(it["image"], raw / "imagesTs" / f"case_{i:03d}_0000.nii.gz")
    (raw / "dataset.json").write_text(
        json.dumps(
            {
                "channel_names": {"0": ds["modality"]},
                "labels": {n: i for i, n in enumerate(ds["names"])},
                "numTraining": len(ds["train"]),
                "file_ending": ".nii.gz",
            }
        )
    )
    log = open(work / "nnunet.log", "a")
    t0 = time.time()
    subprocess.run(
        ["nnUNetv2_plan_and_preprocess", "-d", str(did), "-c", *configs, "-np", "1", "--verify_dataset_integrity"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        check=True,
    )
    out: dict = {"preprocess_seconds": time.time() - t0}
    for c in configs:
        res: dict = {}
        try:
            subprocess.run(
                ["nnUNetv2_train", str(did), c, "all", "-tr", TRAINER, "-device", "cpu"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                check=True,
            )
            folder = work / "res" / name / f"{TRAINER}__nnUNetPlans__{c}" / "fold_all"
            res["train_seconds"] = float((folder / "medseg_budget.txt").read_text())
            pred = work / f"pred_{c}"
            subprocess.run(
                ["nnUNetv2_predict", "-i", str(raw / "imagesTs"), "-o", str(pred), "-d", str(did), "-c", c]
                + ["-f", "all", "-tr", TRAINER, "-device", "cpu", "--disable_tta", "-npp", "1", "-nps", "1"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                check=True,
            )
            res["preds"] = [
                np.asarray(nib.load(str(pred / f"case_{i:03d}.nii.gz")).dataobj).astype(np.uint8)
                for i in range(len(ds["test"]))
            ]
        except (subprocess.CalledProcessError, OSError) as e:
            res["error"] = str(e)
        out[c] = res
    return out


def score(preds: list[np.ndarray], ds: dict) -> np.ndarray:
    k = len(ds["names"])
    rows = []
    for p, it in zip(preds, ds["test"]):
        ref = np.asarray(nib.load(it["label"]).dataobj).astype(np.int64)
        rows.append(dice_per_class(torch.as_tensor(p.astype(np.int64)), torch.as_tensor(ref), k))
    return np.nanmean(np.array(rows, float), axis=0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget-min", type=float, default=4.0, help="training budget per tool and configuration")
    ap.add_argument("--nnunet-python", default=os.environ.get("NNUNET_PYTHON", "/work/nnunet-venv/bin/python"))
    ap.add_argument("--datasets", default="ct_phantoms,mr_phantoms,mni152")
    ap.add_argument("--configs", default="2d,3d_fullres", help="nnU-Net configurations to run")
    ap.add_argument("--nilearn-wheel", default=None, help="the nilearn wheel (default: pip download --no-deps)")
    ap.add_argument("--mni-mm", type=int, default=2, help="MNI152 voxel size used (1 = the shipped 1 mm)")
    ap.add_argument("--work", default=None, help="working folder (default: a temporary one)")
    ap.add_argument(
        "--reuse-nnunet", action="store_true", help="score the nnU-Net results already in --work instead of training"
    )
    ap.add_argument("--quick", action="store_true", help="smoke run: MR phantoms, 0.3 min, nnU-Net 2d only")
    args = ap.parse_args(argv)
    if args.quick:
        args.budget_min, args.datasets, args.configs = 0.3, "mr_phantoms", "2d"
    configs = [c for c in args.configs.split(",") if c]
    have_nnunet = Path(args.nnunet_python).is_file()
    if have_nnunet:
        install_trainer(args.nnunet_python)
    else:
        print(f"# nnU-Net python {args.nnunet_python} not found: only medseg runs", file=sys.stderr)
    work_root = Path(args.work or tempfile.mkdtemp(prefix="vs_nnunet_"))
    emit("all", "machine_load_start", os.getloadavg()[0], "load avg 1 min", None, None, "informational", True)
    emit("all", "cpu_threads", torch.get_num_threads(), "threads", None, None, "informational", True)
    for did, name in enumerate(d for d in args.datasets.split(",") if d):
        work = work_root / name
        work.mkdir(parents=True, exist_ok=True)
        if name == "mni152":
            wheel = Path(args.nilearn_wheel) if args.nilearn_wheel else None
            if wheel is None:
                subprocess.run(
                    [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "nilearn", "-d", str(work_root)],
                    check=True,
                )
                wheel = next(work_root.glob("nilearn-*.whl"))
            ds = make_mni(work / "data", wheel, args.mni_mm)
        else:
            ds = make_phantoms(work / "data", "ct" if name == "ct_phantoms" else "mr")
        preds, t_med, summary = run_medseg(ds, work, args.budget_min)
        med = score(preds, ds)
        if args.reuse_nnunet:
            nn = reuse_nnunet(ds, work, configs, 500 + did)
        elif have_nnunet:
            nn = run_nnunet(ds, work, args.budget_min, args.nnunet_python, configs, 500 + did)
        else:
            nn = {}
        scored = {
            c: (score(r["preds"], ds), r["train_seconds"])
            for c, r in nn.items()
            if isinstance(r, dict) and "preds" in r
        }
        best_c = max(scored, key=lambda c: float(np.nanmean(scored[c][0]))) if scored else None
        for c, r in nn.items():
            if isinstance(r, dict) and "error" in r:
                print(f"# nnU-Net {c} on {name} failed: {r['error']} (see {work / 'nnunet.log'})", file=sys.stderr)
        for c, (d, _) in scored.items():
            for n, v in zip(ds["names"][1:], d):
                emit(name, f"nnunet_{c}_dice_{n}", v, "Dice", None, None, "informational", True)
        base_name = f"nnU-Net v2 {best_c} (best configuration, same budget)" if best_c else "nnU-Net (not run)"
        for i, n in enumerate(ds["names"][1:]):
            b = float(scored[best_c][0][i]) if best_c else None
            emit(name, f"dice_{n}", float(med[i]), "Dice", base_name, b, "ratio >= 1.0", b is not None and med[i] >= b)
        b_t = scored[best_c][1] if best_c else None
        emit(name, "train_seconds", t_med, "s", base_name, b_t, "informational", True)
        emit(name, "medseg_configuration", summary.get("configuration"), "name", None, None, "informational", True)
    emit("all", "machine_load_end", os.getloadavg()[0], "load avg 1 min", None, None, "informational", True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
