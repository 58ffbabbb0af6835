"""plus/fsdp.py against training computed other ways.

The reference is plain single-process training on the whole global batch (no wrapper, no
accumulation, torch's own gradient clipping). The sharded runs use 2 and 3 gloo
processes on the CPU (one spawn of 3; ranks 0 and 1 also form a group of 2), each with
its share of the batch in 2 accumulated micro-batches, so every mechanism is exercised:
gather, free, re-gather in the backward, reduce-scatter, no_sync, clipping across shards,
padding (some buffers divide by neither 2 nor 3), tied embeddings (GPT-2 style, on 2
processes) and an untied head with grouped-query attention (Llama style, on 3). torch's
own FSDP2 (`fully_shard`) runs the Llama steps too, as a second, independent sharded
implementation.

A note on the test models: they have no q/k/v biases. A key bias has a zero gradient in
exact arithmetic (softmax ignores a shift shared by all keys), so its gradient is
rounding noise, which Adam scales up to full-size steps: two correct implementations
disagree there at any tolerance.
"""

from __future__ import annotations

import gc
import json
import os
import socket
import weakref
from contextlib import nullcontext

import pytest
import torch
import torch.distributed as dist

import train
from plus import checkpoint, sft, training
from plus.data import IGNORE_INDEX
from plus.distributed import load_optimizer_state
from plus.fsdp import FSDP
from plus.gpt import GPT, GPTConfig
from plus.tokenizer import Tokenizer

