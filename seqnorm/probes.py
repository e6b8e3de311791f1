"""Gradient-flow probes: pure functions over a model (or a layer) and a batch.

Time steps are 0-based everywhere: ``h[t]``, ``t = 0 .. T-1``, is the hidden state after
reading ``x[t]``; column ``t`` of :func:`hidden_grad_norms` belongs to ``h[t]``.

* :func:`hidden_grad_norms` -- ``||dL/dh[t]||`` for every ``t`` and every recurrent layer,
  from one backward pass over the states recorded by the unrolled path of the layers.
* :func:`decay_rate`, :func:`grad_ratio`, :func:`summarize` -- one number per curve.
* :func:`jacobian_norms` -- ``||dh[T-1]/dh[t]||_2`` by power iteration (any cell) or in
  closed form (Elman RNN).
* :func:`weight_spectrum` -- singular values, stable rank and a Lipschitz bound of every
  gate block of every ``weight_hh_l{k}``.

"Pure" means: no ``.grad`` is written (gradients come from :func:`torch.autograd.grad`),
buffers that a forward pass in training mode would update (the power-iteration vectors of
the constraints, batch-norm statistics) are restored, the probes draw nothing from the
global RNG, and the train/eval mode is left as the caller set it (the caller decides: eval
mode gives a deterministic probe; in training mode the model's own dropout still draws).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from .layers import RecurrentLayer
from .linalg import as_blocks, compute_dtype, stable_rank

__all__ = [
    "StateRecording",
    "decay_rate",
    "find_layers",
    "grad_ratio",
    "hidden_grad_norms",
    "jacobian_norms",
    "log10_norms",
    "record_hidden_states",
    "summarize",
    "weight_spectrum",
]

#: Most time steps the robust slope fit of :func:`decay_rate` uses (evenly subsampled).
MAX_FIT_POINTS = 128


# --------------------------------------------------------------------------- recording states


def find_layers(model: nn.Module) -> list[tuple[str, RecurrentLayer]]:
    """Every seqnorm sequence layer in ``model`` (``model`` itself included), module order.

    Args:
        model: any module: a bare ``SpectralRNN/GRU/LSTM``, a user's model, a LightningModule.

    Returns:
        ``(qualified name, layer)`` pairs, as ``model.named_modules()`` lists them.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return [(n, m) for n, m in model.named_modules() if isinstance(m, RecurrentLayer)]


def _require_layers(model: nn.Module) -> list[tuple[str, RecurrentLayer]]:
    layers = find_layers(model)
    if not layers:
        raise ValueError(
            f"model must contain a seqnorm layer (SpectralRNN, SpectralGRU or SpectralLSTM), "
            f"found none in {type(model).__name__}"
        )
    return layers


class StateRecording:
    """The hidden states recorded by :func:`record_hidden_states`.

    ``calls[i]`` is the recorder of the ``i``-th seqnorm layer of the model: one entry per
    forward call, each a list (one per stacked layer) of ``T`` tensors ``h[t]`` ``(B, H)``.
    """

    def __init__(self, layers: list[tuple[str, RecurrentLayer]]) -> None:
        self.names = [n for n, _ in layers]
        self.layers = [m for _, m in layers]
        self.calls: list[list[list[list[Tensor]]]] = [[] for _ in layers]

    def states(self) -> list[list[Tensor]]:
        """One row per stacked layer of every seqnorm layer (module order): ``T`` states.

        Raises:
            ValueError: if a seqnorm layer was called other than exactly once.
        """
        rows: list[list[Tensor]] = []
        for name, calls in zip(self.names, self.calls, strict=True):
            if len(calls) != 1:
                raise ValueError(
                    f"seqnorm layer {name or '<model>'!r} must run exactly once per forward to "
                    f"be probed, it ran {len(calls)} times"
                )
            rows.extend(calls[0])
        return rows


