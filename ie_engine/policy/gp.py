"""Reward regressors over concept embeddings: an exact GP, and ridge once the GP is retired.

The GP's hyper-parameters (signal variance, RBF length-scale, noise) are fitted by scikit-learn's
``GaussianProcessRegressor`` (marginal likelihood). Prediction over the whole vocabulary is done
here, in float32 torch and in chunks, from the fitted Cholesky factor: scikit-learn's
``predict(return_std=True)`` builds the (n_train x n_vocab) solve in float64 at once, which for
146k concepts and 2,560 observations needs ~3 GB and took several times longer in our measurement
(see README, "Policy timings"). The closed form is the same; a test compares the two.
"""

from __future__ import annotations

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


def fit_gp(
    x: np.ndarray,
    y: np.ndarray,
    *,
    noise: float,
    seed: int,
    hyper_subsample: int = 256,
    init: Kernel | None = None,
) -> GaussianProcessRegressor:
    """Fit an RBF GP on observed concepts ``x`` (n, D) with rewards ``y`` (n,).

    The kernel is ``C * RBF(l) + White(noise)``; ``normalize_y`` centres and scales the rewards,
    so the prior mean is the mean observed reward. The three hyper-parameters are chosen by
    marginal likelihood on at most ``hyper_subsample`` observations (each optimiser step costs a
    Cholesky and an n x n x 3 gradient; on 512 of them it took ~10 s on 2 busy cores, on all
    2,560 tens of seconds), then the GP is
    conditioned on every observation with those hyper-parameters fixed. ``init``: the kernel
    fitted at the previous update, to start the optimiser from (it then converges in a few
    steps, since rewards change little between iterations).
    """
    kernel = init if init is not None else ConstantKernel(1.0, (1e-3, 1e3)) * RBF(
        1.0, (1e-2, 1e2)
    ) + WhiteKernel(noise, (1e-6, 1e1))
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if len(y64) > hyper_subsample:
            pick = np.random.default_rng(seed).choice(len(y64), hyper_subsample, replace=False)
            probe = GaussianProcessRegressor(
                kernel=kernel, normalize_y=True, n_restarts_optimizer=0, random_state=seed
            ).fit(x64[pick], y64[pick])
            kernel = probe.kernel_
            gp = GaussianProcessRegressor(kernel=kernel, normalize_y=True, optimizer=None)
        else:
            gp = GaussianProcessRegressor(
                kernel=kernel, normalize_y=True, n_restarts_optimizer=0, random_state=seed
            )
        gp.fit(x64, y64)
    return gp


def predict_gp(
    gp: GaussianProcessRegressor, x: np.ndarray, *, exact_variance_max: int = 1024, seed: int = 0
) -> Prediction:
    """Posterior mean and standard deviation of a fitted GP at ``x`` (N, D), chunked in torch.

    For a test point z with k = k(z, X): mu = k @ alpha, var = k(z, z) - ||L^-1 k||^2, where the
    white-noise term belongs to the observations only (it is not added at z).

    The mean always uses every observation. The variance costs n^2 per concept; past
    ``exact_variance_max`` observations it is computed from a seeded subset of that size. That
    is an upper bound of the exact variance (conditioning a GP on fewer observations never
    lowers its posterior variance), so it errs towards exploring. Exact when n is at most that.
    """
    kernel = gp.kernel_
    signal = float(kernel.k1.k1.constant_value)
    length = float(kernel.k1.k2.length_scale)
    noise = float(kernel.k2.noise_level)
    x_np = np.ascontiguousarray(gp.X_train_, dtype=np.float32)
    x_train = torch.from_numpy(x_np)
    alpha = torch.from_numpy(np.ascontiguousarray(gp.alpha_, dtype=np.float32)).reshape(-1)
    if len(x_np) <= exact_variance_max:
        var_idx = torch.arange(len(x_np))
        chol = torch.from_numpy(np.ascontiguousarray(gp.L_, dtype=np.float32))  # (n, n) lower
    else:
        pick = np.sort(np.random.default_rng(seed).choice(len(x_np), exact_variance_max, False))
        var_idx = torch.from_numpy(pick)
        sub = x_np[pick].astype(np.float64)
        d2 = ((sub[:, None, :] - sub[None, :, :]) ** 2).sum(-1)
        k_sub = signal * np.exp(-0.5 * d2 / length**2) + noise * np.eye(len(sub))
        chol = torch.from_numpy(np.linalg.cholesky(k_sub).astype(np.float32))
    # L^-1 once (m^3 / 3), so each chunk's variance is one matrix product at BLAS speed
    # (a triangular solve per chunk measured ~3x slower in torch on CPU).
    chol_inv = torch.linalg.solve_triangular(chol, torch.eye(len(chol)), upper=False)  # (m, m)
    train_sq = (x_train * x_train).sum(1)  # (n,)
    y_mean = float(np.asarray(gp._y_train_mean).reshape(-1)[0])
    y_std = float(np.asarray(gp._y_train_std).reshape(-1)[0])

    n_total = x.shape[0]
    mu = np.empty(n_total, dtype=np.float32)
    var = np.empty(n_total, dtype=np.float32)
    with torch.no_grad():
        for start in range(0, n_total, _CHUNK):
            z = torch.from_numpy(np.array(x[start : start + _CHUNK], dtype=np.float32))
            sq = (z * z).sum(1, keepdim=True) + train_sq[None, :] - 2.0 * (z @ x_train.T)
            k = signal * torch.exp(-0.5 * sq.clamp_min(0.0) / (length * length))  # (c, n)
            mu[start : start + len(z)] = (k @ alpha).numpy()
            v = k[:, var_idx] @ chol_inv.T  # (c, m): rows are (L^-1 k)^T
            var[start : start + len(z)] = (signal - (v * v).sum(1)).clamp_min(0.0).numpy()
    return Prediction(mu=mu * y_std + y_mean, sigma=np.sqrt(var) * y_std)


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
