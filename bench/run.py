"""Every benchmark, one table, one JSON file: `.venv/bin/python bench/run.py [--quick] [--only NAME ...]`.

Runs bench/executor.py, server.py, memory.py and sampling.py (and bench/gpu.py when CUDA is
available and the file exists), each through its `run(quick) -> list[row]`, where a row is
{"figure", "target", "value", "unit", "met", "note"} (medians of several repetitions; each module
decides how many). Prints a table -- figure, target, result, met? -- and writes every row, with the
machine, the revision and the load average, to one JSON file (--json; default
tests/.cache/bench/latest.json, an ignored folder).

`--quick` runs the reduced set CI uses (tiny checkpoint, small sizes, fewer repetitions; a few
minutes on 2 cores). Nothing asserts on time: a figure that misses its target says so in the
table, and the exit status is 0 unless a benchmark could not run at all.

`--compare REV_A REV_B` runs the same benchmarks for two git revisions side by side and prints
the ratio B/A of every figure (ratios are what count on a shared machine). Each revision is
checked out with `git worktree add --detach` into a temporary folder (removed afterwards; the
main working tree's checkout is never touched), this checkout's bench/ is copied over it so both
sides run the same benchmark code, and the modules alternate A, B, A, B so drift in the machine's
load hits both. `.` names the working tree as it is (uncommitted changes included).
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import importlib.util
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import ROOT, Row, error_row, load_avg

BENCH = ROOT / "bench"

MODULES = ("executor", "server", "memory", "sampling")
"""In running order; `gpu` is added when CUDA is available."""
DEFAULT_JSON = ROOT / "tests" / ".cache" / "bench" / "latest.json"


# -- running ------------------------------------------------------------------------------------------


def modules_to_run(only: list[str] | None) -> list[str]:
    names = list(MODULES)
    if _cuda_available() and importlib.util.find_spec("bench.gpu") is not None:
        names.append("gpu")
    if only:
        unknown = sorted(set(only) - set(MODULES) - {"gpu"})
        if unknown:
            raise SystemExit(f"unknown benchmark(s) {', '.join(unknown)}; have {', '.join(names)}")
        names = [n for n in names if n in only]
    return names


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def run_module(name: str, quick: bool) -> list[Row]:
    """The module's rows, each tagged with the module; one failure row if it raised."""
    started = time.perf_counter()
    try:
        module = importlib.import_module(f"bench.{name}")
        rows = module.run(quick)
    except Exception as exc:  # one broken benchmark must not hide the others' figures
        rows = [error_row(f"{name}: could not run", exc)]
    seconds = time.perf_counter() - started
    for r in rows:
        r["module"] = name
    print(f"  {name}: {len(rows)} figures in {seconds:.0f} s", file=sys.stderr, flush=True)
    return rows


def _revision(root: Path) -> str:
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev + ("+changes" if dirty else "")


def run_all(names: list[str], quick: bool) -> dict[str, Any]:
    import torch

    before = load_avg()
    rows: list[Row] = []
    for name in names:
        rows.extend(run_module(name, quick))
    return {
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "revision": _revision(ROOT),
        "quick": quick,
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "load_average_before": before,
            "load_average_after": load_avg(),
        },
        "rows": rows,
    }


# -- the table ----------------------------------------------------------------------------------------


def _value(value: float, unit: str) -> str:
    if math.isnan(value):
        return "-"
    digits = 3 if abs(value) < 10 else 1
    return f"{value:.{digits}f} {unit}"


def table(report: dict[str, Any]) -> str:
    rows = report["rows"]
    fw = max([len("figure")] + [len(r["figure"]) for r in rows])
    tw = max([len("target")] + [len(r["target"] or "-") for r in rows])
    vw = max([len("result")] + [len(_value(r["value"], r["unit"])) for r in rows])
    mark = {True: "yes", False: "NO", None: "-"}
    lines = [f"{'figure':<{fw}}  {'target':<{tw}}  {'result':>{vw}}  met?  note", "-" * (fw + tw + vw + 24)]
    for r in rows:
        lines.append(
            f"{r['figure']:<{fw}}  {r['target'] or '-':<{tw}}  {_value(r['value'], r['unit']):>{vw}}  "
            f"{mark[r['met']]:<4}  {r['note']}"
        )
    m = report["machine"]
    lines.append(
        f"\nrevision {report['revision']}; {m['cpus']} cores, torch {m['torch']} ({m['torch_threads']} threads)"
        f"{', ' + m['cuda'] if m['cuda'] else ''}; load average {m['load_average_before']} before, "
        f"{m['load_average_after']} after (figures are unreliable when it exceeds the core count)"
    )
    return "\n".join(lines)


def write_json(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")


# -- comparing revisions ------------------------------------------------------------------------------


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True).stdout


