"""Token-level kernels for RLHF: log-probabilities, entropy and exact KL over the vocabulary.

Every stage computes per-token log-probabilities from logits [B, T, V]: the SFT loss, the
rollout log-probs, the frozen reference model's log-probs for the KL penalty, and every PPO
minibatch. This package gives one entry point per quantity and picks the implementation:

    token_logprobs(logits, labels, ...)                 -> [B, T] float32 (and entropy)
    kl_divergence(logits, ref_logits, ...)              -> [B, T] float32 exact KL(p || q)
    fused_linear_token_logprobs(hidden, weight, labels) -> [B, T] float32, logits never whole

Backends: Triton kernels (`logprobs.py`, `kl.py`) for CUDA tensors, the PyTorch reference
(`reference.py`) for everything else. The environment variable PLUS_KERNELS=reference or
PLUS_KERNELS=triton forces one (unset or "auto": by device); forcing Triton on CPU tensors needs Triton's interpreter
(TRITON_INTERPRET=1 set before the kernels are first imported). Triton itself is imported
only when a Triton kernel is about to run, so this package imports on any machine.

The SFT loss, for example, is the negative mean log-probability of the target tokens:

    labels = input_ids[:, 1:].masked_fill(loss_mask[:, 1:] == 0, -100)   # prompt/pad ignored
    logprobs = token_logprobs(logits[:, :-1], labels)                     # [B, T-1]
    loss = -logprobs.sum() / (labels != -100).sum()

(`logits[:, :-1]` is read in place by the Triton kernels, not copied.)
"""

import os
from types import SimpleNamespace

import torch

from kernels import reference
from kernels.fused_linear import chunked_linear_logprobs

__all__ = ["KernelInputError", "backend_name", "fused_linear_token_logprobs", "kl_divergence", "token_logprobs"]

BACKEND_ENV = "PLUS_KERNELS"
_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


class KernelInputError(ValueError):
    """A kernel was called with arguments it cannot handle, or its backend is unavailable."""


def backend_name(device: torch.device) -> str:
    """'triton' or 'reference': the implementation used for tensors on `device`."""
    forced = os.environ.get(BACKEND_ENV, "").strip().lower()
    if forced in ("", "auto"):
        return "triton" if device.type == "cuda" else "reference"
    if forced not in ("reference", "triton"):
        raise KernelInputError(f"{BACKEND_ENV}={forced!r}: expected 'reference', 'triton' or unset")
    return forced


def _backend(device: torch.device) -> SimpleNamespace:
    """The ops for tensors on `device`, under the same names for both backends."""
    if backend_name(device) == "reference":
        return SimpleNamespace(token_logprobs=reference.token_logprobs, kl_divergence=reference.kl_divergence)
    try:
        from kernels import kl, logprobs  # the first use imports triton
    except ImportError as err:
        raise KernelInputError(
            f"the Triton kernels need the `triton` package ({err}); set {BACKEND_ENV}=reference to use PyTorch"
        ) from err
    if device.type != "cuda" and not logprobs.kernels_interpreted():
        raise KernelInputError(
            f"{BACKEND_ENV}=triton with {device.type} tensors needs Triton's interpreter: set TRITON_INTERPRET=1 "
            f"before the kernels are first imported, or use CUDA tensors, or {BACKEND_ENV}=reference"
        )
    return SimpleNamespace(token_logprobs=logprobs.token_logprobs, kl_divergence=kl.kl_divergence)


