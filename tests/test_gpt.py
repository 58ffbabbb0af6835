import math

import pytest
import torch
import torch.nn.functional as F

from plus.gpt import GPT, GPTConfig

FAMILIES = {
    "gpt2": GPTConfig.gpt2_style(vocab_size=97, block_size=64, n_layer=2, n_head=4, n_embd=32),
    "llama": GPTConfig.llama_style(vocab_size=97, block_size=64, n_layer=2, n_head=4, n_kv_head=2, n_embd=32,
                                   intermediate_size=48, qkv_bias=True, rope_theta=500.0),
}


def make_model(name, seed=0):
    torch.manual_seed(seed)
    model = GPT(FAMILIES[name]).eval()
    # Random (not zero) biases and norm weights so every parameter matters in the checks.
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    return model


def naive_forward(model: GPT, ids: list[int]) -> torch.Tensor:
    """An independent, loop-based forward of one unpadded sequence: explicit softmax
    attention with a triangular mask, heads repeated by hand for GQA, rotary embeddings
    written out pairwise with cos/sin of (position * theta^(-2i/d))."""
    cfg = model.config
    T, hd = len(ids), cfg.head_dim
    x = model.tok_emb.weight[torch.tensor(ids)]
    if cfg.pos == "learned":
        x = x + model.pos_emb.weight[:T]

    def norm(mod, h):
        if cfg.norm == "rmsnorm":
            return mod.weight * h / torch.sqrt((h * h).mean(-1, keepdim=True) + cfg.norm_eps)
        mu = h.mean(-1, keepdim=True)
        var = ((h - mu) ** 2).mean(-1, keepdim=True)
        return mod.weight * (h - mu) / torch.sqrt(var + cfg.norm_eps) + mod.bias

    def rope(h):  # h [T, hd]
        half = hd // 2
        out = torch.empty_like(h)
        for t in range(T):
            for i in range(half):
                ang = t * cfg.rope_theta ** (-2 * i / hd)
                c, s = math.cos(ang), math.sin(ang)
                a, b = h[t, i], h[t, i + half]
                out[t, i] = a * c - b * s
                out[t, i + half] = b * c + a * s
        return out

    for blk in model.blocks:
        h = norm(blk.norm1, x)
        q, k, v = blk.attn.q_proj(h), blk.attn.k_proj(h), blk.attn.v_proj(h)
        group = cfg.n_head // cfg.n_kv_head
        heads = []
        for head in range(cfg.n_head):
            kv = head // group
            qh = q[:, head * hd:(head + 1) * hd]
            kh = k[:, kv * hd:(kv + 1) * hd]
            vh = v[:, kv * hd:(kv + 1) * hd]
            if cfg.pos == "rope":
                qh, kh = rope(qh), rope(kh)
            scores = qh @ kh.T / math.sqrt(hd)
            scores = scores.masked_fill(torch.ones(T, T).triu(1).bool(), float("-inf"))
            heads.append(torch.softmax(scores, -1) @ vh)
        x = x + blk.attn.o_proj(torch.cat(heads, -1))
        h = norm(blk.norm2, x)
        if cfg.mlp == "swiglu":
            m = blk.mlp.down_proj(F.silu(blk.mlp.gate_proj(h)) * blk.mlp.up_proj(h))
        else:
            u = blk.mlp.up_proj(h)
            gelu = 0.5 * u * (1 + torch.tanh(math.sqrt(2 / math.pi) * (u + 0.044715 * u ** 3)))
            m = blk.mlp.down_proj(gelu)
        x = x + m
    return model.logits(norm(model.norm_f, x))


