"""How large a community this machine can study: a memory estimate from the size, checked before a run starts.

A run of the notebook chain (``make reproduce HOMES=.. SCENARIOS=..``, or a case from ``desmarket build-case``)
holds, at its peak, every built problem of one case in one process: the :class:`~desmarket.study.Workbench`
of notebook 06 (the sensitivity table) keeps the pieces of M1 and of the clearing built for re-solving. Its
memory grows linearly with the (home, scenario) rows of the case. :func:`estimate_memory_bytes` is a linear
model per row, fitted to measurements; :func:`check_size` refuses a size the memory available cannot hold
(a :class:`~desmarket.errors.CaseError` naming the size, the estimate, what is available and the fix), instead
of running out of memory after minutes and leaving a truncated run folder.

Measured peak resident memory (the process and its joblib workers, sampled every 0.05 s with psutil; case
from ``desmarket.data.build_case`` at the paper day, 10 scenarios; Python 3.11, 2 cores, 23 GiB)::

    homes x scenarios   rows    M1 + clearing + settle    Workbench + sensitivity    M1 + coordinated
                                (default: decomposed)     (notebook 06)              (notebook 07)
    10 x 10              100      208 MiB                   225 MiB                    209 MiB
    100 x 10           1,000      671 MiB                   511 MiB                    735 MiB
    300 x 10           3,000      716 MiB                 1,136 MiB                    (not measured)
    1,000 x 10        10,000      976 MiB                 3,337 MiB                    (not measured)

(The decomposed solve's ~0.5 GiB step from 10 to 100 homes is its two loky worker processes, started above
a size where one process suffices. The coordinated process stays as small and takes 8 minutes at 100 homes,
so larger sizes of it were not measured.) The Workbench dominates from about 1,000 rows on: 0.314 MiB per row
above a 195 MiB base (least squares over 100-10,000 rows, every point within 1 %). The estimate takes
0.5 MiB per row (the slope with a 1.6x margin for allocator fragmentation, the kernel and pandas copies of
the result tables) on top of a 1 GiB base (the Jupyter kernel, the imports and the worker processes).
"""

from __future__ import annotations

import psutil

from .errors import CaseError

#: Memory of a run that does not grow with the size: kernel, imports, the joblib worker processes.
BASE_BYTES = 1 * 2**30
#: Memory per (home, scenario) row at the run's peak (measured 0.314 MiB, see the module docstring), with margin.
BYTES_PER_ROW = 2**19  # 0.5 MiB

_GB = 1e9


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def estimate_memory_bytes(n_homes: int, n_scenarios: int) -> int:
    """Peak memory (bytes) of a run of the notebook chain on ``n_homes`` x ``n_scenarios`` rows, with margin."""
    return BASE_BYTES + BYTES_PER_ROW * int(n_homes) * int(n_scenarios)


def available_bytes() -> int:
    """Memory the operating system can give a new process now without swapping (psutil)."""
    return int(psutil.virtual_memory().available)


def check_size(n_homes: int, n_scenarios: int, *, available: int | None = None, field: str = "--homes") -> None:
    """Refuse a community this machine cannot hold: a CaseError naming ``field``, the estimate in GB, the
    memory available and the fix (fewer homes or scenarios, or the engine on a Dask cluster).

    available: bytes available (default: :func:`available_bytes`, i.e. now, on this machine).
    field: what the error names (``--homes`` for the command line, a case's ``homes.csv`` for a case).
    """
    need = estimate_memory_bytes(n_homes, n_scenarios)
    have = available_bytes() if available is None else int(available)
    if need <= have:
        return
    fitting = max((have - BASE_BYTES) // (BYTES_PER_ROW * max(int(n_scenarios), 1)), 0)
    raise CaseError(
        field,
        f"{_count(n_homes, 'home')} x {_count(n_scenarios, 'scenario')} need about {need / _GB:.1f} GB of "
        f"memory (estimate of desmarket.limits: {BYTES_PER_ROW / 2**20:g} MiB per home and scenario plus "
        f"{BASE_BYTES / _GB:.1f} GB), but this machine has {have / _GB:.1f} GB available",
        f"use at most about {_count(fitting, 'home')} at {_count(n_scenarios, 'scenario')} (or fewer "
        "scenarios), or solve the large case on a Dask cluster from Python: "
        "`with joblib.parallel_config(backend=\"dask\"): dm.clear_market(case)` (see the docstring of "
        "desmarket.engine)",
    )
