"""The flow/drifter simulator of Section 6.3 (clipmath.datasets.ocean).

Tolerances are derived or measured as each test says; nothing here times anything.
"""

import json
import math
import warnings

import numpy as np
import pytest
import xarray as xr

from clipmath.datasets import ShardStream, read_manifest
from clipmath.datasets.ocean import (
    DrifterConfig,
    FlowConfig,
    Flows,
    OceanConfig,
    dataset_config,
    dataset_flows,
    drifter_tracks,
    load_ocean_netcdf,
    ocean_samples,
    sample_flows,
    save_ocean_netcdf,
    simulate_ocean,
    wavenumbers,
    write_ocean_shards,
)
from clipmath.datasets.ocean.drifters import kernel_velocity

TWO_PI = 2 * math.pi


def single_mode(k, psi, omega, k_max=3) -> Flows:
    """One flow whose only nonzero coefficient is psi at wavenumber k."""
    modes = wavenumbers(k_max)
    index = int(np.flatnonzero((modes == np.array(k)).all(axis=1))[0])
    coefficients = np.zeros((1, len(modes)), complex)
    frequencies = np.zeros((1, len(modes)))
    coefficients[0, index], frequencies[0, index] = psi, omega
    return Flows(coefficients, frequencies)


def small_config(**kw) -> OceanConfig:
    drifters = kw.pop("drifters", DrifterConfig(n_points=50, dt=2e-3))
    return OceanConfig(drifters=drifters, **{"n_samples": 12, "check_samples": 4, "check_tolerance": 1.0, **kw})


# --- the flow -------------------------------------------------------------------------------


def test_wavenumbers_are_the_7x7_set_with_k_and_minus_k_mirrored():
    k = wavenumbers(3)
    assert k.shape == (49, 2)
    assert {tuple(row) for row in k} == {(a, b) for a in range(-3, 4) for b in range(-3, 4)}
    np.testing.assert_array_equal(k, -k[::-1])  # mode m and K - 1 - m are k and -k
    assert tuple(k[24]) == (0, 0)


def test_sampled_laws_match_the_config():
    config = FlowConfig()
    flows = sample_flows(config, 4000, seed=3)
    k2 = (wavenumbers(3) ** 2).sum(axis=1)
    sigma = 1.0 / (1.0 + k2)
    sigma[24] = 0.0
    np.testing.assert_array_equal(flows.coefficients[:, 24], 0.0)  # no mean mode by default
    var = (np.abs(flows.coefficients) ** 2).mean(axis=0)
    moving = k2 > 0
    # E|psi_k|^2 = sigma_k^2; |psi_k|^2 / sigma_k^2 ~ Exp(1), so the mean of 4000 has rel. sd 1/63.
    np.testing.assert_allclose(var[moving] / sigma[moving] ** 2, 1.0, atol=5 / math.sqrt(4000))
    assert np.abs(flows.frequencies).max() <= 10.0
    assert abs(flows.frequencies.mean()) < 5 * 10 / math.sqrt(3 * 4000 * 49)
    with_mean = sample_flows(FlowConfig(mean_mode=True), 10, seed=3)
    assert np.all(with_mean.coefficients[:, 24] != 0)


def test_velocity_is_j_grad_psi_and_on_grid_agrees_with_the_pointwise_sums():
    flows = sample_flows(FlowConfig(), 3, seed=5)
    grid, psi, vel = flows.on_grid(16, t=0.03)
    points = np.stack(np.meshgrid(grid, grid, indexing="ij"), axis=-1).reshape(-1, 2)
    np.testing.assert_allclose(psi.reshape(3, -1), flows.streamfunction(points, 0.03), atol=1e-13)
    np.testing.assert_allclose(vel.reshape(3, -1, 2), flows.velocity(points, 0.03), atol=1e-12)
    # w = (d psi / dx2, -d psi / dx1) by central differences of step h: error <= h^2/6 |psi'''|.
    h = 1e-5
    x = np.array([[0.31, 0.67]])
    d1 = (flows.streamfunction(x + [h, 0], 0.03) - flows.streamfunction(x - [h, 0], 0.03)) / (2 * h)
    d2 = (flows.streamfunction(x + [0, h], 0.03) - flows.streamfunction(x - [0, h], 0.03)) / (2 * h)
    np.testing.assert_allclose(flows.velocity(x, 0.03)[..., 0], d2, atol=1e-6)
    np.testing.assert_allclose(flows.velocity(x, 0.03)[..., 1], -d1, atol=1e-6)