@contextmanager
def record_hidden_states(model: nn.Module) -> Iterator[StateRecording]:
    """Record every hidden state of every seqnorm layer of ``model`` while inside.

    Inside the block the layers run their unrolled path (each ``h[t]`` is its own autograd
    node); on exit, even on error, they go back to normal.

    Args:
        model: any module containing seqnorm layers.

    Raises:
        ValueError: if ``model`` contains no seqnorm layer.
        RuntimeError: if a layer is already being recorded.

    >>> from seqnorm import SpectralGRU
    >>> gru = SpectralGRU(3, 4, num_layers=2)
    >>> with record_hidden_states(gru) as rec:
    ...     _ = gru(torch.randn(5, 2, 3))
    >>> rows = rec.states()
    >>> len(rows), len(rows[0]), tuple(rows[0][0].shape), gru._state_recorder is None
    (2, 5, (2, 4), True)
    """
    layers = _require_layers(model)
    rec = StateRecording(layers)
    for name, layer in layers:
        if layer._state_recorder is not None:
            raise RuntimeError(f"seqnorm layer {name or '<model>'!r} is already being recorded")
    try:
        for layer, calls in zip(rec.layers, rec.calls, strict=True):
            layer._state_recorder = calls
        yield rec
    finally:
        for layer in rec.layers:
            layer._state_recorder = None


@contextmanager
def _preserved_buffers(model: nn.Module) -> Iterator[None]:
    """Restore every buffer's value on exit (a training-mode forward updates some)."""
    saved = [(m, n, b.detach().clone()) for m in model.modules() for n, b in m._buffers.items()
             if b is not None]  # fmt: skip
    try:
        yield
    finally:
        with torch.no_grad():
            for module, name, value in saved:
                current = module._buffers.get(name)
                if current is not None and current.shape == value.shape:
                    current.copy_(value)


# ---------------------------------------------------------------------------- gradient norms


def hidden_grad_norms(
    model: nn.Module,
    batch: Sequence[Tensor],
    loss_fn: Callable[[Tensor, Tensor], Tensor],
) -> Tensor:
    """``||dL/dh[t]||`` for every time step of every recurrent layer in ``model``.

    ``L = loss_fn(model(inputs), targets)``. The gradient is the total derivative of ``L``
    with respect to the hidden state ``h[t]`` (every path through it: later steps, the
    layer above, the readout), taken for all ``t`` at once by one
    :func:`torch.autograd.grad` over the recorded states. Per sample it is the L2 norm over
    hidden units; the result is its mean over the batch (with a batch-mean loss each
    sample's gradient carries a factor ``1/B``). For an LSTM, ``h`` is the output state.

    Args:
        model: any module containing seqnorm layers, each called once by ``model(inputs)``.
        batch: ``(inputs, targets)``.
        loss_fn: ``loss_fn(model(inputs), targets)`` returns the scalar loss.

    Returns:
        ``(rows, T)``, detached, float32 (float64 for a float64 model): one row per stacked
        layer of every seqnorm layer, in module order.

    Raises:
        ValueError: if ``model`` has no seqnorm layer, ``batch`` is not a pair, the loss is
            not a scalar, or the layers' sequence lengths differ.
    """
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
        raise ValueError(f"batch must be a pair (inputs, targets), got {type(batch).__name__}")
    inputs, targets = batch
    with _preserved_buffers(model), torch.enable_grad(), record_hidden_states(model) as rec:
        loss = loss_fn(model(inputs), targets)
        rows = rec.states()
    if not isinstance(loss, Tensor) or loss.numel() != 1:
        raise ValueError(f"loss_fn must return a scalar tensor, got {loss!r:.80}")
    lengths = {len(r) for r in rows}
    if len(lengths) != 1:
        raise ValueError(f"all probed layers must see the same sequence length, got {lengths}")
    flat = [h for row in rows for h in row]
    if not loss.requires_grad or not all(h.requires_grad for h in flat):
        raise RuntimeError(
            "the loss and hidden states must require grad: are all parameters frozen, or is "
            "the call inside torch.inference_mode()?"
        )
    grads = torch.autograd.grad(loss, flat, allow_unused=True, materialize_grads=True)
    # The norm is taken in float64: in float32 the squares of entries below ~1e-19 flush to
    # zero, so a vanishing curve would fall off a cliff long before float32 itself underflows.
    g = torch.stack([gr.double() for gr in grads])  # (rows*T, B, H)
    norms = g.norm(dim=-1).mean(dim=-1)  # (rows*T,)
    dt = compute_dtype(flat[0].dtype)
    return norms.reshape(len(rows), -1).to(dt).detach()  # (rows, T)


