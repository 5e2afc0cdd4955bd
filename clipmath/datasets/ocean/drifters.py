r"""Drifters advected by the flows of :mod:`.flow`: a batched, fixed-step RK4 (Section 6.3).

The Lagrangian side of Section 6.3 of Baptista, Stuart & Tran (2025): a drifter released at
:math:`x(0) = x_0` (the paper's (0.75, 0.75)) follows :math:`\dot x = w(x, t)`, integrated by the
classical fourth-order Runge-Kutta method

.. math::  x_{s+1} = x_s + \tfrac{\Delta t}{6}(a + 2b + 2c + d), \quad
           a = w(x_s, t_s),\ b = w(x_s + \tfrac{\Delta t}{2} a, t_s + \tfrac{\Delta t}{2}),\
           c = w(x_s + \tfrac{\Delta t}{2} b, t_s + \tfrac{\Delta t}{2}),\
           d = w(x_s + \Delta t\, c, t_s + \Delta t),

to T = 0.1 and recorded at :math:`t_j = jT/J`, j = 1..J = 1,000. Positions are unwrapped (a
track that leaves the square keeps going; ``x mod 1`` is its point on the torus).

**Step.** The paper integrates with Δt = 1e-5 (10,000 steps, recording every 10th). RK4's error
is :math:`O(\Delta t^4)` (the tests measure the order), so a larger step costs accuracy by the
factor :math:`(\Delta t / 10^{-5})^4`. Measured on 2,048 flows of the default
:class:`~.flow.FlowConfig`, Δt = 1e-4 (one step per recorded point) reproduces the Δt = 1e-5
tracks to 7.9e-8 at worst (per track: 1.7e-8 at the 99.9th percentile, 5.2e-9 at the 99th,
2.6e-10 at the median); Δt = 2e-4 deviates 2.2e-7 at worst on 512 flows, Δt = 5e-5 3.7e-9. The
Δt = 1e-5 tracks are themselves 1e4 times closer to the exact ones, so the deviation is the error
of the Δt = 1e-4 track, and it is at the float32 resolution (6e-8 at 1) in which tracks are
stored: 0.3% of the stored float32 values differ from those of the Δt = 1e-5 tracks, by an ulp
or two. Δt = 1e-4 is therefore the default, at a tenth of the cost; :func:`~.dataset.simulate_ocean`
re-measures the deviation on a subset of every data set it writes.

**Arithmetic (why it is fast).** All tracks of a chunk advance together; arrays are laid out
(mode, track) so every operation is one long vectorised loop over a chunk small enough (512
tracks: about 0.2 MiB per (24, n) complex array) to stay in the L2 cache. Per stage:

* one cos and one sin per axis (torch's SIMD ones, on the numpy buffers) give
  :math:`z_a = e^{2\pi i x_a}`; the powers
  :math:`z_a^{k}`, k = 1..k_max, follow by multiplication and the negative ones by conjugation
  (no transcendental function per mode);
* only the 24 modes of a half-plane are formed, :math:`e_h = z_1^{h_1} z_2^{h_2}` (one complex
  product each), since :math:`e_{-h} = \bar e_h` and the pair h, -h enters the velocity through
  :math:`d_h(t) = \psi_h e^{i\omega_h t} + \overline{\psi_{-h}} e^{-i\omega_{-h} t}`:
  :math:`w = (-2\pi \sum_h h_2 \operatorname{Im}(d_h e_h),\ 2\pi \sum_h h_1
  \operatorname{Im}(d_h e_h))`, the two sums one (2, 24) x (24, n) matrix product (numpy's
  einsum loop, not BLAS, whose kernels would make a track's last bits depend on its chunk);
* the time factors never call exp: the 48 terms of :math:`d_h` advance by exact rotation,
  :math:`e^{i\omega(t + \Delta t/2)} = e^{i\omega t} e^{i\omega \Delta t / 2}`, twice a step
  (the stages need t and t + Δt/2); the rounding this accumulates over 2,000 rotations is
  ~1e-13, far below the RK4 error.

The position state is float64 (10,000 float32 steps drift up to 2e-3 on chaotic tracks), and
so is the velocity, whose phases :math:`2\pi k x` lose 1e-6 in float32. There is no Python loop
over tracks or modes: the loop runs over the steps only. The numpy kernel is the CPU path
(``device=None``); the same algorithm in torch runs on any torch device (``device="cuda"``) and
agrees with it to round-off. Results do not depend on the chunk size or the number of worker
processes.

Measured (``benchmarks/bench_ocean.py``, one process on a shared 2-core machine): 0.70 ms of CPU
per track, so the paper-size set of 65,536 tracks takes 54 s of CPU (87 s wall at a load of 3 to
5) including the step check, where plain vectorised numpy at the paper's step would take about
75 CPU-minutes. Per track that is 31 times ``solve_ivp`` (RK45, whose adaptive steps need
rtol = atol = 1e-11 to match this accuracy, about 230 steps a track); per step, 136 times.
"""

