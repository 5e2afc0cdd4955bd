"""The drifter simulator of Section 6.3 against ``scipy.integrate.solve_ivp`` and plain numpy.

1. Per trajectory, at matched accuracy. Ours: :func:`drifter_tracks` (batched RK4, dt = 1e-4)
   on a chunk of flows. Anchor: ``solve_ivp(method="RK45")`` one trajectory at a time with a
   lean numpy right-hand side (one exp over the 49 modes per call), its tolerance
   ``rtol = atol`` scanned and the loosest taken whose worst error over the anchor's flows is
   no larger than ours on the same flows; both errors against the paper's dt = 1e-5 tracks.
   Reported: seconds per trajectory (the ratio that matters at matched accuracy) and
   trajectory-steps per second (RK45 takes fewer, larger steps, of 6 evaluations each).
2. The paper-size set, 65,536 flows x 1,000 points: ours measured on a subset and extrapolated
   (``--full`` runs the whole ``simulate_ocean``, check and all), one process and two; beside it
   plain vectorised numpy (RK4 over all flows of a chunk, the velocity summed mode by mode with
   an exp per mode and stage, :meth:`Flows.velocity`) at the paper's dt = 1e-5 and at 1e-4,
   measured on a few steps and extrapolated.

Times are wall-clock and CPU (``time.process_time``); on a shared machine the CPU time is the
steadier measure of the work, and ``uptime`` before and after says how shared it was. Run
single-threaded BLAS: ``OPENBLAS_NUM_THREADS=1 python benchmarks/run.py ocean``.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
from scipy.integrate import solve_ivp

from clipmath.datasets.ocean import (
    PAPER_SAMPLES,
    DrifterConfig,
    FlowConfig,
    OceanConfig,
    drifter_tracks,
    sample_flows,
    simulate_ocean,
    wavenumbers,
)

from common import print_table

N_OURS = 4096  # flows timed for our kernel (1/16 of the paper set)
N_ANCHOR = 16  # flows integrated by solve_ivp, one at a time
TOLERANCES = (1e-9, 1e-10, 1e-11, 1e-12)
N_PLAIN, PLAIN_STEPS = 512, 100  # plain numpy: flows and RK4 steps timed
TIMES = DrifterConfig().times()


def load() -> str:
    return open("/proc/loadavg").read().split()[:3].__str__() if os.path.exists("/proc/loadavg") else "?"


def timed(fn, *args, **kwargs):
    """(result, wall seconds, CPU seconds) of one call ``fn(*args, **kwargs)``."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def rhs(coefficients: np.ndarray, frequencies: np.ndarray):
    """The right-hand side of one flow for solve_ivp: w(x, t) summed over the 49 modes."""
    k = wavenumbers(3).astype(np.float64)
    grad = 2j * np.pi * k

    def f(t, x):
        g = (coefficients * np.exp(1j * (frequencies * t + 2 * np.pi * (k @ x)))) @ grad
        return np.array([g[1].real, -g[0].real])

    return f


def anchor(flows, tol: float):
    """solve_ivp RK45 per flow: (tracks (n, J, 2), function evaluations per track)."""
    tracks, nfev = [], []
    for i in range(len(flows)):
        sol = solve_ivp(
            rhs(flows.coefficients[i], flows.frequencies[i]),
            (0.0, 0.1),
            [0.75, 0.75],
            method="RK45",
            rtol=tol,
            atol=tol,
            t_eval=TIMES,
        )
        tracks.append(sol.y.T)
        nfev.append(sol.nfev)
    return np.array(tracks), float(np.mean(nfev))


def plain_numpy(flows, dt: float, steps: int) -> np.ndarray:
    """RK4 over all flows at once with the mode-by-mode velocity (exp per mode and stage)."""
    x = np.full((len(flows), 1, 2), 0.75)
    t = 0.0
    for _ in range(steps):
        a = flows.velocity(x, t)
        b = flows.velocity(x + 0.5 * dt * a, t + 0.5 * dt)
        c = flows.velocity(x + 0.5 * dt * b, t + 0.5 * dt)
        d = flows.velocity(x + dt * c, t + dt)
        x = x + dt / 6 * (a + 2 * b + 2 * c + d)
        t += dt
    return x


