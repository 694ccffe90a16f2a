"""Reward regressors over concept embeddings: an exact GP, and ridge once the GP is retired.

The GP's hyper-parameters (signal variance, RBF length-scale, noise) are fitted by scikit-learn's
``GaussianProcessRegressor`` (marginal likelihood). Prediction over the whole vocabulary is done
here, in float32 torch and in chunks, from the fitted Cholesky factor: scikit-learn's
``predict(return_std=True)`` builds the (n_train x n_vocab) solve in float64 at once, which for
146k concepts and 2,560 observations needs ~3 GB and took several times longer in our measurement
(see README, "Policy timings"). Conditioning on every observation is done here too, in float64
torch. The closed form is the same; a test compares the two, and with scikit-learn's own path.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, Kernel, WhiteKernel
from sklearn.linear_model import Ridge

_CHUNK = 8192


@dataclass
class Prediction:
    """Predicted reward per concept: ``mu`` and ``sigma``, float32 arrays of shape (N,)."""

    mu: np.ndarray
    sigma: np.ndarray


@dataclass
class FittedGP:
    """An RBF GP conditioned on its observations: what prediction needs.

    ``kernel`` is scikit-learn's fitted ``C * RBF + White`` kernel (its hyper-parameters; the
    next fit starts from it); ``x`` (n, D) float32 observed embeddings; ``chol`` the (n, n)
    lower Cholesky factor of K(X, X) + noise I in float64; ``alpha`` = K^-1 y_normalised;
    rewards are normalised as ``(y - y_mean) / y_std`` (scikit-learn's ``normalize_y``)."""

    kernel: Kernel
    x: np.ndarray
    chol: torch.Tensor
    alpha: torch.Tensor
    y_mean: float
    y_std: float

    @property
    def signal(self) -> float:
        return float(self.kernel.k1.k1.constant_value)

    @property
    def length(self) -> float:
        return float(self.kernel.k1.k2.length_scale)

    @property
    def noise(self) -> float:
        return float(self.kernel.k2.noise_level)


def _rbf(a: torch.Tensor, b: torch.Tensor, signal: float, length: float) -> torch.Tensor:
    """signal * exp(-|a - b|^2 / (2 l^2)) between the rows of ``a`` and ``b``, by one matrix
    product (|a|^2 + |b|^2 - 2 a.b)."""
    sq = (a * a).sum(1, keepdim=True) + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return signal * torch.exp(-0.5 * sq.clamp_min(0.0) / (length * length))


def _cholesky(k: torch.Tensor) -> torch.Tensor:
    """Lower Cholesky factor, with a growing diagonal jitter if round-off broke definiteness."""
    eye = torch.eye(len(k), dtype=k.dtype)
    for jitter in (1e-10, 1e-8, 1e-6, 1e-4):
        chol, info = torch.linalg.cholesky_ex(k + jitter * eye)
        if int(info) == 0:
            return chol
    raise np.linalg.LinAlgError("GP kernel matrix is not positive definite")


def default_kernel(noise: float, min_length: float = 1e-2) -> Kernel:
    """``C * RBF + White``, the GP's kernel before any fit (and the template of a saved one).
    The RBF length-scale is fitted within ``[min_length, 100]``."""
    low = min(max(min_length, 1e-2), 10.0)
    return ConstantKernel(1.0, (1e-3, 1e3)) * RBF(max(1.0, low), (low, 1e2)) + WhiteKernel(
        noise, (1e-6, 1e1))


def nearest_neighbour_distance(x: np.ndarray, *, sample: int = 512, seed: int = 0) -> float:
    """Median Euclidean distance from a concept to its nearest other concept, over a seeded
    sample of ``sample`` rows of ``x`` (N, D) against all of ``x`` (chunked)."""
    n = len(x)
    if n < 2:
        return 0.0
    pick = np.sort(np.random.default_rng(seed).choice(n, min(sample, n), replace=False))
    xt = torch.from_numpy(np.require(x, np.float32, ["C", "W"]))
    q = xt[torch.from_numpy(pick)]
    best = torch.full((len(pick),), float("inf"))
    sq_q = (q * q).sum(1)
    for start in range(0, n, _CHUNK):
        chunk = xt[start:start + _CHUNK]
        d2 = sq_q[:, None] + (chunk * chunk).sum(1)[None, :] - 2.0 * (q @ chunk.T)
        own = torch.from_numpy(pick)[:, None] == torch.arange(start, start + len(chunk))[None]
        d2 = d2.masked_fill(own, float("inf"))
        best = torch.minimum(best, d2.min(1).values)
    return float(np.median(torch.sqrt(best.clamp_min(0.0)).numpy()))


def fit_gp(
    x: np.ndarray,
    y: np.ndarray,
    *,
    noise: float,
    seed: int,
    hyper_subsample: int = 256,
    init: Kernel | None = None,
    fit_rows: np.ndarray | None = None,
    fixed: Kernel | None = None,
    min_length: float = 1e-2,
) -> FittedGP:
    """Fit an RBF GP on observed concepts ``x`` (n, D) with rewards ``y`` (n,).

    The kernel is ``C * RBF(l) + White(noise)``; rewards are centred and scaled, so the prior
    mean is the mean observed reward. The three hyper-parameters are chosen by scikit-learn's
    ``GaussianProcessRegressor`` (marginal likelihood) on at most ``hyper_subsample``
    observations (each optimiser step costs a Cholesky and an n x n x 3 gradient; on 512 of
    them it took ~10 s on 2 busy cores, on all 2,560 tens of seconds). Then the GP is
    conditioned on every observation with those hyper-parameters fixed, here in float64 torch
    (the kernel matrix by one matrix product: scikit-learn's pairwise distances took several
    times longer at 2,560 observations). ``init``: the kernel fitted at the previous update,
    to start the optimiser from (it then converges in a few steps, since rewards change little
    between iterations).

    ``fit_rows``: the rows that choose the hyper-parameters and the normalisation (mean and
    scale of the rewards); all rows by default. The others are conditioned on but change
    neither: a vetoed concept's pseudo-observation is meant to pull its neighbours down, not to
    rescale every concept's uncertainty. ``fixed``: hyper-parameters to use as they are (the
    optimiser is skipped). ``min_length``: the lower bound of the fitted RBF length-scale (with
    ``init``, its bounds apply as they are).
    """
    kernel = init if init is not None else default_kernel(noise, min_length)
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    rows = np.arange(len(y64)) if fit_rows is None else np.asarray(fit_rows, dtype=np.int64)
    if fixed is not None:
        fitted: Kernel = fixed
    else:
        pick = (
            np.sort(np.random.default_rng(seed).choice(rows, hyper_subsample, replace=False))
            if len(rows) > hyper_subsample else rows
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            probe = GaussianProcessRegressor(
                kernel=kernel, normalize_y=True, n_restarts_optimizer=0, random_state=seed
            ).fit(x64[pick], y64[pick])
        fitted = probe.kernel_
    y_mean = float(y64[rows].mean())
    y_std = float(y64[rows].std()) or 1.0
    xt = torch.from_numpy(x64)
    signal = float(fitted.k1.k1.constant_value)
    length = float(fitted.k1.k2.length_scale)
    white = float(fitted.k2.noise_level)
    k = _rbf(xt, xt, signal, length) + white * torch.eye(len(xt), dtype=torch.float64)
    chol = _cholesky(k)
    y_norm = torch.from_numpy((y64 - y_mean) / y_std)[:, None]
    alpha = torch.cholesky_solve(y_norm, chol).reshape(-1)
    return FittedGP(kernel=fitted, x=np.ascontiguousarray(x, dtype=np.float32), chol=chol,
                    alpha=alpha, y_mean=y_mean, y_std=y_std)


def predict_gp(
    gp: FittedGP, x: np.ndarray, *, exact_variance_max: int = 512, seed: int = 0
) -> Prediction:
    """Posterior mean and standard deviation of a fitted GP at ``x`` (N, D), chunked in torch.

    For a test point z with k = k(z, X): mu = k @ alpha, var = k(z, z) - ||L^-1 k||^2, where the
    white-noise term belongs to the observations only (it is not added at z).

    The mean always uses every observation. The variance costs n^2 per concept; past
    ``exact_variance_max`` observations it is computed from a seeded subset of that size. That
    is an upper bound of the exact variance (conditioning a GP on fewer observations never
    lowers its posterior variance), so it errs towards exploring. Exact when n is at most that.
    """
    signal, length, noise = gp.signal, gp.length, gp.noise
    x_np = gp.x
    x_train = torch.from_numpy(x_np)
    alpha = gp.alpha.to(torch.float32)
    if len(x_np) <= exact_variance_max:
        var_idx = torch.arange(len(x_np))
        chol = gp.chol
    else:
        pick = np.sort(np.random.default_rng(seed).choice(len(x_np), exact_variance_max, False))
        var_idx = torch.from_numpy(pick)
        sub = torch.from_numpy(x_np[pick].astype(np.float64))
        k_sub = _rbf(sub, sub, signal, length) + noise * torch.eye(len(sub), dtype=torch.float64)
        chol = _cholesky(k_sub)
    # L^-1 once (m^3 / 3), so each chunk's variance is one matrix product at BLAS speed
    # (a triangular solve per chunk measured ~3x slower in torch on CPU).
    chol_inv = torch.linalg.solve_triangular(
        chol, torch.eye(len(chol), dtype=chol.dtype), upper=False).to(torch.float32)  # (m, m)
    train_sq = (x_train * x_train).sum(1)  # (n,)

    n_total = x.shape[0]
    mu = np.empty(n_total, dtype=np.float32)
    var = np.empty(n_total, dtype=np.float32)
    # k = signal * exp(-|z - x|^2 / 2l^2) = exp(z.x / l^2 - |x|^2 / 2l^2 - |z|^2 / 2l^2 + log
    # signal): the column terms ride in the matrix product (addmm), the row term and the
    # exponential are in-place passes. The element-wise work over the (chunk x n) block cost
    # more than the product itself when written as separate out-of-place operations.
    inv_l2 = 1.0 / (length * length)
    log_signal = math.log(signal)
    x_train_t = x_train.T.contiguous()  # (D, n)
    col_term = (log_signal - 0.5 * inv_l2 * train_sq)[None, :]  # (1, n)
    with torch.no_grad():
        for start in range(0, n_total, _CHUNK):
            z = torch.from_numpy(np.array(x[start : start + _CHUNK], dtype=np.float32))
            k = torch.addmm(col_term, z, x_train_t, alpha=inv_l2)  # (c, n)
            k.sub_((0.5 * inv_l2) * (z * z).sum(1, keepdim=True))
            k.clamp_max_(log_signal).exp_()  # the clamp: |z - x|^2 >= 0 despite round-off
            mu[start : start + len(z)] = (k @ alpha).numpy()
            k_var = k if len(var_idx) == len(x_np) else k[:, var_idx]
            v = k_var @ chol_inv.T  # (c, m): rows are (L^-1 k)^T
            var[start : start + len(z)] = (signal - (v * v).sum(1)).clamp_min(0.0).numpy()
    return Prediction(mu=mu * gp.y_std + gp.y_mean, sigma=np.sqrt(var) * gp.y_std)


def fit_predict_ridge(
    x_train: np.ndarray, y: np.ndarray, x: np.ndarray, *, alpha: float
) -> Prediction:
    """Ridge regression of reward on embedding; no uncertainty (sigma = 0), as in the paper."""
    model = Ridge(alpha=alpha)
    model.fit(x_train, y)
    mu = np.empty(x.shape[0], dtype=np.float32)
    for start in range(0, x.shape[0], 65536):
        mu[start : start + 65536] = model.predict(x[start : start + 65536])
    return Prediction(mu=mu, sigma=np.zeros_like(mu))