def log10_norms(norms: Tensor) -> Tensor:
    """``log10`` of norms floored at the smallest positive normal number of their dtype.

    Zero and underflowed norms become ``log10(finfo.tiny)`` (about -38 for float32, -308 for
    float64) and ``inf`` becomes ``log10(finfo.max)``, so the result is finite. A NaN norm
    (a diverged model) stays NaN on purpose.

    >>> log10_norms(torch.tensor([100.0, 0.0])).round()
    tensor([  2., -38.])
    """
    if not isinstance(norms, Tensor) or not norms.is_floating_point():
        raise TypeError(f"norms must be a floating-point tensor, got {norms!r:.80}")
    x = norms.to(compute_dtype(norms.dtype))
    fi = torch.finfo(x.dtype)
    return x.clamp(min=fi.tiny, max=fi.max).log10()


def _check_curve(norms: Tensor) -> None:
    if not isinstance(norms, Tensor) or norms.dim() not in (1, 2):
        shape = tuple(norms.shape) if isinstance(norms, Tensor) else type(norms).__name__
        raise ValueError(f"norms must be a tensor (T,) or (rows, T), got {shape}")
    if norms.shape[-1] < 2:
        raise ValueError(f"norms must have at least 2 time steps, got shape {tuple(norms.shape)}")


def decay_rate(norms: Tensor) -> Tensor:
    """Change of ``log10 ||dL/dh[t]||`` per 100 steps, going backward in time (T-1 to 0).

    Sign convention: the gradient flows backward in time, so the rate is measured that way.
    Negative means vanishing (each 100 steps further back from the end, the norm shrinks by
    ``10**rate``); positive means exploding; 0 is a flat curve. For a linear RNN
    ``h[t] = a h[t-1]`` with the loss at the end, ``||dL/dh[t]|| ∝ a**(T-1-t)`` and the rate
    is ``100 * log10(a)``.

    The fit is Theil-Sen: the median of the slopes between all pairs of (at most
    :data:`MAX_FIT_POINTS`, evenly spaced) time steps of :func:`log10_norms`, so a few
    outliers (a spike at the steps that carry a target) do not move it. Points at the floor
    of :func:`log10_norms` (zero or underflowed norms) carry no slope information and are
    left out while at least two measurable points remain; otherwise (an all-zero curve)
    every point counts, so the result is always finite. Without this, a gradient that
    vanishes below the dtype's range over most of a long sequence would read as flat.

    Args:
        norms: ``(T,)`` or ``(rows, T)``, ``T >= 2``.

    Returns:
        ``()`` or ``(rows,)``.

    >>> float(decay_rate(0.5 ** torch.arange(100.0, 0.0, -1)))  # vanishing backward
    -30.10...
    """
    _check_curve(norms)
    y = log10_norms(norms)  # (..., T)
    floor = math.log10(torch.finfo(y.dtype).tiny)
    T = y.shape[-1]
    idx = torch.linspace(0, T - 1, min(T, MAX_FIT_POINTS), device=y.device).round().long()
    idx = idx.unique()  # (n,)
    t = idx.to(y.dtype)
    y = y[..., idx]  # (..., n)
    i, j = torch.triu_indices(len(idx), len(idx), 1, device=y.device)
    slopes = (y[..., j] - y[..., i]) / (t[j] - t[i])  # (..., pairs): per step, forward in t
    valid = y > floor + 1e-6  # (..., n): measurable points
    usable = valid[..., i] & valid[..., j]  # (..., pairs)
    fit = slopes.masked_fill(~usable, float("nan")).nanquantile(0.5, dim=-1)  # (...)
    fit = torch.where(valid.sum(-1) >= 2, fit, slopes.quantile(0.5, dim=-1))
    return 0.0 - 100.0 * fit  # 0 - x: a flat curve gives 0, not -0


