"""Coverage-guided fuzzing of ``medseg.io`` with atheris (libFuzzer for Python).

Each input is written to a file with the target's suffix and read the way ``medseg info`` and
``medseg convert`` read files: :func:`medseg.io.discover` must never raise for one file, the
series table and ``to_dict`` must build, and :func:`medseg.io.load` may fail only with a
:class:`medseg.errors.MedsegError` (the allowlist). Anything else (another exception, a decoder
panic such as pyo3's ``PanicException``, a hang past ``-timeout``, memory past ``-rss_limit_mb``) is a
crash: libFuzzer stops and writes the input to ``--artifacts``. Keep such inputs under
``tests/data/fuzz/<target>/`` (any file name): ``tests/fuzz/test_fuzz_regressions.py`` replays them
in ``make test``.

    make fuzz                                    # DICOM, FUZZ_SECONDS (60) seconds
    python tests/fuzz/fuzz_io.py --target nrrd --seconds 600
    python tests/fuzz/fuzz_io.py --keep-going    # record every crasher, do not stop at the first

The seed corpus is made from the DICOM files that pydicom and pydicom-data ship (``--target
dicom``), or from small files written here for the other targets. Needs the ``fuzz`` extra
(``pip install -e ".[fuzz]"``: atheris).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

#: target name -> the file suffix its inputs get (the suffix picks the reader, as for real files)
TARGETS = {
    "dicom": ".dcm",
    "nifti": ".nii",
    "nrrd": ".nrrd",
    "mha": ".mha",
    "png": ".png",
    "tiff": ".tif",
}
MAX_SEED_BYTES = 64 * 1024


def dicom_seeds() -> list[Path]:
    """The DICOM files of pydicom's and pydicom-data's test data (not larger than ``MAX_SEED_BYTES``)."""
    from pydicom.data import get_testdata_files

    out = []
    for f in sorted(set(get_testdata_files())):
        p = Path(f)
        if p.is_file() and p.stat().st_size <= MAX_SEED_BYTES and p.suffix.lower() not in (".txt", ".json", ".dump"):
            out.append(p)
    return out


def synthetic_seeds(target: str, folder: Path) -> list[Path]:
    """Small valid files of ``target`` (NIfTI, NRRD, MetaImage, PNG, TIFF) written into ``folder``."""
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    vol = rng.integers(0, 200, (6, 5, 4)).astype(np.int16)
    aff = np.diag([0.8, 0.9, 2.0, 1.0])
    out: list[Path] = []
    if target == "nifti":
        import nibabel as nib

        for i, dt in enumerate((np.int16, np.float32, np.uint8)):
            p = folder / f"seed{i}.nii"
            nib.save(nib.Nifti1Image(vol.astype(dt), aff), str(p))
            out.append(p)
    elif target == "nrrd":
        import nrrd

        for i, enc in enumerate(("raw", "gzip", "ascii")):
            p = folder / f"seed{i}.nrrd"
            header = {
                "space": "left-posterior-superior",
                "space directions": aff[:3, :3].tolist(),
                "space origin": [1.0, 2.0, 3.0],
                "encoding": enc,
            }
            nrrd.write(str(p), vol, header)
            out.append(p)
    elif target == "mha":
        import SimpleITK as sitk

        for i, compress in enumerate((False, True)):
            p = folder / f"seed{i}.mha"
            img = sitk.GetImageFromArray(vol)
            img.SetSpacing((0.8, 0.9, 2.0))
            sitk.WriteImage(img, str(p), compress)
            out.append(p)
    elif target in ("png", "tiff"):
        from PIL import Image

        arrs = [vol[..., 0].astype(np.uint8), np.dstack([vol[..., 0]] * 3).astype(np.uint8)]
        for i, a in enumerate(arrs):
            p = folder / f"seed{i}{TARGETS[target]}"
            Image.fromarray(a).save(p)
            out.append(p)
    return out


def make_corpus(target: str, corpus: Path) -> None:
    """Fill an empty corpus folder with the seeds of ``target``."""
    if corpus.exists() and any(corpus.iterdir()):
        return
    corpus.mkdir(parents=True, exist_ok=True)
    seeds = dicom_seeds() if target == "dicom" else synthetic_seeds(target, corpus / "_seeds")
    for p in seeds:
        data = p.read_bytes()
        (corpus / hashlib.sha1(data).hexdigest()).write_bytes(data)
    shutil.rmtree(corpus / "_seeds", ignore_errors=True)


class FuzzFinding(Exception):
    """A rule of the harness broken without an exception of its own (``discover`` raised, ...)."""


def check_one(path: Path) -> None:
    """Read ``path`` as ``medseg info`` and ``medseg convert`` do; raise on anything but MedsegError from load."""
    from medseg.errors import MedsegError
    from medseg.io import discover, format_series_table, load

    try:
        series = discover(path)
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt):
            raise
        raise FuzzFinding(f"discover raised {type(e).__name__}: {e}") from e
    format_series_table(series)
    for s in series:
        s.to_dict()
    try:
        load(path)
    except MedsegError:
        pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", choices=sorted(TARGETS), default="dicom")
    ap.add_argument("--seconds", type=int, default=int(os.environ.get("FUZZ_SECONDS", "60")))
    ap.add_argument("--corpus", type=Path, default=None, help="working corpus (default build/fuzz/corpus_<target>)")
    ap.add_argument("--artifacts", type=Path, default=ROOT / "build" / "fuzz" / "artifacts")
    ap.add_argument("--keep-going", action="store_true", help="record crashers and continue instead of stopping")
    args, libfuzzer_args = ap.parse_known_args(argv)

    import atheris

    # Uninstrumented: torch / MONAI (MetaTensor) and the compiled readers; the Python code that parses
    # bytes (medseg.io, pydicom, pynrrd, nibabel's header code) is instrumented for coverage.
    import monai.data  # noqa: F401
    import torch  # noqa: F401

    with atheris.instrument_imports(include=["medseg", "pydicom", "nrrd", "nibabel", "tifffile"]):
        import nibabel  # noqa: F401
        import nrrd  # noqa: F401
        import pydicom  # noqa: F401
        import pydicom.fileset  # noqa: F401
        import pydicom.pixels  # noqa: F401
        import tifffile  # noqa: F401

        import medseg.io  # noqa: F401  (every format module, through the registry)

    logging.disable(logging.CRITICAL)
    warnings.simplefilter("ignore")
    corpus = args.corpus or ROOT / "build" / "fuzz" / f"corpus_{args.target}"
    make_corpus(args.target, corpus)
    args.artifacts.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="medseg_fuzz_", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    path = work / f"input{TARGETS[args.target]}"
    counts = {"runs": 0, "findings": 0}
    t0 = time.time()

    def one_input(data: bytes) -> None:
        counts["runs"] += 1
        path.write_bytes(data)
        try:
            check_one(path)
        except BaseException as e:
            if not args.keep_going or isinstance(e, KeyboardInterrupt):
                raise
            digest = hashlib.sha1(data).hexdigest()
            crash = args.artifacts / f"{args.target}-crash-{digest}"
            if not crash.exists():
                counts["findings"] += 1
                crash.write_bytes(data)
                (args.artifacts / f"{crash.name}.txt").write_text(
                    "".join(traceback.format_exception(type(e), e, e.__traceback__))
                )

    def report() -> None:
        print(
            f"medseg fuzz: target={args.target} runs={counts['runs']} findings={counts['findings']} "
            f"seconds={time.time() - t0:.0f}",
            file=sys.stderr,
        )

    import atexit

    atexit.register(report)
    atexit.register(shutil.rmtree, work, True)
    fuzz_args = [
        sys.argv[0],
        str(corpus),
        f"-max_total_time={args.seconds}",
        f"-artifact_prefix={args.artifacts}/{args.target}-",
        f"-max_len={MAX_SEED_BYTES}",
        "-timeout=20",
        "-rss_limit_mb=4096",
        *libfuzzer_args,
    ]
    atheris.Setup(fuzz_args, one_input)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