from __future__ import annotations

import concurrent.futures
import math
import multiprocessing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from clipmath.datasets.ocean.flow import TWO_PI, Flows, _check_int, _check_real

#: Tracks per chunk of the numpy kernel: (24, 512) complex arrays are 0.2 MiB, in the L2 cache.
NUMPY_CHUNK = 512
#: Tracks per chunk of the torch kernel: all of them on a GPU, L2-sized chunks on a CPU.
TORCH_CHUNK = {"cpu": 2048, "other": 1 << 20}

PAPER_RELEASE_POINT = (0.75, 0.75)


def check_release_points(value, name: str = "release_points") -> tuple[tuple[float, float], ...]:
    """Release points as a tuple of (x1, x2) pairs in [0, 1]^2; a ValueError naming ``name``."""
    try:
        points = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        points = None
    if (
        points is None
        or points.ndim != 2
        or points.shape[0] < 1
        or points.shape[1] != 2
        or not np.isfinite(points).all()
        or (points < 0).any()
        or (points > 1).any()
    ):
        raise ValueError(f"{name}={value!r}: expected a non-empty list of (x1, x2) pairs in [0, 1]^2")
    return tuple((float(a), float(b)) for a, b in points)


def steps_per_point(t_final: float, n_points: int, dt: float, name: str = "dt") -> int:
    r"""The number of RK4 steps between recorded points, :math:`T / (J \Delta t)`, an integer.

    Raises:
        ValueError: naming ``name`` when :math:`T/(J\Delta t)` is not an integer (to 1e-9).
    """
    ratio = t_final / (n_points * dt)
    steps = max(1, round(ratio))
    if abs(ratio - steps) > 1e-9 * max(1.0, ratio):
        raise ValueError(
            f"{name}={dt!r}: expected t_final / (n_points * {name}) = {t_final!r} / ({n_points} * {dt!r}) "
            f"= {ratio:.6g} to be an integer (the number of RK4 steps between recorded points)"
        )
    return steps


@dataclass(frozen=True)
class DrifterConfig:
    """Where drifters start, how long and how finely they are integrated and recorded.

    Attributes:
        release_points: (R, 2) release points in [0, 1]^2, each giving one track per flow;
            the paper's single (0.75, 0.75) by default.
        t_final: T, the end time (> 0).
        n_points: J, the number of recorded points :math:`x(jT/J)`, j = 1..J.
        dt: RK4 step; T / (J dt) must be an integer (1e-4: one step per point; the paper's
            1e-5: ten). See the module docstring for why 1e-4 is accurate enough.
        noise_std: standard deviation of i.i.d. Gaussian observation noise added to every
            recorded coordinate, in domain lengths (0: none, as in the paper).

    Raises:
        ValueError: naming the field, for a value out of range.
    """

    release_points: tuple[tuple[float, float], ...] = (PAPER_RELEASE_POINT,)
    t_final: float = 0.1
    n_points: int = 1000
    dt: float = 1e-4
    noise_std: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "release_points", check_release_points(self.release_points, "DrifterConfig.release_points")
        )
        _check_real("DrifterConfig.t_final", self.t_final, 0.0, strict=True)
        _check_int("DrifterConfig.n_points", self.n_points, 1)
        _check_real("DrifterConfig.dt", self.dt, 0.0, strict=True)
        _check_real("DrifterConfig.noise_std", self.noise_std, 0.0, strict=False)
        steps_per_point(self.t_final, self.n_points, self.dt, "DrifterConfig.dt")

    @property
    def n_release(self) -> int:
        """Number R of release points (drifters per flow)."""
        return len(self.release_points)

    def times(self) -> np.ndarray:
        """(J,) recording times :math:`t_j = jT/J`, j = 1..J."""
        return self.t_final * np.arange(1, self.n_points + 1) / self.n_points


