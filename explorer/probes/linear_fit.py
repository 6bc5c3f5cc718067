"""Full-batch L-BFGS linear models on embeddings, in torch with explicit gradients (float32 arithmetic; float16 rows
are multiplied as stored, see ``_loss_and_grad``), warm-started on a sample of the rows: features are
standardised first (the embeddings are unit vectors, ~1/sqrt(D) per component, badly conditioned otherwise) and the
scaling is folded back into the weights, so scoring is one matmul over the raw embeddings. Gradients are computed as
``G.T @ X`` rather than by autograd's ``X.T @ G`` (measured 5-15x slower on this CPU for a handful of outputs). Runs
on CUDA when present."""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import numpy as np

from explorer.jobs import Cancelled, Progress

# torch is imported inside the functions: importing it here cost ~2 s of every server start
if TYPE_CHECKING:
    import torch


WARM_ROWS = 8_192    # rows of the warm-start fit (explorer.probes.linear_fit.fit_linear)
REFINE_ITER = 4      # L-BFGS iterations on all rows after it


def fit_device() -> torch.device:
    import torch
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def gather_rows(embeddings: np.ndarray, rows: np.ndarray, device=None, chunk: int = 32_768,
                keep_half: bool = False) -> torch.Tensor:
    """float32 copy of the given rows (read in sorted order, so the memory map is read forwards). ``keep_half``:
    float16 rows stay float16 on the CPU (half the bytes; ``_loss_and_grad`` widens them a cache-sized chunk at a
    time)."""
    import torch
    device = torch.device(device or fit_device())
    rows = np.asarray(rows, dtype=np.int64)
    order = np.argsort(rows, kind="stable")
    in_order = bool(np.all(order == np.arange(len(rows))))
    half = keep_half and device.type == "cpu" and embeddings.dtype == np.float16
    out = torch.empty((len(rows), embeddings.shape[1]), dtype=torch.float16 if half else torch.float32)
    for s in range(0, len(rows), chunk):
        sel = order[s : s + chunk]
        block = torch.from_numpy(np.ascontiguousarray(embeddings[rows[sel]]))
        if in_order:  # plain slice copy; index_put is several times slower
            out[s : s + len(sel)].copy_(block)
        else:
            out[torch.from_numpy(sel)] = block.to(out.dtype)
    return out.to(device)