def per_trajectory() -> None:
    flows = sample_flows(FlowConfig(), N_OURS, seed=0)
    _, wall, cpu = timed(lambda: drifter_tracks(flows))
    ours_s = cpu / N_OURS
    head = flows[:N_ANCHOR]
    ours = drifter_tracks(head)
    reference = drifter_tracks(head, dt=1e-5)[:, 0]
    ours_err = np.abs(ours[:, 0] - reference).max(axis=(1, 2))
    print(f"\nours: {N_OURS} flows in {wall:.2f} s wall, {cpu:.2f} s CPU ({ours_s * 1e3:.3f} ms CPU per trajectory)")
    print(
        f"error against dt = 1e-5 on {N_ANCHOR} flows: ours max {ours_err.max():.3g}, median {np.median(ours_err):.3g}"
    )
    print("\n| solve_ivp RK45 rtol = atol | max error | median error | evaluations / track | ms CPU / track |")
    print("|---|---|---|---|---|")
    chosen = None
    for tol in TOLERANCES:
        (tracks, nfev), _, a_cpu = timed(anchor, head, tol)
        err = np.abs(tracks - reference).max(axis=(1, 2))
        print(f"| {tol:g} | {err.max():.3g} | {np.median(err):.3g} | {nfev:.0f} | {a_cpu / N_ANCHOR * 1e3:.2f} |")
        if chosen is None and err.max() <= ours_err.max():
            chosen = (tol, a_cpu / N_ANCHOR, nfev)
    if chosen is None:
        print("no tolerance matched ours; the tightest is used")
        chosen = (tol, a_cpu / N_ANCHOR, nfev)
    tol, anchor_s, nfev = chosen
    anchor_steps = (nfev - 2) / 6  # RK45: 6 new evaluations per step (FSAL), 2 to pick the first step
    rows = [(f"s per trajectory (anchor rtol = atol = {tol:g})", ours_s, anchor_s, "<= 0.01 (>= 100x)")]
    print_table("ocean: drifter tracks at matched accuracy, CPU seconds (ratio = ours / anchor)", rows)
    ours_rate = 1000 / ours_s
    anchor_rate = anchor_steps / anchor_s
    print(
        f"\ntrajectory-steps per CPU second: ours {ours_rate:.3g} (1,000 steps per track), "
        f"anchor {anchor_rate:.3g} ({anchor_steps:.0f} steps per track): {ours_rate / anchor_rate:.0f}x"
    )
    print(
        f"trajectories per CPU second at matched accuracy: ours {1 / ours_s:.0f}, anchor {1 / anchor_s:.1f}: "
        f"{anchor_s / ours_s:.0f}x"
    )


def paper_size(full: bool) -> None:
    scale = PAPER_SAMPLES / N_OURS
    flows = sample_flows(FlowConfig(), N_OURS, seed=0)
    rows = []
    _, wall, cpu = timed(lambda: drifter_tracks(flows))
    rows.append(("ours, dt = 1e-4, 1 process", wall * scale, cpu * scale, f"measured on {N_OURS}, x{scale:g}"))
    _, wall2, _ = timed(lambda: drifter_tracks(flows, workers=2))
    rows.append(("ours, dt = 1e-4, 2 processes", wall2 * scale, float("nan"), f"measured on {N_OURS}, x{scale:g}"))
    plain = sample_flows(FlowConfig(), N_PLAIN, seed=0)
    _, p_wall, p_cpu = timed(lambda: plain_numpy(plain, 1e-5, PLAIN_STEPS))
    per_step = PAPER_SAMPLES / N_PLAIN / PLAIN_STEPS
    rows.append(
        (
            "plain numpy, dt = 1e-5 (10,000 steps)",
            p_wall * per_step * 10_000,
            p_cpu * per_step * 10_000,
            f"{PLAIN_STEPS} steps on {N_PLAIN}",
        )
    )
    rows.append(
        (
            "plain numpy, dt = 1e-4 (1,000 steps)",
            p_wall * per_step * 1_000,
            p_cpu * per_step * 1_000,
            f"{PLAIN_STEPS} steps on {N_PLAIN}",
        )
    )
    if full:
        _, f_wall, f_cpu = timed(lambda: simulate_ocean(OceanConfig(), progress=False))
        rows.append(("ours, simulate_ocean(OceanConfig()) in full, 1 process", f_wall, f_cpu, "measured"))
    print(
        f"\n## ocean: the paper-size set, {PAPER_SAMPLES} flows x 1,000 points (goal: <= 180 s at dt = 1e-5 accuracy)\n"
    )
    print("| case | wall s | CPU s | how |")
    print("|---|---|---|---|")
    for case, w, c, how in rows:
        print(f"| {case} | {w:.4g} | {c:.4g} | {how} |")
    print(f"\nplain numpy dt = 1e-5 / ours (CPU): {rows[2][2] / rows[0][2]:.0f}x")


def main(full: bool = False) -> None:
    print(f"load average before: {load()}")
    per_trajectory()
    paper_size(full)
    print(f"\nload average after: {load()}")


if __name__ == "__main__":
    main(full="--full" in sys.argv[1:])