CONFIGS = {  # sizes chosen so that some flat buffers divide neither by 2 nor by 3: padding
    "gpt2": GPTConfig.gpt2_style(vocab_size=67, block_size=20, n_layer=2, n_head=3, n_embd=33, qkv_bias=False),
    "llama": GPTConfig.llama_style(vocab_size=67, block_size=19, n_layer=2, n_head=4, n_kv_head=2, n_embd=32,
                                   intermediate_size=40),
}
GLOBAL_BATCH, SEQ, STEPS, ACCUMULATION = 12, 16, 5, 2
LR, WEIGHT_DECAY, MAX_NORM = 1e-2, 0.1, 0.5  # MAX_NORM below the gradient norms: clipping is active
SAVE_AT = 3                                  # the sharded checkpoint is written after this step


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def new_model(family: str, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(CONFIGS[family])


def global_batch(step: int, vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The step's [GLOBAL_BATCH, SEQ] tokens and labels; about a quarter of the labels are
    ignored, so the token count differs between ranks and micro-batches."""
    g = torch.Generator().manual_seed(1000 + step)
    ids = torch.randint(0, vocab, (GLOBAL_BATCH, SEQ), generator=g)
    labels = torch.randint(0, vocab, (GLOBAL_BATCH, SEQ), generator=g)
    labels[torch.rand(GLOBAL_BATCH, SEQ, generator=g) < 0.25] = IGNORE_INDEX
    return ids, labels


def train_steps(model, optimizer, clip, no_sync, steps, world=1, rank=0, accumulation=1,
                group=None) -> list[tuple[float, float]]:
    """The test's training loop (plus/sft.py's, reduced): this rank's share of each global
    batch in `accumulation` micro-batches, the loss normalized by the global token count
    (times the world size: the gradient is averaged over ranks). Returns (loss, grad norm)
    per step."""
    out = []
    vocab = training.unwrap(model).config.vocab_size
    for step in steps:
        ids, labels = global_batch(step, vocab)
        n_tokens = int((labels != IGNORE_INDEX).sum())
        per_rank = GLOBAL_BATCH // world
        micro = per_rank // accumulation
        optimizer.zero_grad(set_to_none=True)
        loss_sum = torch.zeros((), dtype=torch.float64)
        for i in range(accumulation):
            rows = slice(rank * per_rank + i * micro, rank * per_rank + (i + 1) * micro)
            with no_sync() if i < accumulation - 1 else nullcontext():
                s, _ = sft.sequence_loss_sum(model, {"input_ids": ids[rows], "labels": labels[rows]}, "cpu")
                (s * world / n_tokens).backward()
            loss_sum += float(s.detach())
        norm = float(clip(MAX_NORM))
        optimizer.step()
        if world > 1:
            dist.all_reduce(loss_sum, group=group)
        out.append((float(loss_sum) / n_tokens, norm))
    return out


def reference(family: str) -> tuple[list[tuple[float, float]], dict[str, torch.Tensor], int]:
    """Single process, whole global batch: (loss, grad norm) per step, the final weights,
    and the bytes of parameters + gradients + optimizer state."""
    model = new_model(family)
    optimizer = training.make_optimizer(model, LR, WEIGHT_DECAY)
    log = train_steps(model, optimizer, lambda m: torch.nn.utils.clip_grad_norm_(model.parameters(), m),
                      nullcontext, range(STEPS))
    return log, {k: v.detach().clone() for k, v in model.state_dict().items()}, tensor_bytes(model, optimizer)


def tensor_bytes(model, optimizer, fsdp=None) -> int:
    """Bytes of every distinct storage held by the model's modules (parameters, their
    gradients, and any other tensor attribute: gathered weights, placeholders), by the
    optimizer state and, for FSDP, by its gathered or pending buffers."""
    storages = {}

    def add(t):
        if torch.is_tensor(t) and t.numel():
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()

    for m in model.modules():
        for t in list(m._parameters.values()) + list(vars(m).values()):
            add(t)
            add(getattr(t, "grad", None))
    for state in optimizer.state.values():
        for t in state.values():
            add(t)
    for unit in fsdp.units if fsdp is not None else []:
        for flat in unit.flats:
            add(flat.full), add(flat.full_for_backward), add(flat.pending_grad)
    return sum(storages.values())


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp(min=1e-30))


# ---------------------------------------------------------------------------- the workers

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(worker, world: int, *args) -> None:
    torch.multiprocessing.spawn(worker, args=(world, free_port(), *args), nprocs=world, join=True)


def fsdp_run(family, world, rank, out_dir, group=None) -> dict:
    """This FSDP: STEPS steps, and a checkpoint (full weights + sharded optimizer) in
    `out_dir` after step SAVE_AT. Returns the log, the final full weights, the per-rank
    bytes and the padding checks."""
    model = new_model(family)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    fsdp = FSDP(model, process_group=group)
    roundtrip = fsdp.full_state_dict()  # before any step: the sharded-then-gathered weights
    optimizer = training.make_optimizer(model, LR, WEIGHT_DECAY)
    log = []
    for i, steps in enumerate((range(SAVE_AT), range(SAVE_AT, STEPS))):
        log += train_steps(fsdp, optimizer, fsdp.clip_grad_norm_, fsdp.no_sync, steps, world, rank, ACCUMULATION,
                           group)
        if i == 0:
            opt = fsdp.optimizer_state_dict(optimizer)
            weights = fsdp.full_state_dict()
            if rank == 0:
                checkpoint.save_checkpoint(out_dir, model, {"model": CONFIGS[family].to_dict()}, optimizer=opt,
                                           state_dict=weights, trainer_state={"step": SAVE_AT})
            dist.barrier(group=group)
    result = {"log": log, "bytes": tensor_bytes(model, optimizer, fsdp), "final": fsdp.full_state_dict(),
              "padded": any(f.padded_numel > f.numel for u in fsdp.units for f in u.flats)}
    if rank == 0:
        result["roundtrip_exact"] = all(torch.equal(roundtrip[k], original[k]) for k in original)
    return result


def resume_run(family, world, rank, ckpt, group=None) -> dict:
    """A new model (another seed) that loads the checkpoint (weights through
    load_full_state_dict, the optimizer shards, re-cut if the world size changed) and
    runs the remaining steps."""
    model = new_model(family, seed=1)
    fsdp = FSDP(model, process_group=group)
    fsdp.load_full_state_dict(checkpoint.load_state_dict(ckpt))
    optimizer = training.make_optimizer(model, LR, WEIGHT_DECAY)
    _, opt_state, _ = checkpoint.load_trainer_state(ckpt)
    load_optimizer_state(fsdp, optimizer, opt_state)
    log = train_steps(fsdp, optimizer, fsdp.clip_grad_norm_, fsdp.no_sync, range(SAVE_AT, STEPS), world, rank,
                      ACCUMULATION, group)
    return {"log": log, "final": fsdp.full_state_dict()}


def fsdp2_run(family, world, rank) -> dict:
    """The same steps under torch's FSDP2: fully_shard each block, then the root."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    model = new_model(family)
    mesh = init_device_mesh("cpu", (world,))
    for block in model.blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    optimizer = training.make_optimizer(model, LR, WEIGHT_DECAY)

    class NoSync:  # FSDP2's spelling of no_sync
        def __enter__(self):
            model.set_requires_gradient_sync(False)

        def __exit__(self, *exc):
            model.set_requires_gradient_sync(True)

    clip = lambda m: torch.nn.utils.clip_grad_norm_(model.parameters(), m).full_tensor()  # noqa: E731
    log = train_steps(model, optimizer, clip, NoSync, range(STEPS), world, rank, ACCUMULATION)
    final = {k: v.full_tensor().detach().clone() for k, v in model.state_dict().items()}
    return {"log": log, "final": final}