def token_logprobs(
    logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 1.0,
    ignore_index: int = -100,
    return_entropy: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """log softmax(logits / temperature) at `labels`, in float32, without a float32 [N, V] copy.

    logits: [N, V] or [B, T, V], float32/float16/bfloat16 (any strides).
    labels: [N] or [B, T] integer token ids; `ignore_index` marks positions to skip, which
        get logprob 0 (and entropy 0) and pass no gradient back.
    Returns logprobs [N] or [B, T]; with `return_entropy`, also the entropy of
    softmax(logits / temperature) per position. Both are differentiable w.r.t. `logits`
    (the gradient has the logits' dtype).
    """
    _check_logits("token_logprobs", "logits", logits)
    _check_temperature("token_logprobs", temperature)
    _check_labels("token_logprobs", labels, logits.shape[:-1], logits.device, logits.shape[-1], ignore_index)
    return _backend(logits.device).token_logprobs(logits, labels, temperature, ignore_index, return_entropy)


def kl_divergence(
    logits: torch.Tensor,
    ref_logits: torch.Tensor,
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Exact KL(p || q) per position, p = softmax(logits / T), q = softmax(ref_logits / T).

    logits, ref_logits: [N, V] or [B, T, V] of the same shape (dtypes may differ).
    mask: optional [N] or [B, T]; positions where it is 0 get KL 0 and no gradient.
    Returns float32 [N] or [B, T], differentiable w.r.t. `logits`; `ref_logits` is treated
    as a constant (the frozen reference model).
    """
    _check_logits("kl_divergence", "logits", logits)
    _check_logits("kl_divergence", "ref_logits", ref_logits)
    if ref_logits.shape != logits.shape or ref_logits.device != logits.device:
        raise KernelInputError(
            f"kl_divergence: ref_logits {_describe(ref_logits)} must match logits {_describe(logits)}"
        )
    _check_temperature("kl_divergence", temperature)
    if mask is not None and (mask.shape != logits.shape[:-1] or mask.device != logits.device):
        raise KernelInputError(
            f"kl_divergence: mask {_describe(mask)} must have shape {list(logits.shape[:-1])} on {logits.device}"
        )
    return _backend(logits.device).kl_divergence(logits, ref_logits, temperature, mask)


def fused_linear_token_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 1.0,
    ignore_index: int = -100,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """`token_logprobs(hidden @ weight.T, labels, ...)` computed `chunk_size` tokens at a time.

    hidden: [N, D] or [B, T, D]; weight: [V, D] (the LM head, no bias).
    labels: [N] or [B, T]; `ignore_index` positions get 0, no gradient, and no logits at all.
    Returns float32 [N] or [B, T], differentiable w.r.t. `hidden` and `weight` (each
    gradient in its input's dtype). At most `chunk_size` rows of logits (and of their
    gradient) exist at any time. The matmul runs in autocast's dtype where autocast is on
    for the tensors' device, else in hidden's dtype (kernels/fused_linear.py).
    """
    if not isinstance(hidden, torch.Tensor) or hidden.dim() not in (2, 3) or hidden.dtype not in _FLOAT_DTYPES:
        raise KernelInputError(
            f"fused_linear_token_logprobs: hidden must be a float32/float16/bfloat16 [N, D] or [B, T, D] "
            f"tensor, got {_describe(hidden)}"
        )
    if (
        not isinstance(weight, torch.Tensor)
        or weight.dim() != 2
        or weight.shape[1] != hidden.shape[-1]
        or weight.dtype not in _FLOAT_DTYPES
        or weight.device != hidden.device
        or weight.shape[0] == 0
    ):
        raise KernelInputError(
            f"fused_linear_token_logprobs: weight must be a float [V, {hidden.shape[-1]}] tensor on "
            f"{hidden.device} like hidden, got {_describe(weight)}"
        )
    _check_temperature("fused_linear_token_logprobs", temperature)
    _check_labels(
        "fused_linear_token_logprobs", labels, hidden.shape[:-1], hidden.device, weight.shape[0], ignore_index
    )
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0:
        raise KernelInputError(f"fused_linear_token_logprobs: chunk_size must be a positive int, got {chunk_size!r}")
    row_logprobs = _backend(hidden.device).token_logprobs
    return chunked_linear_logprobs(hidden, weight, labels, temperature, ignore_index, chunk_size, row_logprobs)


def _describe(x: object) -> str:
    if isinstance(x, torch.Tensor):
        return f"{list(x.shape)} {x.dtype} on {x.device}"
    return type(x).__name__


def _check_logits(op: str, name: str, logits: torch.Tensor) -> None:
    if (
        not isinstance(logits, torch.Tensor)
        or logits.dim() not in (2, 3)
        or logits.dtype not in _FLOAT_DTYPES
        or logits.shape[-1] == 0
    ):
        raise KernelInputError(
            f"{op}: {name} must be a float32/float16/bfloat16 [N, V] or [B, T, V] tensor with V > 0, "
            f"got {_describe(logits)}"
        )


def _check_temperature(op: str, temperature: float) -> None:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 < temperature < float("inf"):
        raise KernelInputError(f"{op}: temperature must be a positive finite number, got {temperature!r}")


def _check_labels(
    op: str, labels: torch.Tensor, shape: torch.Size, device: torch.device, vocab: int, ignore_index: int
) -> None:
    if (
        not isinstance(labels, torch.Tensor)
        or labels.dtype not in (torch.int64, torch.int32)
        or labels.shape != shape
        or labels.device != device
    ):
        raise KernelInputError(
            f"{op}: labels must be int64/int32 token ids of shape {list(shape)} on {device}, got {_describe(labels)}"
        )
    out_of_range = (labels != ignore_index) & ((labels < 0) | (labels >= vocab))
    if out_of_range.any():  # one host sync; a bad id would otherwise read outside the row
        bad = labels[out_of_range][0].item()
        raise KernelInputError(
            f"{op}: label {bad} is outside the vocabulary [0, {vocab}) and is not ignore_index={ignore_index}"
        )
