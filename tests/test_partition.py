"""Tests of the Blend partition: random-feature embedding and per-class k-means (method.md §3.1)."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.cluster import KMeans

from jaxunlearn.models import build_model, init_fn_for
from jaxunlearn.partition import (
    KMeansOptions,
    _kmeans_plus_plus,
    _lloyd,
    embed,
    embed_jitted,
    kmeans_by_class,
    partition_by_class,
    resolve_kmeans_procedure,
)
from jaxunlearn.timing import timed

C = 4


def _images(per_class=(40, 25, 33, 30), seed=0):
    """Class-structured 8×8×3 images: each class is a few noisy prototypes."""
    rng = np.random.default_rng(seed)
    protos = rng.normal(size=(len(per_class), 3, 8, 8, 3)).astype(np.float32)
    y = np.concatenate([np.full(n, c, np.int32) for c, n in enumerate(per_class)])
    sub = rng.integers(0, 3, y.size)
    x = protos[y, sub] + 0.3 * rng.normal(size=(y.size, 8, 8, 3)).astype(np.float32)
    return x, y


@pytest.fixture(scope="module")
def net():
    model = build_model("convnet", C, width=8, depth=2)
    params = init_fn_for(model, (8, 8, 3))(jax.random.key(0))
    return model, params


def test_embed_batches_match_one_pass(net):
    model, params = net
    x, _ = _images()
    full = model.apply(params, jnp.asarray(x), method="features")
    got = embed(model.apply, params, x, batch_size=7)  # 128 = 18·7 + 2: a padded last batch
    chex.assert_shape(got, (x.shape[0], 2 * 2 * 8))
    np.testing.assert_allclose(np.asarray(got), np.asarray(full), rtol=1e-5, atol=1e-5)


def test_timed_separates_compile_from_run(net):
    model, params = net
    x, _ = _images()
    out, run_s, compile_s = timed(
        embed_jitted, params, jnp.asarray(x), apply_fn=model.apply, batch_size=16,
        method="features",
    )
    assert out.shape == (x.shape[0], 32) and run_s >= 0 and compile_s >= 0
    _, _, compile_again = timed(
        embed_jitted, params, jnp.asarray(x), apply_fn=model.apply, batch_size=16,
        method="features",
    )
    assert compile_again < compile_s  # the executable is cached


def _sklearn_inertia(feats, y, ipc, n_init, seed):
    return sum(
        KMeans(ipc, n_init=n_init, random_state=seed).fit(feats[y == c]).inertia_
        for c in range(C)
    )


@pytest.mark.parametrize("procedure", ["reference", "sklearn"])
def test_kmeans_inertia_matches_sklearn(net, procedure):
    model, params = net
    x, y = _images()
    feats = np.asarray(embed(model.apply, params, x))
    ipc = 6
    ours = np.mean([
        kmeans_by_class(feats, y, num_classes=C, ipc=ipc, key=jax.random.key(s),
                        kmeans=KMeansOptions(procedure=procedure)).inertia
        for s in range(4)
    ])
    sk1 = np.mean([_sklearn_inertia(feats, y, ipc, 1, s) for s in range(4)])
    sk10 = _sklearn_inertia(feats, y, ipc, 10, 0)
    assert abs(ours / sk1 - 1) < 0.05, (ours, sk1)
    assert ours / sk10 - 1 < 0.08, (ours, sk10)  # best of 10 restarts: a few % better (≈4%)


def test_ott_backend_matches_sklearn_and_never_uses_padding(net):
    model, params = net
    x, y = _images()
    feats = np.asarray(embed(model.apply, params, x))
    ipc = 6
    outs = [kmeans_by_class(feats, y, num_classes=C, ipc=ipc, key=jax.random.key(s),
                            kmeans=KMeansOptions(backend="ott")) for s in range(4)]
    sk1 = np.mean([_sklearn_inertia(feats, y, ipc, 1, s) for s in range(4)])
    assert abs(np.mean([o.inertia for o in outs]) / sk1 - 1) < 0.05
    np.testing.assert_array_equal(outs[0].cluster_ids // ipc, y)
    # unequal classes far from the origin: a zero padded row would be the farthest point
    rng = np.random.default_rng(3)
    sizes = (50, 6, 20, 9)
    yy = np.concatenate([np.full(n, c, np.int32) for c, n in enumerate(sizes)])
    ff = (100.0 + rng.normal(size=(yy.size, 5))).astype(np.float32)
    out = kmeans_by_class(ff, yy, num_classes=C, ipc=6, key=jax.random.key(0),
                          kmeans=KMeansOptions(backend="ott"))
    assert (np.abs(np.asarray(out.centroids) - 100.0) < 10.0).all()
    np.testing.assert_array_equal(out.sizes.reshape(C, 6).sum(1), sizes)
    with pytest.raises(ValueError, match="backend must be one of"):
        kmeans_by_class(ff, yy, num_classes=C, ipc=6, key=jax.random.key(0),
                        kmeans=KMeansOptions(backend="sk"))


def test_kmeans_output_is_a_class_pure_lloyd_fixed_point():
    x, y = _images()
    feats = x.reshape(x.shape[0], -1)
    ipc = 5
    out = kmeans_by_class(feats, y, num_classes=C, ipc=ipc, key=jax.random.key(1))
    cid = out.cluster_ids
    assert cid.dtype == np.int32 and cid.shape == y.shape
    np.testing.assert_array_equal(cid // ipc, y)  # class-pure, global id c·ipc + j
    np.testing.assert_array_equal(out.sizes, np.bincount(cid, minlength=C * ipc))
    assert out.converged.all() and (out.n_iterations <= 100).all()
    # Every point sits at its nearest centre, and the inertia is the sum of those distances.
    cent = np.asarray(out.centroids, np.float64)
    d2 = ((feats[:, None, :] - cent[None, :, :]) ** 2).sum(-1)
    same_class = (np.arange(C * ipc)[None, :] // ipc) == y[:, None]
    d2 = np.where(same_class, d2, np.inf)
    np.testing.assert_array_equal(cid, d2.argmin(1))
    np.testing.assert_allclose(out.inertia, d2.min(1).sum(), rtol=1e-4)
    np.testing.assert_allclose(out.inertia_per_class.sum(), out.inertia, rtol=1e-6)


def test_padding_never_becomes_a_centre_or_member():
    # Classes of very different sizes; the data sits far from the origin, so a zero padded row
    # would be the farthest point: the first pick of D² seeding or of empty-cluster refills.
    rng = np.random.default_rng(3)
    sizes = (50, 6, 20, 9)
    y = np.concatenate([np.full(n, c, np.int32) for c, n in enumerate(sizes)])
    feats = (100.0 + rng.normal(size=(y.size, 5))).astype(np.float32)
    out = kmeans_by_class(feats, y, num_classes=C, ipc=6, key=jax.random.key(0))
    cent = np.asarray(out.centroids)
    assert (np.abs(cent - 100.0) < 10.0).all()
    np.testing.assert_array_equal(out.sizes.reshape(C, 6).sum(1), sizes)


def test_empty_clusters_do_not_crash():
    # Class 0: 12 copies of 2 distinct points, ipc 5 → at most 2 non-empty clusters.
    y = np.repeat(np.arange(2), 12).astype(np.int32)
    feats = np.zeros((24, 3), np.float32)
    feats[:6] = 1.0
    feats[6:12] = -1.0
    feats[12:] = np.random.default_rng(0).normal(size=(12, 3))
    out = kmeans_by_class(feats, y, num_classes=2, ipc=5, key=jax.random.key(0))
    assert out.n_empty >= 3 and np.isfinite(out.inertia)
    assert out.sizes[:5].sum() == 12 and (out.sizes[:5] > 0).sum() == 2
    assert out.inertia_per_class[0] == pytest.approx(0.0, abs=1e-5)
    assert (out.cluster_ids // 5 == y).all()


def test_vmapped_classes_match_sequential():
    x, y = _images()
    feats = x.reshape(x.shape[0], -1)
    a = kmeans_by_class(feats, y, num_classes=C, ipc=4, key=jax.random.key(2))
    b = kmeans_by_class(feats, y, num_classes=C, ipc=4, key=jax.random.key(2),
                        kmeans=KMeansOptions(class_batch_size=2))
    np.testing.assert_array_equal(a.cluster_ids, b.cluster_ids)
    assert a.inertia == pytest.approx(b.inertia, rel=1e-5)


def test_partition_by_class_is_embed_then_kmeans(net):
    model, params = net
    x, y = _images()
    out = partition_by_class(
        model.apply, params, x, y, num_classes=C, ipc=3, key=jax.random.key(4), batch_size=32
    )
    feats = embed(model.apply, params, x)
    ref = kmeans_by_class(feats, y, num_classes=C, ipc=3, key=jax.random.key(4))
    np.testing.assert_array_equal(out.cluster_ids, ref.cluster_ids)
    assert set(out.timings) == {"embed_s", "embed_compile_s", "kmeans_s", "kmeans_compile_s"}
    again = partition_by_class(
        model.apply, params, x, y, num_classes=C, ipc=3, key=jax.random.key(4), batch_size=32
    )
    np.testing.assert_array_equal(out.cluster_ids, again.cluster_ids)  # same key, same ids
    sk = partition_by_class(
        model.apply, params, x, y, num_classes=C, ipc=3, key=jax.random.key(4), batch_size=32,
        kmeans=KMeansOptions(procedure="sklearn"),
    )
    ref_sk = kmeans_by_class(feats, y, num_classes=C, ipc=3, key=jax.random.key(4),
                             kmeans=KMeansOptions(procedure="sklearn"))
    np.testing.assert_array_equal(sk.cluster_ids, ref_sk.cluster_ids)  # the option reaches k-means


def test_bad_inputs_raise_clear_errors(net):
    model, params = net
    x, y = _images()
    feats = x.reshape(x.shape[0], -1)
    with pytest.raises(ValueError, match="ipc=26 .*class 1: 25"):
        partition_by_class(model.apply, params, x, y, num_classes=C, ipc=26, key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"must lie in \[0, 3\)"):
        kmeans_by_class(feats, y, num_classes=3, ipc=2, key=jax.random.key(0))
    bad = feats.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        kmeans_by_class(bad, y, num_classes=C, ipc=2, key=jax.random.key(0))
    with pytest.raises(ValueError, match="shape"):
        kmeans_by_class(feats, y[:-1], num_classes=C, ipc=2, key=jax.random.key(0))
    with pytest.raises(ValueError, match="images"):
        embed(model.apply, params, feats)
    with pytest.raises(ValueError, match="procedure must be one of"):
        kmeans_by_class(feats, y, num_classes=C, ipc=2, key=jax.random.key(0),
                        kmeans=KMeansOptions(procedure="torch"))
    with pytest.raises(ValueError, match="empty must be one of"):
        kmeans_by_class(feats, y, num_classes=C, ipc=2, key=jax.random.key(0),
                        kmeans=KMeansOptions(empty="first"))
    with pytest.raises(ValueError, match="tol_mode and empty must be None"):
        partition_by_class(model.apply, params, x, y, num_classes=C, ipc=2,
                           key=jax.random.key(0),
                           kmeans=KMeansOptions(backend="ott", tol_mode="shift_sum"))


# ----------------------------------------------------------------------------------------------
# The k-means procedures: "reference" (DC_Unlearning's kmeans_pytorch, the default) and
# "sklearn" (scikit-learn's rules).


def test_procedures_bundle_the_named_rules():
    assert resolve_kmeans_procedure() == {"init": "kmeans++", "tol_mode": "shift_sum",
                                          "empty": "random"}
    assert resolve_kmeans_procedure("sklearn") == {
        "init": "greedy_kmeans++", "tol_mode": "sklearn", "empty": "farthest"}
    assert resolve_kmeans_procedure("sklearn", empty="random")["empty"] == "random"
    assert resolve_kmeans_procedure(backend="ott") == {"init": "kmeans++", "tol_mode": None,
                                                       "empty": None}


def _line_points():
    """1-d points 0 (×8), 1, 3, and two padded rows at 100 (farthest: D² would favour them)."""
    x = jnp.array([[0.0]] * 8 + [[1.0], [3.0]] + [[100.0], [100.0]])
    valid = jnp.array([True] * 10 + [False] * 2)
    return x, jnp.sum(x * x, axis=-1), valid


def test_plain_kmeans_pp_draws_one_candidate_with_probability_d2():
    # The reference's rule: first seed uniform over the class, the second drawn ∝ D² to it.
    # Exact joint law of (first, second) on the points above; greedy k-means++ (2 candidates
    # at k = 2) would pick 3 after 0 unless both candidates are 1: P(0, 1) = 0.8 · 0.01.
    x, x_sq, valid = _line_points()
    law = {(0, 1): 0.8 * 1 / 10, (0, 3): 0.8 * 9 / 10, (1, 0): 0.1 * 8 / 12,
           (1, 3): 0.1 * 4 / 12, (3, 0): 0.1 * 72 / 76, (3, 1): 0.1 * 4 / 76}
    keys = jax.random.split(jax.random.key(0), 4000)

    def pairs(n_candidates):
        seeds = jax.jit(jax.vmap(
            lambda k: _kmeans_plus_plus(k, x, x_sq, valid, 2, n_candidates)))(keys)
        s = np.asarray(seeds[:, :, 0])
        assert np.isin(s, [0.0, 1.0, 3.0]).all()  # never a padded row
        return {p: np.mean((s[:, 0] == p[0]) & (s[:, 1] == p[1])) for p in law}

    plain = pairs(1)
    assert sum(plain.values()) == 1.0  # never the same point twice
    for p, prob in law.items():
        assert abs(plain[p] - prob) < 0.03, (p, plain[p], prob)
    assert pairs(2)[(0, 1)] < 0.03  # greedy: a different law, which the test tells apart


def test_reference_seeding_is_plain_kmeans_pp_per_class():
    # max_iterations=0 returns the seeds: the default procedure's are _kmeans_plus_plus with one
    # candidate from the class's key; with k = the number of distinct points they are exactly
    # those points (D² sampling never repeats a point while others are left), never padding.
    y = np.array([0] * 6 + [1] * 9, np.int32)
    feats = np.zeros((15, 2), np.float32)
    feats[:6] = [[5, 5], [5, 5], [5, 5], [7, 5], [7, 5], [5, 9]]
    feats[6:] = np.random.default_rng(0).normal(size=(9, 2)) + 20
    for s in range(3):
        key = jax.random.key(s)
        out = kmeans_by_class(feats, y, num_classes=2, ipc=3, key=key,
                              kmeans=KMeansOptions(max_iterations=0))
        cent = np.asarray(out.centroids)
        assert sorted(map(tuple, cent[:3])) == [(5, 5), (5, 9), (7, 5)]
        x1 = jnp.asarray(feats[6:])
        class1_key = jax.random.split(key, 2)[1]
        want = _kmeans_plus_plus(class1_key, x1, jnp.sum(x1 * x1, -1), jnp.ones(9, bool), 3, 1)
        np.testing.assert_array_equal(cent[3:], np.asarray(want))


def _reference_lloyd(x, centres, max_iterations, tol):
    """A numpy transcription of the reference's Lloyd loop (no empty clusters); also returns the
    summed shift norms Σ‖Δc‖ and the squared sums Σ‖Δc‖² of every iteration."""
    sums, squares = [], []
    for _ in range(max_iterations):
        labels = np.linalg.norm(x[:, None] - centres[None], axis=-1).argmin(1)
        new = np.stack([x[labels == j].mean(0) for j in range(len(centres))])
        norms = np.linalg.norm(new - centres, axis=1)
        sums.append(norms.sum())
        squares.append((norms**2).sum())
        centres = new
        if sums[-1] < tol:
            break
    return labels, centres, len(sums), sums[-1] < tol, sums, squares


def _blobs(sizes, k, seed, spread=0.8):
    """Per class, ``k`` Gaussian blobs in 2-d (blob centres 6 apart), class c shifted by 100c."""
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.full(n, c, np.int32) for c, n in enumerate(sizes)])
    centre = rng.normal(scale=6.0, size=(len(sizes), k, 2))
    blob = rng.integers(0, k, y.size)
    x = centre[y, blob] + 100.0 * y[:, None] + spread * rng.normal(size=(y.size, 2))
    return x.astype(np.float32), y


def test_reference_stops_when_summed_centre_shift_is_below_tol():
    x_np, _ = _blobs((60,), 4, seed=1, spread=2.0)
    centres0 = x_np[:4]  # four data points: a poor start, several iterations
    *_, n_full, _, sums, squares = _reference_lloyd(x_np, centres0, 100, 1e-4)
    assert n_full >= 4 and sums[-1] == 0.0
    x, valid = jnp.asarray(x_np), jnp.ones(60, bool)
    x_sq = jnp.sum(x * x, -1)

    lloyd = jax.jit(_lloyd, static_argnames=("k", "max_iterations", "tol_mode", "empty"))

    def ours(tol, max_iterations=100, tol_mode="shift_sum"):
        return lloyd(jax.random.key(0), x, x_sq, valid, jnp.asarray(centres0), k=4,
                     max_iterations=max_iterations, tol=tol, tol_mode=tol_mode, empty="random")

    # A tol just above / below the summed shift of each iteration: the same stop, labels (those
    # of the last assignment step), centres and inertia as the reference's loop.
    tols = [s * f for s in sums[:-1] for f in (1.01, 0.99)]
    for tol in tols:
        labels, centres, n_iter, converged, *_ = _reference_lloyd(x_np, centres0, 100, tol)
        out = ours(float(tol))
        assert int(out.n_iterations) == n_iter and bool(out.converged) == converged, tol
        np.testing.assert_array_equal(np.asarray(out.labels), labels)
        np.testing.assert_allclose(np.asarray(out.centres), centres, rtol=1e-4, atol=1e-4)
        inertia = ((x_np - centres[labels]) ** 2).sum()
        assert float(out.inertia) == pytest.approx(inertia, rel=1e-4)
    # ... and these tols tell the rule from a squared one (Σ‖Δc‖² < tol stops elsewhere).
    first = lambda seq, tol: next(i for i, s in enumerate(seq) if s < tol)  # noqa: E731
    assert any(first(squares, t) != first(sums, t) for t in tols)
    # Unchanged labels do not stop the reference's loop by themselves (a 0 shift < tol does).
    out = ours(0.0, max_iterations=30)
    assert int(out.n_iterations) == 30 and not bool(out.converged)
    assert int(ours(0.0, max_iterations=30, tol_mode="sklearn").n_iterations) < 30


def test_empty_cluster_reseeds_at_a_uniform_valid_point_of_the_class():
    # Centre 3 lies far from every point: empty after the first assignment step. Padded rows
    # (zeros, invalid) are far from the data too, so a rule that forgot the mask would pick them.
    rng = np.random.default_rng(0)
    x = jnp.asarray(np.concatenate([rng.normal(size=(10, 2)) + 10, np.zeros((4, 2))]),
                    jnp.float32)
    valid = jnp.arange(14) < 10
    x_sq = jnp.sum(x * x, -1)
    centres0 = jnp.stack([x[0], x[1], x[2], jnp.array([1e3, 1e3])])

    def run(key, empty):
        return _lloyd(key, x, x_sq, valid, centres0, k=4, max_iterations=1, tol=1e-4,
                      tol_mode="shift_sum", empty=empty)

    keys = jax.random.split(jax.random.key(1), 400)
    outs = jax.jit(jax.vmap(lambda k: run(k, "random")))(keys)
    picks = np.asarray(outs.centres[:, 3])
    rows = np.asarray(x[:10])
    which = (np.abs(picks[:, None] - rows[None]).sum(-1) == 0).argmax(1)
    assert (np.abs(picks - rows[which]).sum(-1) == 0).all()  # always a valid row of the class
    counts = np.bincount(which, minlength=10)
    assert counts.min() >= 20 and counts.max() <= 65, counts  # ≈ uniform: 40 each
    assert (np.asarray(outs.counts[:, 3]) == 0).all()  # labels: the step that left it empty
    far = run(jax.random.key(0), "farthest")
    d = np.asarray(jnp.min(_sq(x[:10], centres0[:3]), axis=1))
    np.testing.assert_array_equal(np.asarray(far.centres[3]), rows[d.argmax()])


def _sq(a, b):
    return jnp.sum(jnp.square(a[:, None] - b[None]), -1)


def test_reference_reseeds_empty_clusters_within_the_class():
    # Class 0 has 2 distinct points and ipc 4: clusters stay empty and are re-seeded at random
    # points every step; every centre of class 0 must be one of its two points (not padding,
    # not a point of class 1).
    y = np.repeat([0, 1], [10, 30]).astype(np.int32)
    feats = np.zeros((40, 3), np.float32)
    feats[:5], feats[5:10] = 1.0, -1.0
    feats[10:] = np.random.default_rng(0).normal(size=(30, 3)) + 50
    for s in range(3):
        out = kmeans_by_class(feats, y, num_classes=2, ipc=4, key=jax.random.key(s))
        cent = np.asarray(out.centroids[:4])
        assert (np.abs(np.abs(cent) - 1.0) < 1e-6).all() and (np.abs(cent.sum(1)) == 3).all()
        assert out.sizes[:4].sum() == 10 and (out.sizes[:4] > 0).sum() == 2
        assert (out.cluster_ids // 4 == y).all()


@pytest.mark.parametrize("seed", [0, 1])
def test_both_procedures_partition_well_separated_blobs_alike(seed):
    sizes, k = (60, 45, 52), 4
    x, y = _blobs(sizes, k, seed, spread=0.3)
    outs = {p: kmeans_by_class(x, y, num_classes=3, ipc=k, key=jax.random.key(seed),
                               kmeans=KMeansOptions(procedure=p))
            for p in ("reference", "sklearn")}
    for out in outs.values():
        np.testing.assert_array_equal(out.cluster_ids // k, y)  # every point in its class
        np.testing.assert_array_equal(out.sizes, np.bincount(out.cluster_ids, minlength=3 * k))
        assert out.centroids.shape == (3 * k, 2) and out.converged.all()
    ref, sk = outs["reference"].inertia, outs["sklearn"].inertia
    assert ref == pytest.approx(sk, rel=0.05), (ref, sk)
