#!/usr/bin/env python
"""Run every benchmark in this folder; write ``benchmarks/results/<date>.jsonl``; print a table.

Each ``benchmarks/<name>.py`` prints one JSON object per line per figure with the keys
benchmark, metric, value, unit, baseline, baseline_value, ratio, goal, met, device.
Usage: ``python benchmarks/run_all.py [--quick] [--only NAME ...] [--timeout S]``.
The table for docs/benchmarks.md is printed as Markdown at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
KEYS = ["benchmark", "metric", "value", "unit", "baseline", "baseline_value", "ratio", "goal", "met", "device"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="pass --quick to each benchmark (smoke run)")
    ap.add_argument("--only", nargs="*", default=None, help="benchmark names (file stems) to run")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per benchmark")
    ap.add_argument("--table", type=Path, default=None, help="only print the Markdown table of an existing .jsonl")
    args = ap.parse_args()
    if args.table is not None:
        print_table([json.loads(line) for line in args.table.read_text().splitlines() if line.strip()])
        return 0
    scripts = sorted(p for p in HERE.glob("*.py") if p.name != "run_all.py" and not p.name.startswith("_"))
    if args.only:
        scripts = [p for p in scripts if p.stem in args.only]
    rows: list[dict] = []
    for script in scripts:
        cmd = [sys.executable, str(script)] + (["--quick"] if args.quick else [])
        t0 = time.perf_counter()
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, cwd=HERE.parent)
            stdout, rc = out.stdout, out.returncode
            if rc != 0:
                print(f"[{script.stem}] exited {rc}:\n{out.stderr[-2000:]}", file=sys.stderr)
        except subprocess.TimeoutExpired as e:
            stdout, rc = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or ""), -1
            print(f"[{script.stem}] timed out after {args.timeout} s", file=sys.stderr)
        n = 0
        for line in stdout.splitlines():
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "benchmark" in row and "metric" in row:
                row.setdefault("script", script.name)
                rows.append(row)
                n += 1
        print(f"[{script.stem}] {n} figures in {time.perf_counter() - t0:.0f} s (exit {rc})", file=sys.stderr)
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    path = out_dir / f"{dt.date.today().isoformat()}{'-quick' if args.quick else ''}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"wrote {path}", file=sys.stderr)
    print_table(rows)
    return 0


def print_table(rows: list[dict]) -> None:
    """The figures as a Markdown table (the one in docs/benchmarks.md)."""
    print("| " + " | ".join(KEYS) + " |")
    print("|" + "---|" * len(KEYS))
    for r in rows:
        cells = []
        for k in KEYS:
            v = r.get(k)
            cells.append(f"{v:.4g}" if isinstance(v, float) else str(v))
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    sys.exit(main())
