"""``spectral``, ``scaled`` and ``bound`` for convolutions: caps on the operator norm.

The cap applies to the convolution's operator norm (the most it stretches an input, with
its padding, stride, dilation and groups), through the certified upper bound of
:func:`~seqnorm.constraints.conv.operator_norm.conv_operator_norm`. Because that ``sigma``
is an upper bound recomputed from the current kernel at every forward (training and eval),
the true operator norm never exceeds the cap. The bound is tight: for ``spectral`` the true
norm ends within a few percent of 1 on ordinary layers and inputs (measured in ``tests/``
and the README; the gap grows for tiny inputs with large dilation).

``norm="reshaped"`` divides by the largest singular value of the kernel reshaped to a
matrix instead (``torch.nn.utils.spectral_norm``'s choice). That is **not** the operator
norm and caps nothing: ``Conv2d(3, 16, 3, padding=1)`` normalised that way stretches a
16x16 input by about 2.

The search for the maximising frequency is skipped while the kernel is unchanged
(compared by value), so repeated eval forwards (an attack, a validation loop) cost one
small complex matrix product each.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..bound import BoundCap
from ..cap import Cap
from ..scaled import ScaledCap
from ..spectral import SpectralCap
from .geometry import ConvGeometry, spatial_shape
from .operator_norm import conv_operator_norm, reshaped_kernel_norm, symbol_peak

__all__ = ["CONV_NORMS", "ConvBound", "ConvNorm", "ConvScaled", "ConvSpectral"]

#: Accepted values of the ``norm`` option.
CONV_NORMS = ("operator", "reshaped")


class ConvNorm(Cap):
    """The convolution source of the caps ``spectral``, ``scaled`` and ``bound``: ``sigma`` of
    the whole kernel. The stored tensor is the raw kernel.

    Args:
        geometry: the convolution's geometry (:meth:`ConvGeometry.of`).
        norm: ``"operator"`` (default: certified bound on the operator norm) or
            ``"reshaped"`` (the reshaped kernel's largest singular value; not a cap on
            the operator norm).
        input_shape: ``None`` (default): a bound valid for every input size. Else the
            input's shape (spatial sizes, optionally preceded by channels and batch): the
            tighter, cheaper bound at that size, which holds only for inputs of that size.
        slack: size-free bound only: its certified grid correction is at most this.
        eps: floor on ``sigma``.
    """

    def __init__(
        self,
        geometry: ConvGeometry,
        *,
        norm: str = "operator",
        input_shape: Sequence[int] | None = None,
        slack: float = 0.01,
        eps: float = 1e-12,
    ) -> None:
        super().__init__()
        if not isinstance(geometry, ConvGeometry):
            raise TypeError(f"geometry must be a ConvGeometry, got {type(geometry).__name__}")
        if norm not in CONV_NORMS:
            raise ValueError(f"norm must be one of {CONV_NORMS}, got {norm!r}")
        if not (isinstance(slack, (int, float)) and 0 < slack < 1):
            raise ValueError(f"slack must be in the open interval (0, 1), got {slack!r}")
        if not (isinstance(eps, (int, float)) and eps > 0):
            raise ValueError(f"eps must be a positive number, got {eps!r}")
        if norm == "reshaped" and input_shape is not None:
            raise ValueError("input_shape applies to norm='operator' only, got norm='reshaped'")
        self.geometry = geometry
        self.norm = norm
        self.input_shape = None if input_shape is None else tuple(input_shape)
        self.slack = float(slack)
        self.eps = float(eps)
        self._last: Tensor | None = None  # the kernel the cached peak belongs to
        self._peak: tuple[int, tuple[float, ...]] | None = None

    def check(self, W: Tensor) -> None:
        """Fail early, at registration, on a kernel or input shape without a tight bound."""
        g = self.geometry
        size = None
        if self.input_shape is not None:
            size = spatial_shape(self.input_shape, g.dims, W.shape[1] * g.groups)
        strided = any(s > 1 for s in g.stride)
        if self.norm == "operator" and g.padding_mode == "circular" and strided:
            if size is None or any(n % s for n, s in zip(size, g.stride, strict=True)):
                raise ValueError(
                    f"circular padding with stride {g.stride} has a tight bound only at an "
                    f"input_shape= whose sizes the stride divides, got input_shape="
                    f"{self.input_shape}"
                )
        if self.norm == "operator" and W.device.type != "meta":
            with torch.no_grad():
                conv_operator_norm(W, self.geometry, self.input_shape, self.slack)

    def sigma(self, W: Tensor) -> Tensor:
        """The norm the constraint divides by, 0-dim, differentiable.

        Args:
            W: the stored kernel ``(c_out, c_in / groups, k..)``.
        """
        if W.device.type == "meta":
            return W.new_ones(())
        if self.norm == "reshaped":
            return reshaped_kernel_norm(W).clamp_min(self.eps)
        with torch.no_grad():
            fresh = self._last is None or not (
                self._last.shape == W.shape
                and self._last.dtype == W.dtype
                and self._last.device == W.device
                and torch.equal(self._last, W)
            )
            if fresh:
                self._peak = symbol_peak(W, self.geometry, self.input_shape, self.slack)
                self._last = W.detach().clone()
        s = conv_operator_norm(W, self.geometry, self.input_shape, self.slack, peak=self._peak)
        return s.clamp_min(self.eps)

    def sigma_shape(self) -> tuple[int, ...]:
        """One sigma for the whole kernel."""
        return ()

    def scale(self, W: Tensor, factor: Tensor) -> Tensor:
        return W * factor.to(W.dtype)

    @torch.no_grad()
    def measure(self, W: Tensor) -> Tensor:
        """The certified bound on the operator norm (``norm="reshaped"``: the reshaped norm)."""
        if self.norm == "reshaped":
            return reshaped_kernel_norm(W)
        return conv_operator_norm(W, self.geometry, self.input_shape, self.slack)

    def extra_repr(self) -> str:
        g = self.geometry
        s = f"norm={self.norm!r}, stride={g.stride}, padding={g.padding}, dilation={g.dilation}"
        s += f", groups={g.groups}, padding_mode={g.padding_mode!r}"
        if self.input_shape is not None:
            s += f", input_shape={self.input_shape}"
        return s


class ConvSpectral(SpectralCap, ConvNorm):
    """``W / sigma(W)``: the convolution's operator norm is at most 1 (and close to it).

    Args: as :class:`ConvNorm`.
    """


class ConvBound(BoundCap, ConvNorm):
    """``W / max(1, sigma(W) / gamma)``: shrinks only when the bound exceeds ``gamma``.

    Args:
        geometry: the convolution's geometry.
        gamma: the cap on the operator norm.
        norm, input_shape, slack, eps: as :class:`ConvNorm`.
    """


class ConvScaled(ScaledCap, ConvNorm):
    """``gamma * W / sigma(W)`` with a learnable ``gamma`` in ``[gamma_min, gamma_max]``.

    Args:
        geometry: the convolution's geometry.
        gamma_min: smallest scale.
        gamma_max: largest scale (the cap).
        norm, input_shape, slack, eps: as :class:`ConvNorm`.
    """
