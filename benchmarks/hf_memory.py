"""The memory SFT, RM and PPO need for a Qwen2.5-0.5B / 1.5B / 3B-shaped decoder: computed
from the shapes, not measured on a GPU (the README's "Starting from a real model" table).

    python -m benchmarks.hf_memory [--tokens 4096]

What a stage holds, with N the parameters (a tied head counted once):

  a trained model   4N fp32 weights + 4N fp32 gradients + 8N AdamW moments
                    + 2N the bf16 copies autocast keeps of the weights during a step = 18N bytes
  a frozen model    4N (plus loads every model in float32)
  SFT, RM           one trained model;  PPO: policy and critic trained, reference and reward frozen = 44N
  activations       the bytes autograd saves per token per layer under bf16 autocast, counted
                    with saved-tensor hooks on one layer of the real width (two sequence lengths,
                    so the weight copies cancel), times layers and the micro-batch's tokens

The CUDA caching allocator, the CUDA context (~0.5 GB) and fragmentation come on top.
"""

from __future__ import annotations

import argparse

import torch

from plus.gpt import GPT, GPTConfig

# config.json of each model (all three tie the output head to the embedding)
SHAPES = {
    "Qwen2.5-0.5B": dict(n_embd=896, intermediate_size=4864, n_layer=24, n_head=14),
    "Qwen2.5-1.5B": dict(n_embd=1536, intermediate_size=8960, n_layer=28, n_head=12),
    "Qwen2.5-3B": dict(n_embd=2048, intermediate_size=11008, n_layer=36, n_head=16),
}
QWEN = dict(vocab_size=151936, block_size=32768, n_kv_head=2, qkv_bias=True, rope_theta=1e6, tie_embeddings=True)


def config(shape: dict, **kw) -> GPTConfig:
    return GPTConfig.llama_style(**{**QWEN, **shape, **kw})


def saved_bytes(cfg: GPTConfig, tokens: int) -> int:
    """Bytes autograd keeps for backward in one bf16-autocast forward of `tokens` tokens."""
    model = GPT(cfg)
    storages: dict[int, int] = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    ids = torch.randint(0, cfg.vocab_size, (1, tokens))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast("cpu", torch.bfloat16):
        model(ids)
    return sum(storages.values())


def per_token_layer(shape: dict) -> float:
    """Activation bytes per token per layer (the difference of two lengths cancels the weight copies)."""
    one = config(shape, n_layer=1, vocab_size=64)
    return (saved_bytes(one, 512) - saved_bytes(one, 256)) / 256


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=4096, help="tokens in one micro-batch (e.g. 16 x 256)")
    args = p.parse_args()
    gb = 1e9
    print(f"| model | parameters | SFT or RM: model states | PPO: model states | activations per "
          f"{args.tokens:,}-token micro-batch |")
    print("|---|---|---|---|---|")
    for name, shape in SHAPES.items():
        with torch.device("meta"):
            n = GPT(config(shape)).num_params(non_embedding=False)
        activations = per_token_layer(shape) * shape["n_layer"] * args.tokens
        print(f"| {name} | {n / 1e9:.2f}B | {18 * n / gb:.1f} GB | {44 * n / gb:.1f} GB | {activations / gb:.1f} GB |")


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