def worker(rank: int, world: int, port: int, out_dir: str) -> None:
    """Three processes. Ranks 0 and 1 form a world of 2 (a subgroup): this FSDP on the
    GPT-2-style model, checkpointed after step 3, and a resume of that checkpoint. Then
    all three: this FSDP and FSDP2 on the Llama-style model, and a resume of the
    2-process checkpoint on 3 processes."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        pair = dist.new_group([0, 1])
        ckpt = os.path.join(out_dir, "gpt2-2")
        results = {2: {}, 3: {}}
        if rank < 2:
            results[2]["fsdp:gpt2"] = fsdp_run("gpt2", 2, rank, ckpt, group=pair)
            results[2]["resume:gpt2"] = resume_run("gpt2", 2, rank, ckpt, group=pair)
        dist.barrier()
        results[3]["fsdp:llama"] = fsdp_run("llama", 3, rank, os.path.join(out_dir, "llama-3"))
        results[3]["fsdp2:llama"] = fsdp2_run("llama", 3, rank)
        results[3]["resume:gpt2"] = resume_run("gpt2", 3, rank, ckpt)
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()
    # Its results saved, the process leaves without the interpreter's teardown: there a
    # rank of this three-process gloo world sometimes aborts in a C++ destructor
    # ("terminate called without an active exception", no Python frame), which would fail
    # the run after its work is done. An exception above still reaches spawn.
    os._exit(0)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{world: [results of each rank]} and the directory of the checkpoints."""
    out = tmp_path_factory.mktemp("fsdp")
    spawn(worker, 3, str(out))
    per_rank = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(3)]
    return {2: [per_rank[r][2] for r in range(2)], 3: [per_rank[r][3] for r in range(3)]}, out


@pytest.fixture(scope="module")
def references():
    return {family: reference(family) for family in CONFIGS}


# ---------------------------------------------------------------------------- acceptance