def grad_ratio(norms: Tensor) -> Tensor:
    """``||dL/dh[0]|| / ||dL/dh[T-1]||``, finite: norms floored as :func:`log10_norms`.

    Below 1: the first step gets less gradient than the last (vanishing).

    Args:
        norms: ``(T,)`` or ``(rows, T)``.

    Returns:
        ``()`` or ``(rows,)``, float64, in ``[finfo(float64).tiny, finfo(float64).max]``.

    >>> float(grad_ratio(torch.tensor([1e-3, 1.0, 10.0])))
    0.0001...
    """
    _check_curve(norms)
    y = log10_norms(norms).double()
    r = torch.pow(10.0, y[..., 0] - y[..., -1])
    fi = torch.finfo(torch.float64)
    return r.clamp(min=fi.tiny, max=fi.max)


def summarize(norms: Tensor) -> dict[str, float]:
    """The curve in two numbers: ``decay_rate`` and ``grad_ratio``.

    The headline keys describe the last row (the top stacked layer of the last seqnorm
    layer, the one nearest the loss). With several rows, ``decay_rate/l{k}`` and
    ``grad_ratio/l{k}`` are added for every row ``k``.

    Args:
        norms: ``(T,)`` or ``(rows, T)`` from :func:`hidden_grad_norms`.

    >>> s = summarize(torch.ones(2, 10))
    >>> s["decay_rate"], s["grad_ratio"], sorted(s)[:3]
    (0.0, 1.0, ['decay_rate', 'decay_rate/l0', 'decay_rate/l1'])
    """
    _check_curve(norms)
    rows = norms.reshape(-1, norms.shape[-1])  # (rows, T)
    rates, ratios = decay_rate(rows).tolist(), grad_ratio(rows).tolist()
    out = {"decay_rate": rates[-1], "grad_ratio": ratios[-1]}
    if len(rates) > 1:
        for k, (rate, ratio) in enumerate(zip(rates, ratios, strict=True)):
            out[f"decay_rate/l{k}"], out[f"grad_ratio/l{k}"] = rate, ratio
    return out


# --------------------------------------------------------------------------------- Jacobians


def _check_layer(layer: nn.Module) -> RecurrentLayer:
    if not isinstance(layer, RecurrentLayer):
        raise TypeError(
            f"layer must be a SpectralRNN, SpectralGRU or SpectralLSTM, got {type(layer).__name__}"
        )
    return layer


def _single_sequence(layer: RecurrentLayer, x: Tensor) -> Tensor:
    """``x`` as one unbatched sequence ``(T, I)``: batch element 0 of a batched input."""
    if not isinstance(x, Tensor) or x.dim() not in (2, 3):
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must be a tensor (T, input_size) or batched (3-D), got {shape}")
    if x.dim() == 3:
        x = x[0] if layer.batch_first else x[:, 0]
    return x.detach()


def _steps(steps: Sequence[int] | None, T: int) -> list[int]:
    if steps is None:
        return sorted({round(i * (T - 1) / 4) for i in range(5)})
    out = []
    for s in steps:
        if not isinstance(s, int) or isinstance(s, bool) or not -T <= s < T:
            raise ValueError(f"steps must be ints in [-{T}, {T}) (T={T}), got {list(steps)}")
        out.append(s % T)
    if not out:
        raise ValueError("steps must not be empty")
    return out


