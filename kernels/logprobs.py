"""Triton kernels: log-probability of the label token (and entropy), forward and backward.

Token log-probabilities are computed for every SFT step, every rollout, every reference
pass and every PPO minibatch. The direct way, `log_softmax(logits.float()).gather(...)`,
writes a float32 [tokens, vocab] tensor: 608 MB per 1,000 tokens at a 151,936-token
vocabulary, plus as much again for its gradient. These kernels read each row of logits
once and write one float per row (forward), or read it once more and write the gradient
in the logits' own dtype (backward).

Forward, one program per row (the "online softmax" of Milakov & Gimelshein 2018, as in
the Triton fused-softmax tutorial and Liger-Kernel's cross-entropy): walk the vocabulary
in blocks of BLOCK columns, keeping a running max `m` and a running sum
`s = sum_v exp(z_v - m)`. When a block raises the max from m to m', earlier terms are
rescaled by exp(m - m') instead of being recomputed, so any vocabulary size fits. Then

    log p(y) = (z_y - m) - log s,        z = logits / temperature.

The entropy uses one more running sum, `a = sum_v exp(z_v - m) (z_v - m)`, so that
H = log s - a / s. Moving the reference point from m to m' adds (m - m') to every earlier
(z_v - m), hence a <- exp(m - m') (a + (m - m') s). Keeping every term relative to the
max (rather than summing p_v z_v and subtracting logsumexp) avoids cancellation when
logits are large (e.g. 1e4).

Backward: with p = softmax(z), d log p(y) / d z_v = onehot_v(y) - p_v and
dH / d z_v = -p_v (log p_v + H); d z / d logits = 1 / temperature. The forward saves
(m, log s) per row, so the backward recomputes p_v = exp((z_v - m) - log s) in a single
pass, with no second reduction.

Positions whose label is `ignore_index` contribute nothing: their loads are masked off (so
their logits are never read, which matters when most tokens are prompt), their outputs
are 0 and their gradient rows are 0.
"""

import torch
import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction

MAX_BLOCK_SIZE = 4096  # vocabulary columns per loop iteration (the tests lower it)
NUM_WARPS = 8