@pytest.mark.parametrize("world, family", [(2, "gpt2"), (3, "llama")])
def test_sharded_training_equals_single_process_full_batch(runs, references, world, family):
    ranks = runs[0][world]
    ref_log, ref_final, _ = references[family]
    assert any(norm > MAX_NORM for _, norm in ref_log), "clipping should be active"
    for r in ranks:  # every rank logs the same global numbers
        for (loss, norm), (ref_loss, ref_norm) in zip(r[f"fsdp:{family}"]["log"], ref_log, strict=True):
            assert abs(loss - ref_loss) <= 1e-5 * abs(ref_loss), (loss, ref_loss)
            assert abs(norm - ref_norm) <= 1e-5 * abs(ref_norm), (norm, ref_norm)
    final = ranks[0][f"fsdp:{family}"]["final"]
    assert list(final) == list(ref_final)  # the unwrapped model's names, in order
    for name in ref_final:
        assert relative_difference(final[name], ref_final[name]) <= 1e-5, name
        moved = relative_difference(new_model(family).state_dict()[name], ref_final[name])
        assert moved > 1e-3, f"{name} did not train"


@pytest.mark.parametrize("world, family", [(2, "gpt2"), (3, "llama")])
def test_padded_shards_gather_back_exactly(runs, world, family):
    ranks = runs[0][world]
    assert ranks[0][f"fsdp:{family}"]["padded"]
    assert ranks[0][f"fsdp:{family}"]["roundtrip_exact"]


@pytest.mark.parametrize("world, family", [(2, "gpt2"), (3, "llama")])
def test_each_rank_holds_a_world_size_share_of_the_bytes(runs, references, world, family):
    unsharded = references[family][2]  # parameters + gradients + AdamW moments, one process
    for r in runs[0][world]:
        assert abs(r[f"fsdp:{family}"]["bytes"] - unsharded / world) <= 0.1 * unsharded / world, \
            (r[f"fsdp:{family}"]["bytes"], unsharded / world)


def test_fsdp2_gives_the_same_losses(runs):
    ours, theirs = runs[0][3][0]["fsdp:llama"], runs[0][3][0]["fsdp2:llama"]
    for (loss, norm), (loss2, norm2) in zip(ours["log"], theirs["log"], strict=True):
        assert abs(loss - loss2) <= 1e-5 * abs(loss2) and abs(norm - norm2) <= 1e-5 * abs(norm2)
    for name, value in theirs["final"].items():
        assert relative_difference(ours["final"][name], value) <= 1e-5, name


def test_checkpoint_loads_in_single_process_code(runs, references):
    """The sharded run's checkpoint (written after step 3) holds what 3 steps of the
    single-process reference hold, in the unchanged format."""
    model = GPT(GPTConfig.from_dict(checkpoint.load_config(runs[1] / "gpt2-2")["model"]))  # a plain GPT, no FSDP
    checkpoint.load_into(model, checkpoint.load_state_dict(runs[1] / "gpt2-2"))
    ref = new_model("gpt2")
    optimizer = training.make_optimizer(ref, LR, WEIGHT_DECAY)
    train_steps(ref, optimizer, lambda m: torch.nn.utils.clip_grad_norm_(ref.parameters(), m), nullcontext,
                range(SAVE_AT))
    for name, value in ref.state_dict().items():
        assert relative_difference(model.state_dict()[name], value) <= 1e-5, name


def test_resume_on_the_same_world_size_is_exact(runs):
    for r in runs[0][2]:
        assert r["resume:gpt2"]["log"] == r["fsdp:gpt2"]["log"][SAVE_AT:]
    uninterrupted, resumed = runs[0][2][0]["fsdp:gpt2"]["final"], runs[0][2][0]["resume:gpt2"]["final"]
    for name in uninterrupted:
        assert torch.equal(resumed[name], uninterrupted[name]), name


def test_resume_on_another_world_size_reshards(runs, references):
    """Saved by 2 processes after step 3, resumed by 3: the optimizer's moments are re-cut,
    and steps 4-5 follow the single-process run."""
    ref_log, ref_final, _ = references["gpt2"]
    resumed = runs[0][3][0]["resume:gpt2"]
    assert all(r["resume:gpt2"]["log"] == resumed["log"] for r in runs[0][3])
    for (loss, _), (ref_loss, _) in zip(resumed["log"], ref_log[SAVE_AT:], strict=True):
        assert abs(loss - ref_loss) <= 1e-5 * abs(ref_loss)
    for name in ref_final:
        assert relative_difference(resumed["final"][name], ref_final[name]) <= 1e-5, name