@pytest.mark.parametrize("family", FAMILIES)
def test_forward_matches_naive_loop(family):
    model = make_model(family)
    ids = [5, 17, 3, 90, 42, 8, 8, 61]
    with torch.no_grad():
        fast = model.logits(model(torch.tensor([ids])))[0]
        slow = naive_forward(model, ids)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_kv_cache_decoding_matches_full_forward(family):
    model = make_model(family)
    torch.manual_seed(1)
    ids = torch.randint(0, 97, (3, 12))
    mask = torch.ones(3, 12, dtype=torch.long)
    mask[0, :4] = 0  # left padding in row 0
    mask[2, :1] = 0
    with torch.no_grad():
        full = model.logits(model(ids, attention_mask=mask))
        cache = model.new_kv_cache(3, 12)
        pieces = [model.logits(model(ids[:, :5], attention_mask=mask[:, :5], kv_cache=cache))]
        for t in range(5, 12):  # then one token at a time
            pieces.append(model.logits(model(ids[:, t:t + 1], attention_mask=mask[:, :t + 1], kv_cache=cache)))
    stepped = torch.cat(pieces, 1)
    real = mask.bool()
    torch.testing.assert_close(stepped[real], full[real], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_left_padded_batch_equals_sequences_alone(family):
    model = make_model(family)
    seqs = [[4, 9, 33, 2, 7], [11, 12], [50, 51, 52, 53, 54, 55, 56]]
    T = max(map(len, seqs))
    ids = torch.full((3, T), 1)
    mask = torch.zeros(3, T, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, T - len(s):] = torch.tensor(s)
        mask[i, T - len(s):] = 1
    with torch.no_grad():
        batch = model.logits(model(ids, attention_mask=mask))
        for i, s in enumerate(seqs):
            alone = model.logits(model(torch.tensor([s])))[0]
            torch.testing.assert_close(batch[i, T - len(s):], alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_right_padded_batch_equals_sequences_alone(family):
    model = make_model(family)
    seqs = [[4, 9, 33], [11, 12, 13, 14, 15, 16]]
    ids = torch.zeros(2, 6, dtype=torch.long)
    mask = torch.zeros(2, 6, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s)
        mask[i, :len(s)] = 1
    with torch.no_grad():
        batch = model.logits(model(ids, attention_mask=mask))
        for i, s in enumerate(seqs):
            alone = model.logits(model(torch.tensor([s])))[0]
            torch.testing.assert_close(batch[i, :len(s)], alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_shared_prompt_packing_equals_each_continuation_alone(family):
    # Row 0: a prompt and three continuations; row 1: another prompt, one continuation, padding.
    model = make_model(family)
    rows = [([4, 9, 33, 2], [[7, 8, 1], [20], [30, 31, 32, 33, 34]]),
            ([11, 12], [[13, 14, 15]])]
    T = max(len(p) + sum(map(len, cs)) for p, cs in rows)
    ids = torch.zeros(2, T, dtype=torch.long)
    seg = torch.full((2, T), -1)
    for i, (prompt, conts) in enumerate(rows):
        ids[i, :len(prompt)] = torch.tensor(prompt)
        seg[i, :len(prompt)] = 0
        col = len(prompt)
        for k, c in enumerate(conts, start=1):
            ids[i, col:col + len(c)] = torch.tensor(c)
            seg[i, col:col + len(c)] = k
            col += len(c)
    with torch.no_grad():
        packed = model.logits(model(ids, segment_ids=seg))
        for i, (prompt, conts) in enumerate(rows):
            col = len(prompt)
            for c in conts:
                alone = model.logits(model(torch.tensor([prompt + c])))[0]
                torch.testing.assert_close(packed[i, :len(prompt)], alone[:len(prompt)], atol=1e-5, rtol=1e-5)
                torch.testing.assert_close(packed[i, col:col + len(c)], alone[len(prompt):], atol=1e-5, rtol=1e-5)
                col += len(c)


def test_shared_prefix_layout_by_hand():
    from plus.gpt import shared_prefix_layout

    # prompt (2 tokens), continuation 1 (2 tokens), continuation 2 (1 token), one pad
    mask, pos = shared_prefix_layout(torch.tensor([[0, 0, 1, 1, 2, -1]]))
    assert pos.tolist() == [[0, 1, 2, 3, 2, 1]]
    expected = [[1, 0, 0, 0, 0, 0],
                [1, 1, 0, 0, 0, 0],
                [1, 1, 1, 0, 0, 0],
                [1, 1, 1, 1, 0, 0],
                [1, 1, 0, 0, 1, 0],
                [1, 1, 0, 0, 0, 1]]
    assert mask[0, 0].int().tolist() == expected


def test_packed_row_may_exceed_block_size_but_not_its_positions():
    model = make_model("llama")  # block_size 64
    seg = torch.tensor([[0] * 30 + [1] * 30 + [2] * 30])
    model(torch.zeros(1, 90, dtype=torch.long), segment_ids=seg)  # positions reach 59 only
    with pytest.raises(ValueError, match="block_size=64"):
        model(torch.zeros(1, 90, dtype=torch.long), segment_ids=torch.tensor([[0] * 30 + [1] * 40 + [2] * 20]))
    with pytest.raises(ValueError, match="no attention_mask"):
        model(torch.zeros(1, 3, dtype=torch.long), attention_mask=torch.ones(1, 3), segment_ids=torch.zeros(1, 3))


@pytest.mark.parametrize("family", FAMILIES)
def test_causality(family):
    model = make_model(family)
    torch.manual_seed(2)
    a = torch.randint(0, 97, (1, 10))
    b = a.clone()
    b[0, 6:] = torch.randint(0, 97, (4,))
    with torch.no_grad():
        la, lb = model.logits(model(a)), model.logits(model(b))
    torch.testing.assert_close(la[0, :6], lb[0, :6], atol=0, rtol=0)
    assert not torch.allclose(la[0, 6:], lb[0, 6:])


def test_gqa_equals_mha_with_repeated_kv_heads():
    gqa = make_model("llama")
    cfg = GPTConfig.from_dict({**gqa.config.to_dict(), "n_kv_head": 4})
    mha = GPT(cfg).eval()
    state = gqa.state_dict()
    hd = cfg.head_dim
    for key, value in list(state.items()):
        if "k_proj" in key or "v_proj" in key:  # repeat each kv head for the 2 query heads sharing it
            state[key] = value.view(2, hd, *value.shape[1:]).repeat_interleave(2, 0).reshape(4 * hd, *value.shape[1:])
    mha.load_state_dict(state)
    ids = torch.randint(0, 97, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(mha.logits(mha(ids)), gqa.logits(gqa(ids)), atol=1e-5, rtol=1e-5)


def test_param_count_and_flops_by_hand():
    cfg = GPTConfig.gpt2_style(vocab_size=10, block_size=8, n_layer=1, n_head=2, n_embd=4)
    model = GPT(cfg)
    # block: 2 LayerNorms (4+4 each) + q,k,v,o (4*4+4 each) + MLP up (4*16+16) + down (16*4+4)
    block = 2 * 8 + 4 * 20 + 80 + 68
    total = 10 * 4 + 8 * 4 + block + 8  # tied head counted once, plus final LayerNorm
    assert model.num_params(non_embedding=False) == total
    assert model.num_params() == total - 8 * 4  # tied token embedding stays (it is the head)
    assert model.flops_per_token(seq_len=8) == 6 * (total - 32) + 12 * 1 * 4 * 8
    assert model.estimate_mfu(1000.0, 8, 1e9) == pytest.approx(model.flops_per_token(8) * 1000 / 1e9)


def test_residual_projection_init_is_scaled():
    torch.manual_seed(0)
    cfg = GPTConfig.gpt2_style(vocab_size=50, n_layer=8, n_head=4, n_embd=128)
    model = GPT(cfg)
    assert model.blocks[0].attn.o_proj.weight.std().item() == pytest.approx(0.02 / math.sqrt(16), rel=0.05)
    assert model.blocks[0].attn.q_proj.weight.std().item() == pytest.approx(0.02, rel=0.05)


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="n_kv_head"):
        GPTConfig(n_head=4, n_kv_head=3)
    with pytest.raises(ValueError, match="unknown keys"):
        GPTConfig.from_dict({"n_layers": 3})