class _HalfPlane:
    """Mode tables of the half-plane kernels for one k_max.

    Half-plane modes h, in kernel order: :math:`h_1 = 1..k_{max}` times
    :math:`h_2 = -k_{max}..k_{max}` (the product block), then :math:`h_1 = 0`,
    :math:`h_2 = 1..k_{max}`; M = 2 k_max (k_max + 1) of them.
    """

    def __init__(self, k_max: int) -> None:
        side = 2 * k_max + 1
        h = [(a, b) for a in range(1, k_max + 1) for b in range(-k_max, k_max + 1)]
        h += [(0, b) for b in range(1, k_max + 1)]
        h = np.array(h)
        self.k_max, self.side, self.m = k_max, side, len(h)
        self.n_block = k_max * side
        self.pos = (h[:, 0] + k_max) * side + (h[:, 1] + k_max)  # mode index of h
        self.neg = (k_max - h[:, 0]) * side + (k_max - h[:, 1])  # mode index of -h
        self.weights = np.stack([-TWO_PI * h[:, 1], TWO_PI * h[:, 0]]).astype(np.float64)  # (2, M)

    def terms(self, coefficients: np.ndarray, frequencies: np.ndarray, dt: float):
        r"""(2M, n) :math:`[\psi_h; \overline{\psi_{-h}}]` and their half-step rotations."""
        c = np.concatenate([coefficients[:, self.pos].T, np.conj(coefficients[:, self.neg]).T])
        omega = np.concatenate([frequencies[:, self.pos].T, -frequencies[:, self.neg].T])
        return np.ascontiguousarray(c), np.exp(0.5j * dt * omega)


class _NumpyVelocity:
    """The kernel's velocity of n tracks, with its buffers (module docstring, "Arithmetic").

    ``velocity(x, d, slot)`` takes x (2, n) float64 and the folded time factors d (M, n)
    complex128 at the stage's time and returns the velocity (2, n), a view into buffer
    ``slot`` (0..3: one per RK4 stage, so that the four stages coexist).
    """

    def __init__(self, table: _HalfPlane, n: int) -> None:
        k_max = table.k_max
        self.table = table
        self.theta = np.empty((2, n))
        self.z = np.empty((2, k_max, n), np.complex128)  # z[a, p] = exp(2 pi i (p + 1) x_a)
        self.z2 = np.empty((table.side, n), np.complex128)  # powers -k_max..k_max of z_2
        self.z2[k_max] = 1.0
        self.modes = np.empty((table.m, n), np.complex128)
        self.block = self.modes[: table.n_block].reshape(k_max, table.side, n)
        self.sums = [np.empty((2, 2 * n)) for _ in range(4)]  # matmul output, real/imag interleaved
        self.stage = [s[:, 1::2] for s in self.sums]  # their imaginary parts: the velocity
        # cos and sin by torch (SIMD, 1 ulp) into the numpy buffers: numpy's float64 cos/sin are
        # scalar libm calls, the largest single cost of a stage otherwise.
        self.theta_t = torch.from_numpy(self.theta)
        self.cos_t = torch.from_numpy(self.z[:, 0].real)
        self.sin_t = torch.from_numpy(self.z[:, 0].imag)

    def __call__(self, x: np.ndarray, d: np.ndarray, slot: int) -> np.ndarray:
        table, z, z2, k_max = self.table, self.z, self.z2, self.table.k_max
        np.multiply(x, TWO_PI, out=self.theta)
        torch.cos(self.theta_t, out=self.cos_t)
        torch.sin(self.theta_t, out=self.sin_t)
        for p in range(1, k_max):
            np.multiply(z[:, p - 1], z[:, 0], out=z[:, p])
        z2[k_max + 1 :] = z[1]
        np.conjugate(z[1, ::-1], out=z2[:k_max])
        np.multiply(z[0][:, None, :], z2[None], out=self.block)
        self.modes[table.n_block :] = z[1]
        np.multiply(self.modes, d, out=self.modes)
        # Im(d_h e_h) weighted by (-2 pi h_2, 2 pi h_1): one (2, M) x (M, 2n) product. einsum's
        # own loop, not BLAS: BLAS kernels change with the number of columns, so a track's last
        # bits would depend on the size of its chunk.
        np.einsum("mh,hn->mn", table.weights, self.modes.view(np.float64), out=self.sums[slot])
        return self.stage[slot]


def kernel_velocity(flows: Flows, x: np.ndarray, t: float) -> np.ndarray:
    """The numpy kernel's velocity at points, one point per flow.

    For tests against :meth:`~.flow.Flows.velocity`.

    Args:
        flows: n flows.
        x: (n, 2) points.
        t: time.

    Returns:
        (n, 2) float64 velocity w(x_i, t) of flow i.
    """
    table = _HalfPlane(flows.k_max)
    c = flows.coefficients * np.exp(1j * flows.frequencies * t)
    terms, _ = table.terms(c, flows.frequencies, 0.0)
    d = terms[: table.m] + terms[table.m :]
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float64).T)
    return _NumpyVelocity(table, len(flows))(x, d, 0).T.copy()


