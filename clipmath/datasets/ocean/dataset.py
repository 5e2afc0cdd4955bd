r"""The flow/drifter data set of Section 6.3: simulate, store as NetCDF, write as shards.

:func:`simulate_ocean` draws the flows (:mod:`.flow`), advects the drifters (:mod:`.drifters`),
measures the step error on a subset (the step-halving check), adds the observation noise and
returns an ``xarray.Dataset``:

==================  ===============================  =======  ==========================================
variable            dims                             dtype    meaning
==================  ===============================  =======  ==========================================
``coefficients``    (sample, part, mode)             float64  :math:`\psi_k`, part = ("real", "imag")
``frequencies``     (sample, mode)                   float64  :math:`\omega_k`
``wavenumbers``     (mode, coord)                    int32    k, coord = ("x1", "x2")
``release_points``  (release, coord)                 float64  :math:`x_0`
``trajectories``    (sample, release, time, coord)   float32  observed :math:`x(t_j)` (+ noise), unwrapped
==================  ===============================  =======  ==========================================

with the coordinate ``time`` (:math:`t_j = jT/J`) and CF attributes (units, long names; the
generating :class:`OceanConfig` as JSON in the global attribute ``config``, the check in
``step_check_*``). :func:`save_ocean_netcdf` and :func:`load_ocean_netcdf` round-trip it exactly;
:func:`ocean_samples` gives its shard samples for :func:`~clipmath.datasets.write_shards`,
and :func:`write_ocean_shards` writes them with the config and the check in the manifest.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import xarray as xr

from clipmath.datasets.ocean.drifters import DrifterConfig, iter_tracks
from clipmath.datasets.ocean.flow import (
    FlowConfig,
    Flows,
    _check_int,
    _check_real,
    _from_dict,
    sample_flows,
    wavenumbers,
)
from clipmath.datasets.shards import Manifest, write_shards

logger = logging.getLogger(__name__)

#: Samples of the paper's set: 32,768 training + 32,768 test pairs (Section 6.3).
PAPER_SAMPLES = 65_536
REFERENCE = "Baptista, Stuart & Tran (2025), A mathematical perspective on contrastive learning, Section 6.3"


@dataclass(frozen=True)
class OceanConfig:
    """Everything that determines a flow/drifter data set.

    Execution choices such as chunk size, workers and device are arguments of
    :func:`simulate_ocean`, since they change no number.

    Attributes:
        flow: laws of the flows.
        drifters: release points, T, J, the RK4 step and the observation noise.
        n_samples: number of flows (the paper: 65,536 = 32,768 train + 32,768 test).
        seed: seed of the flows and of the noise (independent streams; the first m samples
            are the same for every n_samples >= m).
        check_samples: flows (the first ones) re-integrated for the step check (0: none);
            256 at the paper's 1e-5 cost about 4% of a paper-size run at dt = 1e-4.
        check_dt: step of the check's reference tracks (the paper's 1e-5); a ``drifters.dt``
            not larger than it is checked against dt / 2 instead.
        check_tolerance: the largest deviation of the check accepted without a warning
            (1e-6, about 16 float32 ulps at 1).

    Raises:
        ValueError: naming the field, for a value out of range.
    """

    flow: FlowConfig = field(default_factory=FlowConfig)
    drifters: DrifterConfig = field(default_factory=DrifterConfig)
    n_samples: int = PAPER_SAMPLES
    seed: int = 0
    check_samples: int = 256
    check_dt: float = 1e-5
    check_tolerance: float = 1e-6

    def __post_init__(self) -> None:
        if not isinstance(self.flow, FlowConfig):
            raise ValueError(f"OceanConfig.flow={self.flow!r:.80}: expected a FlowConfig")
        if not isinstance(self.drifters, DrifterConfig):
            raise ValueError(f"OceanConfig.drifters={self.drifters!r:.80}: expected a DrifterConfig")
        _check_int("OceanConfig.n_samples", self.n_samples, 1)
        _check_int("OceanConfig.seed", self.seed, 0)
        _check_int("OceanConfig.check_samples", self.check_samples, 0)
        _check_real("OceanConfig.check_dt", self.check_dt, 0.0, strict=True)
        _check_real("OceanConfig.check_tolerance", self.check_tolerance, 0.0, strict=True)

    def reference_dt(self) -> float:
        """The step of the check's reference: ``check_dt``, or dt / 2 if dt <= check_dt."""
        dt = self.drifters.dt
        return self.check_dt if self.check_dt < dt else dt / 2

    def to_dict(self) -> dict:
        """Plain nested dicts and lists (JSON and YAML ready)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict) -> OceanConfig:
        """The inverse of :meth:`to_dict`; missing keys take their defaults, unknown ones are errors.

        Raises:
            ValueError: naming an unknown key or a bad value.
        """
        if not isinstance(data, dict):
            raise ValueError(f"config={data!r:.80}: expected a mapping for OceanConfig")
        data = dict(data)
        if "flow" in data:
            data["flow"] = _from_dict(FlowConfig, data["flow"], "flow")
        if "drifters" in data:
            data["drifters"] = _from_dict(DrifterConfig, data["drifters"], "drifters")
        return _from_dict(cls, data, "config")


def _attrs(**kw) -> dict:
    return {key: value for key, value in kw.items() if value is not None}


def simulate_ocean(
    config: OceanConfig | None = None,
    *,
    chunk_size: int | None = None,
    workers: int = 1,
    device=None,
    progress: bool = True,
) -> xr.Dataset:
    """Draw flows and advect drifters: the data set of Section 6.3 (module docstring).

    Steps: flows from ``config.flow`` and ``seed``; RK4 tracks at ``drifters.dt``; the step
    check (the first ``check_samples`` flows re-integrated at :meth:`OceanConfig.reference_dt`,
    the largest coordinate deviation stored as ``step_check_max_deviation`` and warned about
    above ``check_tolerance``); noise; float32 storage of the tracks.

    Args:
        config: the data set (default: the paper-size :class:`OceanConfig`).
        chunk_size: tracks advanced together (default: the kernel's).
        workers: processes for the numpy kernel.
        device: ``None`` for the numpy kernel, or a torch device.
        progress: progress bar over flows.

    Returns:
        The ``xarray.Dataset`` of the module docstring, with n_samples samples.

    Raises:
        ValueError: naming the argument, for a bad value.
    """
    config = OceanConfig() if config is None else config
    if not isinstance(config, OceanConfig):
        raise ValueError(f"config={config!r:.80}: expected an OceanConfig")
    drifters = config.drifters
    flows = sample_flows(config.flow, config.n_samples, config.seed)
    kwargs = dict(t_final=drifters.t_final, n_points=drifters.n_points, chunk_size=chunk_size, device=device)
    noise_rng = np.random.default_rng(np.random.SeedSequence([config.seed, 0x0CEA]).spawn(3)[2])
    shape = (config.n_samples, drifters.n_release, drifters.n_points, 2)
    trajectories = np.empty(shape, np.float32)
    n_check = min(config.check_samples, config.n_samples)
    head = None
    for start, stop, tracks in iter_tracks(
        flows, drifters.release_points, dt=drifters.dt, workers=workers, progress=progress, **kwargs
    ):
        if start < n_check:
            head = tracks[: n_check - start] if head is None else np.concatenate([head, tracks[: n_check - start]])
        if drifters.noise_std > 0:
            # Drawn in sample order, chunk after chunk: the same stream for every chunk size.
            tracks = tracks + drifters.noise_std * noise_rng.standard_normal(tracks.shape)
        trajectories[start:stop] = tracks

    check = {"step_check_dt": config.reference_dt(), "step_check_samples": n_check}
    if n_check:
        reference = np.empty_like(head)
        for start, stop, tracks in iter_tracks(
            flows[:n_check], drifters.release_points, dt=config.reference_dt(), workers=1, progress=False, **kwargs
        ):
            reference[start:stop] = tracks
        deviation = float(np.abs(head - reference).max())
        check["step_check_max_deviation"] = deviation
        logger.info(
            "step check: dt=%g vs %g on %d flows: max deviation %.3g",
            drifters.dt,
            config.reference_dt(),
            n_check,
            deviation,
        )
        if deviation > config.check_tolerance:
            warnings.warn(
                f"step check: drifters.dt={drifters.dt!r} deviates {deviation:.3g} from the tracks at "
                f"dt={config.reference_dt()!r} on {n_check} flows, above check_tolerance="
                f"{config.check_tolerance!r}; use a smaller dt",
                stacklevel=2,
            )
    return build_dataset(config, flows, trajectories, check)


def build_dataset(config: OceanConfig, flows: Flows, trajectories: np.ndarray, check: dict) -> xr.Dataset:
    """Assemble the ``xarray.Dataset`` of the module docstring from its parts.

    Args:
        config: the generating config (stored as JSON in the attributes).
        flows: the n flows.
        trajectories: (n, R, J, 2) observed positions (cast to float32).
        check: ``step_check_*`` attributes.
    """
    d = config.drifters
    k = wavenumbers(config.flow.k_max)
    coefficients = np.stack([flows.coefficients.real, flows.coefficients.imag], axis=1)
    unit = {"units": "1"}
    ds = xr.Dataset(
        {
            "coefficients": (
                ("sample", "part", "mode"),
                coefficients,
                {**unit, "long_name": "streamfunction Fourier coefficient psi_k of eq. (59), real and imaginary parts"},
            ),
            "frequencies": (
                ("sample", "mode"),
                flows.frequencies,
                {**unit, "long_name": "angular frequency omega_k of eq. (59), radians per unit of nondimensional time"},
            ),
            "wavenumbers": (
                ("mode", "coord"),
                k.astype(np.int32),
                {**unit, "long_name": "wavenumber k of the mode e_k(x) = exp(2 pi i k.x), cycles per domain length"},
            ),
            "release_points": (
                ("release", "coord"),
                np.array(d.release_points, dtype=np.float64),
                {**unit, "long_name": "drifter release point x(0), in domain lengths"},
            ),
            "trajectories": (
                ("sample", "release", "time", "coord"),
                trajectories.astype(np.float32, copy=False),
                {
                    **unit,
                    "long_name": "drifter position x(t_j) (RK4, unwrapped: mod 1 gives the point of the "
                    "periodic unit square), plus observation noise of standard deviation noise_std",
                    "noise_std": d.noise_std,
                },
            ),
        },
        coords={
            "sample": ("sample", np.arange(len(flows), dtype=np.int64), {"long_name": "flow index"}),
            "mode": ("mode", np.arange(len(k), dtype=np.int32), {"long_name": "Fourier mode index"}),
            "part": ("part", np.array(["real", "imag"]), {"long_name": "part of a complex number"}),
            "release": ("release", np.arange(d.n_release, dtype=np.int32), {"long_name": "release point index"}),
            "time": ("time", d.times(), {**unit, "long_name": "time t_j = j T / J (nondimensional)", "axis": "T"}),
            "coord": ("coord", np.array(["x1", "x2"]), {"long_name": "Cartesian coordinate"}),
        },
        attrs=_attrs(
            Conventions="CF-1.8",
            title="Random incompressible flows on the periodic unit square and RK4 drifter tracks",
            source="clipmath.datasets.ocean.simulate_ocean",
            references=REFERENCE,
            comment="psi(x,t) = Re sum_k psi_k exp(i omega_k t) exp(2 pi i k.x), w = (d psi/dx2, -d psi/dx1); "
            "drifters x' = w(x,t) by RK4 with step dt from release_points",
            config=json.dumps(config.to_dict(), sort_keys=True),
            dt=d.dt,
            **check,
        ),
    )
    return ds


def dataset_config(ds: xr.Dataset) -> OceanConfig:
    """The :class:`OceanConfig` a data set was generated with (from its ``config`` attribute)."""
    if "config" not in ds.attrs:
        raise ValueError("ds: no 'config' attribute; expected a data set made by simulate_ocean")
    return OceanConfig.from_dict(json.loads(ds.attrs["config"]))


def dataset_flows(ds: xr.Dataset, index=slice(None)) -> Flows:
    """The flows of a data set (all, or those at ``index``) as :class:`~.flow.Flows`.

    E.g. for :meth:`~.flow.Flows.on_grid` in figures.
    """
    c = ds["coefficients"].values[index]
    return Flows(c[:, 0] + 1j * c[:, 1], ds["frequencies"].values[index])


def save_ocean_netcdf(ds: xr.Dataset, path: str | os.PathLike) -> None:
    """Write the data set as NetCDF4 (written to a temporary name, then renamed)."""
    path = os.fspath(path)
    tmp = f"{path}.tmp"
    ds.to_netcdf(tmp, engine="netcdf4", format="NETCDF4")
    os.replace(tmp, path)


def load_ocean_netcdf(path: str | os.PathLike) -> xr.Dataset:
    """Read a data set written by :func:`save_ocean_netcdf` fully into memory (the file is closed)."""
    if not os.path.isfile(path):
        raise ValueError(f"path={os.fspath(path)!r}: no such file")
    with xr.open_dataset(path, engine="netcdf4") as ds:
        return ds.load()


def ocean_samples(ds: xr.Dataset, indices: Sequence[int] | None = None) -> Iterator[dict]:
    r"""Shard samples of the data set for :func:`~clipmath.datasets.write_shards`.

    Each sample is ``{"__key__": "%08d" % i, "coefficients", "trajectory"}`` with

    * ``coefficients`` (2K,) float32 = :math:`(\operatorname{Re}\psi_1..\operatorname{Re}\psi_K,
      \operatorname{Im}\psi_1..\operatorname{Im}\psi_K)`, the paper's u in R^98;
    * ``trajectory`` (J, 2R) float32: row j holds every drifter's position at t_j,
      (x1, x2) of release 0, then of release 1, ... (J tokens of dimension 2 for one drifter,
      the paper's v).

    Args:
        ds: a data set from :func:`simulate_ocean` or :func:`load_ocean_netcdf`.
        indices: sample indices to yield, in order (default: all).
    """
    coefficients = ds["coefficients"].values
    trajectories = ds["trajectories"].values
    n = coefficients.shape[0]
    indices = range(n) if indices is None else indices
    for i in indices:
        if not (isinstance(i, (int, np.integer)) and 0 <= i < n):
            raise ValueError(f"indices: {i!r} is not a sample index in [0, {n})")
        track = trajectories[i]  # (R, J, 2)
        yield {
            "__key__": f"{int(i):08d}",
            "coefficients": coefficients[i].reshape(-1).astype(np.float32),
            "trajectory": np.ascontiguousarray(track.transpose(1, 0, 2).reshape(track.shape[1], -1)),
        }


def ocean_shard_source(ds: xr.Dataset) -> dict:
    """The manifest ``source`` of the data set's shards: config, step check and field layout."""
    return {
        "name": "ocean",
        "config": json.loads(ds.attrs["config"]),
        **{
            key: ds.attrs[key]
            for key in ("step_check_dt", "step_check_samples", "step_check_max_deviation")
            if key in ds.attrs
        },
        "fields": {
            "coefficients": "(2K,) float32: real parts of psi_k, then imaginary parts, modes in wavenumbers order",
            "trajectory": "(J, 2R) float32: per time t_j, (x1, x2) of each release point in turn, unwrapped",
        },
        "reference": REFERENCE,
    }


def write_ocean_shards(
    ds: xr.Dataset,
    out_dir: str | os.PathLike,
    *,
    indices: Sequence[int] | None = None,
    max_count: int | None = None,
    max_bytes: int | None = None,
) -> Manifest:
    """Write :func:`ocean_samples` to shards, with :func:`ocean_shard_source` in the manifest.

    Args:
        ds: the data set.
        out_dir: a new or empty directory.
        indices: samples to write (default: all), e.g. the training half.
        max_count: most samples per shard, or ``None`` (:func:`~clipmath.datasets.write_shards`).
        max_bytes: most bytes per shard file, or ``None`` (:func:`~clipmath.datasets.write_shards`).
    """
    source = ocean_shard_source(ds)
    if indices is not None:
        source["indices"] = {"count": len(indices), "first": int(indices[0]) if len(indices) else None}
    return write_shards(ocean_samples(ds, indices), out_dir, max_count=max_count, max_bytes=max_bytes, source=source)