def test_discrete_divergence_of_the_velocity_is_at_the_finite_difference_error():
    """Div w = 0 analytically; the discrete divergence is within the finite-difference error.

    The central-difference divergence on a G x G grid is not exactly 0 but, mode by mode,
    Re c_k e_k s_k with the symbol s_k = 2 pi k2 sin(2 pi k1 h)/h - 2 pi k1 sin(2 pi k2 h)/h
    (O(h^2)), so |div_h w| <= sum_k |c_k| |s_k|: the tolerance, a small fraction of the terms' size.
    """
    flows = sample_flows(FlowConfig(), 4, seed=7)
    n_grid = 128
    h = 1.0 / n_grid
    _, _, vel = flows.on_grid(n_grid, t=0.05)
    div = (np.roll(vel[..., 0], -1, axis=1) - np.roll(vel[..., 0], 1, axis=1)) / (2 * h) + (
        np.roll(vel[..., 1], -1, axis=2) - np.roll(vel[..., 1], 1, axis=2)
    ) / (2 * h)
    k = wavenumbers(3)
    symbol = TWO_PI * (k[:, 1] * np.sin(TWO_PI * k[:, 0] * h) - k[:, 0] * np.sin(TWO_PI * k[:, 1] * h)) / h
    bound = (np.abs(flows.coefficients) * np.abs(symbol)).sum(axis=1)  # (n,)
    terms = (np.abs(flows.coefficients) * TWO_PI**2 * np.abs(k[:, 0] * k[:, 1])).sum(axis=1)
    # Round-off: terms of size |w| / h, summed over G^2-independent stencils.
    assert np.all(np.abs(div).max(axis=(1, 2)) <= bound * (1 + 1e-9) + 1e-10 * terms)
    assert np.all(bound < 0.02 * terms)  # and that bound is a cancellation, not a triviality


def test_kernel_velocity_matches_the_mode_sum_for_every_k_max():
    rng = np.random.default_rng(0)
    for k_max in (1, 2, 3, 4):
        flows = sample_flows(FlowConfig(k_max=k_max), 20, seed=k_max)
        x = rng.uniform(-1.5, 2.5, (20, 2))  # unwrapped positions outside the square too
        expected = flows.velocity(x[:, None, :], 0.37)[:, 0]
        np.testing.assert_allclose(kernel_velocity(flows, x, 0.37), expected, rtol=0, atol=1e-12)


# --- RK4 --------------------------------------------------------------------------------------


def test_single_steady_mode_gives_the_closed_form_straight_track():
    """One steady mode moves a drifter on a straight line, which RK4 integrates exactly.

    For psi = Re(psi_k e_k), w = -2 pi |psi_k| sin(theta) (k2, -k1) with
    theta = 2 pi k.x + arg psi_k; k.w = 0 keeps theta constant, so the track is the straight line
    x0 + t w(x0): only round-off (1,000 steps of ~1e-16) remains.
    """
    psi, k = 0.3 * np.exp(0.4j), (1, 2)
    flows = single_mode(k, psi, 0.0)
    tracks = drifter_tracks(flows, [(0.75, 0.75), (0.1, 0.2)])
    times = DrifterConfig().times()
    for r, x0 in enumerate([(0.75, 0.75), (0.1, 0.2)]):
        theta = TWO_PI * (k[0] * x0[0] + k[1] * x0[1]) + np.angle(psi)
        w0 = -TWO_PI * abs(psi) * math.sin(theta) * np.array([k[1], -k[0]])
        np.testing.assert_allclose(tracks[0, r], np.array(x0) + times[:, None] * w0, rtol=0, atol=1e-12)