def jacobian_norms(
    layer: nn.Module,
    x: Tensor,
    steps: Sequence[int] | None = None,
    n_iterations: int = 20,
    method: str = "auto",
    layer_index: int = -1,
) -> Tensor:
    """Spectral norm ``||dh[T-1]/dh[t]||_2`` of the Jacobian of the last hidden state.

    The derivative is the partial one along the layer's own recurrence (the layers below
    do not depend on ``h[t]``; for an LSTM the cell state ``c[t]`` is held fixed). It is
    computed for one sequence: ``x`` unbatched ``(T, I)``, or batch element 0 of a batched
    ``x`` (respecting ``batch_first``).

    Methods:

    * ``"power"``: power iteration on ``J^T J`` with vector-Jacobian products from
      :func:`torch.autograd.grad` and Jacobian-vector products by the double-backward
      trick, for every cell. All requested steps are run at once as a batch of copies of
      the sequence. Converges from below; the error shrinks like ``(s2/s1)**(2 n)``.
    * ``"closed_form"``: Elman RNN only, the exact product
      ``prod_s diag(f'(a[s])) W_hh`` (``f' = 1 - h**2`` for tanh, ``h > 0`` for relu) and its
      matrix 2-norm.
    * ``"auto"``: ``closed_form`` for an Elman RNN, ``power`` otherwise.

    Args:
        layer: a ``SpectralRNN``, ``SpectralGRU`` or ``SpectralLSTM``.
        x: input sequence ``(T, input_size)``, or a batch whose element 0 is used.
        steps: 0-based time steps ``t`` (negative counts from the end); by default five
            spread over the sequence, ``0 .. T-1`` (``t = T-1`` gives 1, the identity).
        n_iterations: power iterations (``power`` only).
        method: ``auto``, ``power`` or ``closed_form``.
        layer_index: which stacked layer ``k`` (default: the last).

    Returns:
        ``(len(steps),)``, detached, in the order of ``steps``.
    """
    layer = _check_layer(layer)
    if method not in ("auto", "power", "closed_form"):
        raise ValueError(f"method must be 'auto', 'power' or 'closed_form', got {method!r}")
    elman = layer.mode in ("rnn_tanh", "rnn_relu")
    if method == "closed_form" and not elman:
        raise ValueError(f"method='closed_form' needs an Elman RNN (SpectralRNN), got {layer.mode}")
    if not isinstance(n_iterations, int) or n_iterations < 1:
        raise ValueError(f"n_iterations must be an int >= 1, got {n_iterations!r}")
    L = layer.num_layers
    if not isinstance(layer_index, int) or not -L <= layer_index < L:
        raise ValueError(f"layer_index must be an int in [-{L}, {L}), got {layer_index!r}")
    k = layer_index % L
    seq = _single_sequence(layer, x)  # (T, I)
    idx = _steps(steps, seq.shape[0])
    if method == "power" or not elman:
        return _jacobian_power(layer, seq, idx, n_iterations, k)
    return _jacobian_closed_form(layer, seq, idx, k)


def _jacobian_closed_form(layer: RecurrentLayer, seq: Tensor, idx: list[int], k: int) -> Tensor:
    with _preserved_buffers(layer), torch.no_grad(), record_hidden_states(layer) as rec:
        layer(seq)
        hs = torch.stack(rec.states()[k]).squeeze(1)  # (T, H)
        W = getattr(layer, f"weight_hh_l{k}").detach()  # (H, H)
    T = hs.shape[0]
    dphi = 1 - hs**2 if layer.mode == "rnn_tanh" else (hs > 0).to(hs.dtype)  # (T, H)
    P = torch.eye(W.shape[0], dtype=W.dtype, device=W.device)  # dh[T-1]/dh[T-1]
    norms = {T - 1: P.new_ones(())}
    for s in range(T - 1, min(idx), -1):
        P = P @ (dphi[s, :, None] * W)  # dh[T-1]/dh[s-1] = P_s diag(f'(a[s])) W
        if s - 1 in idx:
            norms[s - 1] = torch.linalg.matrix_norm(P, 2)
    return torch.stack([norms[i] for i in idx])


