"""Run the notebook chain with papermill: `make reproduce` (optionally HOMES=.. SCENARIOS=.. PROFIT_RATE=.. SEED=..).

Without parameters the notebooks are executed in place and write the committed reference results to
results/. With any parameter, the run gets its own folder results/runs/<tag>/ (case, tables, figures and the
executed notebooks), so the reference results stay as they are.
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import papermill as pm
from desmarket.io import project_root

ROOT = project_root()
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def strip_timings(path: Path) -> None:
    """Drop wall-clock stamps, random ids and absolute paths that papermill records: reruns are byte-identical."""
    nb = nbformat.read(path, as_version=4)
    for meta in [nb.metadata, *(cell.metadata for cell in nb.cells)]:
        meta.pop("execution", None)
        for key in ("start_time", "end_time", "duration"):
            meta.get("papermill", {}).pop(key, None)
    pmeta = nb.metadata.get("papermill", {})
    for key in ("input_path", "output_path"):  # absolute paths differ between clones
        if key in pmeta:
            pmeta[key] = str(Path(pmeta[key]).resolve().relative_to(ROOT))
    for cell in nb.cells:  # papermill gives its injected cell a random id
        if "injected-parameters" in cell.metadata.get("tags", []):
            cell.id = "injected-parameters"
    nbformat.write(nb, path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--homes", type=int, dest="n_homes")
    parser.add_argument("--scenarios", type=int, dest="n_scenarios")
    parser.add_argument("--profit-rate", type=float, dest="profit_rate")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--date")
    args = {k: v for k, v in vars(parser.parse_args()).items() if v is not None}
    if args:
        tag = "_".join(f"{k}-{v}" for k, v in sorted(args.items()))
        run_dir = f"results/runs/{tag}"
        out_dir = ROOT / run_dir / "notebooks"
        out_dir.mkdir(parents=True, exist_ok=True)
    else:
        run_dir, out_dir = "results", None
    params = {**args, "run_dir": run_dir}
    print(f"parameters: {params}")
    start = time.perf_counter()
    for nb in NOTEBOOKS:
        t0 = time.perf_counter()
        target = nb if out_dir is None else out_dir / nb.name
        print(f"  {nb.name} ...", end=" ", flush=True)
        own = {k: v for k, v in params.items() if k in pm.inspect_notebook(str(nb))}  # only what it declares
        pm.execute_notebook(str(nb), str(target), parameters=own, cwd=str(nb.parent), progress_bar=False,
                            kernel_name="python3")
        strip_timings(target)
        print(f"{time.perf_counter() - t0:.1f} s", flush=True)
    print(f"done: {len(NOTEBOOKS)} notebooks in {time.perf_counter() - start:.1f} s; results in {run_dir}/")
    if out_dir is None:  # the reference run: refresh the README's generated result tables
        subprocess.run([sys.executable, str(ROOT / "scripts" / "update_readme.py")], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
