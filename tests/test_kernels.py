"""Tests for kernels/: the references against closed forms and unchunked torch, the Triton
kernels against the references (values and gradients), the fused linear op against
`hidden @ weight.T` followed by the reference, and the dispatcher's errors.

Without a GPU the Triton kernels run on CPU tensors in Triton's interpreter, which
must be switched on before the kernels are first imported, hence the top of this file.
With a GPU the same tests check the compiled kernels on CUDA tensors.
"""

import math
import os

import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu":
    os.environ["TRITON_INTERPRET"] = "1"  # before the first `import triton` (via kernels.logprobs)

import pytest  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import kernels  # noqa: E402
from kernels import KernelInputError, reference  # noqa: E402
from kernels import logprobs as triton_logprobs  # noqa: E402

# The interpreter evaluates both sides of tl.where with numpy, which warns about the
# -inf - (-inf) it computes in lanes that the where then discards.
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")

NEG_INF = float("-inf")
EPS32 = torch.finfo(torch.float32).eps


def fp32_tol(expected: torch.Tensor, n_terms: int) -> dict:
    """Tolerance for two float32 computations of `expected` that reduce over `n_terms` terms
    (a vocabulary row, a matmul's inner dimension) in different orders, as the Triton
    kernels, the interpreter's numpy and torch's CPU kernels do (and CPUs differ in the
    vector widths they sum with). Each addition rounds at a relative EPS32; for sums in
    different orders the rounding errors grow like sqrt(n) units of the largest magnitude
    involved (n EPS32 is the worst case), so atol is 8 sqrt(n) EPS32 times the largest
    entry, and never below 1e-5, which covers the few roundings of a short computation on
    values of order 1 to 10. rtol 1e-5 is about 84 units in the last place."""
    scale = float(expected.detach().abs().max()) if expected.numel() else 0.0
    return dict(rtol=1e-5, atol=max(1e-5, 8 * math.sqrt(n_terms) * EPS32 * scale))


@pytest.fixture
def use_triton(monkeypatch):
    """Force the Triton backend, with blocks small enough that every row spans several."""
    monkeypatch.setenv("PLUS_KERNELS", "triton")
    monkeypatch.setattr(triton_logprobs, "MAX_BLOCK_SIZE", 256)


def _close(actual, expected, n_terms: int = 1, **tol):
    """assert_close with `tol`, or by default the float32 tolerance of a reduction over n_terms."""
    expected = expected.detach().cpu()
    torch.testing.assert_close(actual.detach().cpu(), expected, **(tol or fp32_tol(expected, n_terms)))


def _logits(shape, seed, scale=3.0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=gen) * scale).to(dtype)