def _numpy_kernel(
    coefficients: np.ndarray, frequencies: np.ndarray, x0: np.ndarray, dt: float, every: int, n_points: int
) -> np.ndarray:
    """RK4 tracks of one chunk (module docstring): (n, K), (n, K), (n, 2) -> (n, J, 2) float64."""
    table = _HalfPlane(round((math.isqrt(coefficients.shape[1]) - 1) / 2))
    m, n = table.m, coefficients.shape[0]
    terms, rotation = table.terms(coefficients, frequencies, dt)
    velocity = _NumpyVelocity(table, n)
    pos = np.ascontiguousarray(x0.T, dtype=np.float64)  # (2, n)
    d_now = np.empty((m, n), np.complex128)
    d_half = np.empty((m, n), np.complex128)
    x_stage = np.empty((2, n))
    out = np.empty((n_points, 2, n))
    np.add(terms[:m], terms[m:], out=d_now)
    half = 0.5 * dt
    for step in range(every * n_points):
        a = velocity(pos, d_now, 0)
        terms *= rotation  # t -> t + dt/2, exactly by rotation
        np.add(terms[:m], terms[m:], out=d_half)
        np.multiply(a, half, out=x_stage)
        x_stage += pos
        b = velocity(x_stage, d_half, 1)
        np.multiply(b, half, out=x_stage)
        x_stage += pos
        c = velocity(x_stage, d_half, 2)
        terms *= rotation  # t + dt/2 -> t + dt
        np.add(terms[:m], terms[m:], out=d_now)
        np.multiply(c, dt, out=x_stage)
        x_stage += pos
        d = velocity(x_stage, d_now, 3)
        b += c
        b *= 2.0
        b += a
        b += d
        b *= dt / 6.0
        pos += b
        if (step + 1) % every == 0:
            out[(step + 1) // every - 1] = pos
    return out.transpose(2, 0, 1)


def _torch_kernel(
    coefficients: np.ndarray,
    frequencies: np.ndarray,
    x0: np.ndarray,
    dt: float,
    every: int,
    n_points: int,
    device,
) -> np.ndarray:
    """The numpy kernel's algorithm in torch, on ``device``: same arguments, same result."""
    table = _HalfPlane(round((math.isqrt(coefficients.shape[1]) - 1) / 2))
    k_max, m, n = table.k_max, table.m, coefficients.shape[0]
    terms_np, rotation_np = table.terms(coefficients, frequencies, dt)
    terms = torch.from_numpy(terms_np).to(device)
    rotation = torch.from_numpy(rotation_np).to(device)
    weights = torch.from_numpy(table.weights).to(device)
    pos = torch.from_numpy(np.ascontiguousarray(x0.T, dtype=np.float64)).to(device)
    one = torch.ones((1, n), dtype=torch.complex128, device=device)

    def velocity(x: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        theta = TWO_PI * x
        z = [torch.complex(torch.cos(theta), torch.sin(theta))]  # (2, n) each power
        for _ in range(1, k_max):
            z.append(z[-1] * z[0])
        z = torch.stack(z, dim=1)  # (2, k_max, n)
        z2 = torch.cat([z[1].flip(0).conj(), one, z[1]])  # (side, n)
        block = (z[0][:, None, :] * z2[None]).reshape(table.n_block, n)
        modes = torch.cat([block, z[1]]) * d
        sums = weights @ torch.view_as_real(modes).reshape(m, 2 * n)
        return sums.reshape(2, n, 2)[..., 1]

    out = torch.empty((n_points, 2, n), dtype=torch.float64, device=device)
    d_now = terms[:m] + terms[m:]
    for step in range(every * n_points):
        a = velocity(pos, d_now)
        terms = terms * rotation
        d_half = terms[:m] + terms[m:]
        b = velocity(pos + (0.5 * dt) * a, d_half)
        c = velocity(pos + (0.5 * dt) * b, d_half)
        terms = terms * rotation
        d_now = terms[:m] + terms[m:]
        d = velocity(pos + dt * c, d_now)
        pos = pos + (dt / 6.0) * (a + 2.0 * (b + c) + d)
        if (step + 1) % every == 0:
            out[(step + 1) // every - 1] = pos
    return out.permute(2, 0, 1).cpu().numpy()


def _chunk_job(args) -> np.ndarray:
    """One chunk in a worker process (module level so that it pickles)."""
    return _numpy_kernel(*args)


def iter_tracks(
    flows: Flows,
    release_points: Sequence[Sequence[float]] = (PAPER_RELEASE_POINT,),
    *,
    t_final: float = 0.1,
    n_points: int = 1000,
    dt: float = 1e-4,
    chunk_size: int | None = None,
    workers: int = 1,
    device=None,
    progress: bool = False,
) -> Iterator[tuple[int, int, np.ndarray]]:
    """The tracks of :func:`drifter_tracks`, chunk by chunk of whole flows, in order.

    Yields:
        ``(start, stop, tracks)``: tracks (stop - start, R, J, 2) float64 of flows start:stop.
    """
    if not isinstance(flows, Flows):
        raise ValueError(f"flows={flows!r:.80}: expected a Flows")
    points = np.array(check_release_points(release_points))
    t_final = _check_real("t_final", t_final, 0.0, strict=True)
    n_points = _check_int("n_points", n_points, 1)
    dt = _check_real("dt", dt, 0.0, strict=True)
    every = steps_per_point(t_final, n_points, dt)
    dt = t_final / (n_points * every)  # exactly T / (number of steps)
    workers = _check_int("workers", workers, 1)
    if device is not None:
        device = torch.device(device)
        if workers != 1:
            raise ValueError(f"workers={workers!r}: expected 1 with a torch device (device={str(device)!r})")
    if chunk_size is None:
        chunk_size = NUMPY_CHUNK if device is None else TORCH_CHUNK.get(device.type, TORCH_CHUNK["other"])
    chunk_size = _check_int("chunk_size", chunk_size, 1)
    n_release = len(points)
    per_chunk = max(1, chunk_size // n_release)  # whole flows per chunk

    def jobs():
        for start in range(0, len(flows), per_chunk):
            stop = min(start + per_chunk, len(flows))
            # Tracks flow-major, release-minor: track r of flow i is row i * R + r.
            coefficients = np.repeat(flows.coefficients[start:stop], n_release, axis=0)
            frequencies = np.repeat(flows.frequencies[start:stop], n_release, axis=0)
            x0 = np.tile(points, (stop - start, 1))
            yield start, stop, (coefficients, frequencies, x0, dt, every, n_points)

    bar = tqdm(total=len(flows), desc="drifters", unit="flow", disable=not progress, leave=False)
    try:
        if workers == 1:
            for start, stop, args in jobs():
                if device is None:
                    tracks = _numpy_kernel(*args)
                else:
                    tracks = _torch_kernel(*args, device)
                bar.update(stop - start)
                yield start, stop, tracks.reshape(stop - start, n_release, n_points, 2)
        else:
            context = multiprocessing.get_context("spawn")
            with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
                spans, futures = [], []
                for start, stop, args in jobs():
                    spans.append((start, stop))
                    futures.append(pool.submit(_chunk_job, args))
                for (start, stop), future in zip(spans, futures, strict=False):
                    tracks = future.result()
                    bar.update(stop - start)
                    yield start, stop, tracks.reshape(stop - start, n_release, n_points, 2)
    finally:
        bar.close()


def drifter_tracks(
    flows: Flows,
    release_points: Sequence[Sequence[float]] = (PAPER_RELEASE_POINT,),
    *,
    t_final: float = 0.1,
    n_points: int = 1000,
    dt: float = 1e-4,
    chunk_size: int | None = None,
    workers: int = 1,
    device=None,
    progress: bool = False,
) -> np.ndarray:
    """RK4 drifter tracks through each flow from each release point (module docstring).

    Args:
        flows: n flows, (n, K) coefficients and frequencies.
        release_points: (R, 2) release points in [0, 1]^2.
        t_final: T (> 0).
        n_points: J recorded points at :math:`t_j = jT/J`, j = 1..J.
        dt: RK4 step; T / (J dt) must be an integer.
        chunk_size: tracks advanced together (default: 512 for numpy, all on a GPU).
        workers: processes for the numpy kernel (chunks split among them; 1: this process).
        device: ``None`` for the numpy kernel, else a torch device ("cpu", "cuda", ...).
        progress: show a progress bar over flows.

    Returns:
        (n, R, J, 2) float64 unwrapped positions :math:`x(t_j)`.

    Raises:
        ValueError: naming the argument, for a bad value.
    """
    tracks = None
    for start, stop, chunk in iter_tracks(
        flows,
        release_points,
        t_final=t_final,
        n_points=n_points,
        dt=dt,
        chunk_size=chunk_size,
        workers=workers,
        device=device,
        progress=progress,
    ):
        if tracks is None:
            tracks = np.empty((len(flows),) + chunk.shape[1:])
        tracks[start:stop] = chunk
    return tracks