# ---------------------------------------------------------------------------- one process

def test_gathered_weights_are_freed_after_each_block_and_regathered_for_backward():
    """Only the root stays whole through a forward: each block's gathered buffers die when
    the block returns (autograd keeps a note, not the weights), and the backward gathers
    them again. The loss and the gradient are the plain model's."""
    plain, model = new_model("gpt2"), new_model("gpt2")
    fsdp = FSDP(model)
    gathered = []  # every buffer FSDP gathers, in order
    real_gather = fsdp._all_gather
    fsdp._all_gather = lambda flat, dtype: gathered.append(real_gather(flat, dtype)) or gathered[-1]
    ids, labels = global_batch(0, CONFIGS["gpt2"].vocab_size)
    batch = {"input_ids": ids, "labels": labels}

    loss, n = sft.sequence_loss_sum(fsdp, batch, "cpu")
    assert len(gathered) == 2 + 2 * 2  # the root first, then 2 blocks; matrices and vectors each
    alive = [weakref.ref(t) for t in gathered]
    gathered.clear()
    gc.collect()
    assert [ref() is not None for ref in alive] == [True, True, False, False, False, False]
    assert model.blocks[0].mlp.up_proj.weight.numel() == 0  # a placeholder between uses

    (loss / n).backward()
    assert len(gathered) == 2 * 2  # each block once more; the root was still there
    assert all(f.full is None and f.full_for_backward is None for u in fsdp.units for f in u.flats)
    assert model.tok_emb.weight.numel() == 0  # the root is released after the backward

    plain_loss, _ = sft.sequence_loss_sum(plain, batch, "cpu")
    (plain_loss / n).backward()
    assert float(loss.detach()) == pytest.approx(float(plain_loss.detach()), rel=1e-6)
    sharded_norm = float(fsdp.clip_grad_norm_(float("inf")))
    assert sharded_norm == pytest.approx(float(torch.nn.utils.clip_grad_norm_(plain.parameters(), float("inf"))),
                                         rel=1e-5)


def test_inference_on_summoned_weights_matches_the_plain_model():
    from plus.generate import generate

    plain, model = new_model("llama"), new_model("llama")
    fsdp = FSDP(model)
    prompt = torch.randint(0, 67, (3, 5), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(prompt)
    outputs = []
    for m in (plain, model):
        with fsdp.summon_full_params() if m is model else nullcontext():
            outputs.append(generate(m, prompt, mask, 6, eos_id=1, pad_id=0, temperature=1.0,
                                    generator=torch.Generator().manual_seed(1)))
    assert torch.equal(outputs[0].tokens, outputs[1].tokens)
    torch.testing.assert_close(outputs[0].logprobs, outputs[1].logprobs, rtol=1e-5, atol=1e-6)
    assert model.tok_emb.weight.numel() == 0  # released again
    with fsdp.summon_full_params(), pytest.raises(RuntimeError, match="gradients would not reach the shards"):
        model(prompt)


def test_mixed_precision_computes_in_bf16_and_reduces_in_float32():
    plain, model = new_model("gpt2"), new_model("gpt2")
    fsdp = FSDP(model, param_dtype=torch.bfloat16)
    ids, labels = global_batch(0, CONFIGS["gpt2"].vocab_size)
    hidden = fsdp(ids)
    assert hidden.dtype == torch.bfloat16
    loss, n = sft.sequence_loss_sum(fsdp, {"input_ids": ids, "labels": labels}, "cpu")
    (loss / n).backward()
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in model.parameters())
    plain_loss, _ = sft.sequence_loss_sum(plain, {"input_ids": ids, "labels": labels}, "cpu")
    assert float(loss.detach()) == pytest.approx(float(plain_loss.detach()), rel=2e-2)


