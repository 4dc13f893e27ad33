"""Pieces of the decomposed solve: rows of a case solved as separate problems, and a parallel map.

A piece is the model of :mod:`desmarket.formulation` (:func:`~desmarket.formulation.formulate`) over a block of
some (home, scenario) rows with weight 1 per row: M1 (Eqs. 5-15) over any rows, the clearing (Eqs. 16-19) over
whole scenarios (Eq. 18 holds per scenario and hour, so nothing couples two scenarios). The central method
solves the same formulation as one block of all rows weighted by pi_s; ``tests/test_engine.py`` checks that
pieces and central agree, congested cases included.

A piece whose solver (PIQP) does not return optimal is solved again with :data:`FALLBACK_SOLVER` (Clarabel,
the reference solver of the central problem), and it is an error only if that fails too
(:func:`solve_with_fallback`); the count of such pieces is recorded.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import numbers
import sys
import time
import traceback

import cvxpy as cp
import numpy as np
from joblib import Parallel, cpu_count, delayed
from tqdm import tqdm

from .case import Case
from .formulation import Block, Handles, clearing_price, formulate
from .model import SOLVED, SolverError, solve

#: Target number of (home, scenario) rows per piece: small pieces solve faster per row (interior-point cost
#: grows faster than linearly with size) but pay cvxpy's per-problem overhead (a few ms). Measured on this
#: machine: 0.44 ms per row at 200 rows, 0.8 ms at 20, 8 ms at 1 (PIQP, M1). Each piece is built afresh:
#: building and compiling is about 0.1 of those 0.44 ms, so a Parameter template per piece shape could save at
#: most about 20 %; pieces of the clearing differ in data, not only in prices, so it is not done.
CHUNK_ROWS = 256
#: Solver of a piece whose own solver does not return optimal: Clarabel, the reference of the central problem.
#: PIQP 0.7 calls some feasible problems infeasible (a home controller of a 30-home case at one price, issue 17).
FALLBACK_SOLVER = "CLARABEL"

#: Statuses of :data:`FALLBACK_SOLVER` that earn one retry at :data:`RELAXED_OPTIONS` (never accepted themselves).
RETRY_STATUSES = (cp.OPTIMAL_INACCURATE, cp.USER_LIMIT)
#: Clarabel's tolerances for that retry: 100 x the defaults of :data:`desmarket.model.DEFAULT_SOLVER_OPTIONS`
#: (at 1e-10 Delta C is still accurate to about 5e-6 relative on small cases, see there).
RELAXED_OPTIONS = {"tol_gap_abs": 1e-10, "tol_gap_rel": 1e-10, "tol_feas": 1e-10, "direct_solve_method": "qdldl"}

logger = logging.getLogger(__name__)


def solver_error(exc: SolverError, message: str) -> SolverError:
    """A :class:`SolverError` with a new message that keeps the cvxpy ``status`` of ``exc`` (see
    :func:`desmarket.model.solve`), so that callers can still tell an infeasible problem by its status."""
    return SolverError(message, status=getattr(exc, "status", None))


def solve_with_fallback(problem: cp.Problem, solver: str, solver_options: dict | None = None) -> int:
    """Solve a built problem with ``solver``; if it does not return optimal, solve it again with
    :data:`FALLBACK_SOLVER` at that solver's default tolerances (:func:`solve_fallback`). Returns the number of
    fallbacks, 0 or 1.

    Raises :class:`SolverError` only if the fallback fails as well, with the fallback's status: a problem is
    reported infeasible only when Clarabel says so. A solver that cvxpy does not have (a misspelt name) is the
    caller's error and raises at once. ``solver`` Clarabel itself (the central method) gets the fallback's
    relaxed retry of :func:`solve_fallback` only.
    """
    try:
        solve(problem, solver, **(solver_options or {}))
        return 0
    except SolverError as first:
        if str(solver).upper() == FALLBACK_SOLVER:
            if solver_options or getattr(first, "status", None) not in RETRY_STATUSES:
                raise
            _solve_relaxed(problem, first)
            return 0  # Clarabel still: not a fallback to another solver (the retry is logged)
        if str(solver).upper() not in cp.installed_solvers():
            raise
        try:
            solve_fallback(problem)
        except SolverError as second:
            raise solver_error(
                second, f"{second} ({solver} before it: status '{getattr(first, 'status', None)}')"
            ) from second
        logger.info(
            "%s returned status '%s' on a problem that %s solved",
            solver,
            getattr(first, "status", None),
            FALLBACK_SOLVER,
        )
        return 1


def solve_built(
    problem: cp.Problem,
    handles: Handles,
    rows: np.ndarray,
    market: bool,
    solver: str,
    solver_options: dict | None = None,
) -> dict:
    """Solve a formulated piece at its Parameters' current values and read its (R, T) arrays, prices and time.

    The price (K, T) is :func:`~desmarket.formulation.clearing_price` (per scenario of the piece, un-weighted).
    ``fallbacks`` is 1 if the piece was solved by :data:`FALLBACK_SOLVER` (:func:`solve_with_fallback`), else 0.
    """
    t0 = time.perf_counter()
    try:
        fallbacks = solve_with_fallback(problem, solver, solver_options)
    except SolverError as exc:
        raise solver_error(
            exc, f"{exc} (piece of {len(rows)} home-scenario rows, case rows {rows.min()}-{rows.max()})"
        ) from exc
    out = handles.values(SOLVED + (("x",) if market else ()))
    out["fallbacks"] = fallbacks
    if market:
        out["price"] = clearing_price(handles)
    out["build_seconds"], out["solve_seconds"] = 0.0, time.perf_counter() - t0
    return out


def solve_block(block: Block, market: bool, solver: str, solver_options: dict | None = None) -> dict:
    """Formulate, solve and read one piece (:func:`~desmarket.formulation.formulate`, :func:`solve_built`)."""
    t0 = time.perf_counter()
    problem, handles = formulate(block, market)
    out = solve_built(problem, handles, block.rows, market, solver, solver_options)
    out["build_seconds"] = time.perf_counter() - t0 - out["solve_seconds"]
    return out


def gather(case: Case, row_sets: list[np.ndarray], results: list[dict], market: bool) -> tuple[dict, np.ndarray | None]:
    """The pieces' arrays put back in place: (N, S, T) arrays by :data:`~desmarket.model.SOLVED` name (and
    ``"x"``), and the (S, T) clearing price for the market (None for M1)."""
    n, s, t = case.load.shape
    keys = SOLVED + (("x",) if market else ())
    flat = {k: np.empty((n * s, t)) for k in keys}
    price = np.empty((s, t))
    for rows, res in zip(row_sets, results):
        for k in keys:
            flat[k][rows] = res[k]
        if market:
            price[np.unique(rows % s)] = res["price"]
    return {k: v.reshape(n, s, t) for k, v in flat.items()}, (price if market else None)


def solve_fallback(problem: cp.Problem) -> None:
    """Solve with :data:`FALLBACK_SOLVER` at its default tolerances (1e-12); if it ends inaccurate or at its
    iteration limit (:data:`RETRY_STATUSES`), once more at :data:`RELAXED_OPTIONS` (1e-10), with a warning in the
    log. Never accepts a status other than optimal (:class:`SolverError`).

    The retry is for degenerate problems, e.g. a two-stage piece whose fixed day-ahead position equals the
    community's import in some hours (the EEV problem of a one-scenario case): there the import balance, the
    shortfall and the excess are all active and Clarabel stalls short of 1e-12 but reaches 1e-10 in a few
    iterations.
    """
    try:
        solve(problem, FALLBACK_SOLVER)
    except SolverError as exc:
        if getattr(exc, "status", None) not in RETRY_STATUSES:
            raise
        _solve_relaxed(problem, exc)


def _solve_relaxed(problem: cp.Problem, first: SolverError) -> None:
    try:
        solve(problem, FALLBACK_SOLVER, **RELAXED_OPTIONS)
    except SolverError as second:
        raise solver_error(
            second, f"{second} (at its default tolerances before: status '{getattr(first, 'status', None)}')"
        ) from second
    logger.warning(
        "%s ended '%s' at its default tolerances and was solved at %s",
        FALLBACK_SOLVER,
        getattr(first, "status", None),
        RELAXED_OPTIONS,
    )


def solver_label(solver: str, fallbacks: int, total: int, unit: str) -> str:
    """The ``Operation.solver`` of a result: the solver's name, and how many of its ``total`` problems (pieces,
    home responses) :data:`FALLBACK_SOLVER` solved instead, if any: "PIQP (CLARABEL for 1 of 4 pieces)"."""
    if not fallbacks:
        return solver
    logger.info("%s did not solve %d of %d %s; %s solved them", solver, fallbacks, total, unit, FALLBACK_SOLVER)
    return f"{solver} ({FALLBACK_SOLVER} for {fallbacks} of {total} {unit})"


# ===================================================================================== parallel
def check_n_jobs(n_jobs, name: str = "n_jobs") -> int | None:
    """The one rule for a number of joblib workers, checked up front whatever the number of tasks.

    None (joblib's default: one, or the ``joblib.parallel_config`` in force), a positive integer, or a negative
    integer in joblib's sense (-1 all cores, -2 all but one, ...) down to minus the number of cores (one worker).
    0, booleans, floats and more negative values raise one ValueError naming ``name``.
    """
    if n_jobs is None:
        return None
    cores = cpu_count()
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, numbers.Integral) or n_jobs == 0 or n_jobs < -cores:
        raise ValueError(
            f"{name} must be None, a positive integer, or -1 (all {cores} cores) down to -{cores} "
            f"(one worker), got {n_jobs!r}"
        )
    return int(n_jobs)


def worker_count(n_jobs) -> int:
    """Workers that a checked ``n_jobs`` stands for on this machine (None and -1: every core)."""
    n_jobs = check_n_jobs(n_jobs)
    cores = cpu_count()
    if n_jobs is None:
        return cores
    return n_jobs if n_jobs > 0 else cores + 1 + n_jobs


def run_tasks(func, tasks: list[tuple], n_jobs: int | None = -1, progress: str | None = None) -> list:
    """``[func(*task) for task in tasks]``, in parallel through joblib when there is more than one task.

    No backend is named here, so ``joblib.parallel_config(backend="dask")`` (or any other) applies.
    n_jobs: :func:`check_n_jobs`. progress: a description for a tqdm bar over the tasks, shown only when stderr
    is a terminal (so executed notebooks stay byte-identical); None shows none.
    """
    n_jobs = check_n_jobs(n_jobs)
    bar = tqdm(total=len(tasks), desc=progress, unit="task", disable=progress is None or not sys.stderr.isatty())
    with bar:
        if len(tasks) <= 1 or n_jobs == 1:
            out = []
            for task in tasks:
                out.append(func(*task))
                bar.update()
            return out
        out = []
        for result in Parallel(n_jobs=n_jobs, return_as="generator")(delayed(func)(*task) for task in tasks):
            out.append(result)
            bar.update()
        return out


def map_chunks(
    func, items, args: tuple = (), n_jobs: int | None = -1, chunks: int = 16, progress: str | None = None
) -> list:
    """``func(chunk, *args)`` over ``chunks`` strided chunks of ``items`` (item k goes to chunk k mod chunks), one
    :func:`run_tasks` task each; the results (one per item) come back flattened in the order of ``items``.

    Each chunk is fixed by the items alone, so the result does not depend on ``n_jobs``; striding spreads items
    sorted by cost (small coalitions first, say) evenly over the chunks.
    """
    items = list(items)
    count = min(int(chunks), len(items))
    results = run_tasks(func, [(items[k::count], *args) for k in range(count)], n_jobs, progress)
    out = [None] * len(items)
    for k, result in enumerate(results):
        out[k::count] = list(result)
    return out


def independent_pieces(case: Case, chunk_rows: int = CHUNK_ROWS) -> list[np.ndarray]:
    """Flat rows of M1 in consecutive pieces of at most ``chunk_rows`` (any split is exact: rows are independent)."""
    total = case.n_homes * case.n_scenarios
    return [np.arange(k, min(k + chunk_rows, total)) for k in range(0, total, max(1, int(chunk_rows)))]


def clearing_pieces(case: Case, chunk_rows: int = CHUNK_ROWS) -> list[np.ndarray]:
    """Flat rows of the clearing in pieces of whole scenarios (all homes), about ``chunk_rows`` rows each."""
    n, s = case.n_homes, case.n_scenarios
    per_piece = max(1, int(chunk_rows) // n)
    pieces = []
    for k in range(0, s, per_piece):
        scen = np.arange(k, min(k + per_piece, s))
        pieces.append((np.arange(n)[:, None] * s + scen[None, :]).reshape(-1))  # home-major
    return pieces


# ================================================================================ objects kept by workers
def _serve(conn, objects: list) -> None:
    """A worker process of an :class:`OwnedPool`: answers ("call", method, shared, own) with
    ``[getattr(o, method)(*shared, *own_k) for o, own_k in zip(objects, own)]``, and ("stop",)."""
    while True:
        message = conn.recv()
        if message[0] != "call":
            conn.close()
            return
        try:
            _, method, shared, own = message
            conn.send(("ok", [getattr(o, method)(*shared, *extra) for o, extra in zip(objects, own)]))
        except Exception as exc:  # sent back and raised by the caller
            try:
                conn.send(("error", exc))
            except Exception:
                conn.send(("error", RuntimeError(traceback.format_exc())))


@contextlib.contextmanager
def _main_not_imported():
    """Start worker processes that do not import this program's main module, as loky's (so joblib's) do not:
    they run desmarket's objects only, and multiprocessing would otherwise run a script without an
    ``if __name__ == "__main__":`` guard again in each worker (found by a script at 10,000 homes)."""
    main = sys.modules.get("__main__")
    saved = {k: v for k, v in vars(main).items() if k in ("__file__", "__spec__")} if main is not None else {}
    try:
        if "__file__" in saved:
            del main.__file__
        if "__spec__" in saved:
            main.__spec__ = None
        yield
    finally:
        if main is not None:
            vars(main).update(saved)


def _context():
    """Worker processes by forkserver where the platform has it (the server imports desmarket once, so later
    pools start fast), else spawn; never fork (this process may hold solver threads)."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["desmarket"])
        return context
    return multiprocessing.get_context("spawn")


class OwnedPool:
    """Objects that each live in one worker process for the pool's whole life, object k in worker k mod workers,
    and are called there again and again: a built problem is re-solved where it was built.

    Not joblib [choice]: its backends place each task anywhere, so every worker would come to build and keep
    every object, and loky restarts a worker whose memory has grown by 300 MB (its leak check), which drops
    them. With one worker (or one object) the objects live in this process. Use as a context manager, or call
    :meth:`close`.
    """

    def __init__(self, objects: list, workers: int):
        self.count = len(objects)
        self.workers = max(1, min(int(workers), len(objects)))
        self.local = objects if self.workers == 1 else None
        self.links: list = []
        self.processes: list = []
        if self.local is None:
            context = _context()
            try:
                with _main_not_imported():
                    for w in range(self.workers):
                        parent, child = context.Pipe()
                        share = objects[w :: self.workers]
                        process = context.Process(target=_serve, args=(child, share), daemon=True)
                        process.start()
                        child.close()
                        self.links.append(parent)
                        self.processes.append(process)
            except BaseException:
                self.close()
                raise

    def call(self, method: str, shared: tuple = (), own: list | None = None) -> list:
        """``[getattr(o, method)(*shared, *own[k]) for k, o in enumerate(objects)]``, each where it lives, in the
        objects' order; ``own`` (one tuple per object, default none) goes only to its own object's worker. An
        exception raised there is raised here."""
        own = [()] * self.count if own is None else list(own)
        if len(own) != self.count:
            raise ValueError(f"OwnedPool.call: {len(own)} argument tuples for {self.count} objects")
        if self.local is not None:
            return [getattr(o, method)(*shared, *extra) for o, extra in zip(self.local, own)]
        for w, link in enumerate(self.links):
            link.send(("call", method, shared, own[w :: self.workers]))
        replies = [link.recv() for link in self.links]
        for kind, reply in replies:
            if kind == "error":
                raise reply
        out: list = [None] * self.count
        for w, (_, reply) in enumerate(replies):
            out[w :: self.workers] = reply
        return out

    def close(self) -> None:
        """Stop the workers (their objects go with them)."""
        for link in self.links:
            try:
                link.send(("stop",))
                link.close()
            except (OSError, BrokenPipeError):
                pass
        for process in self.processes:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()
        self.links, self.processes, self.local = [], [], None

    def __enter__(self) -> OwnedPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
