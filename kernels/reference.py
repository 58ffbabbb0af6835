"""Pure-PyTorch references for the token-level kernels.

Every quantity RLHF needs per token is a reduction over one row of logits:

    log p(y_t)  = z_{t,y} - logsumexp_v z_{t,v}              with z = logits / temperature
    H_t         = -sum_v p_{t,v} log p_{t,v}                 (entropy, a PPO diagnostic)
    KL_t(p||q)  =  sum_v p_{t,v} (log p_{t,v} - log q_{t,v})  (policy vs. reference model)

This file computes them the most direct way: upcast a chunk of rows to float32,
`torch.log_softmax`, then gather or sum. It is the ground truth for the Triton kernels in
`logprobs.py` and `kl.py` (the tests compare them), and it is the implementation used on
CPU. Each function has the same signature as its Triton twin; inputs are validated by
the dispatchers in `kernels/__init__.py`.

Chunking over rows keeps the float32 copy of the logits small when no gradient is
needed (rollouts, reference-model passes): at most `CHUNK_ROWS` rows are upcast at once.
When autograd is recording, each chunk's float32 log-probabilities are kept for the
backward pass, so memory then grows like the full [N, V] float32 tensor; avoiding that is
what the Triton kernels are for.
"""

import torch

CHUNK_ROWS = 1024  # rows upcast to float32 at a time


def _flat_rows(x: torch.Tensor) -> torch.Tensor:
    """[..., V] -> [N, V] (a view when possible, else a copy)."""
    return x.reshape(-1, x.shape[-1])


def token_logprobs(
    logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 1.0,
    ignore_index: int = -100,
    return_entropy: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """float32 log p(label) per row of `logits / temperature` ([N, V] -> [N], [B, T, V] -> [B, T]).

    Positions whose label is `ignore_index` get logprob 0 (and entropy 0) and no gradient.
    With `return_entropy`, also returns the entropy of softmax(logits / temperature) per row.
    """
    flat_logits = _flat_rows(logits)  # [N, V]
    flat_labels = labels.reshape(-1).long()  # [N]
    logprob_chunks, entropy_chunks = [], []
    for start in range(0, max(flat_logits.shape[0], 1), CHUNK_ROWS):  # >= 1 chunk, even an empty one
        z = flat_logits[start : start + CHUNK_ROWS].float() / temperature  # [C, V]
        chunk_labels = flat_labels[start : start + CHUNK_ROWS]  # [C]
        ignored = chunk_labels == ignore_index  # [C]
        logp = torch.log_softmax(z, dim=-1)  # [C, V]
        # gather needs a valid index even where the result is thrown away
        picked = logp.gather(-1, chunk_labels.masked_fill(ignored, 0).unsqueeze(-1)).squeeze(-1)
        logprob_chunks.append(picked.masked_fill(ignored, 0.0))
        if return_entropy:
            # a -inf logit has p = 0 and contributes 0 * log 0 = 0; masking log p (not the
            # product) keeps 0 * -inf = NaN out of both the value and the gradient
            finite_logp = logp.masked_fill(logp == float("-inf"), 0.0)
            entropy = -(logp.exp() * finite_logp).sum(-1)  # [C]
            entropy_chunks.append(entropy.masked_fill(ignored, 0.0))
    out_shape = logits.shape[:-1]
    logprobs = torch.cat(logprob_chunks).view(out_shape)
    if not return_entropy:
        return logprobs
    return logprobs, torch.cat(entropy_chunks).view(out_shape)


def kl_divergence(
    logits: torch.Tensor,
    ref_logits: torch.Tensor,
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Exact per-row KL(p || q), p = softmax(logits / T), q = softmax(ref_logits / T); float32.

    `ref_logits` is treated as a constant (no gradient flows to it). Rows where `mask` is 0
    (or False) get KL 0 and no gradient.
    """
    flat_logits = _flat_rows(logits)  # [N, V]
    flat_ref = _flat_rows(ref_logits.detach())  # [N, V]
    kl_chunks = []
    for start in range(0, max(flat_logits.shape[0], 1), CHUNK_ROWS):  # >= 1 chunk, even an empty one
        logp = torch.log_softmax(flat_logits[start : start + CHUNK_ROWS].float() / temperature, dim=-1)
        logq = torch.log_softmax(flat_ref[start : start + CHUNK_ROWS].float() / temperature, dim=-1)
        # where p = 0 the term is 0 * log(0 / q) = 0 by convention, not -inf - (-inf) = NaN
        log_ratio = (logp - logq).masked_fill(logp == float("-inf"), 0.0)  # [C, V]
        kl_chunks.append((logp.exp() * log_ratio).sum(-1))  # [C]
    kl = torch.cat(kl_chunks).view(logits.shape[:-1])
    if mask is not None:
        kl = kl.masked_fill(mask == 0, 0.0)
    return kl