def test_strategy_mismatch_and_foreign_state_are_clear_errors():
    model = new_model("gpt2")
    fsdp = FSDP(model)
    optimizer = training.make_optimizer(model, LR, WEIGHT_DECAY)
    plain = new_model("gpt2")
    ddp_state = training.make_optimizer(plain, LR, WEIGHT_DECAY).state_dict()
    with pytest.raises(ValueError, match="saved with --strategy ddp"):
        load_optimizer_state(fsdp, optimizer, ddp_state)
    sharded = fsdp.optimizer_state_dict(optimizer)
    assert sharded["world_size"] == 1
    with pytest.raises(ValueError, match="saved with --strategy fsdp over 1 processes"):
        load_optimizer_state(plain, training.make_optimizer(plain, LR, WEIGHT_DECAY), sharded)
    other = new_model("llama")
    other_fsdp = FSDP(other)
    with pytest.raises(ValueError, match="saved for a different model"):
        other_fsdp.load_optimizer_state_dict(training.make_optimizer(other, LR, WEIGHT_DECAY), sharded)
    with pytest.raises(ValueError, match="missing"):
        other_fsdp.load_full_state_dict(plain.state_dict())


def test_tied_parameters_must_share_a_unit():
    model = new_model("llama")
    model.blocks[0].mlp.up_proj.weight = model.blocks[1].mlp.up_proj.weight
    with pytest.raises(ValueError, match="tied parameters must sit in the same unit"):
        FSDP(model)


# ---------------------------------------------------------------------------- train.py

WORDS = "my friend and i went out to the park after work and we talked about money".split()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A small 'SFT' checkpoint and reward model, TL;DR-style posts and preference pairs."""
    root = tmp_path_factory.mktemp("tiny")
    text = lambda i, n: " ".join(WORDS[(i + k) % len(WORDS)] for k in range(n))  # noqa: E731
    with open(root / "tldr.jsonl", "w") as f:
        for i in range(32):
            f.write(json.dumps({"subreddit": "dating", "title": f"title {i}", "post": text(i, 12),
                                "summary": text(i + 3, 4)}) + "\n")
    with open(root / "prefs.jsonl", "w") as f:
        for i in range(16):
            f.write(json.dumps({"prompt": f"POST: {text(i, 8)}\n\nTL;DR:", "chosen": text(i, 3),
                                "rejected": text(i + 5, 2)}) + "\n")
    tokenizer = Tokenizer.train([text(i, 20) for i in range(60)], vocab_size=300)
    from plus.reward_head import RewardModel

    torch.manual_seed(0)
    policy = GPT(GPTConfig.gpt2_style(vocab_size=tokenizer.vocab_size, block_size=96, n_layer=2, n_head=2, n_embd=16))
    checkpoint.save_checkpoint(root / "sft", policy, {"stage": "sft", "model": policy.config.to_dict()},
                               tokenizer=tokenizer)
    RewardModel.from_gpt(policy).save(root / "rm", tokenizer)
    return root


def stage_args(tiny, stage, out, strategy):
    common = ["--out_dir", str(out), "--strategy", strategy, "--no_progress", "--max_steps", "2",
              "--micro_train_batch_size", "1", "--prompt_max_len", "80", "--generate_max_len", "6"]
    if stage == "sft":
        return ["--stage", "sft", "--dataset", str(tiny / "tldr.jsonl"), "--init_from", str(tiny / "sft"),
                "--train_batch_size", "4", "--eval_dataset", str(tiny / "tldr.jsonl"), "--n_eval", "3",
                "--eval_steps", "1", *common]
    if stage == "rm":
        return ["--stage", "rm", "--dataset", str(tiny / "prefs.jsonl"), "--init_from", str(tiny / "sft"),
                "--prompt_key", "prompt", "--train_batch_size", "4", "--lm_loss_coeff", "0.5",
                "--eval_dataset", str(tiny / "prefs.jsonl"),
                "--n_eval", "3", "--eval_steps", "1", *common]
    return ["--stage", "ppo", "--dataset", str(tiny / "tldr.jsonl"), "--init_from", str(tiny / "sft"),
            "--reward_pretrain", str(tiny / "rm"), "--rollout_batch_size", "4", "--train_batch_size", "4",
            "--ppo_epochs", "1", "--learning_rate", "1e-3", "--critic_learning_rate", "1e-3", *common]


def train_worker(rank: int, world: int, ports: list[int], runs: list[list[str]]) -> None:
    """One of `world` processes, with the environment torchrun would set; train.main per
    run, each on a fresh port (the previous run's process group closed its store)."""
    torch.set_num_threads(1)
    for port, argv in zip(ports, runs):
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                          WORLD_SIZE=str(world))
        if train.main(argv) != 0:
            raise RuntimeError(f"rank {rank}: train.main({argv}) failed")