def _jacobian_power(
    layer: RecurrentLayer, seq: Tensor, idx: list[int], n_iterations: int, k: int
) -> Tensor:
    S = len(idx)
    xs = seq.unsqueeze(0 if layer.batch_first else 1).expand(*(
        (S, -1, -1) if layer.batch_first else (-1, S, -1)))  # fmt: skip
    with _preserved_buffers(layer), torch.enable_grad(), record_hidden_states(layer) as rec:
        # Make the graph exist even when every parameter is frozen.
        layer(xs.clone().requires_grad_(True))
        hs = rec.states()[k]  # T x (S, H)
        h_last = hs[-1]
        wanted = sorted(set(idx))
        inputs = [hs[i] for i in wanted]
        pos = [wanted.index(i) for i in idx]
        rows = torch.arange(S, device=h_last.device)

        def vjp(u: Tensor, create_graph: bool = False) -> Tensor:
            """Row b: u[b]^T dh[T-1]/dh[idx[b]] of copy b (copies are independent)."""
            g = torch.autograd.grad(h_last, inputs, u, retain_graph=True,
                                    create_graph=create_graph, allow_unused=True,
                                    materialize_grads=True)  # fmt: skip
            return torch.stack([g[p] for p in pos])[rows, rows]  # (S, H)

        w = torch.zeros_like(h_last, requires_grad=True)  # (S, H)
        wj = vjp(w, create_graph=True)  # linear in w: its derivative in w is J

        def jvp(v: Tensor) -> Tensor:
            return torch.autograd.grad(wj, w, v, retain_graph=True)[0]  # (S, H): J v

        gen = torch.Generator(device=h_last.device).manual_seed(0)
        v = torch.randn(h_last.shape, generator=gen, device=h_last.device, dtype=h_last.dtype)
        v = v / v.norm(dim=-1, keepdim=True)
        eps = torch.finfo(h_last.dtype).tiny
        sigma = h_last.new_zeros(S)
        for _ in range(n_iterations):
            u = jvp(v)
            u = u / u.norm(dim=-1, keepdim=True).clamp_min(eps)
            v = vjp(u).detach()  # J^T u
            sigma = v.norm(dim=-1)  # ||J^T u|| -> sigma_max
            v = v / sigma.unsqueeze(-1).clamp_min(eps)
    return sigma.detach()


# ---------------------------------------------------------------------------------- spectrum


def weight_spectrum(layer: nn.Module) -> dict[str, Tensor]:
    """Singular values of every gate block of every ``weight_hh_l{k}`` (constrained values).

    Args:
        layer: a ``SpectralRNN``, ``SpectralGRU`` or ``SpectralLSTM``.

    Returns:
        A dict of detached tensors (float32, or float64 for a float64 layer):

        * ``singular_values``: ``(num_layers, gates, H)``, descending, from
          :func:`torch.linalg.svdvals`;
        * ``sigma_max``: ``(num_layers, gates)``;
        * ``stable_rank``: ``(num_layers, gates)``, ``||W||_F^2 / ||W||_2^2``;
        * ``lipschitz_bound``: ``()``, ``prod_k max_g sigma_max[k, g]``. For an Elman RNN
          with a 1-Lipschitz nonlinearity each factor bounds the one-step Jacobian
          ``||dh_k[t]/dh_k[t-1]||_2`` of layer ``k`` (so ``||dh[T-1]/dh[t]|| <=
          bound**(T-1-t)`` for one layer), and the product bounds the gain of one step
          through the recurrent matrices of all layers composed. For a GRU/LSTM it bounds
          only the linear part (each gate's pre-activation), not the gated cell's Jacobian.

    Gate order is torch's: ``r, z, n`` (GRU), ``i, f, g, o`` (LSTM).

    >>> from seqnorm import SpectralRNN
    >>> spec = weight_spectrum(SpectralRNN(2, 4, constraint="spectral"))
    >>> tuple(spec["singular_values"].shape), round(float(spec["lipschitz_bound"]), 4)
    ((1, 1, 4), 1.0)
    """
    layer = _check_layer(layer)
    G = layer.gates
    svs, ranks = [], []
    with _preserved_buffers(layer), torch.no_grad():
        for k in range(layer.num_layers):
            W = getattr(layer, f"weight_hh_l{k}").detach()  # (G*H, H)
            svs.append(torch.linalg.svdvals(as_blocks(W, G).to(compute_dtype(W.dtype))))  # (G, H)
            ranks.append(stable_rank(W, blocks=G).to(svs[-1].dtype))  # (G,)
    s = torch.stack(svs)  # (L, G, H)
    smax = s[..., 0]  # (L, G)
    return {
        "singular_values": s,
        "sigma_max": smax,
        "stable_rank": torch.stack(ranks),
        "lipschitz_bound": smax.amax(dim=-1).prod(),
    }