@triton.jit
def _token_logprobs_fwd_kernel(
    logits_ptr,  # [B, T, V], any strides with the last one 1
    labels_ptr,  # [B * T] int64
    logprobs_ptr,  # [B * T] float32, out
    row_max_ptr,  # [B * T] float32, out: m
    log_norm_ptr,  # [B * T] float32, out: log s
    entropy_ptr,  # [B * T] float32, out (only written when COMPUTE_ENTROPY)
    n_cols,
    rows_per_batch,  # T
    stride_batch,
    stride_row,
    inv_temperature,  # 1 / T: multiply, as torch does on CUDA for `x / T`
    ignore_index,
    COMPUTE_ENTROPY: tl.constexpr,
    BLOCK: tl.constexpr,
):
    # int64 row arithmetic: row * stride overflows int32 past 2**31 elements (14k rows at V=151,936)
    row = tl.program_id(0).to(tl.int64)
    row_ptr = logits_ptr + (row // rows_per_batch) * stride_batch + (row % rows_per_batch) * stride_row
    label = tl.load(labels_ptr + row)
    live = label != ignore_index
    # an ignored row has no columns to read: every load comes back -inf (p = 0)
    n_live_cols = tl.where(live, n_cols, 0)

    # the running max starts very negative but finite, so the first rescale is
    # exp(-1e30 - m') = 0 rather than exp(-inf - (-inf)) = NaN
    running_max = -1e30
    running_sum = 0.0  # s = sum exp(z - m)
    running_ent = 0.0  # a = sum exp(z - m) * (z - m)
    for block_start in range(0, n_cols, BLOCK):
        cols = block_start + tl.arange(0, BLOCK)
        z = tl.load(row_ptr + cols, mask=cols < n_live_cols, other=float("-inf")).to(tl.float32)
        z = z * inv_temperature
        new_max = tl.maximum(running_max, tl.max(z, axis=0))
        rescale = tl.exp(running_max - new_max)
        shifted = z - new_max  # <= 0, -inf where p = 0
        weights = tl.exp(shifted)
        if COMPUTE_ENTROPY:
            finite_shifted = tl.where(z == float("-inf"), 0.0, shifted)  # 0 * log 0 counts as 0
            running_ent = rescale * (running_ent + (running_max - new_max) * running_sum)
            running_ent += tl.sum(weights * finite_shifted, axis=0)
        running_sum = running_sum * rescale + tl.sum(weights, axis=0)
        running_max = new_max

    # an ignored row summed nothing: it stores m = 0 and log s = 0, so every number stays
    # finite here and in the backward, and its outputs are set to 0
    running_max = tl.where(live, running_max, 0.0)
    running_sum = tl.where(live, running_sum, 1.0)
    log_norm = tl.log(running_sum)
    label_logit = tl.load(row_ptr + tl.where(live, label, 0)).to(tl.float32) * inv_temperature
    logprob = (label_logit - running_max) - log_norm
    tl.store(logprobs_ptr + row, tl.where(live, logprob, 0.0))
    tl.store(row_max_ptr + row, running_max)
    tl.store(log_norm_ptr + row, log_norm)
    if COMPUTE_ENTROPY:
        entropy = log_norm - running_ent / running_sum
        tl.store(entropy_ptr + row, tl.where(live, entropy, 0.0))


@triton.jit
def _token_logprobs_bwd_kernel(
    logits_ptr,  # [B, T, V], any strides with the last one 1
    labels_ptr,  # [B * T] int64
    row_max_ptr,  # [B * T] float32: m from the forward
    log_norm_ptr,  # [B * T] float32: log s from the forward
    grad_logprobs_ptr,  # [B * T] float32
    entropy_ptr,  # [B * T] float32 (read only when HAS_ENTROPY_GRAD)
    grad_entropy_ptr,  # [B * T] float32 (read only when HAS_ENTROPY_GRAD)
    grad_logits_ptr,  # [B * T, V] contiguous, logits' dtype, out
    n_cols,
    rows_per_batch,
    stride_batch,
    stride_row,
    inv_temperature,  # 1 / T: multiply, as torch does on CUDA for `x / T`
    ignore_index,
    HAS_ENTROPY_GRAD: tl.constexpr,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    row_ptr = logits_ptr + (row // rows_per_batch) * stride_batch + (row % rows_per_batch) * stride_row
    grad_row_ptr = grad_logits_ptr + row * n_cols
    label = tl.load(labels_ptr + row)
    live = label != ignore_index
    n_live_cols = tl.where(live, n_cols, 0)  # an ignored row reads nothing and writes zeros
    row_max = tl.load(row_max_ptr + row)
    log_norm = tl.load(log_norm_ptr + row)
    # an ignored position's outputs are constants, so whatever gradient arrives is dropped
    grad_logprob = tl.where(live, tl.load(grad_logprobs_ptr + row), 0.0)
    if HAS_ENTROPY_GRAD:
        grad_entropy = tl.where(live, tl.load(grad_entropy_ptr + row), 0.0)
        entropy = tl.load(entropy_ptr + row)

    for block_start in range(0, n_cols, BLOCK):
        cols = block_start + tl.arange(0, BLOCK)
        z = tl.load(row_ptr + cols, mask=cols < n_live_cols, other=float("-inf")).to(tl.float32)
        logp = (z * inv_temperature - row_max) - log_norm
        p = tl.exp(logp)
        grad_z = tl.where(cols == label, grad_logprob, 0.0) - grad_logprob * p
        if HAS_ENTROPY_GRAD:
            # p_v (log p_v + H) is 0 where p_v = 0, not 0 * -inf
            grad_z -= grad_entropy * p * tl.where(z == float("-inf"), 0.0, logp + entropy)
        tl.store(grad_row_ptr + cols, grad_z * inv_temperature, mask=cols < n_cols)


def block_size(n_cols: int) -> int:
    """Columns per loop iteration: the whole row when it is short, else MAX_BLOCK_SIZE."""
    return min(MAX_BLOCK_SIZE, triton.next_power_of_2(n_cols))


def as_batched_rows(x: torch.Tensor) -> torch.Tensor:
    """View [N, V] or [B, T, V] as [B, T, V] with a unit last stride, copying only if needed.

    The kernels take the batch and time strides, so a slice such as `logits[:, :-1]` is
    read in place instead of being copied (which would cost a full pass over the logits).
    """
    if x.dim() == 2:
        x = x.unsqueeze(0)
    if x.stride(-1) != 1:
        x = x.contiguous()
    return x


def kernels_interpreted() -> bool:
    """True when Triton's CPU interpreter runs these kernels.

    Triton chooses at decoration time: TRITON_INTERPRET=1 must be set before this module
    is first imported. Only interpreted kernels can run on CPU tensors.
    """
    return isinstance(_token_logprobs_fwd_kernel, InterpretedFunction)


class TokenLogprobs(torch.autograd.Function):
    """Autograd wrapper: forward kernel, then the backward kernel for d/d logits."""

    @staticmethod
    def forward(ctx, logits, labels, temperature, ignore_index, return_entropy):
        # logits [B, T, V] with a unit last stride; labels [B * T] int64, contiguous
        batch, rows_per_batch, n_cols = logits.shape
        n_rows = batch * rows_per_batch
        logprobs, row_max, log_norm = (logits.new_empty(n_rows, dtype=torch.float32) for _ in range(3))
        entropy = logits.new_empty(n_rows, dtype=torch.float32) if return_entropy else None
        if n_rows > 0:
            _token_logprobs_fwd_kernel[(n_rows,)](
                logits, labels, logprobs, row_max, log_norm,
                entropy if return_entropy else logprobs,  # a placeholder pointer when unused
                n_cols, rows_per_batch, logits.stride(0), logits.stride(1),
                1.0 / temperature, ignore_index,
                COMPUTE_ENTROPY=return_entropy, BLOCK=block_size(n_cols),
                num_warps=NUM_WARPS,
            )  # fmt: skip
        ctx.save_for_backward(logits, labels, row_max, log_norm, entropy)
        ctx.temperature, ctx.ignore_index = temperature, ignore_index
        ctx.set_materialize_grads(False)  # an unused entropy output gets None, not zeros
        out_shape = (batch, rows_per_batch)
        if return_entropy:
            return logprobs.view(out_shape), entropy.view(out_shape)
        return logprobs.view(out_shape)

    @staticmethod
    def backward(ctx, grad_logprobs, grad_entropy=None):
        logits, labels, row_max, log_norm, entropy = ctx.saved_tensors
        batch, rows_per_batch, n_cols = logits.shape
        n_rows = batch * rows_per_batch
        grad_logits = torch.empty((batch, rows_per_batch, n_cols), dtype=logits.dtype, device=logits.device)
        if grad_logprobs is None:  # only the entropy was used downstream
            grad_logprobs = torch.zeros(n_rows, dtype=torch.float32, device=logits.device)
        grad_logprobs = grad_logprobs.float().contiguous()
        has_entropy_grad = grad_entropy is not None
        if has_entropy_grad:
            grad_entropy = grad_entropy.float().contiguous()
        if n_rows > 0:
            _token_logprobs_bwd_kernel[(n_rows,)](
                logits, labels, row_max, log_norm, grad_logprobs,
                entropy if has_entropy_grad else row_max,
                grad_entropy if has_entropy_grad else row_max,
                grad_logits,
                n_cols, rows_per_batch, logits.stride(0), logits.stride(1),
                1.0 / ctx.temperature, ctx.ignore_index,
                HAS_ENTROPY_GRAD=has_entropy_grad, BLOCK=block_size(n_cols),
                num_warps=NUM_WARPS,
            )  # fmt: skip
        return grad_logits, None, None, None, None


def token_logprobs(
    logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 1.0,
    ignore_index: int = -100,
    return_entropy: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Triton twin of `reference.token_logprobs` (same signature, same results)."""
    out_shape = logits.shape[:-1]
    batched = as_batched_rows(logits)  # [B, T, V]
    flat_labels = labels.reshape(-1).to(torch.int64).contiguous()  # [B * T]
    out = TokenLogprobs.apply(batched, flat_labels, float(temperature), int(ignore_index), return_entropy)
    if return_entropy:
        return out[0].view(out_shape), out[1].view(out_shape)
    return out.view(out_shape)
