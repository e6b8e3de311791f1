"""Lipschitz constants of feed-forward networks: a certified product bound and a local one.

* :func:`lipschitz_bound` -- ``L(f) <= prod_k L(layer_k)``: the product of every layer's
  Lipschitz constant (L2 norms in and out), each one exact or a certified upper bound:

  ==============================  ==========================================================
  ``Linear``                      ``||W||_2`` (exact SVD of the weight the layer uses)
  ``Conv1d/2d/3d``                operator norm, certified bound of
                                  :func:`~seqnorm.constraints.conv_norm.conv_operator_norm`
                                  (at every input size, or at the traced size with
                                  ``input_shape``)
  ReLU, ReLU6, Tanh, Hardtanh,    1
  Softplus, Softsign, CELU,
  LogSigmoid, Tanhshrink,
  Softshrink, Identity, Flatten,
  Unflatten, Dropout (eval)
  LeakyReLU, ELU, PReLU           ``max(1, |slope|)``, ``max(1, |alpha|)``
  Sigmoid / Hardsigmoid           1/4 / 1/6
  Softmax                         1/2 (its Jacobian ``diag(p) - p p^T`` has norm <= 1/2)
  GELU                            ``Phi(sqrt 2) + sqrt 2 phi(sqrt 2) = 1.1289..`` (exact form;
                                  the tanh form, SiLU, Mish, SELU, Hardswish: max |f'|,
                                  computed)
  Dropout (training)              ``1 / (1 - p)`` (for any fixed mask)
  AvgPool                         its operator norm (a per-dimension Toeplitz bound; exact
                                  per-dimension matrices with ``input_shape``)
  MaxPool                         ``sqrt(c)``, ``c`` the most windows that share one input
                                  element (1 when windows do not overlap): exact, since a
                                  spike at a shared maximum moves ``c`` outputs
  BatchNorm (eval, running stats) ``max |gamma| / sqrt(running_var + eps)``
  ==============================  ==========================================================

  Anything else raises ``ValueError`` naming the module: BatchNorm in training mode (or
  without running statistics), LayerNorm/GroupNorm (not Lipschitz), attention, recurrent
  layers (see :func:`~seqnorm.probes.spectrum.weight_spectrum` for their per-step bound,
  logged as ``probe/lipschitz_bound``), discontinuous activations, unknown modules.

  **Assumption**: the network is a chain, each layer feeding the next. Without
  ``input_shape`` only ``nn.Sequential`` containers (nested at will, with their own
  ``forward``) are accepted and their layers are taken in registration order; any other
  container is refused, since how it combines its children is unknown. With
  ``input_shape`` a forward pass on zeros is traced instead (any container): every call
  of a layer counts, and a net in which a layer's input is not the previous layer's output
  is refused (a skip connection or a functional op between layers, which the product
  cannot see); views and reshapes in between are fine. Functional ops *inside* a layer
  module are that module's business: only the module types in the table are bounded.

* :func:`local_lipschitz` -- ``max_i ||J_f(x_i)||_2`` over a batch: the largest stretch of
  an infinitesimal perturbation at the given inputs, by power iteration with
  Jacobian-vector and vector-Jacobian products. A lower bound on the global constant.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from ..constraints.conv_norm import (
    CONV_TYPES,
    ConvGeometry,
    conv_operator_norm,
    spatial_shape,
)
from ..layers import RecurrentLayer
from ..linalg import compute_dtype
from .common import preserved_buffers

__all__ = ["GELU_LIPSCHITZ", "lipschitz_bound", "lipschitz_factors", "local_lipschitz"]

_SQRT2 = math.sqrt(2.0)
#: Lipschitz constant of the exact GELU ``x Phi(x)``: ``f' = Phi + x phi`` peaks at ``sqrt 2``.
GELU_LIPSCHITZ = 0.5 * (1 + math.erf(1.0)) + _SQRT2 * math.exp(-1.0) / math.sqrt(2 * math.pi)


@functools.cache
def _max_abs_derivative(name: str) -> float:
    """``max |f'|`` of a smooth scalar activation, to ~1e-12, in float64.

    A grid over ``[-20, 20]`` (outside, every function here has ``|f'|`` tending
    monotonically to 0 or 1) locates the peak; golden-section search refines it.
    """
    fn: Callable[[Tensor], Tensor] = {
        "gelu_tanh": lambda x: nn.functional.gelu(x, approximate="tanh"),
        "silu": nn.functional.silu,
        "mish": nn.functional.mish,
        "selu": nn.functional.selu,
        "hardswish": nn.functional.hardswish,
    }[name]

    def deriv(x: Tensor) -> Tensor:
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(fn(x).sum(), x)
        return g.abs()

    x = torch.linspace(-20, 20, 400_001, dtype=torch.float64)
    d = deriv(x)
    i = int(d.argmax())
    lo, hi = float(x[max(i - 1, 0)]), float(x[min(i + 1, len(x) - 1)])
    best = float(d[i])
    r = (math.sqrt(5) - 1) / 2
    for _ in range(100):
        a, b = hi - r * (hi - lo), lo + r * (hi - lo)
        fa, fb = (float(v) for v in deriv(torch.tensor([a, b], dtype=torch.float64)))
        best = max(best, fa, fb)
        if fa >= fb:
            hi = b
        else:
            lo = a
    return best


#: Activations with a constant factor: type -> Lipschitz constant.
_CONSTANT: dict[type[nn.Module], float] = {
    nn.ReLU: 1.0,
    nn.ReLU6: 1.0,
    nn.Tanh: 1.0,
    nn.Hardtanh: 1.0,
    nn.Softplus: 1.0,
    nn.Softsign: 1.0,
    nn.CELU: 1.0,
    nn.LogSigmoid: 1.0,
    nn.Tanhshrink: 1.0,
    nn.Softshrink: 1.0,
    nn.Identity: 1.0,
    nn.Flatten: 1.0,
    nn.Unflatten: 1.0,
    nn.Sigmoid: 0.25,
    nn.Hardsigmoid: 1.0 / 6.0,
    nn.Softmax: 0.5,
}

#: Smooth activations whose constant is ``max |f'|``, computed once.
_COMPUTED: dict[type[nn.Module], str] = {
    nn.SiLU: "silu",
    nn.Mish: "mish",
    nn.SELU: "selu",
    nn.Hardswish: "hardswish",
}

_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)
_AVG_POOL = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
_MAX_POOL = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
_ADAPTIVE_AVG = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)
_ADAPTIVE_MAX = (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)
_BATCH_NORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)

#: Modules with children that are layers of their own, not containers to walk through.
_KNOWN = (
    nn.Linear,
    *CONV_TYPES,
    *_CONSTANT,
    *_COMPUTED,
    nn.GELU,
    nn.LeakyReLU,
    nn.ELU,
    nn.PReLU,
    *_DROPOUT,
    *_AVG_POOL,
    *_MAX_POOL,
    *_ADAPTIVE_AVG,
    *_ADAPTIVE_MAX,
    *_BATCH_NORM,
)
#: Layers that are refused even when they have children (a recurrent layer's
#: parametrizations, attention's projections).
_REFUSED = (
    RecurrentLayer,
    nn.RNNBase,
    nn.RNNCellBase,
    nn.MultiheadAttention,
    nn.Transformer,
    nn.TransformerEncoder,
    nn.TransformerDecoder,
    nn.TransformerEncoderLayer,
    nn.TransformerDecoderLayer,
)


def _tuple(v: int | Sequence[int], d: int) -> tuple[int, ...]:
    return tuple(v) if isinstance(v, (tuple, list)) else (int(v),) * d


def _dims(module: nn.Module) -> int:
    name = type(module).__name__
    return int(name[-2]) if name[-2:] in ("1d", "2d", "3d") else 1


def _label(name: str, module: nn.Module) -> str:
    return f"{name or '<net>'} ({type(module).__name__})"


def _refuse(name: str, module: nn.Module, why: str) -> ValueError:
    return ValueError(f"lipschitz_bound cannot bound {_label(name, module)}: {why}")


def _linear(module: nn.Linear) -> float:
    W = module.weight.detach()
    return float(torch.linalg.matrix_norm(W.to(torch.float64), 2))


def _conv(module: nn.Module, size: tuple[int, ...] | None) -> float:
    g = ConvGeometry.of(module)
    W = module.weight.detach()
    return float(conv_operator_norm(W, g, size))


def _pool_1d_norm(
    k: int, s: int, p: int, ceil_mode: bool, include_pad: bool, n: int | None
) -> float:
    """Operator norm of 1-D average pooling (one dimension of a separable pool)."""
    if n is not None:
        eye = torch.eye(n, dtype=torch.float64).unsqueeze(1)  # (n, 1, n): basis inputs
        A = nn.functional.avg_pool1d(eye, k, s, p, ceil_mode, include_pad)[:, 0]  # (n, out)
        return float(torch.linalg.matrix_norm(A, 2))
    if ceil_mode:
        raise ValueError("ceil_mode=True needs input_shape")
    # Zero-padded convolution with kernel 1/k; without the padding in the count, every
    # weight is at most 1/(k - p) (entrywise larger nonnegative operator, larger norm).
    weight = torch.full((1, 1, k), 1.0 / (k if include_pad or p == 0 else k - p))
    geom = ConvGeometry(1, (s,), ((p, p),), (1,), 1, "zeros")
    return float(conv_operator_norm(weight.double(), geom))


def _avg_pool(module: nn.Module, size: tuple[int, ...] | None) -> float:
    d = _dims(module)
    if getattr(module, "divisor_override", None):
        raise ValueError("divisor_override is not supported")
    k, s = _tuple(module.kernel_size, d), _tuple(module.stride or module.kernel_size, d)
    p = _tuple(module.padding, d)
    out = 1.0
    for j in range(d):
        n = None if size is None else size[j]
        out *= _pool_1d_norm(k[j], s[j], p[j], module.ceil_mode, module.count_include_pad, n)
    return out


def _adaptive_avg(module: nn.Module, size: tuple[int, ...] | None) -> float:
    if size is None:
        raise ValueError("adaptive pooling needs input_shape")
    d = _dims(module)
    targets = _tuple(module.output_size, d)
    out = 1.0
    for n, o in zip(size, targets, strict=True):
        eye = torch.eye(n, dtype=torch.float64).unsqueeze(1)  # (n, 1, n)
        A = nn.functional.adaptive_avg_pool1d(eye, n if o is None else o)[:, 0]  # (n, out)
        out *= float(torch.linalg.matrix_norm(A, 2))
    return out


def _max_cover(k: int, s: int, dil: int) -> int:
    """Most windows (kernel ``k``, stride ``s``, dilation ``dil``) sharing one position."""
    return max(sum(1 for j in range(k) if (dil * j - r) % s == 0) for r in range(s))


def _max_pool(module: nn.Module) -> float:
    if module.return_indices:
        raise ValueError("return_indices=True returns a tuple, not a tensor")
    d = _dims(module)
    k, s = _tuple(module.kernel_size, d), _tuple(module.stride or module.kernel_size, d)
    dil = _tuple(module.dilation, d)
    return math.sqrt(math.prod(_max_cover(k[j], s[j], dil[j]) for j in range(d)))


def _adaptive_max(module: nn.Module, size: tuple[int, ...] | None) -> float:
    if size is None:
        raise ValueError("adaptive pooling needs input_shape")
    if module.return_indices:
        raise ValueError("return_indices=True returns a tuple, not a tensor")
    d = _dims(module)
    cover = 1
    for n, o in zip(size, _tuple(module.output_size, d), strict=True):
        o = n if o is None else o
        counts = [0] * n
        for i in range(o):  # torch's windows: [floor(i n / o), ceil((i + 1) n / o))
            for t in range((i * n) // o, -((-(i + 1) * n) // o)):
                counts[t] += 1
        cover *= max(counts)
    return math.sqrt(cover)


def _batch_norm(module: nn.Module) -> float:
    if module.training:
        raise ValueError("in training mode it normalises by batch statistics (not Lipschitz); "
                         "call net.eval()")  # fmt: skip
    if module.running_var is None:
        raise ValueError("without running statistics it normalises by batch statistics")
    scale = (module.running_var.detach().double() + module.eps).rsqrt()
    if module.weight is not None:
        scale = scale * module.weight.detach().double().abs()
    return float(scale.max())


def _factor(name: str, module: nn.Module, size: tuple[int, ...] | None) -> float:
    """Lipschitz constant of one layer (``size``: its input's spatial shape, if traced)."""
    try:
        if isinstance(module, nn.Linear):
            return _linear(module)
        if isinstance(module, CONV_TYPES):
            return _conv(module, size)
        if type(module) in _CONSTANT:
            return _CONSTANT[type(module)]
        if type(module) in _COMPUTED:
            return _max_abs_derivative(_COMPUTED[type(module)])
        if isinstance(module, nn.GELU):
            if module.approximate == "tanh":
                return _max_abs_derivative("gelu_tanh")
            return GELU_LIPSCHITZ
        if isinstance(module, nn.LeakyReLU):
            return max(1.0, abs(module.negative_slope))
        if isinstance(module, nn.ELU):
            return max(1.0, abs(module.alpha))
        if isinstance(module, nn.PReLU):
            return max(1.0, float(module.weight.detach().abs().max()))
        if isinstance(module, _DROPOUT):
            return 1.0 / (1.0 - module.p) if module.training and module.p < 1 else 1.0
        if isinstance(module, _AVG_POOL):
            return _avg_pool(module, size)
        if isinstance(module, _ADAPTIVE_AVG):
            return _adaptive_avg(module, size)
        if isinstance(module, _MAX_POOL):
            return _max_pool(module)
        if isinstance(module, _ADAPTIVE_MAX):
            return _adaptive_max(module, size)
        if isinstance(module, _BATCH_NORM):
            return _batch_norm(module)
    except ValueError as err:
        raise _refuse(name, module, str(err)) from None
    if isinstance(module, RecurrentLayer):
        raise _refuse(name, module, "a recurrent layer is not a feed-forward layer (its "
                      "per-step bound is weight_spectrum()['lipschitz_bound'])")  # fmt: skip
    if isinstance(module, (nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)) or isinstance(
        module, (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)
    ):
        raise _refuse(name, module, "normalising by the input's own statistics is not Lipschitz")
    if isinstance(module, (nn.Hardshrink, nn.Threshold)):
        raise _refuse(name, module, "it is discontinuous")
    raise _refuse(name, module, "no Lipschitz constant is known for this module type")


def _is_sequential(module: nn.Module) -> bool:
    return isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward


def _units(net: nn.Module, traced: bool) -> list[tuple[str, nn.Module]]:
    """The layers of ``net`` in registration order, walking through containers.

    Untraced, only ``nn.Sequential`` (with its own ``forward``) is walked through: the order
    in which any other module calls its children is unknown.
    """
    out: list[tuple[str, nn.Module]] = []

    def walk(prefix: str, module: nn.Module) -> None:
        children = list(module.named_children())
        if isinstance(module, _KNOWN + _REFUSED) or not children:
            out.append((prefix, module))
            return
        if list(module.parameters(recurse=False)):
            raise _refuse(prefix, module, "it holds parameters of its own next to its "
                          "children, so its computation is unknown")  # fmt: skip
        if not traced and not _is_sequential(module):
            raise _refuse(prefix, module, "how it combines its children is unknown: pass "
                          "input_shape= to trace and check it, or use nn.Sequential")  # fmt: skip
        for child_name, child in children:
            walk(f"{prefix}.{child_name}" if prefix else child_name, child)

    walk("", net)
    return out


@contextmanager
def _forked_rng(net: nn.Module) -> Iterator[None]:
    devices = sorted({p.device for p in net.parameters() if p.device.type == "cuda"}, key=str)
    with torch.random.fork_rng(devices=devices):
        yield


def _traced(
    net: nn.Module, input_shape: Sequence[int]
) -> list[tuple[str, nn.Module, tuple[int, ...]]]:
    """Every layer call of a forward pass on zeros ``(1, *input_shape)``, with input shapes.

    Raises:
        ValueError: if a layer's input is not the previous layer's output (or a view of
            it), or the first layer does not receive the network's input.
    """
    units = _units(net, traced=True)
    calls: list[tuple[str, nn.Module, Tensor, Tensor]] = []
    handles = []
    for name, module in units:

        def hook(mod: nn.Module, args: tuple, out: object, name: str = name) -> None:
            if not args or not isinstance(args[0], Tensor) or not isinstance(out, Tensor):
                raise _refuse(name, mod, "it does not map one tensor to one tensor")
            calls.append((name, mod, args[0], out))

        handles.append(module.register_forward_hook(hook))
    param = next(net.parameters(), None)
    kw = {"device": param.device, "dtype": param.dtype} if param is not None else {}
    if param is not None and not param.is_floating_point():
        kw = {"device": param.device}
    x = torch.zeros(1, *input_shape, **kw)
    try:
        with torch.no_grad(), preserved_buffers(net), _forked_rng(net):
            y = net(x)
    finally:
        for h in handles:
            h.remove()

    def same(a: Tensor, b: Tensor) -> bool:  # b is a or a view/reshape of it
        return a is b or (
            a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()
            and a.numel() == b.numel()
        )

    prev = x
    for name, module, inp, out in calls:
        if not same(prev, inp):
            raise ValueError(
                f"lipschitz_bound: the input of {_label(name, module)} is not the output of "
                f"the layer before it: something the bound cannot see happens in between (a "
                f"skip connection, a functional op); use modules in a chain"
            )
        prev = out
    if not isinstance(y, Tensor) or not same(prev, y):
        raise ValueError("lipschitz_bound: the network's output is not its last layer's output")
    return [(name, module, tuple(inp.shape[2:])) for name, module, inp, _ in calls]


def lipschitz_factors(
    net: nn.Module, input_shape: Sequence[int] | None = None
) -> list[tuple[str, float]]:
    """Each layer's Lipschitz constant, in the order the layers run (see the module docs).

    Args:
        net: a feed-forward network (a chain of layers).
        input_shape: one sample's shape, without the batch dimension (``(1, 28, 28)``).
            ``None``: convolutions get bounds valid at every input size, layers in
            registration order. Given: a forward pass on zeros is traced; convolutions and
            pools get the bound at their actual input size.

    Returns:
        ``(qualified name, constant)`` per layer call.

    Raises:
        ValueError: a layer without a bound, or a network that is not a chain.
    """
    if not isinstance(net, nn.Module):
        raise TypeError(f"net must be a torch.nn.Module, got {type(net).__name__}")
    if input_shape is None:
        return [(name, _factor(name, m, None)) for name, m in _units(net, traced=False)]
    shape = tuple(input_shape)
    if not shape or not all(isinstance(n, int) and n > 0 for n in shape):
        raise ValueError(
            f"input_shape must be a non-empty tuple of positive ints, got {input_shape!r}"
        )
    out = []
    for name, module, spatial in _traced(net, shape):
        size = None
        if isinstance(module, CONV_TYPES):
            size = spatial_shape(spatial, _dims(module), module.in_channels)
        elif isinstance(module, _AVG_POOL + _ADAPTIVE_AVG + _ADAPTIVE_MAX):
            size = spatial[-_dims(module) :]
        out.append((name, _factor(name, module, size)))
    return out


def lipschitz_bound(net: nn.Module, input_shape: Sequence[int] | None = None) -> Tensor:
    """Certified upper bound on the L2 Lipschitz constant of a feed-forward network.

    The product of :func:`lipschitz_factors` (see the module docs for each layer's
    constant and the chain assumption). For a network whose every Linear and Conv is
    constrained ``spectral`` and whose activations are 1-Lipschitz, it is at most 1.

    Args:
        net: a chain of layers (``nn.Sequential``, nested).
        input_shape: one sample's shape without the batch dimension, or ``None`` (bounds
            valid at every input size; convolutions' bounds then do not need it).

    Returns:
        A 0-dim float64 tensor.

    >>> net = nn.Sequential(nn.Linear(3, 4), nn.Sigmoid(), nn.Linear(4, 2))
    >>> s = [torch.linalg.matrix_norm(net[i].weight.detach().double(), 2) for i in (0, 2)]
    >>> bool(torch.isclose(lipschitz_bound(net), s[0] * 0.25 * s[1]))
    True
    """
    factors = lipschitz_factors(net, input_shape)
    return torch.tensor(math.prod(f for _, f in factors), dtype=torch.float64)


def local_lipschitz(
    net: nn.Module,
    x: Tensor,
    n_iterations: int = 100,
    tol: float = 1e-7,
    per_sample: bool = False,
) -> Tensor:
    """``max_i ||J_f(x_i)||_2``: the largest local stretch of ``net`` at the inputs ``x``.

    ``J_f(x_i)`` is the Jacobian of one sample's output with respect to that sample's input
    (flattened). Power iteration on ``J^T J`` per sample, with vector-Jacobian products by
    :func:`torch.autograd.grad` and Jacobian-vector products by the double-backward trick;
    it stops when no sample's estimate moves by more than ``tol`` (relative). The estimate
    ``||J^T u||`` never exceeds the true norm and converges to it. The samples must not
    interact (eval mode: no batch statistics). Buffers and the global RNG are left as
    found.

    Args:
        net: any differentiable module taking the batch ``x``.
        x: inputs ``(B, ...)``.
        n_iterations: most power iterations.
        tol: relative change that counts as converged.
        per_sample: return ``(B,)`` instead of the max.

    Returns:
        0-dim (or ``(B,)``) detached tensor.
    """
    if not isinstance(x, Tensor) or x.dim() < 1 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty batch tensor (B, ...), got {x!r:.60}")
    if not isinstance(n_iterations, int) or n_iterations < 1:
        raise ValueError(f"n_iterations must be an int >= 1, got {n_iterations!r}")
    B = x.shape[0]
    dt = compute_dtype(x.dtype) if x.is_floating_point() else torch.float32
    with preserved_buffers(net), _forked_rng(net), torch.enable_grad():
        xi = x.detach().to(dt).requires_grad_(True)
        y = net(xi)
        if not isinstance(y, Tensor) or y.shape[:1] != (B,):
            raise ValueError(f"net(x) must return a tensor (B, ...) with B={B}")
        w = torch.zeros_like(y, requires_grad=True)
        (jtw,) = torch.autograd.grad(y, xi, w, create_graph=True, allow_unused=True,
                                     materialize_grads=True)  # fmt: skip
        if not jtw.requires_grad:  # the output does not depend on the input
            return y.new_zeros(()) if not per_sample else y.new_zeros(B)
        eps = torch.finfo(dt).tiny

        def unit(t: Tensor) -> Tensor:
            return t / t.flatten(1).norm(dim=1).clamp_min(eps).reshape(-1, *[1] * (t.dim() - 1))

        gen = torch.Generator(device="cpu").manual_seed(0)
        v = unit(torch.randn(xi.shape, generator=gen, dtype=dt).to(xi.device))
        sigma = y.new_zeros(B, dtype=dt)
        for _ in range(n_iterations):
            (u,) = torch.autograd.grad(jtw, w, v, retain_graph=True)  # J v, (B, out..)
            (g,) = torch.autograd.grad(y, xi, unit(u), retain_graph=True)  # J^T u
            new = g.flatten(1).norm(dim=1)  # (B,)
            done = bool(((new - sigma).abs() <= tol * new.clamp_min(eps)).all())
            sigma, v = new, unit(g).detach()
            if done:
                break
    sigma = sigma.detach()
    return sigma if per_sample else sigma.max()