def test_single_oscillating_mode_gives_the_closed_form_track():
    """One oscillating mode: the track matches its closed form to round-off.

    With frequency omega, theta(t) = theta0 + omega t and
    x(t) = x0 + (2 pi |psi_k| / omega)(cos(theta0 + omega t) - cos theta0)(k2, -k1): checks the time
    factors advanced by rotation. RK4 on x' = f(t) is Simpson's rule, error <= T dt^4 |f''''| / 2880
    ~ 1e-16 here, so the tolerance is round-off.
    """
    psi, k, omega = 0.25 * np.exp(-1.1j), (2, -1), 9.0
    flows = single_mode(k, psi, omega)
    x0 = np.array([0.75, 0.75])
    tracks = drifter_tracks(flows, [tuple(x0)])[0, 0]
    t = DrifterConfig().times()
    theta0 = TWO_PI * (k[0] * x0[0] + k[1] * x0[1]) + np.angle(psi)
    shift = TWO_PI * abs(psi) / omega * (np.cos(theta0 + omega * t) - math.cos(theta0))
    np.testing.assert_allclose(tracks, x0 + shift[:, None] * np.array([k[1], -k[0]]), rtol=0, atol=1e-12)


def test_streamfunction_is_conserved_along_steady_tracks_to_rk4_accuracy():
    """Steady flows (omega = 0) move drifters along level sets of psi.

    The drift of psi is RK4's error, O(dt^4): measured on these 32 flows 4.2e-5 at dt = 1e-3 and
    1.9e-9 at dt = 1e-4.
    """
    flows = sample_flows(FlowConfig(omega_max=0.0), 32, seed=2)
    psi0 = flows.streamfunction(np.array([[0.75, 0.75]]))
    drift = {}
    for dt, n_points in ((1e-3, 100), (1e-4, 1000)):
        tracks = drifter_tracks(flows, n_points=n_points, dt=dt)
        drift[dt] = np.abs(flows.streamfunction(tracks[:, 0]) - psi0).max()
    assert drift[1e-4] < 1e-8
    assert drift[1e-3] / drift[1e-4] > 10**3.5  # order about 4 (10^4 for a tenfold step)


def test_convergence_order_is_four():
    """Halving dt divides the tracks' error by about 16 (RK4's order 4).

    Errors against a dt/32 reference at dt = 1e-3, 5e-4, 2.5e-4 (T = 0.1): the median over
    32 time-dependent tracks of the error ratio of successive halvings. RK4 predicts 16;
    measured over six seeds 15.5 to 16.1, so the band is [15, 16.5] (order 3.91 to 4.04).
    """
    flows = sample_flows(FlowConfig(), 32, seed=4)
    reference = drifter_tracks(flows, n_points=100, dt=1e-3 / 32)
    errors = [
        np.abs(drifter_tracks(flows, n_points=100, dt=1e-3 / 2**i) - reference).max(axis=(1, 2, 3)) for i in range(3)
    ]
    for coarse, fine in zip(errors, errors[1:], strict=False):
        assert 15.0 <= np.median(coarse / fine) <= 16.5


def test_default_step_reproduces_the_paper_step():
    """Dt = 1e-4 against the paper's dt = 1e-5 on 16 flows: measured 6e-8 at worst over 512."""
    flows = sample_flows(FlowConfig(), 16, seed=0)
    fast = drifter_tracks(flows, dt=1e-4)
    paper = drifter_tracks(flows, dt=1e-5)
    assert np.abs(fast - paper).max() < 2e-7


def test_results_do_not_depend_on_chunks_and_torch_agrees():
    flows = sample_flows(FlowConfig(), 10, seed=9)
    points = [(0.75, 0.75), (0.2, 0.9), (0.5, 0.1)]
    kw = dict(n_points=40, dt=2.5e-3)
    whole = drifter_tracks(flows, points, **kw)
    assert whole.shape == (10, 3, 40, 2) and whole.dtype == np.float64
    np.testing.assert_array_equal(drifter_tracks(flows, points, chunk_size=4, **kw), whole)
    np.testing.assert_array_equal(drifter_tracks(flows[3:5], points, **kw), whole[3:5])
    torch_tracks = drifter_tracks(flows, points, device="cpu", chunk_size=7, **kw)
    np.testing.assert_allclose(torch_tracks, whole, rtol=0, atol=1e-11)


