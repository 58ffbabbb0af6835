"""Batched sampling with a KV cache, from left-padded prompts.

RLHF samples a batch of summaries per update, so sampling speed matters. Two details make
batched sampling exact:

* Prompts are left-padded, so every prompt ends in the last column and new tokens are
  appended in one column for the whole batch. The attention mask hides the padding and
  the model counts positions over real tokens only (see `plus/gpt.py`).
* Each step feeds only the newest token; the keys and values of everything before it are
  read from the preallocated KV cache instead of being recomputed.

The returned `logprobs` are those of the sampled tokens under the temperature-scaled
distribution *before* top-k / top-p filtering: the same numbers a full forward pass of the
policy at that temperature gives, which is what PPO's ratio and the KL penalty compare
against (Huang et al. 2024: sample at temperature 0.7, score logprobs at 0.7 too).

On a GPU, decoding a small model is launch-bound: a one-token step of 12 layers is a few
hundred small kernels, and the GPU waits for Python to issue them. `static_cache=True`
decodes with shapes that never change (`StaticDecoder`: the whole cache is read, masked,
and the new token is written at a position held in a tensor), which is what a CUDA graph
can capture; `cuda_graph=True` then captures the step once per call and replays it, one
launch per token. The plain loop stays the reference: the static one samples the same
tokens (tests/test_generate.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Samples:
    tokens: torch.Tensor    # [B, N] sampled ids, pad after EOS; N = steps taken (<= max_new_tokens)
    mask: torch.Tensor      # [B, N] 1 on response tokens up to and including EOS
    logprobs: torch.Tensor  # [B, N] float32 log p(token) at the sampling temperature; 0 where mask is 0
    ended: torch.Tensor     # [B] bool: the response ended with EOS (not cut at max_new_tokens)


def left_pad(sequences: list[list[int]], pad_id: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token lists -> (ids [B, T], attention_mask [B, T]) padded on the left."""
    T = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), T), dtype=torch.long)
    for i, s in enumerate(sequences):
        if s:
            ids[i, T - len(s):] = torch.tensor(s, dtype=torch.long)
            mask[i, T - len(s):] = 1
    return ids.to(device), mask.to(device)


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Set to -inf every logit outside the top-k and outside the smallest set whose
    probability reaches top_p (nucleus sampling, Holtzman et al. 2020). [B, V] -> [B, V]."""
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = sorted_logits.softmax(-1)
        # Drop a token when the tokens ranked before it already reach top_p; the first
        # token always stays.
        drop_sorted = (probs.cumsum(-1) - probs) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


class StaticDecoder:
    """The one-token step of `generate` with fixed shapes, optionally under a CUDA graph.

    Its buffers hold the step's inputs: the token [B, 1], its position [B, 1] (real tokens
    before it: the prompt's length plus the step, for a row still going), the columns each
    row may attend to [B, max_len], and the cache column to write (`kv_cache.write_at`).
    Each call updates them in place and runs `GPT.decode_step` (or replays its graph)."""

    def __init__(self, model, cache, prompt_mask: torch.Tensor, cuda_graph: bool = False):
        B, P = prompt_mask.shape
        device = prompt_mask.device
        self.model, self.cache = model, cache
        self.key_mask = torch.zeros((B, cache.max_len), dtype=torch.bool, device=device)  # [B, S]
        self.key_mask[:, :P] = prompt_mask.bool()
        self.columns = torch.arange(cache.max_len, device=device)                         # [S]
        self.token = torch.zeros((B, 1), dtype=torch.long, device=device)
        self.position = prompt_mask.long().sum(1, keepdim=True) - 1                        # [B, 1]
        cache.write_at = torch.full((1,), P - 1, dtype=torch.long, device=device)
        self.cuda_graph = cuda_graph
        self.graph = self.logits = None

    def _step(self) -> torch.Tensor:
        # A finished row's token is padding, attended by nobody later, but its own query
        # sees its column, so its softmax is never over an empty set.
        mask = self.key_mask | (self.columns == self.cache.write_at)                        # [B, S]
        return self.model.decode_step(self.token, self.position, mask, self.cache)

    def __call__(self, token: torch.Tensor, alive: torch.Tensor) -> torch.Tensor:
        """Feed `token` [B, 1] (`alive` [B]: rows whose token is real); logits [B, V]."""
        self.token.copy_(token)
        self.position += 1
        self.cache.write_at += 1
        self.key_mask.index_copy_(1, self.cache.write_at, alive[:, None])
        if not self.cuda_graph:
            return self._step()
        if self.graph is None:
            # Warm up on a side stream, then capture. Each run writes the same keys and
            # values at the same column from the same inputs, so the repeats change nothing.
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(2):
                    self._step()
            torch.cuda.current_stream().wait_stream(stream)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.logits = self._step()
        self.graph.replay()
        return self.logits


@torch.no_grad()
def generate(
    model,
    prompt_ids: torch.Tensor,     # [B, P] left-padded
    prompt_mask: torch.Tensor,    # [B, P]
    max_new_tokens: int,
    eos_id: int,
    pad_id: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    static_cache: bool = False,
    cuda_graph: bool = False,
) -> Samples:
    """Sample up to `max_new_tokens` per prompt; a row stops at its first EOS.
    temperature 0 means greedy decoding. `static_cache` / `cuda_graph`: see the module
    docstring (a CUDA graph needs CUDA tensors and implies the static cache)."""
    B, P = prompt_ids.shape
    device = prompt_ids.device
    if cuda_graph and device.type != "cuda":
        raise ValueError(f"cuda_graph=True needs CUDA tensors, got {device}")
    cache = model.new_kv_cache(B, P + max_new_tokens)
    tokens = torch.full((B, max_new_tokens), pad_id, dtype=torch.long, device=device)
    logprobs = torch.zeros((B, max_new_tokens), dtype=torch.float32, device=device)
    mask = torch.zeros((B, max_new_tokens), dtype=torch.long, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    attention_mask = prompt_mask.long()
    steps = 0

    logits = model.logits(model(prompt_ids, attention_mask=attention_mask, kv_cache=cache)[:, -1])  # [B, V]
    decoder = StaticDecoder(model, cache, prompt_mask, cuda_graph) if static_cache or cuda_graph else None
    for t in range(max_new_tokens):
        logits = logits.float()
        if temperature > 0:
            scaled = logits / temperature
            probs = filter_logits(scaled, top_k, top_p).softmax(-1)
            next_token = torch.multinomial(probs, 1, generator=generator)[:, 0]
        else:
            scaled = logits
            next_token = logits.argmax(-1)
        token_logprob = scaled.log_softmax(-1).gather(-1, next_token[:, None])[:, 0]

        alive = ~done
        tokens[:, t] = torch.where(alive, next_token, torch.full_like(next_token, pad_id))
        logprobs[:, t] = torch.where(alive, token_logprob, torch.zeros_like(token_logprob))
        mask[:, t] = alive.long()
        done = done | (alive & (next_token == eos_id))
        steps = t + 1
        if bool(done.all()) or steps == max_new_tokens:
            break
        # Finished rows keep being fed (as padding, masked out) so the batch stays rectangular.
        if decoder is not None:
            logits = decoder(tokens[:, t:t + 1], alive)
        else:
            attention_mask = torch.cat([attention_mask, alive.long()[:, None]], dim=1)
            logits = model.logits(model(tokens[:, t:t + 1], attention_mask=attention_mask, kv_cache=cache)[:, -1])
    # Columns after the step where every row had ended hold nothing: drop them.
    return Samples(tokens=tokens[:, :steps], mask=mask[:, :steps], logprobs=logprobs[:, :steps], ended=done)


def decode_responses(tokenizer, samples: Samples) -> list[str]:
    """The text of each response, without its EOS or padding."""
    out = []
    for row, m in zip(samples.tokens.tolist(), samples.mask.tolist()):
        ids = [tok for tok, keep in zip(row, m) if keep and tok != tokenizer.eos_id]
        out.append(tokenizer.decode(ids))
    return out


@torch.no_grad()
def sample_texts(
    model,
    tokenizer,
    prompts: list[list[int]],
    max_new_tokens: int,
    batch_size: int = 64,
    temperature: float = 0.7,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int = 0,
    progress=None,
) -> tuple[list[str], list[bool], list[int]]:
    """Sample one response per prompt, in batches: (texts, ended with EOS, token counts).
    Seeded, so an evaluation is repeatable."""
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    texts, ended, lengths = [], [], []
    was_training = model.training
    model.eval()
    for i in range(0, len(prompts), batch_size):
        ids, mask = left_pad(prompts[i:i + batch_size], tokenizer.pad_id, device)
        out = generate(model, ids, mask, max_new_tokens, tokenizer.eos_id, tokenizer.pad_id,
                       temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
        texts += decode_responses(tokenizer, out)
        ended += out.ended.tolist()
        lengths += out.mask.sum(1).tolist()
        if progress is not None:
            progress.update(len(prompts[i:i + batch_size]))
    model.train(was_training)
    return texts, ended, lengths