def metrics(out, stage) -> list[dict]:
    return [json.loads(line) for line in (out / stage / "metrics.jsonl").read_text().splitlines()]


def test_train_py_strategy_fsdp_follows_single_process_and_ddp(tiny, tmp_path):
    """SFT and RM on 2 FSDP processes follow the single-process run; PPO (whose samples
    depend on the process) on 2 FSDP processes follows PPO on 2 DDP processes."""
    for stage in ("sft", "rm"):
        assert train.main(stage_args(tiny, stage, tmp_path / "one", "ddp")) == 0
    runs = [stage_args(tiny, stage, tmp_path / "fsdp", "fsdp") for stage in ("sft", "rm", "ppo")]
    runs.append(stage_args(tiny, "ppo", tmp_path / "ddp", "ddp"))
    torch.multiprocessing.spawn(train_worker, args=(2, [free_port() for _ in runs], runs), nprocs=2, join=True)
    for stage, keys, other in (("sft", ("loss", "grad_norm", "eval_loss"), "one"),
                               ("rm", ("loss", "grad_norm", "eval_loss"), "one"),
                               ("ppo", ("policy_loss", "value_loss", "policy_grad_norm", "critic_grad_norm"), "ddp")):
        ours, theirs = metrics(tmp_path / "fsdp", stage), metrics(tmp_path / other, stage)
        assert len(ours) == len(theirs) == 2
        for a, b in zip(ours, theirs):
            for key in keys:
                assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-7), (stage, key)
        # The checkpoint is the usual full one, loadable by a single process. (atol: this
        # model has key biases, whose updates are rounding noise; see the module docstring.)
        a = checkpoint.load_state_dict(tmp_path / "fsdp" / stage)
        b = checkpoint.load_state_dict(tmp_path / other / stage)
        assert list(a) == list(b)
        for name in a:
            torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-6, msg=f"{stage} {name}")


def test_train_py_fsdp_resume_is_exact(tiny, tmp_path, monkeypatch):
    """--strategy fsdp in one process: interrupted after the step-1 save, resumed, equal."""
    args = stage_args(tiny, "sft", tmp_path / "a", "fsdp")
    assert train.main(args) == 0
    real_save = checkpoint.save_checkpoint

    def save_then_die(*a, **k):
        real_save(*a, **k)
        raise KeyboardInterrupt("killed after the step-1 save")

    monkeypatch.setattr(checkpoint, "save_checkpoint", save_then_die)
    resumed = stage_args(tiny, "sft", tmp_path / "b", "fsdp")
    with pytest.raises(KeyboardInterrupt):
        train.main(resumed + ["--save_steps", "1"])
    monkeypatch.undo()
    assert train.main(resumed + ["--resume"]) == 0
    assert [m["loss"] for m in metrics(tmp_path / "b", "sft")] == [m["loss"] for m in metrics(tmp_path / "a", "sft")]
    a, b = checkpoint.load_state_dict(tmp_path / "a" / "sft"), checkpoint.load_state_dict(tmp_path / "b" / "sft")
    for name in a:
        assert torch.equal(a[name], b[name]), name