def _checkout(rev: str, folder: Path) -> Path:
    """`rev` in a detached worktree at `folder`, with this checkout's bench/ copied over it."""
    _git("worktree", "add", "--detach", "--quiet", str(folder), rev)
    shutil.copytree(BENCH, folder / "bench", dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    return folder


def _side_env() -> dict[str, str]:
    """Both sides share this checkout's model cache (the worktrees have none)."""
    from tests.utils.checkpoints import cache_dir

    return {**os.environ, "LOOM_TEST_CACHE": str(cache_dir().resolve())}


def _run_side(root: Path, name: str, quick: bool, out: Path, env: dict[str, str]) -> list[Row]:
    cmd = [sys.executable, str(root / "bench" / "run.py"), "--only", name, "--json", str(out), "--no-table"]
    proc = subprocess.run(cmd + (["--quick"] if quick else []), cwd=root, env=env, capture_output=True, text=True)
    if not out.is_file():  # a benchmark that failed still writes its rows (with the reason in one)
        return [error_row(f"{name}: could not run", RuntimeError(proc.stderr.strip()[-400:] or "no output"))]
    return json.loads(out.read_text())["rows"]


def compare(rev_a: str, rev_b: str, names: list[str], quick: bool) -> dict[str, Any]:
    from bench._common import sd15_checkpoint

    env = _side_env()
    sd15_checkpoint(quick=True)  # resolve (or build) the checkpoints once, here, for both sides
    if not quick and {"memory", "sampling"} & set(names):
        env["LOOM_SD15_RANDOM_CKPT"] = str(sd15_checkpoint(quick=False))
    with tempfile.TemporaryDirectory(prefix="loom-compare-") as tmp:
        roots: dict[str, Path] = {}
        try:
            for label, rev in (("A", rev_a), ("B", rev_b)):
                roots[label] = ROOT if rev == "." else _checkout(rev, Path(tmp) / label)
            rows: dict[str, list[Row]] = {"A": [], "B": []}
            for name in names:
                for label in ("A", "B"):
                    print(f"  {name} on {label} ({rev_a if label == 'A' else rev_b})", file=sys.stderr, flush=True)
                    out = Path(tmp) / f"{label}-{name}.json"
                    rows[label].extend(_run_side(roots[label], name, quick, out, env))
        finally:
            for root in roots.values():
                if root != ROOT:
                    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(root)],
                                   capture_output=True, check=False)  # fmt: skip
            subprocess.run(["git", "-C", str(ROOT), "worktree", "prune"], capture_output=True, check=False)
    return {"A": rev_a, "B": rev_b, "quick": quick, "load_average_after": load_avg(), "rows": rows}


def compare_table(result: dict[str, Any]) -> str:
    b_rows = {r["figure"]: r for r in result["rows"]["B"]}
    lines = []
    header = ("figure", f"A {result['A']}", f"B {result['B']}", "B/A")
    body = []
    for a in result["rows"]["A"]:
        b = b_rows.get(a["figure"])
        b_value = b["value"] if b else float("nan")
        ratio = b_value / a["value"] if a["value"] and not math.isnan(a["value"]) else float("nan")
        body.append((a["figure"], _value(a["value"], a["unit"]), _value(b_value, a["unit"]), f"{ratio:.2f}"))
    widths = [max(len(str(line[i])) for line in [header, *body]) for i in range(4)]
    for line in [header, *body]:
        lines.append("  ".join(str(cell).ljust(w) if i == 0 else str(cell).rjust(w) for i, (cell, w) in
                               enumerate(zip(line, widths, strict=True))))  # fmt: skip
    missing = sorted(set(b_rows) - {a["figure"] for a in result["rows"]["A"]})
    if missing:
        lines.append(f"only on B: {', '.join(missing)}")
    lines.append(f"load average after: {result['load_average_after']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the reduced set (CI): tiny sizes, fewer repetitions")
    parser.add_argument("--only", nargs="+", metavar="NAME", help=f"some of {', '.join(MODULES)}, gpu")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"where to write the rows ({DEFAULT_JSON})")
    parser.add_argument("--compare", nargs=2, metavar=("REV_A", "REV_B"), help="two git revisions side by side")
    parser.add_argument("--no-table", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    names = modules_to_run(args.only)
    if args.compare:
        result = compare(*args.compare, names, args.quick)
        write_json(result, args.json)
        print(compare_table(result))
        print(f"\nJSON: {args.json}")
        return 0
    report = run_all(names, args.quick)
    write_json(report, args.json)
    if not args.no_table:
        sys.stderr.flush()
        print(table(report))
        print(f"\nJSON: {args.json}")
    failed = [r for r in report["rows"] if r["figure"].endswith("could not run")]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
