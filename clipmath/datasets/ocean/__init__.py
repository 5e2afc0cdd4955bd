"""Lagrangian data assimilation data (Section 6.3 of Baptista, Stuart & Tran, 2025).

u: the Fourier coefficients of a random time-dependent incompressible flow on the periodic unit
square; v: the track of a drifter released into it. Modules:

* :mod:`.flow`: :class:`FlowConfig` (the laws, justified there), :class:`Flows` (coefficients,
  frequencies; streamfunction and velocity, also on a grid for figures), :func:`sample_flows`,
  :func:`wavenumbers`.
* :mod:`.drifters`: :class:`DrifterConfig`, :func:`drifter_tracks` and :func:`iter_tracks`, the
  batched RK4 (numpy on the CPU, torch on any device) and why its default step is 1e-4.
* :mod:`.dataset`: :class:`OceanConfig`, :func:`simulate_ocean` (with the step-halving check),
  NetCDF I/O, :func:`ocean_samples` and :func:`write_ocean_shards` for webdataset shards.
"""

from clipmath.datasets.ocean.dataset import (
    PAPER_SAMPLES,
    OceanConfig,
    dataset_config,
    dataset_flows,
    load_ocean_netcdf,
    ocean_samples,
    ocean_shard_source,
    save_ocean_netcdf,
    simulate_ocean,
    write_ocean_shards,
)
from clipmath.datasets.ocean.drifters import DrifterConfig, drifter_tracks, iter_tracks
from clipmath.datasets.ocean.flow import FlowConfig, Flows, sample_flows, wavenumbers
from clipmath.datasets.ocean.real_sea import RealSeaConfig, SeaPairs, SeaSurface, load_ssh, sea_pairs

__all__ = [
    "PAPER_SAMPLES",
    "DrifterConfig",
    "FlowConfig",
    "Flows",
    "OceanConfig",
    "RealSeaConfig",
    "SeaPairs",
    "SeaSurface",
    "dataset_config",
    "dataset_flows",
    "drifter_tracks",
    "iter_tracks",
    "load_ocean_netcdf",
    "load_ssh",
    "ocean_samples",
    "ocean_shard_source",
    "sample_flows",
    "save_ocean_netcdf",
    "sea_pairs",
    "simulate_ocean",
    "wavenumbers",
    "write_ocean_shards",
]
