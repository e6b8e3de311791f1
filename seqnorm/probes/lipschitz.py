"""Lipschitz constants of feed-forward networks: a certified product bound and a local one.

* :func:`lipschitz_bound` -- ``L(f) <= prod_k L(layer_k)``: the product of every layer's
  Lipschitz constant (L2 norms in and out), each exact or a certified upper bound, from
  :func:`~seqnorm.probes.layer_lipschitz.layer_lipschitz` (the table of layers is there):
  Linear and Conv by their operator norms, activations by their true constants, pools,
  BatchNorm in eval. Anything it cannot bound raises ``ValueError`` naming the module
  (BatchNorm in training, LayerNorm, attention, unknown modules; recurrent layers: see
  :func:`~seqnorm.probes.spectrum.weight_spectrum` for their per-step bound, logged as
  ``probe/lipschitz_bound``).

  **Assumption**: the network is a chain, each layer feeding the next. Without
  ``input_shape`` only ``nn.Sequential`` containers (nested at will, with their own
  ``forward``) are accepted and their layers are taken in registration order; any other
  container is refused, since how it combines its children is unknown. With
  ``input_shape`` a forward pass on zeros is traced instead (any container): every call
  of a layer counts, and a net in which a layer's input is not the previous layer's output
  is refused (a skip connection or a functional op between layers, which the product
  cannot see); views and reshapes in between are fine (in-place ops between layers are
  not seen).

* :func:`local_lipschitz` -- ``max_i ||J_f(x_i)||_2`` over a batch: the largest stretch of
  an infinitesimal perturbation at the given inputs, by power iteration with
  Jacobian-vector and vector-Jacobian products. A lower bound on the global constant.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from ..constraints.conv import CONV_TYPES, spatial_dims, spatial_shape
from ..linalg import check_int, compute_dtype
from .common import jacobian_sigma_max, preserved_buffers
from .layer_lipschitz import BOUNDED_LAYERS, REFUSED_LAYERS, layer_lipschitz

__all__ = ["lipschitz_bound", "lipschitz_factors", "local_lipschitz"]


def _label(name: str, module: nn.Module) -> str:
    return f"{name or '<net>'} ({type(module).__name__})"


def _refuse(name: str, module: nn.Module, why: str) -> ValueError:
    return ValueError(f"lipschitz_bound cannot bound {_label(name, module)}: {why}")


def _factor(name: str, module: nn.Module, size: tuple[int, ...] | None) -> float:
    try:
        return layer_lipschitz(module, size)
    except ValueError as err:
        raise _refuse(name, module, str(err)) from None


#: Pools whose constant depends on their input size (given when traced).
_SIZED = (
    nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
)  # fmt: skip


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
        if isinstance(module, BOUNDED_LAYERS + REFUSED_LAYERS) or not children:
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
            size = spatial_shape(spatial, spatial_dims(module), module.in_channels)
        elif isinstance(module, _SIZED):
            size = spatial[-spatial_dims(module) :]
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
    check_int("n_iterations", n_iterations, minimum=1)
    B = x.shape[0]
    dt = compute_dtype(x.dtype) if x.is_floating_point() else torch.float32
    with preserved_buffers(net), _forked_rng(net), torch.enable_grad():
        xi = x.detach().to(dt).requires_grad_(True)
        y = net(xi)
        if not isinstance(y, Tensor) or y.shape[:1] != (B,):
            raise ValueError(f"net(x) must return a tensor (B, ...) with B={B}")

        def vjp(u: Tensor, create_graph: bool) -> Tensor:
            return torch.autograd.grad(y, xi, u, retain_graph=True, create_graph=create_graph,
                                       allow_unused=True, materialize_grads=True)[0]  # fmt: skip

        gen = torch.Generator(device="cpu").manual_seed(0)
        v = torch.randn(xi.shape, generator=gen, dtype=dt).to(xi.device)
        v = v / v.flatten(1).norm(dim=1).clamp_min(torch.finfo(dt).tiny).reshape(
            -1, *[1] * (v.dim() - 1))  # fmt: skip
        sigma = jacobian_sigma_max(vjp, y, v, n_iterations, tol)
    return sigma if per_sample else sigma.max()
