"""Benchmark the token-level kernels against eager PyTorch, torch.compile and Liger-Kernel.

    python -m benchmarks.bench_kernels --out bench.json   # CUDA: V in {50257, 151936} x N in {4096, 16384}, bf16
    python -m benchmarks.bench_kernels --cpu              # no GPU: a tiny timing of the PyTorch reference

For every (op, vocabulary V, tokens N) it measures, per implementation:
  - forward time under no_grad (a rollout or reference-model pass) and forward+backward
    time (a training step), the median of `triton.testing.do_bench` (L2 flushed between runs);
  - effective bandwidth: the bytes the op cannot avoid moving (read the logits, write one
    float per token; the backward reads them again and writes the gradient) / time. The same
    byte count is used for every implementation, so the column compares times on a
    bandwidth scale, with `x.copy_()` of a 1 GiB tensor measured as the roof;
  - peak extra memory: torch.cuda.max_memory_allocated() during one call minus what was
    allocated before it (the inputs); for forward+backward it includes the logits' gradient;
  - the largest difference from eager PyTorch in the output and in the gradient.

Implementations: `plus` is the Triton backend (`kernels.logprobs` / `kernels.kl`) called
directly; `kernels.token_logprobs` adds one host sync to check the label range. `eager` is
`torch.log_softmax(x.float(), -1).gather(...)` (and the direct KL formula), `compile` the
same under torch.compile, and `liger` Liger-Kernel's cross-entropy with reduction="none"
(negated) when `liger_kernel` is installed. Liger computes the gradient inside its forward
and overwrites its input with it, so it gets its own copy of the logits.
"""

import argparse
import gc
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Callable

import torch

Impl = Callable[..., torch.Tensor]  # (logits, labels or ref_logits) -> [N] float32


@dataclass
class Result:
    op: str
    impl: str
    vocab: int
    tokens: int
    dtype: str
    fwd_ms: float | None = None
    fwd_gbps: float | None = None
    fwd_peak_mib: float | None = None
    fwd_bwd_ms: float | None = None
    fwd_bwd_gbps: float | None = None
    fwd_bwd_peak_mib: float | None = None
    max_abs_err: float | None = None  # output vs eager
    grad_max_abs_err: float | None = None  # d/d logits vs eager
    error: str | None = None


def eager_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)


def eager_kl(logits: torch.Tensor, ref_logits: torch.Tensor) -> torch.Tensor:
    logp = torch.log_softmax(logits.float(), dim=-1)
    logq = torch.log_softmax(ref_logits.float(), dim=-1)
    return (logp.exp() * (logp - logq)).sum(-1)


def implementations(op: str, device: torch.device) -> dict[str, Impl]:
    """name -> callable, eager first (the others are checked against it)."""
    eager = eager_logprobs if op == "token_logprobs" else eager_kl
    impls: dict[str, Impl] = {"eager": eager}
    if device.type == "cpu":
        from kernels import reference

        impls["plus-reference"] = reference.token_logprobs if op == "token_logprobs" else reference.kl_divergence
        return impls
    from kernels import kl, logprobs

    impls["plus"] = logprobs.token_logprobs if op == "token_logprobs" else kl.kl_divergence
    # dynamic=True: one compilation serves every (N, V) instead of one per shape
    impls["compile"] = torch.compile(eager, dynamic=True)
    if op == "token_logprobs":
        try:
            from liger_kernel.transformers.functional import liger_cross_entropy
        except ImportError:
            pass
        else:
            impls["liger"] = lambda logits, labels: -liger_cross_entropy(logits, labels, reduction="none")
    return impls