def _labels(shape, vocab, seed, n_ignored=2, avoid=()):
    """Random ids in [0, vocab), never in `avoid`, with the first `n_ignored` positions set to -100."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, vocab, shape, generator=gen)
    for column in avoid:
        labels[labels == column] = (column + 1) % vocab
    labels.view(-1)[:n_ignored] = -100
    return labels


def _triton_logprobs_vs_reference(logits, labels, temperature, tol=None, grad_dtype_tol=None):
    """Run both backends with logprob and entropy outputs weighted by random upstream
    gradients; compare values and d/d logits."""
    gen = torch.Generator().manual_seed(0)
    out_shape = labels.shape
    grad_lp, grad_ent = torch.randn(out_shape, generator=gen), torch.randn(out_shape, generator=gen)

    ref_in = logits.detach().clone().requires_grad_()
    ref_lp, ref_ent = reference.token_logprobs(ref_in, labels, temperature, -100, True)
    ((ref_lp * grad_lp).sum() + (ref_ent * grad_ent).sum()).backward()

    dev_in = logits.detach().to(DEVICE).requires_grad_()
    lp, ent = kernels.token_logprobs(dev_in, labels.to(DEVICE), temperature, return_entropy=True)
    ((lp * grad_lp.to(DEVICE)).sum() + (ent * grad_ent.to(DEVICE)).sum()).backward()

    assert lp.dtype == ent.dtype == torch.float32 and lp.shape == out_shape
    assert dev_in.grad.dtype == logits.dtype
    vocab = logits.shape[-1]
    _close(lp, ref_lp, vocab, **(tol or {}))
    _close(ent, ref_ent, vocab, **(tol or {}))
    _close(dev_in.grad, ref_in.grad, vocab, **(grad_dtype_tol or tol or {}))
    ignored = labels == -100
    assert (lp.cpu()[ignored] == 0).all() and (ent.cpu()[ignored] == 0).all()
    assert (dev_in.grad.cpu()[ignored] == 0).all()
    return lp, dev_in.grad


# ---------------------------------------------------------------- references


def test_reference_logprobs_hand_worked():
    # logits log(1..4): softmax = [0.1, 0.2, 0.3, 0.4]
    logits = torch.log(torch.tensor([[1.0, 2.0, 3.0, 4.0]])).requires_grad_()
    lp, ent = reference.token_logprobs(logits, torch.tensor([2]), return_entropy=True)
    probs = [0.1, 0.2, 0.3, 0.4]
    assert lp.item() == pytest.approx(math.log(0.3), abs=1e-6)
    assert ent.item() == pytest.approx(-sum(p * math.log(p) for p in probs), abs=1e-6)
    lp.sum().backward()  # d log p_2 / d z = onehot(2) - p
    _close(logits.grad, torch.tensor([[-0.1, -0.2, 0.7, -0.4]]))
    # temperature 2 turns the probabilities into sqrt(k) / sum sqrt(k)
    lp_t = reference.token_logprobs(logits.detach(), torch.tensor([3]), temperature=2.0)
    roots = [math.sqrt(k) for k in (1, 2, 3, 4)]
    assert lp_t.item() == pytest.approx(math.log(roots[3] / sum(roots)), abs=1e-6)


def test_reference_logprobs_match_unchunked_log_softmax(monkeypatch):
    monkeypatch.setattr(reference, "CHUNK_ROWS", 3)  # 20 rows -> 7 chunks
    logits = _logits((4, 5, 11), seed=1)
    logits[..., 4] = NEG_INF
    labels = _labels((4, 5), 11, seed=2, avoid=(4,))
    temperature = 0.7

    got = logits.clone().requires_grad_()
    lp, ent = reference.token_logprobs(got, labels, temperature, return_entropy=True)
    (lp.sum() + 0.5 * ent.sum()).backward()

    want = logits.clone().requires_grad_()
    logp = torch.log_softmax(want / temperature, dim=-1)
    keep = labels != -100
    want_lp = torch.where(keep, logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1), 0.0)
    p = logp.exp()
    want_ent = torch.where(keep, -(p * torch.nan_to_num(logp, neginf=0.0)).sum(-1), 0.0)
    (want_lp.sum() + 0.5 * want_ent.sum()).backward()

    _close(lp, want_lp)
    _close(ent, want_ent)
    _close(got.grad, want.grad)
    assert torch.isfinite(got.grad).all()


def test_sft_loss_is_cross_entropy():
    logits = _logits((3, 6, 13), seed=3)
    labels = _labels((3, 6), 13, seed=4, n_ignored=5)
    logprobs = kernels.token_logprobs(logits, labels)
    loss = -logprobs.sum() / (labels != -100).sum()
    expected = F.cross_entropy(logits.view(-1, 13), labels.view(-1), ignore_index=-100)
    _close(loss, expected)


def test_reference_kl_matches_direct_formula(monkeypatch):
    monkeypatch.setattr(reference, "CHUNK_ROWS", 4)
    logits = _logits((3, 4, 9), seed=5)
    ref_logits = _logits((3, 4, 9), seed=6)
    logits[..., 2] = NEG_INF  # p = 0 there: the term is 0, whatever q is
    ref_logits[..., 7] = logits[..., 7] = NEG_INF  # both 0 there
    mask = torch.ones(3, 4)
    mask[1, 2] = 0
    temperature = 1.3

    got = logits.clone().requires_grad_()
    kl = reference.kl_divergence(got, ref_logits, temperature, mask)
    grad_out = torch.randn(3, 4, generator=torch.Generator().manual_seed(7))
    (kl * grad_out).sum().backward()

    logp = torch.log_softmax(logits / temperature, -1)
    logq = torch.log_softmax(ref_logits / temperature, -1)
    p = logp.exp()
    log_ratio = logp - logq
    log_ratio[..., [2, 7]] = 0.0  # p = 0 columns: 0 * log(0 / q) = 0
    direct = (p * log_ratio).sum(-1) * mask
    _close(kl, direct)
    support = [0, 1, 3, 4, 5, 6, 8]  # torch's kl_div turns the p = 0 columns into NaN
    torch_kl = F.kl_div(logq[..., support], logp[..., support], log_target=True, reduction="none")
    _close(kl, torch_kl.sum(-1) * mask)
    # closed-form gradient: dKL/dlogits_v = p_v ((log p_v - log q_v) - KL) / T
    closed_form = p * (log_ratio - direct.unsqueeze(-1)) / temperature * (grad_out * mask).unsqueeze(-1)
    _close(got.grad, closed_form)


# ---------------------------------------------------------------- dispatch


def test_interpreter_really_runs_the_triton_kernels(use_triton):
    if DEVICE == "cpu":
        assert os.environ["TRITON_INTERPRET"] == "1"
        assert triton_logprobs.kernels_interpreted()
    logits = _logits((3, 10), seed=8).to(DEVICE).requires_grad_()
    lp = kernels.token_logprobs(logits, torch.tensor([1, 2, 3], device=DEVICE))
    lp.sum().backward()
    # the autograd graph runs through the Triton autograd.Function, not torch ops
    assert "TokenLogprobs" in repr(lp.grad_fn.next_functions)
    kl = kernels.kl_divergence(logits, logits.detach() + 1.0)  # same distribution: KL = 0
    assert "KLDivergence" in repr(kl.grad_fn.next_functions)
    _close(kl, torch.zeros(3))


def test_default_backend_by_device(monkeypatch):
    monkeypatch.delenv("PLUS_KERNELS", raising=False)
    assert kernels.backend_name(torch.device("cpu")) == "reference"
    assert kernels.backend_name(torch.device("cuda")) == "triton"
    monkeypatch.setenv("PLUS_KERNELS", "reference")
    assert kernels.backend_name(torch.device("cuda")) == "reference"
    logits = _logits((2, 5), seed=9).requires_grad_()
    lp = kernels.token_logprobs(logits, torch.tensor([0, 4]))
    assert "TokenLogprobs" not in repr(lp.grad_fn.next_functions)


def test_forced_triton_on_cpu_without_interpreter_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("PLUS_KERNELS", "triton")
    monkeypatch.setattr(triton_logprobs, "kernels_interpreted", lambda: False)
    with pytest.raises(KernelInputError, match="TRITON_INTERPRET=1"):
        kernels.token_logprobs(torch.zeros(2, 3), torch.tensor([0, 1]))


def test_bad_inputs_raise_kernel_input_error(monkeypatch):
    logits, labels = torch.zeros(2, 5), torch.tensor([0, 4])
    cases = [
        (lambda: kernels.token_logprobs(logits, torch.tensor([0, 5])), "label 5 is outside the vocabulary"),
        (lambda: kernels.token_logprobs(logits, torch.tensor([0, -1])), "label -1"),
        (lambda: kernels.token_logprobs(logits, labels.float()), "labels must be int64"),
        (lambda: kernels.token_logprobs(logits, torch.tensor([0, 1, 2])), "shape \\[2\\]"),
        (lambda: kernels.token_logprobs(logits, labels, temperature=0.0), "temperature"),
        (lambda: kernels.token_logprobs(logits.double(), labels), "float32/float16/bfloat16"),
        (lambda: kernels.token_logprobs(torch.zeros(5), torch.tensor(0)), "\\[N, V\\] or \\[B, T, V\\]"),
        (lambda: kernels.kl_divergence(logits, torch.zeros(2, 6)), "must match logits"),
        (lambda: kernels.kl_divergence(logits, logits, mask=torch.ones(3)), "mask"),
        (lambda: kernels.fused_linear_token_logprobs(torch.zeros(2, 4), torch.zeros(5, 3), labels), "weight must be"),
        (lambda: kernels.fused_linear_token_logprobs(torch.zeros(2, 4), torch.zeros(5, 4), labels, chunk_size=0),
         "chunk_size"),
    ]  # fmt: skip
    for call, message in cases:
        with pytest.raises(KernelInputError, match=message):
            call()
    monkeypatch.setenv("PLUS_KERNELS", "cuda-please")
    with pytest.raises(KernelInputError, match="PLUS_KERNELS"):
        kernels.token_logprobs(logits, labels)


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_empty_inputs(backend, monkeypatch, use_triton):
    monkeypatch.setenv("PLUS_KERNELS", backend)
    logits = torch.zeros(2, 0, 7, device=DEVICE, requires_grad=True)
    lp, ent = kernels.token_logprobs(logits, torch.zeros(2, 0, dtype=torch.long, device=DEVICE), return_entropy=True)
    kl = kernels.kl_divergence(logits, logits.detach())
    assert lp.shape == ent.shape == kl.shape == (2, 0)
    (lp.sum() + kl.sum()).backward()
    assert logits.grad.shape == (2, 0, 7)


# ---------------------------------------------------------------- Triton token_logprobs


@pytest.mark.parametrize("vocab", [7, 1000, 5003])
def test_triton_logprobs_fp32_strided(vocab, use_triton):
    # logits[:, :-1] (the SFT shift) is a strided view the kernels read in place
    full = _logits((2, 8, vocab), seed=vocab)
    avoid = ()
    if vocab > 7:
        full[..., 3] = NEG_INF  # masked-out vocabulary columns, never a label
        avoid = (3,)
    logits = full[:, :-1]
    assert triton_logprobs.as_batched_rows(logits).data_ptr() == full.data_ptr()  # no copy
    labels = _labels((2, 7), vocab, seed=vocab + 1, avoid=avoid)
    lp, _ = _triton_logprobs_vs_reference(logits, labels, temperature=0.7)
    assert torch.isfinite(lp).all()


def test_triton_logprobs_without_entropy(use_triton):
    logits = _logits((9, 1000), seed=10)
    labels = _labels((9,), 1000, seed=11)
    grad_out = torch.randn(9)
    ref_in = logits.clone().requires_grad_()
    (reference.token_logprobs(ref_in, labels, 1.4) * grad_out).sum().backward()
    dev_in = logits.to(DEVICE).requires_grad_()
    lp = kernels.token_logprobs(dev_in, labels.to(DEVICE), temperature=1.4)
    (lp * grad_out.to(DEVICE)).sum().backward()
    _close(lp, reference.token_logprobs(logits, labels, 1.4))
    _close(dev_in.grad, ref_in.grad)
    # entropy requested but unused downstream: its gradient arrives as None
    dev_in.grad = None
    lp2, _unused_entropy = kernels.token_logprobs(dev_in, labels.to(DEVICE), 1.4, return_entropy=True)
    (lp2 * grad_out.to(DEVICE)).sum().backward()
    _close(dev_in.grad, ref_in.grad)
    # and the other way round: only the entropy is used (an entropy bonus)
    ref_in.grad = dev_in.grad = None
    (reference.token_logprobs(ref_in, labels, 1.4, return_entropy=True)[1] * grad_out).sum().backward()
    _unused_logprobs, ent = kernels.token_logprobs(dev_in, labels.to(DEVICE), 1.4, return_entropy=True)
    (ent * grad_out.to(DEVICE)).sum().backward()
    _close(dev_in.grad, ref_in.grad)


def test_triton_handles_a_non_unit_vocabulary_stride(use_triton):
    # a transposed tensor has vocabulary stride != 1: the kernels get a contiguous copy
    logits = _logits((300, 6), seed=15).T  # [6, 300], strides (1, 6)
    ref_logits = _logits((6, 300), seed=16)
    labels = _labels((6,), 300, seed=17)
    _close(kernels.token_logprobs(logits.to(DEVICE), labels.to(DEVICE)), reference.token_logprobs(logits, labels))
    _close(kernels.kl_divergence(logits.to(DEVICE), ref_logits.to(DEVICE)), reference.kl_divergence(logits, ref_logits))


def test_triton_logprobs_extreme_logits(use_triton):
    vocab = 300
    logits = _logits((12, vocab), seed=12)
    logits[:, 0] = 1e4
    logits[::2, 1] = 1e4  # two tied maxima on even rows
    logits[:, 2] = -1e4
    logits[:, 10:20] = NEG_INF
    logits[3, 250:] = 1e4  # a maximum found only in the last block
    labels = torch.tensor([0, 0, 2, 5, 299, -100, 1, 3, 2, 7, 1, 260])
    # temperature 0.5: x / T and x * (1 / T) are the same float, so the comparison is exact
    lp, grad = _triton_logprobs_vs_reference(logits, labels, temperature=0.5)
    assert torch.isfinite(lp).all() and torch.isfinite(grad).all()
    assert lp[0].item() == pytest.approx(math.log(0.5), abs=1e-6)  # half the mass on 0, half on 1
    assert lp[1].item() == pytest.approx(0.0, abs=1e-6)  # all the mass on column 0
    assert lp[2].item() == pytest.approx(-4e4 + math.log(0.5), rel=1e-6)  # (-1e4 - 1e4) / 0.5


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_triton_logprobs_half_precision(dtype, use_triton):
    logits = _logits((2, 6, 1000), seed=13, dtype=dtype)
    labels = _labels((2, 6), 1000, seed=14)
    # against the reference on the same half-precision input (both compute in float32)
    _, grad = _triton_logprobs_vs_reference(logits, labels, temperature=0.7, grad_dtype_tol=dict(atol=1e-4, rtol=1e-2))
    # and against the reference on the upcast input, with the half-precision tolerance
    upcast = logits.float().requires_grad_()
    lp_up, ent_up = reference.token_logprobs(upcast, labels, 0.7, return_entropy=True)
    lp = kernels.token_logprobs(logits.to(DEVICE), labels.to(DEVICE), 0.7)
    _close(lp, lp_up)  # identical inputs once upcast: float32 agreement
    gen = torch.Generator().manual_seed(0)  # the upstream gradients the helper used
    grad_lp, grad_ent = torch.randn(labels.shape, generator=gen), torch.randn(labels.shape, generator=gen)
    (lp_up * grad_lp + ent_up * grad_ent).sum().backward()
    _close(grad.float(), upcast.grad, atol=1e-3, rtol=2e-2)


# ---------------------------------------------------------------- Triton kl_divergence


def _triton_kl_vs_reference(logits, ref_logits, temperature, mask, tol=None):
    grad_out = torch.randn(logits.shape[:-1], generator=torch.Generator().manual_seed(0))
    ref_in = logits.detach().clone().requires_grad_()
    want = reference.kl_divergence(ref_in, ref_logits, temperature, mask)
    (want * grad_out).sum().backward()

    dev_in = logits.detach().to(DEVICE).requires_grad_()
    dev_ref = ref_logits.detach().to(DEVICE).requires_grad_()  # a constant: gets no gradient
    got = kernels.kl_divergence(dev_in, dev_ref, temperature, None if mask is None else mask.to(DEVICE))
    (got * grad_out.to(DEVICE)).sum().backward()

    assert got.dtype == torch.float32 and got.shape == logits.shape[:-1]
    assert dev_in.grad.dtype == logits.dtype and dev_ref.grad is None
    vocab = logits.shape[-1]
    _close(got, want, vocab, **(tol or {}))
    _close(dev_in.grad, ref_in.grad, vocab, **(tol or {}))
    if mask is not None:
        assert (got.cpu()[mask == 0] == 0).all() and (dev_in.grad.cpu()[mask == 0] == 0).all()
    return got, dev_in.grad


@pytest.mark.parametrize("vocab", [7, 1000, 5003])
def test_triton_kl_fp32(vocab, use_triton):
    full = _logits((2, 8, vocab), seed=20 + vocab)
    ref_logits = _logits((2, 7, vocab), seed=21 + vocab)
    if vocab > 7:
        full[..., 5] = NEG_INF  # p = 0 where q > 0: contributes 0
        ref_logits[..., 6] = full[..., 6] = NEG_INF  # both 0: contributes 0
    mask = torch.ones(2, 7)
    mask[0, :2] = 0
    kl, _ = _triton_kl_vs_reference(full[:, :-1], ref_logits, 0.7, mask)
    assert (kl[mask == 1] > 0).all()


def test_triton_kl_extreme_logits(use_triton):
    logits = _logits((10, 300), seed=30)
    logits[:, 0] = 1e4
    logits[:, 1] = -1e4
    logits[::3, 299] = 1e4  # a tie found in the last block
    logits[:, 40:60] = NEG_INF
    ref_logits = logits + _logits((10, 300), seed=31, scale=0.5)  # a nearby policy: small KL
    ref_logits[:, 100] = 1e4 - 1.0  # and a column the reference likes but p does not
    kl, grad = _triton_kl_vs_reference(logits, ref_logits, 0.5, mask=None)
    assert torch.isfinite(kl).all() and torch.isfinite(grad).all()
    assert (kl > 0).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_triton_kl_half_precision(dtype, use_triton):
    logits = _logits((11, 1000), seed=40, dtype=dtype)
    ref_logits = _logits((11, 1000), seed=41, dtype=torch.float32)  # dtypes may differ
    mask = torch.tensor([1, 1, 0, 1, 1, 1, 1, 1, 0, 1, 1])
    _triton_kl_vs_reference(logits, ref_logits, 1.0, mask, tol=dict(atol=1e-4, rtol=1e-2))
    kl_up = reference.kl_divergence(logits.float(), ref_logits, 1.0, mask)
    _close(kernels.kl_divergence(logits.to(DEVICE), ref_logits.to(DEVICE), 1.0, mask.to(DEVICE)), kl_up)


# ---------------------------------------------------------------- fused linear


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_fused_linear_matches_matmul_then_reference(backend, monkeypatch, use_triton):
    monkeypatch.setenv("PLUS_KERNELS", backend)
    gen = torch.Generator().manual_seed(50)
    hidden = torch.randn(2, 6, 16, generator=gen)
    weight = torch.randn(37, 16, generator=gen) * 0.5
    labels = _labels((2, 6), 37, seed=51, n_ignored=3)
    grad_out = torch.randn(2, 6, generator=gen)

    h_ref, w_ref = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    want = reference.token_logprobs(h_ref @ w_ref.T, labels, 0.7)
    (want * grad_out).sum().backward()

    h, w = hidden.to(DEVICE).requires_grad_(), weight.to(DEVICE).requires_grad_()
    got = kernels.fused_linear_token_logprobs(h, w, labels.to(DEVICE), temperature=0.7, chunk_size=4)
    (got * grad_out.to(DEVICE)).sum().backward()

    assert got.shape == (2, 6) and got.dtype == torch.float32
    _close(got, want, 37 + 16)  # a row of logits sums 16 products, its log-softmax 37 terms
    _close(h.grad, h_ref.grad, 37 + 16)
    _close(w.grad, w_ref.grad, 37 + 16 + 12)  # and the weight's gradient sums over 12 tokens
    assert (h.grad.cpu()[labels == -100] == 0).all()


def test_fused_linear_only_hidden_needs_grad(use_triton):
    gen = torch.Generator().manual_seed(52)
    hidden = torch.randn(7, 8, generator=gen, dtype=torch.float32)
    weight = torch.randn(11, 8, generator=gen)
    labels = _labels((7,), 11, seed=53)
    h_ref = hidden.clone().requires_grad_()
    reference.token_logprobs(h_ref @ weight.T, labels).sum().backward()
    h = hidden.to(DEVICE).requires_grad_()
    kernels.fused_linear_token_logprobs(h, weight.to(DEVICE), labels.to(DEVICE), chunk_size=2).sum().backward()
    _close(h.grad, h_ref.grad)


@pytest.mark.parametrize("backward_in_autocast", [False, True])
@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_fused_linear_under_bf16_autocast(backend, backward_in_autocast, monkeypatch, use_triton):
    """Mixed dtypes as autocast produces them: float32 hidden states and master weight, the
    head's matmul in bf16. The op computes its logits in bf16 and its gradient is that of
    the bf16 logits it returned, with float32 gradients for float32 inputs, whether
    backward() runs inside the autocast region or after it."""
    monkeypatch.setenv("PLUS_KERNELS", backend)
    gen = torch.Generator().manual_seed(54)
    hidden = torch.randn(3, 5, 16, generator=gen)
    weight = torch.randn(300, 16, generator=gen) * 0.5
    labels = _labels((3, 5), 300, seed=55, n_ignored=4)
    grad_out = torch.randn(3, 5, generator=gen)

    # expected: the bf16 matmul autocast would run, then the float32 reference log-softmax
    h_ref, w_ref = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    want = reference.token_logprobs(h_ref.bfloat16() @ w_ref.bfloat16().T, labels, 0.7)
    (want * grad_out).sum().backward()

    h, w = hidden.to(DEVICE).requires_grad_(), weight.to(DEVICE).requires_grad_()
    with torch.autocast(torch.device(DEVICE).type, dtype=torch.bfloat16):
        got = kernels.fused_linear_token_logprobs(h, w, labels.to(DEVICE), temperature=0.7, chunk_size=4)
        if backward_in_autocast:
            (got * grad_out.to(DEVICE)).sum().backward()
    if not backward_in_autocast:
        (got * grad_out.to(DEVICE)).sum().backward()

    assert got.dtype == torch.float32 and h.grad.dtype == torch.float32 and w.grad.dtype == torch.float32
    # The same bf16 logits on both sides (a 16-term dot product, rounded once to bf16), then
    # float32 log-softmax: float32 agreement on the values. The gradients pass through bf16
    # matmuls (grad_logits @ weight in bf16), so they agree to bf16's relative precision,
    # 2^-8, a few times over: rtol 2e-2, and atol 2e-2 of the largest entry.
    _close(got, want, 300 + 16)
    for actual, expected in ((h.grad, h_ref.grad), (w.grad, w_ref.grad)):
        _close(actual, expected, rtol=2e-2, atol=2e-2 * float(expected.abs().max()))
    assert (h.grad.cpu()[labels == -100] == 0).all()


def test_fused_linear_accepts_a_float32_weight_for_bf16_hidden(use_triton):
    """FSDP's bf16 compute or a bf16 residual stream gives bf16 hidden states next to a
    float32 master weight: the op runs in the hidden states' dtype and returns each
    gradient in its input's dtype."""
    gen = torch.Generator().manual_seed(56)
    hidden = torch.randn(6, 8, generator=gen).bfloat16()
    weight = torch.randn(40, 8, generator=gen)
    labels = _labels((6,), 40, seed=57)
    h_ref, w_ref = hidden.float().requires_grad_(), weight.clone().requires_grad_()
    want = reference.token_logprobs(h_ref.bfloat16() @ w_ref.bfloat16().T, labels)
    want.sum().backward()
    h, w = hidden.to(DEVICE).requires_grad_(), weight.to(DEVICE).requires_grad_()
    got = kernels.fused_linear_token_logprobs(h, w, labels.to(DEVICE), chunk_size=4)
    got.sum().backward()
    assert h.grad.dtype == torch.bfloat16 and w.grad.dtype == torch.float32
    _close(got, want, 40 + 8)
    _close(h.grad.float(), h_ref.grad, rtol=2e-2, atol=2e-2 * float(h_ref.grad.abs().max()))
    _close(w.grad, w_ref.grad, rtol=2e-2, atol=2e-2 * float(w_ref.grad.abs().max()))