def test_worker_processes_give_the_same_tracks():
    flows = sample_flows(FlowConfig(), 6, seed=11)
    kw = dict(n_points=10, dt=1e-2)
    np.testing.assert_array_equal(
        drifter_tracks(flows, chunk_size=2, workers=2, **kw), drifter_tracks(flows, chunk_size=2, **kw)
    )


# --- the data set -----------------------------------------------------------------------------


def test_dataset_layout_units_and_step_check(tmp_path):
    ds = simulate_ocean(small_config(), progress=False)
    assert dict(ds.sizes) == {"sample": 12, "part": 2, "mode": 49, "release": 1, "time": 50, "coord": 2}
    assert ds["trajectories"].dtype == np.float32
    assert ds["trajectories"].dims == ("sample", "release", "time", "coord")
    for name in ("coefficients", "frequencies", "wavenumbers", "release_points", "trajectories", "time"):
        assert ds[name].attrs["units"] == "1" and ds[name].attrs["long_name"]
    assert ds.attrs["Conventions"].startswith("CF-")
    assert dataset_config(ds) == small_config()
    np.testing.assert_allclose(ds["time"].values, np.arange(1, 51) * 0.1 / 50)
    # The check: dt = 2e-3 against 1e-5 on the first 4 flows, equal to a direct comparison.
    flows = dataset_flows(ds)
    direct = np.abs(drifter_tracks(flows[:4], n_points=50, dt=2e-3) - drifter_tracks(flows[:4], n_points=50, dt=1e-5))
    assert ds.attrs["step_check_samples"] == 4 and ds.attrs["step_check_dt"] == 1e-5
    assert ds.attrs["step_check_max_deviation"] == pytest.approx(direct.max(), rel=1e-12)
    # Stored tracks are the float32 of the float64 ones (no noise configured).
    np.testing.assert_array_equal(
        ds["trajectories"].values, drifter_tracks(flows, n_points=50, dt=2e-3).astype(np.float32)
    )


def test_step_check_warns_above_tolerance():
    config = small_config(check_tolerance=1e-9, check_samples=2)
    with pytest.warns(UserWarning, match="step check"):
        simulate_ocean(config, progress=False)


def test_netcdf_round_trip_is_identical(tmp_path):
    config = small_config(
        drifters=DrifterConfig(release_points=[(0.75, 0.75), (0.25, 0.5)], n_points=20, dt=5e-3, noise_std=1e-3)
    )
    ds = simulate_ocean(config, progress=False)
    path = tmp_path / "ocean.nc"
    save_ocean_netcdf(ds, path)
    back = load_ocean_netcdf(path)
    xr.testing.assert_identical(back, ds)
    for name in ds.data_vars:
        assert back[name].dtype == ds[name].dtype
        np.testing.assert_array_equal(back[name].values, ds[name].values)
    assert dataset_config(back) == config
    assert not list(tmp_path.glob("*.tmp"))


def test_shard_samples_round_trip_bitwise(tmp_path):
    drifters = DrifterConfig(release_points=[(0.75, 0.75), (0.25, 0.5)], n_points=20, dt=5e-3)
    ds = simulate_ocean(small_config(drifters=drifters), progress=False)
    samples = list(ocean_samples(ds))
    first = samples[0]
    assert first["coefficients"].shape == (98,) and first["coefficients"].dtype == np.float32
    assert first["trajectory"].shape == (20, 4) and first["trajectory"].dtype == np.float32
    np.testing.assert_array_equal(first["coefficients"][:49], ds["coefficients"][0, 0].values.astype(np.float32))
    np.testing.assert_array_equal(first["trajectory"][:, 2:], ds["trajectories"][0, 1].values)
    manifest = write_ocean_shards(ds, tmp_path / "shards", max_count=5)
    assert manifest.total == 12 and len(manifest.shards) == 3
    source = read_manifest(tmp_path / "shards").source
    assert source["step_check_max_deviation"] == ds.attrs["step_check_max_deviation"]
    assert source["config"] == json.loads(ds.attrs["config"])
    by_key = {s["__key__"]: s for s in samples}
    stream = ShardStream(tmp_path / "shards", batch_size=5, drop_last=False, fields=("coefficients", "trajectory"))
    seen = []
    for batch in stream.epoch(0):
        for i, key in enumerate(batch["key"]):
            for name in ("coefficients", "trajectory"):
                assert batch[name][i].numpy().tobytes() == by_key[key][name].tobytes()
            seen.append(key)
    assert sorted(seen) == sorted(by_key)


