"""Token log-probabilities straight from hidden states, without ever holding all the logits.

The language-model head turns hidden states [N, D] into logits [N, V] = hidden @ weight.T.
At V = 151,936 that product is the largest tensor of a training step (600 MB in bf16 per
2,000 tokens, and as much again for its gradient), yet each row is only needed long enough
to read off one log-probability. Following the idea of Liger-Kernel's fused linear
cross-entropy, this op walks the tokens in chunks: logits for `chunk_size` rows at a time,
their log-probabilities, and then the chunk's logits are dropped.

Liger's op returns a scalar loss, so it can compute the gradients during the forward pass.
This one returns one number per token, and their upstream gradients g_t (a mask divided by
a token count, PPO advantages times ratios) arrive only in backward, while
d loss / d weight = sum_t g_t outer(d log p_t / d z_t, hidden_t) weighs every token by its
own g_t. So the backward recomputes each chunk's logits (one extra [C, D] x [D, V] matmul
per chunk), gets d/d logits from the row op (the Triton backward kernel or the PyTorch
reference), and immediately folds it into

    grad_hidden[chunk] = grad_logits @ weight       [C, D]
    grad_weight       += grad_logits.T @ hidden      [V, D]   (accumulated in float32)

Positions whose label is `ignore_index` are dropped before the matmul: in RLHF most tokens
are prompt or padding, and their logits are never computed at all.

Mixed precision. Under autocast the head's matmul runs in autocast's dtype (bf16), while
the hidden states and the master weight are usually float32. The op reads autocast's
state once, in forward, and runs every matmul itself in that one compute dtype with
autocast switched off, in forward and in backward alike: so the backward recomputes
exactly the logits whose log-probabilities were returned (its gradient is that of the
reported loss), and it behaves the same whether `backward()` is called inside an
autocast region or outside it. (This is what `torch.amp.custom_fwd` / `custom_bwd`
do, for one fixed device type; here the device comes from the tensors, so CPU and CUDA
autocast are handled alike.) Gradients come back in their inputs' dtypes.
"""

from typing import Callable

import torch
from torch.autograd.function import once_differentiable

RowLogprobs = Callable[..., torch.Tensor]  # token_logprobs(logits, labels, temperature, ignore_index)


class FusedLinearTokenLogprobs(torch.autograd.Function):
    """log p(labels | hidden @ weight.T / temperature), chunked over tokens."""

    @staticmethod
    def forward(ctx, hidden, weight, labels, temperature, ignore_index, chunk_size, row_logprobs):
        # hidden [N, D], weight [V, D], labels [N]
        device_type = hidden.device.type
        compute = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else hidden.dtype
        live_rows = (labels != ignore_index).nonzero().squeeze(1)  # [K]
        logprobs = torch.zeros(labels.shape[0], dtype=torch.float32, device=hidden.device)  # [N]
        with torch.autocast(device_type, enabled=False):
            weight_c = weight.to(compute)  # [V, D], a copy only when the dtypes differ
            for start in range(0, live_rows.shape[0], chunk_size):
                rows = live_rows[start : start + chunk_size]  # [C]
                logits = hidden[rows].to(compute) @ weight_c.T  # [C, V], the only vocabulary-sized tensor alive
                logprobs[rows] = row_logprobs(logits, labels[rows], temperature, ignore_index)
        ctx.save_for_backward(hidden, weight, labels, live_rows)
        ctx.temperature, ctx.ignore_index, ctx.chunk_size = temperature, ignore_index, chunk_size
        ctx.row_logprobs, ctx.compute = row_logprobs, compute
        return logprobs

    @staticmethod
    @once_differentiable  # runs under no_grad; a second derivative is not supported
    def backward(ctx, grad_logprobs):
        hidden, weight, labels, live_rows = ctx.saved_tensors
        want_hidden, want_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        compute = ctx.compute  # the forward's matmul dtype, whatever autocast says now
        grad_hidden = torch.zeros_like(hidden) if want_hidden else None  # ignored rows stay 0
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if want_weight else None
        with torch.autocast(hidden.device.type, enabled=False):
            weight_c = weight.to(compute)  # [V, D]
            for start in range(0, live_rows.shape[0], ctx.chunk_size):
                rows = live_rows[start : start + ctx.chunk_size]  # [C]
                chunk_hidden = hidden[rows].to(compute)  # [C, D]
                logits = (chunk_hidden @ weight_c.T).requires_grad_()  # [C, V], recomputed as in forward
                with torch.enable_grad():
                    chunk_logprobs = ctx.row_logprobs(logits, labels[rows], ctx.temperature, ctx.ignore_index)
                (grad_logits,) = torch.autograd.grad(chunk_logprobs, logits, grad_logprobs[rows])  # [C, V], compute
                if want_hidden:
                    grad_hidden[rows] = (grad_logits @ weight_c).to(hidden.dtype)
                if want_weight:
                    grad_weight += (grad_logits.T @ chunk_hidden).float()
        if want_weight:
            grad_weight = grad_weight.to(weight.dtype)
        return grad_hidden, grad_weight, None, None, None, None, None


def chunked_linear_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    ignore_index: int,
    chunk_size: int,
    row_logprobs: RowLogprobs,
) -> torch.Tensor:
    """[..., D] hidden, [V, D] weight, [...] labels -> [...] float32 log-probabilities.

    `row_logprobs` is the backend's `token_logprobs` (Triton or reference); inputs are
    validated by `kernels.fused_linear_token_logprobs`.
    """
    flat_hidden = hidden.reshape(-1, hidden.shape[-1])  # [N, D]
    flat_labels = labels.reshape(-1).to(torch.int64)  # [N]
    logprobs = FusedLinearTokenLogprobs.apply(
        flat_hidden, weight, flat_labels, float(temperature), int(ignore_index), int(chunk_size), row_logprobs
    )
    return logprobs.view(labels.shape)
