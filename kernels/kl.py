"""Triton kernels: exact per-token KL(p || q) between two models' full distributions.

RLHF keeps the policy p close to a frozen reference q (the SFT model) with a KL penalty
(Stiennon et al. 2020, eq. 2). The sampled-token estimators (k1, k2, k3 in
`plus/kl_controller.py`) only need the two log-probabilities of the chosen token; this
kernel gives the exact value over the whole vocabulary,

    KL_t = sum_v p_v (log p_v - log q_v),   p = softmax(logits / T), q = softmax(ref_logits / T),

for evaluation (`kl_to_sft`) and for losses that want the full-distribution penalty, with
its gradient w.r.t. `logits` (the reference model is a constant):

    dKL / d z_v = p_v ((log p_v - log q_v) - KL),   d z / d logits = 1 / T.

One pass, one program per row. Where the two log-normalizers are needed, a two-pass kernel
would first find both logsumexps and then read both rows again for the sum: twice the
memory traffic of a kernel that is memory-bound. Instead the forward keeps, besides the
running max and sum of each distribution (m_p, s_p, m_q, s_q, as in `logprobs.py`),

    a = sum_v exp(zp_v - m_p) ((zp_v - m_p) - (zq_v - m_q)),

so that KL = a / s_p - log s_p + log s_q. When a block raises the maxima to m_p', m_q',
every earlier log-ratio term shifts by the constant (m_p - m_p') - (m_q - m_q') and every
weight by exp(m_p - m_p'), hence a <- exp(m_p - m_p') (a + ((m_p - m_p') - (m_q - m_q')) s_p).
Terms stay relative to the maxima, so logits of size 1e4 lose no precision. The forward
saves (m, log s) of both rows and the KL, and the backward recomputes p and q in one pass.

Rows whose `mask` is 0 are never read; they get KL 0 and a zero gradient.
"""

import torch
import triton
import triton.language as tl

from kernels.logprobs import NUM_WARPS, as_batched_rows, block_size


@triton.jit
def _kl_fwd_kernel(
    logits_ptr,  # [B, T, V], any strides with the last one 1
    ref_ptr,  # [B, T, V], any strides with the last one 1
    keep_ptr,  # [B * T] int8: 1 = compute, 0 = masked
    kl_ptr,  # [B * T] float32, out
    max_p_ptr, log_norm_p_ptr, max_q_ptr, log_norm_q_ptr,  # [B * T] float32, out
    n_cols,
    rows_per_batch,
    stride_batch, stride_row,
    ref_stride_batch, ref_stride_row,
    inv_temperature,  # 1 / T: multiply, as torch does on CUDA for `x / T`
    BLOCK: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0).to(tl.int64)  # int64: row * stride can pass 2**31
    batch_idx = row // rows_per_batch
    time_idx = row % rows_per_batch
    p_row_ptr = logits_ptr + batch_idx * stride_batch + time_idx * stride_row
    q_row_ptr = ref_ptr + batch_idx * ref_stride_batch + time_idx * ref_stride_row
    live = tl.load(keep_ptr + row) != 0
    n_live_cols = tl.where(live, n_cols, 0)  # a masked row has no columns to read

    # very negative but finite starting maxima: the first rescale is exp(-1e30 - m') = 0
    max_p = -1e30
    max_q = -1e30
    sum_p = 0.0  # s_p = sum exp(zp - m_p)
    sum_q = 0.0  # s_q = sum exp(zq - m_q)
    acc = 0.0  # a = sum exp(zp - m_p) * ((zp - m_p) - (zq - m_q))
    for block_start in range(0, n_cols, BLOCK):
        cols = block_start + tl.arange(0, BLOCK)
        load_mask = cols < n_live_cols
        zp = tl.load(p_row_ptr + cols, mask=load_mask, other=float("-inf")).to(tl.float32) * inv_temperature
        zq = tl.load(q_row_ptr + cols, mask=load_mask, other=float("-inf")).to(tl.float32) * inv_temperature
        new_max_p = tl.maximum(max_p, tl.max(zp, axis=0))
        new_max_q = tl.maximum(max_q, tl.max(zq, axis=0))
        rescale_p = tl.exp(max_p - new_max_p)
        acc = rescale_p * (acc + ((max_p - new_max_p) - (max_q - new_max_q)) * sum_p)
        sum_p = sum_p * rescale_p
        sum_q = sum_q * tl.exp(max_q - new_max_q)
        weights_p = tl.exp(zp - new_max_p)
        # where p_v = 0 the term is 0 * log(0 / q_v) = 0, not -inf - (-inf) = NaN
        log_ratio = tl.where(zp == float("-inf"), 0.0, (zp - new_max_p) - (zq - new_max_q))
        acc += tl.sum(weights_p * log_ratio, axis=0)
        sum_p += tl.sum(weights_p, axis=0)
        sum_q += tl.sum(tl.exp(zq - new_max_q), axis=0)
        max_p = new_max_p
        max_q = new_max_q

    # a masked row summed nothing: it stores maxima 0, log-normalizers 0 and KL 0, so every
    # number stays finite here and in the backward
    max_p = tl.where(live, max_p, 0.0)
    max_q = tl.where(live, max_q, 0.0)
    sum_p = tl.where(live, sum_p, 1.0)
    sum_q = tl.where(live, sum_q, 1.0)
    log_norm_p = tl.log(sum_p)
    log_norm_q = tl.log(sum_q)
    kl = acc / sum_p - log_norm_p + log_norm_q
    tl.store(kl_ptr + row, kl)
    tl.store(max_p_ptr + row, max_p)
    tl.store(log_norm_p_ptr + row, log_norm_p)
    tl.store(max_q_ptr + row, max_q)
    tl.store(log_norm_q_ptr + row, log_norm_q)