def test_seeded_reproducibility_and_prefix_stability():
    drifters = DrifterConfig(n_points=20, dt=5e-3, noise_std=1e-2)
    a = simulate_ocean(small_config(drifters=drifters, check_samples=0), progress=False)
    b = simulate_ocean(small_config(drifters=drifters, check_samples=0), chunk_size=5, progress=False)
    xr.testing.assert_identical(a, b)
    head = simulate_ocean(small_config(drifters=drifters, check_samples=0, n_samples=5), progress=False)
    for name in ("coefficients", "frequencies", "trajectories"):
        np.testing.assert_array_equal(head[name].values, a[name].values[:5])
    other = simulate_ocean(small_config(drifters=drifters, check_samples=0, seed=1), progress=False)
    assert not np.array_equal(other["coefficients"].values, a["coefficients"].values)
    # The noise is what it says: observed minus clean tracks has the configured spread.
    clean = drifter_tracks(dataset_flows(a), n_points=20, dt=5e-3)
    noise = a["trajectories"].values - clean
    assert noise.std() == pytest.approx(1e-2, rel=0.1)


@pytest.mark.parametrize(
    "build, named",
    [
        (lambda: FlowConfig(k_max=0), "FlowConfig.k_max"),
        (lambda: FlowConfig(amplitude=-1.0), "FlowConfig.amplitude"),
        (lambda: FlowConfig(omega_max=float("nan")), "FlowConfig.omega_max"),
        (lambda: DrifterConfig(dt=3e-5), "DrifterConfig.dt"),
        (lambda: DrifterConfig(dt=0.0), "DrifterConfig.dt"),
        (lambda: DrifterConfig(n_points=0), "DrifterConfig.n_points"),
        (lambda: DrifterConfig(release_points=[(1.5, 0.2)]), "DrifterConfig.release_points"),
        (lambda: DrifterConfig(release_points=[]), "DrifterConfig.release_points"),
        (lambda: DrifterConfig(noise_std=-0.1), "DrifterConfig.noise_std"),
        (lambda: OceanConfig(n_samples=0), "OceanConfig.n_samples"),
        (lambda: OceanConfig(seed=-1), "OceanConfig.seed"),
        (lambda: OceanConfig.from_dict({"drifters": {"step": 1e-4}}), "drifters.'step'"),
        (lambda: OceanConfig.from_dict({"samples": 3}), "config.'samples'"),
        (lambda: sample_flows(FlowConfig(), 0, 0), "n=0"),
        (lambda: drifter_tracks(sample_flows(FlowConfig(), 1, 0), chunk_size=0), "chunk_size"),
        (lambda: drifter_tracks(sample_flows(FlowConfig(), 1, 0), n_points=7, dt=1e-3), "dt=0.001"),
        (lambda: drifter_tracks(sample_flows(FlowConfig(), 1, 0), workers=2, device="cpu"), "workers"),
        (lambda: Flows(np.zeros((2, 48)), np.zeros((2, 48))), "n_modes=48"),
        (lambda: Flows(np.zeros((2, 49)), np.zeros((2, 9))), "frequencies"),
    ],
)
def test_bad_input_raises_naming_the_argument(build, named):
    with pytest.raises(ValueError, match=named.replace(".", r"\.").replace("(", r"\(")):
        build()


def test_config_round_trips_through_a_dict():
    config = OceanConfig(flow=FlowConfig(omega_max=3.0), drifters=DrifterConfig(release_points=[(0.1, 0.2)]))
    assert OceanConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert OceanConfig.from_dict({}) == OceanConfig()