def column_moments(X: torch.Tensor, max_rows: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-column mean and standard deviation from (at most) ``max_rows`` evenly spaced rows.

    They only precondition the fit (the scaling is folded back exactly into the weights), so a sample is plenty:
    on 8 k rows the standard deviations are good to ~2 %, and the full-data pass cost as much as the whole fit
    (torch's X.std(0) is a strided reduction on CPU: 17 s at 100 k x 2048 on this box).
    """
    import torch
    n = X.shape[0]
    rows = torch.linspace(0, n - 1, min(n, max_rows), device=X.device).long()
    sample = X[rows].float().cpu().numpy()  # numpy reduces along axis 0 row by row; torch's dim-0 std is strided
    mean = sample.mean(axis=0, dtype=np.float64)
    std = sample.std(axis=0, dtype=np.float64, ddof=1) if len(sample) > 1 else np.ones(X.shape[1])
    as_tensor = lambda a: torch.from_numpy(np.nan_to_num(a, nan=1.0).astype(np.float32)).to(X.device)
    return as_tensor(mean), as_tensor(std)


def _loss_and_grad(X, Y, V, b, mu, sd, link: str, l2: float, chunk: int = 4096):
    """Loss and gradients in standardised coordinates without touching X: z = ((x - mu) / sd) @ V + b.

    On CPU the rows go in cache-sized chunks, each used for its outputs and its gradient while it is still in
    cache (one trip through memory per evaluation instead of two: ~30 % faster measured at 100 k x 2048).
    float16 rows (``gather_rows(keep_half=True)``) are multiplied as they are, by torch's float16 products that
    accumulate in float32: widening them costs more than the products (BENCHMARKS.md, issue 23).
    """
    import torch
    W = V / sd[:, None]
    offset = b - mu @ W
    n = X.shape[0]
    if X.dtype == torch.float16:
        return _loss_and_grad_half(X, Y, V, W, offset, mu, sd, link, l2)
    if X.device.type != "cpu":
        chunk = n
    loss = torch.zeros((), dtype=torch.float64, device=X.device)
    gX = torch.zeros((Y.shape[1], X.shape[1]), dtype=torch.float32, device=X.device)  # accumulates G.T @ X
    gsum = torch.zeros(Y.shape[1], dtype=torch.float32, device=X.device)
    for s in range(0, n, chunk):
        xb, yb = X[s : s + chunk], Y[s : s + chunk]
        part, G = _loss_and_residual(xb @ W + offset, yb, link)
        loss += part
        gX.addmm_(G.T, xb)  # G.T @ X: the fast orientation (module docstring)
        gsum += G.sum(0)
    return _gradients(loss, gX, gsum, n, V, mu, sd, l2)


def _loss_and_grad_half(X, Y, V, W, offset, mu, sd, link: str, l2: float):
    """``_loss_and_grad`` on float16 rows: two float16 products over all of X, float32 everywhere else."""
    Z = (X @ W.half()).float() + offset
    loss, G = _loss_and_residual(Z, Y, link)
    gX = (G.T.half() @ X).float()
    return _gradients(loss.double(), gX, G.sum(0), X.shape[0], V, mu, sd, l2)


def _loss_and_residual(Z, Y, link: str):
    """Summed loss of the outputs Z against Y, and dLoss/dZ."""
    import torch
    if link == "sigmoid":
        return (torch.nn.functional.softplus(Z) - Y * Z).sum(), torch.sigmoid(Z) - Y
    if link == "softmax":
        logp = torch.log_softmax(Z, dim=1)
        return -(Y * logp).sum(), logp.exp() - Y
    G = Z - Y
    return 0.5 * (G * G).sum(), G


def _gradients(loss, gX, gsum, n: int, V, mu, sd, l2: float):
    """Mean loss and the gradients in standardised coordinates from the sums G.T @ X and G.sum(0)."""
    gV = (gX.T / n - mu[:, None] * (gsum / n)) / sd[:, None] + l2 * V
    return (loss / n).float() + 0.5 * l2 * (V * V).sum(), gV.contiguous(), gsum / n


def fit_linear(X: torch.Tensor, Y: torch.Tensor, link: str, *, l2: float = 1e-3, max_iter: int = 30,
               progress: Progress | None = None, cancel: threading.Event | None = None,
               warm_rows: int = WARM_ROWS, refine_iter: int = REFINE_ITER):
    """Full-batch L-BFGS in standardised coordinates.

    With more than 2 x ``warm_rows`` rows, the fit first converges on ``warm_rows`` evenly spaced rows and then
    refines on all of them for at most ``refine_iter`` iterations: every full-data loss evaluation streams the
    whole of X, and from the sample's solution a few of them do what ~35 did from zero (BENCHMARKS.md, issue 23).
    Returns (weight (D, C), bias (C,)) for the raw features, and the number of loss evaluations on all rows.
    """
    import torch
    mu, sd = column_moments(X)
    sd = sd.clamp_min(1e-6)
    V = torch.zeros((X.shape[1], Y.shape[1]), device=X.device, requires_grad=True)
    b = torch.zeros(Y.shape[1], device=X.device, requires_grad=True)
    if link == "sigmoid":  # start at the base rate
        b.data = torch.logit(Y.mean(0).float().clamp(1e-4, 1 - 1e-4))
    n = X.shape[0]
    if n > 2 * warm_rows:
        sample = torch.linspace(0, n - 1, warm_rows, device=X.device).long()
        _lbfgs(X[sample].float(), Y[sample], V, b, mu, sd, link, l2, max_iter, cancel,
               lambda k, loss: progress and progress(min(0.5 * k / max_iter, 0.5), f"warm start: step {k}, loss {loss:.4f}"))
        max_iter = refine_iter
    calls = _lbfgs(X, Y, V, b, mu, sd, link, l2, max_iter, cancel,
                   lambda k, loss: progress and progress(min(0.5 + 0.5 * k / (max_iter * 1.25), 0.99),
                                                         f"L-BFGS step {k}, loss {loss:.4f}"))
    with torch.no_grad():
        weight = V / sd[:, None]
        bias = b - mu @ weight
    return weight.cpu().numpy().astype(np.float32), bias.cpu().numpy().astype(np.float32), calls


def _lbfgs(X, Y, V, b, mu, sd, link: str, l2: float, max_iter: int, cancel, report) -> int:
    """L-BFGS (strong Wolfe line search) on V and b in place; the number of loss evaluations."""
    import torch
    opt = torch.optim.LBFGS([V, b], lr=1, max_iter=max_iter, history_size=10, tolerance_grad=1e-6,
                            tolerance_change=1e-9, line_search_fn="strong_wolfe")
    calls = [0]

    def closure():
        if cancel is not None and cancel.is_set():
            raise Cancelled()
        with torch.no_grad():
            loss, gV, gb = _loss_and_grad(X, Y, V, b, mu, sd, link, l2)
        V.grad, b.grad = gV, gb
        calls[0] += 1
        report(calls[0], float(loss))
        return loss

    opt.step(closure)
    return calls[0]