@triton.jit
def _kl_bwd_kernel(
    logits_ptr, ref_ptr,  # [B, T, V], any strides with the last one 1
    keep_ptr,  # [B * T] int8
    kl_ptr, max_p_ptr, log_norm_p_ptr, max_q_ptr, log_norm_q_ptr,  # [B * T] float32 from the forward
    grad_kl_ptr,  # [B * T] float32
    grad_logits_ptr,  # [B * T, V] contiguous, logits' dtype, out
    n_cols,
    rows_per_batch,
    stride_batch, stride_row,
    ref_stride_batch, ref_stride_row,
    inv_temperature,  # 1 / T: multiply, as torch does on CUDA for `x / T`
    BLOCK: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0).to(tl.int64)
    batch_idx = row // rows_per_batch
    time_idx = row % rows_per_batch
    p_row_ptr = logits_ptr + batch_idx * stride_batch + time_idx * stride_row
    q_row_ptr = ref_ptr + batch_idx * ref_stride_batch + time_idx * ref_stride_row
    grad_row_ptr = grad_logits_ptr + row * n_cols
    live = tl.load(keep_ptr + row) != 0
    n_live_cols = tl.where(live, n_cols, 0)  # a masked row reads nothing and writes zeros
    kl = tl.load(kl_ptr + row)
    max_p = tl.load(max_p_ptr + row)
    log_norm_p = tl.load(log_norm_p_ptr + row)
    max_q = tl.load(max_q_ptr + row)
    log_norm_q = tl.load(log_norm_q_ptr + row)
    grad_kl = tl.where(live, tl.load(grad_kl_ptr + row), 0.0)  # a masked KL is a constant 0

    for block_start in range(0, n_cols, BLOCK):
        cols = block_start + tl.arange(0, BLOCK)
        load_mask = cols < n_live_cols
        zp = tl.load(p_row_ptr + cols, mask=load_mask, other=float("-inf")).to(tl.float32) * inv_temperature
        zq = tl.load(q_row_ptr + cols, mask=load_mask, other=float("-inf")).to(tl.float32) * inv_temperature
        logp = (zp - max_p) - log_norm_p
        logq = (zq - max_q) - log_norm_q
        log_ratio = tl.where(zp == float("-inf"), 0.0, logp - logq)
        grad_z = grad_kl * tl.exp(logp) * (log_ratio - kl)
        tl.store(grad_row_ptr + cols, grad_z * inv_temperature, mask=cols < n_cols)


class KLDivergence(torch.autograd.Function):
    """Autograd wrapper: forward kernel, then the backward kernel for d/d logits."""

    @staticmethod
    def forward(ctx, logits, ref_logits, keep, temperature):
        # logits, ref_logits [B, T, V] with unit last strides; keep [B * T] int8, contiguous
        batch, rows_per_batch, n_cols = logits.shape
        n_rows = batch * rows_per_batch
        kl, max_p, log_norm_p, max_q, log_norm_q = (
            logits.new_empty(n_rows, dtype=torch.float32) for _ in range(5)
        )
        if n_rows > 0:
            _kl_fwd_kernel[(n_rows,)](
                logits, ref_logits, keep, kl, max_p, log_norm_p, max_q, log_norm_q,
                n_cols, rows_per_batch,
                logits.stride(0), logits.stride(1), ref_logits.stride(0), ref_logits.stride(1),
                1.0 / temperature,
                BLOCK=block_size(n_cols), num_warps=NUM_WARPS,
            )  # fmt: skip
        ctx.save_for_backward(logits, ref_logits, keep, kl, max_p, log_norm_p, max_q, log_norm_q)
        ctx.temperature = temperature
        return kl.view(batch, rows_per_batch)

    @staticmethod
    def backward(ctx, grad_kl):
        logits, ref_logits, keep, kl, max_p, log_norm_p, max_q, log_norm_q = ctx.saved_tensors
        batch, rows_per_batch, n_cols = logits.shape
        n_rows = batch * rows_per_batch
        grad_logits = torch.empty((batch, rows_per_batch, n_cols), dtype=logits.dtype, device=logits.device)
        if n_rows > 0:
            _kl_bwd_kernel[(n_rows,)](
                logits, ref_logits, keep, kl, max_p, log_norm_p, max_q, log_norm_q,
                grad_kl.float().contiguous(), grad_logits,
                n_cols, rows_per_batch,
                logits.stride(0), logits.stride(1), ref_logits.stride(0), ref_logits.stride(1),
                1.0 / ctx.temperature,
                BLOCK=block_size(n_cols), num_warps=NUM_WARPS,
            )  # fmt: skip
        return grad_logits, None, None, None


def kl_divergence(
    logits: torch.Tensor,
    ref_logits: torch.Tensor,
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Triton twin of `reference.kl_divergence` (same signature, same results)."""
    out_shape = logits.shape[:-1]
    n_rows = out_shape.numel()
    if mask is None:
        keep = torch.ones(n_rows, dtype=torch.int8, device=logits.device)
    else:
        keep = (mask.reshape(-1) != 0).to(torch.int8).contiguous()
    kl = KLDivergence.apply(
        as_batched_rows(logits), as_batched_rows(ref_logits.detach()), keep, float(temperature)
    )
    return kl.view(out_shape)
