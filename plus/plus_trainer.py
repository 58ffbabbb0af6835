"""PLUS: a reward model conditioned on a learned summary of each user (Nam et al. 2025).

One Bradley–Terry reward model serves users who disagree only if it knows whom it is
scoring for. PLUS gives it a short text z, written for each user by a **summarizer**
policy pi_theta from the user's context c (2-4 past comparisons with the user's choices):

    z ~ pi_theta(. | c),    r(x, y | z) = r([cue(z); x], y),

cue(z) = "Here is the summary of my preferences based on previous conversations: {z}
In the following conversation, keep this in mind to personalize your response." placed
before the prompt x (the authors' reward input; `conditioned_prompt_ids`). z is the
decoded text after "##Summary" (`plus.world.parse_summary`: without the marker, the
whole text, as splitting on the marker leaves it).

Both are trained together, once per rollout batch of users (the authors' order):

  1. sample    z_u ~ pi_theta(c_u) for each user u of the batch (PPO's rollout);
  2. score     the summarizer's reward, given at z's last token, is how well the current
               reward model (eval mode) predicts the user's choice on a comparison
               (x_u, y_u^chosen, y_u^rejected) when it reads z_u:

                   R(c, z) = clip(log sigma(r(y^chosen | z) - r(y^rejected | z)), -10, 10)
                             - beta * sum_t log(pi_theta(z_t | c, z_<t) / pi_0(z_t | c, z_<t)),

               the KL penalty (k1) paid per token to the initial summarizer pi_0, beta = 0.01
               (a z that never ends gets PPO's fixed missing-EOS score instead, as any
               response does in plus/ppo.py);
  3. PPO       one update of the summarizer and its critic on those rewards: GAE (gamma 1,
               lambda 0.95 in the paper, 1 by default here: plus/stage_flags.py says why),
               whitened advantages, clip 0.2 (plus/ppo.py, reused whole: this file gives
               it a `ScoreFn` and an `on_update` callback);
  4. BT pass   one pass of the reward model over the batch's training comparisons
               (train_prompt / train_chosen / train_rejected), conditioned on the *same* z:

                   L_RM = -E_u log sigma(r(y_u^w | z_u) - r(y_u^l | z_u)),

               in minibatches, with plus/reward_trainer.py's `pair_forward` and the
               Bradley–Terry loss; its learning rate is the critic's, on a cosine schedule
               after a warmup (`reward_lr`).

Before any of it, on the built-in world, the summarizer is warm-started on the world's
self-description corpus (people's past choices, then what they want from a TL;DR in their
own words: `warm_start`) and the reward model is grounded on the same corpus's
comparisons, each read with what its chooser says they want (`ground_reward_model`), then
on more of them mixed with one-pole people's (`mixed_grounding_pairs`), so that z has
words and the reward model reads them before PLUS starts, as the authors' LLMs do. While
it fits users whose z state a sentence no better than chance, the reward model unlearns
reading it. Two remedies, for every method alike: its rate rises slowly over the first
updates (`reward_lr`; on the world by default), so that it goes on paying the summarizer
for what the grounding taught it to read while the summarizer learns to write it; and
`replay` adds more of the grounding's comparisons to every Bradley–Terry pass (off by
default).

With several z per user (`n_samples_per_prompt`, PPO's option), all of them are scored on
the user's one comparison, and with `group_baseline` each z is paid what it scored above
the user's other z (`plus.gae.leave_one_out`): the comparison's own difficulty, which the
critic cannot see from c and z, cancels. The Bradley–Terry pass then reads the user's
training comparison once with each z.

The baselines train the same reward model on the same batches with the same number of
steps (a user's comparison n times where PLUS samples n z), and differ only in what it
reads in place of z (`METHODS`): nothing (Bradley–Terry), the raw context (in-context), a
z the initial summarizer wrote once (untrained), or the persona's own description (oracle).

Under torchrun each process samples and scores its contiguous share of the batch's users
(plus/ppo.py's split), and the summarizer and its critic train under DDP as in PPO. The
reward model's pass reads the whole batch's z, gathered in rank order: each process
computes its share of every minibatch, its loss scaled by the minibatch's global size, and
the gradients are summed over processes before the clip and the step, so the update is the
one a single process makes (`reward_model_pass`). Rank 0 writes the metrics and the models.

What the demo decoder reads (256 positions): the summarizer reads the context as
`plus.world.context_text` renders it, the past summaries and choices without their posts,
its oldest comparisons dropped first while it does not fit beside z (`context_prompt_ids`);
the reward model reads cue(z), the post cut from its end to fit (never z or the cue), then
the response. A chat model, as the authors train one, reads the context as chat messages
instead (`context_messages`, the request for "##Summary" as their last turn) in its own
chat template, up to the cue that opens the assistant's turn (`summarizer_prompts`).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from plus import checkpoint, ppo
from plus.bradley_terry import bradley_terry_loss, preference_accuracy
from plus.data import (DataError, PlusRecord, PreferencePair, SFTExample, bos_prefix, collate_sft,
                       collate_shared_prompts, parse_query, response_ids, truncate_prompt, truncate_query)
from plus.distributed import Dist, all_reduce_grads, all_reduce_sum, barrier, gather_lists, print0, rank_slice
from plus.generate import sample_texts
from plus.preferences import chat_prompt
from plus.reward_trainer import pair_forward, score_pairs
from plus.sft import sequence_loss_sum
from plus.training import append_metrics, autocast, epoch_order, lr_at, make_optimizer, set_lr, truncate_metrics
from plus.world.personas import Persona
from plus.world.users import SUMMARY_MARKER, SelfDescription, parse_summary

PREFERENCE_CUE = ("Here is the summary of my preferences based on previous conversations: {z} "
                  "In the following conversation, keep this in mind to personalize your response.\n\n")
METHODS = ("bt", "icl", "untrained", "plus", "oracle")  # what the reward model reads in place of z
SUMMARIZER_INPUTS = ("context", "context_messages")  # the record fields a summarizer's prompt can be
# In-context: the raw context stands in for z, cut (oldest comparisons first) so that the
# prompt keeps at least this many tokens: the query's header and the start of the post.
ICL_MIN_PROMPT_TOKENS = 48
PAIR_FIELDS = {"reward": ("reward_prompt", "chosen", "rejected"),
               "train": ("train_prompt", "train_chosen", "train_rejected"),
               "eval": ("eval_prompt", "eval_chosen", "eval_rejected")}


# ----------------------------------------------------------------------------------------
# What the summarizer and the reward model read

def last_blocks(tokenizer, text: str, max_tokens: int) -> list[int]:
    """Token ids of `text`, its "\\n\\n"-separated blocks dropped from the start while it is
    longer than max_tokens (a context loses its oldest comparisons first), then tokens;
    none where max_tokens < 1."""
    if max_tokens < 1:
        return []
    blocks = text.split("\n\n")
    ids = tokenizer.encode(text)
    while len(ids) > max_tokens and len(blocks) > 1:
        blocks.pop(0)
        ids = tokenizer.encode("\n\n".join(blocks))
    return ids[-max_tokens:]


def context_prompt_ids(tokenizer, context: str, max_tokens: int) -> list[int]:
    """The summarizer's prompt: the context, whose last block asks for "##Summary", cut
    to max_tokens by dropping its oldest comparisons; from the tokenizer's BOS where it adds
    one (`plus.data.bos_prefix`, counted in max_tokens)."""
    bos = bos_prefix(tokenizer)
    return bos + last_blocks(tokenizer, context, max_tokens - len(bos))


def summarizer_prompts(tokenizer, records: list[PlusRecord], max_tokens: int, input_key: str = "context",
                       apply_chat_template: bool = False) -> list[list[int]]:
    """The summarizer's prompt of each record, in max_tokens. Plain: the `context` text,
    its oldest comparisons dropped to fit (`context_prompt_ids`). With apply_chat_template:
    the record's `input_key` field (`context_messages` as they are, `context` as one user
    turn) in the tokenizer's chat template, ending with the cue that opens the assistant's
    turn (`plus.preferences.chat_prompt`, as PPO's chat prompts), so that a chat model reads
    the request for a summary as it was trained to answer one; a longer prompt keeps its end."""
    if input_key not in SUMMARIZER_INPUTS:
        raise ValueError(f"the summarizer reads {' or '.join(SUMMARIZER_INPUTS)}, not {input_key!r}")
    if not apply_chat_template:
        if input_key != "context":
            raise ValueError(f"{input_key!r} is a list of chat messages: it needs the chat template")
        return [context_prompt_ids(tokenizer, r.context, max_tokens) for r in records]
    return [chat_prompt(tokenizer, {input_key: getattr(r, input_key)}, input_key, max_tokens, r.source)
            for r in records]


def icl_z(tokenizer, context: str, max_tokens: int) -> str:
    """In-context baseline: the raw context in place of z (without the request for a
    summary that ends it), its oldest comparisons dropped to fit max_tokens."""
    blocks = context.split("\n\n")
    if len(blocks) > 1 and SUMMARY_MARKER in blocks[-1]:
        blocks = blocks[:-1]
    return tokenizer.decode(last_blocks(tokenizer, "\n\n".join(blocks), max_tokens))


def conditioned_prompt_ids(tokenizer, z: str | None, prompt: str, max_tokens: int) -> list[int]:
    """cue(z) followed by the prompt, in max_tokens: the post of a Stiennon query loses its
    end (paragraphs, then words), another prompt its start; z and the cue are never cut.
    z None: the prompt alone (the unconditioned Bradley–Terry baseline). The sequence starts
    with the tokenizer's BOS where it adds one (`plus.data.bos_prefix`), before the cue."""
    prefix = bos_prefix(tokenizer) + ([] if z is None else tokenizer.encode(PREFERENCE_CUE.format(z=z.strip())))
    budget = max_tokens - len(prefix)
    if budget < 1:
        raise DataError(f"z and the cue take {len(prefix)} tokens, the whole prompt budget of {max_tokens}")
    fields = parse_query(prompt)
    try:
        rest = (truncate_query(tokenizer, *fields, budget, bos=False) if fields
                else truncate_prompt(tokenizer, prompt, budget, bos=False))
    except DataError as e:
        raise DataError(f"with z ({len(prefix)} tokens with the cue): {e}") from None
    return prefix + rest


def conditioned_pairs(tokenizer, records: list[PlusRecord], zs: list[str | None], which: str, prompt_max_len: int,
                      response_max_len: int) -> list[PreferencePair]:
    """The comparisons `which` ("reward", "train" or "eval": PAIR_FIELDS) of the records,
    each conditioned on its z. Evaluation pairs are chosen by the gold judge (gold 1)."""
    prompt_key, chosen_key, rejected_key = PAIR_FIELDS[which]
    pairs = []
    for r, z in zip(records, zs):
        try:
            prompt = conditioned_prompt_ids(tokenizer, z, getattr(r, prompt_key), prompt_max_len)
        except DataError as e:
            raise DataError(f"{r.source}: {prompt_key}: {e}") from None
        pairs.append(PreferencePair(prompt, response_ids(tokenizer, getattr(r, chosen_key), response_max_len),
                                    response_ids(tokenizer, getattr(r, rejected_key), response_max_len),
                                    gold=1.0 if which == "eval" else None, source=r.source))
    return pairs


# ----------------------------------------------------------------------------------------
# The summarizer before RL: warm-started on self-descriptions

def warm_start(summarizer, tokenizer, documents: list[str], *, steps: int, batch_size: int, learning_rate: float,
               prompt_max_len: int, response_max_len: int, device, seed: int = 0, progress: bool = False) -> dict:
    """Fine-tune the summarizer on documents that end, after "##Summary", with what their
    writer wants from a TL;DR (`plus.world.self_description_documents`): the SFT loss

        L = -(1/|z|) sum_t log pi(z_t | c, z_<t)

    on the words after the marker only, for `steps` minibatches of `batch_size` documents
    (cosine learning rate). So the summarizer has words for z, and the link between
    choices and words the corpus shows, before PLUS's RL; the untrained baseline samples
    this model. Returns the last minibatch's loss; `progress` shows a bar."""
    examples = []
    for doc in documents:
        cut = doc.rindex(SUMMARY_MARKER) + len(SUMMARY_MARKER)
        examples.append(SFTExample(context_prompt_ids(tokenizer, doc[:cut], prompt_max_len),
                                   response_ids(tokenizer, doc[cut:], response_max_len)))
    summarizer.to(device).train()
    optimizer = make_optimizer(summarizer, learning_rate, 0.0)
    steps_per_epoch = max(1, len(examples) // batch_size)
    loss = torch.zeros(())
    bar = tqdm(range(steps), desc="warm start", disable=not progress, dynamic_ncols=True)
    for step in bar:
        epoch, offset = divmod(step, steps_per_epoch)
        order = epoch_order(len(examples), seed, epoch)[offset * batch_size:(offset + 1) * batch_size]
        set_lr(optimizer, lr_at(step, steps, learning_rate, warmup=max(1, steps // 20)))
        loss_sum, n = sequence_loss_sum(summarizer, collate_sft([examples[i] for i in order], tokenizer.pad_id),
                                        device)
        loss = loss_sum / max(n, 1)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(summarizer.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        bar.set_postfix(loss=f"{float(loss.detach()):.3f}", refresh=False)
    summarizer.eval()
    return {"warm_start_loss": float(loss.detach()), "warm_start_documents": len(documents)}


# ----------------------------------------------------------------------------------------
# The summarizer's reward

def summarizer_reward(chosen: torch.Tensor, rejected: torch.Tensor, clip: float = 10.0) -> torch.Tensor:
    """clip(log sigma(r_chosen - r_rejected), -clip, clip) [B]: the negative pairwise loss."""
    return F.logsigmoid(chosen.double() - rejected.double()).clamp(-clip, clip)


def z_texts(tokenizer, responses: list[list[int]]) -> list[str]:
    """z of each sampled response (token lists, maybe ending with EOS)."""
    return [parse_summary(tokenizer.decode([t for t in r if t != tokenizer.eos_id])) for r in responses]


class SummarizerScorer:
    """plus/ppo.py's `ScoreFn`: (context prompts, sampled summaries, record indices) ->
    the summarizer's reward [B] under the current reward model, in eval mode."""

    def __init__(self, reward_model, tokenizer, records: list[PlusRecord], prompt_max_len: int,
                 response_max_len: int, batch_size: int, device):
        self.reward_model, self.tokenizer, self.records = reward_model, tokenizer, records
        self.prompt_max_len, self.response_max_len = prompt_max_len, response_max_len
        self.batch_size, self.device = batch_size, device

    def __call__(self, prompts: list[list[int]], responses: list[list[int]], indices: list[int]) -> torch.Tensor:
        zs = z_texts(self.tokenizer, responses)
        pairs = conditioned_pairs(self.tokenizer, [self.records[i] for i in indices], zs, "reward",
                                  self.prompt_max_len, self.response_max_len)
        chosen, rejected = score_pairs(self.reward_model, pairs, self.tokenizer.pad_id, self.batch_size, self.device)
        return summarizer_reward(chosen, rejected).float()


# ----------------------------------------------------------------------------------------
# The reward model's Bradley–Terry pass

def reward_model_pass(model, optimizer, pairs: list[PreferencePair], pad_id: int, train_batch_size: int,
                      micro_batch_size: int, lr: float, max_grad_norm: float, device, dtype: str = "fp32",
                      ctx: Dist = Dist()) -> dict:
    """One pass over `pairs` (the whole batch, the same on every rank) in minibatches of
    train_batch_size (one optimizer step each), micro-batches packed one row per prompt
    (`collate_shared_prompts`) and scored by `pair_forward`; the loss of a minibatch is
    its mean Bradley–Terry loss. Under torchrun each rank takes its contiguous share of
    every minibatch, scales its loss by the minibatch's global size and the gradients are
    summed over ranks before the clip and the step: the update one process makes.
    Returns the pass's mean loss and its accuracy (the rewards before each step)."""
    model.train()
    set_lr(optimizer, lr)
    sums = torch.zeros(2, dtype=torch.float64)  # loss x pairs, correct pairs: this rank's
    for start in range(0, len(pairs), train_batch_size):
        minibatch = pairs[start:start + train_batch_size]
        mine = minibatch[rank_slice(ctx, len(minibatch))]
        for m in range(0, len(mine), micro_batch_size):
            batch = collate_shared_prompts(mine[m:m + micro_batch_size], pad_id)
            with autocast(device, dtype):
                chosen, rejected, _ = pair_forward(model, batch, device, with_lm=False)
                loss = bradley_terry_loss(chosen, rejected) * chosen.numel() / len(minibatch)
            loss.backward()
            sums[0] += float(loss.detach()) * len(minibatch)
            sums[1] += preference_accuracy(chosen.detach(), rejected.detach()) * chosen.numel()
        all_reduce_grads(ctx, model)
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    loss_sum, hits = all_reduce_sum(ctx, sums).tolist()
    return {"rm_loss": loss_sum / len(pairs), "rm_accuracy": hits / len(pairs)}


def interleave_minibatches(pairs: list, extra: list, size: int) -> list:
    """Minibatches of `size` from pairs and from extra in turn (pairs first), the rest of
    the longer list after: one pass over both, neither's order changed."""
    a = [pairs[i:i + size] for i in range(0, len(pairs), size)]
    b = [extra[i:i + size] for i in range(0, len(extra), size)]
    out = []
    for i in range(max(len(a), len(b))):
        out += (a[i] if i < len(a) else []) + (b[i] if i < len(b) else [])
    return out


# ----------------------------------------------------------------------------------------
# The reward model before any method: grounded on people who say what they want

def grounding_pairs(tokenizer, documents: list[SelfDescription], prompt_max_len: int,
                    response_max_len: int) -> list[PreferencePair]:
    """The comparisons of self-description documents, each conditioned on its writer's own
    words: cue(z) with z = what the writer says they want (`persona.text`, the words after
    "##Summary" in the document), then the post; chosen is the summary the writer's labeler
    picked. In document order, each document's comparisons in the order it shows them."""
    pairs = []
    for doc in documents:
        for c in doc.context:
            prompt = conditioned_prompt_ids(tokenizer, doc.persona.text, c.post.query(), prompt_max_len)
            pairs.append(PreferencePair(prompt, response_ids(tokenizer, c.summaries[c.choice], response_max_len),
                                        response_ids(tokenizer, c.summaries[1 - c.choice], response_max_len)))
    return pairs


def mixed_grounding_pairs(tokenizer, schedule: tuple, n: int, *, first_document: int, seed: int,
                          prompt_max_len: int, response_max_len: int, start: int = 0) -> tuple[list[PreferencePair], int]:
    """n grounding comparisons drawn from the schedule's sources in turn, from its position
    `start`, each read with its chooser's words: "corpus" takes the next comparison of the
    self-description corpus (documents first_document, first_document + 1, ...), (axis,
    contested) the next `plus.world.pole_document` of that axis and class (indices 0, 1, ...
    per source, counted from position 0, so that a draw from `start` continues a draw of
    `start` comparisons without repeating its one-pole people). Returns the comparisons and
    the index after the last corpus document read."""
    from plus.world.users import pole_document, self_description_document

    pairs, corpus, document, used = [], [], first_document, {}
    for i in range(start):  # the one-pole people the draw before this one took
        if schedule[i % len(schedule)] != "corpus":
            used[schedule[i % len(schedule)]] = used.get(schedule[i % len(schedule)], -1) + 1
    for i in range(start, start + n):
        source = schedule[i % len(schedule)]
        if source == "corpus":
            while not corpus:
                corpus = grounding_pairs(tokenizer, [self_description_document(document, seed=seed)],
                                         prompt_max_len, response_max_len)
                document += 1
            pairs.append(corpus.pop(0))
        else:
            axis, contested = source
            index = used[source] = used.get(source, -1) + 1
            pairs += grounding_pairs(tokenizer, [pole_document(index, axis, contested, seed=seed)],
                                     prompt_max_len, response_max_len)
    return pairs, document


def ground_reward_model(reward_model, pairs: list[PreferencePair], *, pad_id: int, batch_size: int,
                        learning_rate: float, max_grad_norm: float, device, dtype: str = "fp32",
                        progress: bool = False, desc: str = "reward grounding") -> dict:
    """One Bradley–Terry pass over `pairs` (`grounding_pairs`) in minibatches of batch_size,
    one `reward_model_pass` step each, on a cosine learning rate: L = -E log sigma(r(y^w | z)
    - r(y^l | z)) where z is what the chooser says they want.

    The authors' reward model is an LLM that reads "I prefer concise answers" before any
    PLUS training; a reward model made from the demo decoder has never seen anyone say what
    they want. Trained first on the corpus's self-described people (1-3 poles each, every
    combination), it learns to read the attributes' sentences in general, not one
    population's texts, so that a z stating the user's poles is paid from PLUS's first
    update. The corpus's pairs are mostly decided by length, the heaviest axis, so a
    second pass mixes in pairs that only the content sentence decides
    (`mixed_grounding_pairs`). Every method starts from it, Bradley–Terry included (train.py). Returns the
    pass's mean loss and accuracy (the rewards before each step) and the pairs it used;
    `progress` shows a bar named `desc`."""
    reward_model.to(device)
    optimizer = make_optimizer(reward_model, learning_rate, 0.0)
    steps = len(pairs) // batch_size
    loss_sum = hits = 0.0
    bar = tqdm(range(steps), desc=desc, disable=not progress, dynamic_ncols=True)
    for step in bar:
        out = reward_model_pass(reward_model, optimizer, pairs[step * batch_size:(step + 1) * batch_size], pad_id,
                                batch_size, batch_size, lr_at(step, steps, learning_rate, warmup=max(1, steps // 20)),
                                max_grad_norm, device, dtype)
        loss_sum += out["rm_loss"]
        hits += out["rm_accuracy"]
        bar.set_postfix(loss=f"{out['rm_loss']:.3f}", refresh=False)
    reward_model.eval()
    return {"grounding_loss": loss_sum / max(steps, 1), "grounding_accuracy": hits / max(steps, 1),
            "grounding_pairs": steps * batch_size}


# ----------------------------------------------------------------------------------------
# The loop

@dataclass
class PlusSettings:
    """What PLUS adds to PPOConfig (plus/ppo.py), which sizes the rollout (users per
    update), the PPO minibatch (also the reward model's) and the summarizer's z length
    (generate_max_len). The reward model's learning rate is the critic's, reached linearly
    over the first reward_warmup_ratio of the updates (at least one), then decayed on a
    cosine (`reward_lr`). input_key and apply_chat_template say how the summarizer reads a
    context (`summarizer_prompts`)."""

    method: str = "plus"
    prompt_max_len: int = 208      # the reward model's prompt, cue(z) + post: 256 positions less a response
    response_max_len: int = 48     # the responses it scores
    eval_batch_size: int = 64
    input_key: str = "context"
    apply_chat_template: bool = False
    reward_warmup_ratio: float = 0.0


def reward_lr(step: int, cfg: ppo.PPOConfig, settings: PlusSettings) -> float:
    """The reward model's learning rate at update `step` (from 0): the critic's, warmed up
    linearly over max(1, round(reward_warmup_ratio * max_steps)) updates, then a cosine to a
    tenth of it (`plus.training.lr_at`, as the authors' scheduler)."""
    warmup = max(1, round(settings.reward_warmup_ratio * cfg.max_steps))
    return lr_at(step, cfg.max_steps, cfg.critic_learning_rate, warmup=warmup)


def fixed_summaries(method: str, records: list[PlusRecord], tokenizer, summarizer, cfg: ppo.PPOConfig,
                    settings: PlusSettings, seed: int) -> list[str | None]:
    """The z of each record for a method whose z does not change during training (and,
    for `untrained` and `plus`, at evaluation): bt None, icl the cut context, oracle the
    persona's canonical text, untrained / plus one sample from `summarizer`."""
    if method == "bt":
        return [None] * len(records)
    if method == "icl":
        cue = len(bos_prefix(tokenizer)) + len(tokenizer.encode(PREFERENCE_CUE.format(z="")))
        budget = settings.prompt_max_len - cue - ICL_MIN_PROMPT_TOKENS
        if budget < 1:
            raise DataError(f"the in-context baseline: --prompt_max_len {settings.prompt_max_len} leaves no room for "
                            f"a context beside the cue ({cue} tokens) and {ICL_MIN_PROMPT_TOKENS} prompt tokens")
        return [icl_z(tokenizer, r.context, budget) for r in records]
    if method == "oracle":
        missing = next((r.source for r in records if not r.persona), None)
        if missing:
            raise DataError(f"{missing}: the oracle reads each record's 'persona' and this one has none")
        return [Persona(tuple(r.persona.split("+"))).text for r in records]
    prompt_max = summarizer.config.block_size - cfg.generate_max_len
    prompts = summarizer_prompts(tokenizer, records, prompt_max, settings.input_key, settings.apply_chat_template)
    texts, _, _ = sample_texts(summarizer, tokenizer, prompts, cfg.generate_max_len,
                               batch_size=settings.eval_batch_size, temperature=cfg.temperature, seed=seed)
    return [parse_summary(t) for t in texts]


def train(*, summarizer, ref_summarizer, reward_model, tokenizer, records: list[PlusRecord], out_dir: Path,
          config: dict, cfg: ppo.PPOConfig, settings: PlusSettings, ctx: Dist = Dist(),
          replay: list[PreferencePair] = ()) -> dict:
    """Train the reward model (and, for PLUS, the summarizer) for cfg.max_steps updates of
    cfg.rollout_batch_size records; save <out_dir>/reward_model (and <out_dir>/summarizer)
    and <out_dir>/metrics.jsonl. Returns the last logged metrics.

    replay: grounding comparisons (`mixed_grounding_pairs`), len(replay) // cfg.max_steps
    of them added to each update's Bradley–Terry pass (`interleave_minibatches`), so that
    the reward model keeps reading the sentences of z the grounding taught it while it
    fits the users; its rm_accuracy is then over both."""
    from plus.value_head import Critic

    method, device = settings.method, torch.device(cfg.device)
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r} (valid: {', '.join(METHODS)})")
    if len(records) < cfg.rollout_batch_size:
        cfg = ppo.fit_rollout_to_prompts(cfg, len(records), ctx.world_size)
    if cfg.rollout_batch_size % ctx.world_size or cfg.train_batch_size % ctx.world_size:
        raise ValueError(f"--rollout_batch_size {cfg.rollout_batch_size} and --train_batch_size "
                         f"{cfg.train_batch_size} must be multiples of the {ctx.world_size} processes")
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = out_dir / checkpoint.METRICS
    if ctx.is_main:
        truncate_metrics(metrics_path, 0)
    reward_model.to(device)
    rm_optimizer = make_optimizer(reward_model, cfg.critic_learning_rate, cfg.weight_decay)
    steps_per_epoch = len(records) // cfg.rollout_batch_size
    n_replay = len(replay) // cfg.max_steps

    def rm_update(step: int, indices: list[int], zs: list[str | None]) -> dict:
        """Step 4: one Bradley–Terry pass on the batch's training pairs, conditioned on zs
        (the whole batch's users, on every rank), and the step's replayed comparisons."""
        pairs = conditioned_pairs(tokenizer, [records[i] for i in indices], zs, "train", settings.prompt_max_len,
                                  settings.response_max_len)
        extra = list(replay[step * n_replay:(step + 1) * n_replay])
        lr = reward_lr(step, cfg, settings)
        out = reward_model_pass(reward_model, rm_optimizer, interleave_minibatches(pairs, extra, cfg.train_batch_size),
                                tokenizer.pad_id, cfg.train_batch_size, cfg.micro_train_batch_size, lr,
                                cfg.max_grad_norm, device, cfg.dtype, ctx)
        lengths = [len(tokenizer.encode(z)) for z in zs if z is not None]
        return {**out, "rm_lr": lr, **({"z_tokens": sum(lengths) / len(lengths)} if lengths else {}),
                **({"rm_replayed": len(extra)} if extra else {})}

    t0 = time.perf_counter()
    if method == "plus":
        prompt_max = summarizer.config.block_size - cfg.generate_max_len
        prompts = summarizer_prompts(tokenizer, records, prompt_max, settings.input_key, settings.apply_chat_template)
        scorer = SummarizerScorer(reward_model, tokenizer, records, settings.prompt_max_len,
                                  settings.response_max_len, settings.eval_batch_size, device)

        def on_update(step: int, rollout: ppo.Rollout, stats: dict) -> dict:
            # The z that step 2 scored. Under torchrun the rollout holds this rank's users only
            # (PPO's contiguous share of the batch): gathered in rank order, they are the batch.
            indices = gather_lists(ctx, list(rollout.prompt_indices))
            zs = gather_lists(ctx, z_texts(tokenizer, rollout.response_lists()))
            # summarizer_reward: the mean score PPO paid (clipped; missing-EOS penalty applied)
            return {"summarizer_reward": stats["score"], **rm_update(step - 1, indices, zs)}

        last = ppo.train(policy=summarizer, ref_policy=ref_summarizer, critic=Critic.from_reward_model(reward_model),
                         score_fn=scorer, tokenizer=tokenizer, prompts=prompts, out_dir=out_dir / "summarizer",
                         config={**config, "stage": "plus_summarizer", "model": summarizer.config.to_dict()},
                         cfg=cfg, ctx=ctx, on_update=on_update)
        if ctx.is_main:
            shutil.copyfile(out_dir / "summarizer" / checkpoint.METRICS, metrics_path)
    else:
        zs = fixed_summaries(method, records, tokenizer, summarizer, cfg, settings, cfg.seed)
        last = {}
        for step in range(cfg.max_steps):  # the batches PPO would draw (plus/ppo.py's prompt_batch)
            epoch, offset = divmod(step, steps_per_epoch)
            users = epoch_order(len(records), cfg.seed, epoch)[offset * cfg.rollout_batch_size:
                                                               (offset + 1) * cfg.rollout_batch_size]
            indices = [i for i in users for _ in range(cfg.n_samples_per_prompt)]  # as PLUS's rollout holds them
            last = {"step": step + 1, **rm_update(step, indices, [zs[i] for i in indices]),
                    "elapsed_s": time.perf_counter() - t0}
            if ctx.is_main:
                append_metrics(metrics_path, last)
        if method == "untrained" and ctx.is_main:
            (out_dir / "summaries.jsonl").write_text("".join(
                json.dumps({"source": r.source, "z": z}) + "\n" for r, z in zip(records, zs)))
    if ctx.is_main:
        reward_model.save(out_dir / "reward_model", tokenizer, extra_config={**config, "stage": "plus_rm"})
    barrier(ctx)
    print0(ctx, f"[plus] {method}: {cfg.max_steps} updates of {cfg.rollout_batch_size} users in "
                f"{time.perf_counter() - t0:.0f}s")
    return last