def time_ms(fn: Callable[[], object], device: torch.device, grad_to_none: list[torch.Tensor] | None = None) -> float:
    if device.type == "cuda":
        import triton.testing

        return triton.testing.do_bench(fn, grad_to_none=grad_to_none, return_mode="median")
    fn()  # warm-up
    times = []
    for _ in range(3):
        if grad_to_none:
            for t in grad_to_none:
                t.grad = None
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def peak_extra_mib(fn: Callable[[], object], device: torch.device) -> float | None:
    """Peak memory allocated by one call of `fn` beyond what existed before it (CUDA only)."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - before) / 2**20


def copy_bandwidth_gbps(device: torch.device, n_bytes: int) -> float:
    """Device-to-device copy bandwidth (read + write), the roof for a memory-bound kernel."""
    src = torch.empty(n_bytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), device)
    return 2 * n_bytes / (ms * 1e-3) / 1e9


def minimum_bytes(op: str, n_tokens: int, vocab: int, elem: int) -> tuple[int, int]:
    """(forward, forward+backward) bytes an ideal implementation moves."""
    logits = n_tokens * vocab * elem
    if op == "token_logprobs":  # read logits + labels (8) and write logprobs (4)
        fwd = logits + 12 * n_tokens
        return fwd, fwd + 2 * logits + 16 * n_tokens  # backward: read logits again, write grad
    fwd = 2 * logits + 4 * n_tokens  # read both logits, write the KL
    return fwd, fwd + 3 * logits + 4 * n_tokens  # backward: read both again, write grad


def bench_case(op: str, vocab: int, n_tokens: int, dtype: torch.dtype, device: torch.device) -> list[Result]:
    gen = torch.Generator(device=device).manual_seed(0)
    logits = torch.randn(n_tokens, vocab, generator=gen, device=device).to(dtype)
    if op == "token_logprobs":
        other = torch.randint(0, vocab, (n_tokens,), generator=gen, device=device)
    else:
        other = (logits.float() + 0.5 * torch.randn(n_tokens, vocab, generator=gen, device=device)).to(dtype)
    grad_out = torch.ones(n_tokens, device=device)  # uniform: the only upstream gradient Liger supports
    fwd_bytes, fwd_bwd_bytes = minimum_bytes(op, n_tokens, vocab, logits.element_size())
    dtype_name = str(dtype).removeprefix("torch.")

    expected_out = expected_grad = None
    results = []
    for name, impl in implementations(op, device).items():
        result = Result(op, name, vocab, n_tokens, dtype_name)
        # Liger overwrites its input with the gradient: give it a private copy
        x = logits.clone() if name == "liger" else logits
        try:
            # correctness against eager, one forward+backward on fresh inputs
            x.requires_grad_(True)
            out = impl(x, other)
            out.backward(grad_out)
            if name == "eager":
                expected_out, expected_grad = out.detach(), x.grad
            elif expected_out is not None:  # None when eager itself ran out of memory
                result.max_abs_err = (out.detach() - expected_out).abs().max().item()
                result.grad_max_abs_err = (x.grad.float() - expected_grad.float()).abs().max().item()
            del out
            x.grad = None

            def forward():
                with torch.no_grad():
                    return impl(x, other)

            def forward_backward():
                impl(x, other).backward(grad_out)

            x.requires_grad_(False)
            result.fwd_peak_mib = peak_extra_mib(forward, device)
            result.fwd_ms = time_ms(forward, device)
            x.requires_grad_(True)
            result.fwd_bwd_peak_mib = peak_extra_mib(forward_backward, device)
            x.grad = None
            result.fwd_bwd_ms = time_ms(forward_backward, device, grad_to_none=[x])
            x.grad = None
            result.fwd_gbps = fwd_bytes / (result.fwd_ms * 1e-3) / 1e9
            result.fwd_bwd_gbps = fwd_bwd_bytes / (result.fwd_bwd_ms * 1e-3) / 1e9
        except Exception as err:  # an OOM or a failing backend is a result, not the end of the run
            result.error = f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
        finally:
            x.requires_grad_(False)
            x.grad = None
            del x
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        results.append(result)
    return results


def format_table(results: list[Result]) -> str:
    def cell(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    header = (
        f"{'op':<15}{'impl':<15}{'V':>7}{'N':>7} | {'fwd ms':>8}{'GB/s':>7}{'MiB':>8} | "
        f"{'f+b ms':>8}{'GB/s':>7}{'MiB':>8} | {'err':>8}{'grad err':>9}"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        if r.error:
            lines.append(f"{r.op:<15}{r.impl:<15}{r.vocab:>7}{r.tokens:>7} | {r.error}")
            continue
        lines.append(
            f"{r.op:<15}{r.impl:<15}{r.vocab:>7}{r.tokens:>7} | "
            f"{cell(r.fwd_ms, '.3f'):>8}{cell(r.fwd_gbps, '.0f'):>7}{cell(r.fwd_peak_mib, '.0f'):>8} | "
            f"{cell(r.fwd_bwd_ms, '.3f'):>8}{cell(r.fwd_bwd_gbps, '.0f'):>7}{cell(r.fwd_bwd_peak_mib, '.0f'):>8} | "
            f"{cell(r.max_abs_err, '.1e'):>8}{cell(r.grad_max_abs_err, '.1e'):>9}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="write the results as JSON to this file")
    parser.add_argument("--cpu", action="store_true", help="no GPU: time the PyTorch reference on a tiny case")
    parser.add_argument("--vocab", type=int, nargs="+", help="vocabulary sizes (default 50257 151936)")
    parser.add_argument("--tokens", type=int, nargs="+", help="token counts (default 4096 16384)")
    parser.add_argument("--ops", nargs="+", choices=["token_logprobs", "kl_divergence"],
                        default=["token_logprobs", "kl_divergence"])  # fmt: skip
    args = parser.parse_args(argv)

    if args.cpu:
        device, vocabs, token_counts, copy_bytes = torch.device("cpu"), [50257], [64], 2**26
    elif torch.cuda.is_available():
        device, vocabs, token_counts, copy_bytes = torch.device("cuda"), [50257, 151936], [4096, 16384], 2**30
    else:
        sys.exit(
            "benchmarks.bench_kernels: no CUDA GPU (torch.cuda.is_available() is False); the Triton kernels need one. "
            "Use --cpu for a tiny timing of the PyTorch reference on this CPU."
        )
    vocabs, token_counts = args.vocab or vocabs, args.tokens or token_counts
    if min(vocabs + token_counts) <= 0:
        parser.error("--vocab and --tokens must be positive")

    machine = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
    }
    try:
        import triton

        machine["triton"] = triton.__version__
    except ImportError:
        machine["triton"] = None
    print(f"device: {machine['device']}  torch {machine['torch']}  triton {machine['triton']}")
    copy_gbps = copy_bandwidth_gbps(device, copy_bytes)
    print(f"copy roof (x.copy_ of {copy_bytes / 2**20:.0f} MiB, read + write): {copy_gbps:.0f} GB/s\n")

    results = []
    for op in args.ops:
        for vocab in vocabs:
            for n_tokens in token_counts:
                results += bench_case(op, vocab, n_tokens, torch.bfloat16, device)
    print(format_table(results))

    if args.out:
        report = {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": "python -m benchmarks.bench_kernels " + " ".join(sys.argv[1:] if argv is None else argv),
            "machine": machine,
            "copy_gbps": copy_gbps,
            "results": [asdict(r) for r in results],
        }
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
