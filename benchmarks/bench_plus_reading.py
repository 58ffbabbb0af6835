"""Can PPO teach the demo summarizer to read a context? PLUS's RL step on p2, isolated.

    python -m benchmarks.bench_plus_reading --init_from runs/demo/sft --start blind --reward coadapt
    python -m benchmarks.bench_plus_reading --init_from runs/demo/sft --start weak --reward coadapt --lr 3e-4
    python -m benchmarks.bench_plus_reading --init_from runs/demo/sft --start blind --reward frozen \\
        --oracle_rm runs/demo/plus/p2/oracle/reward_model

The summarizer starts from --init_from fine-tuned (`plus_trainer.warm_start`) on p2
contexts each followed by a persona's canonical text, either

  blind  a text drawn at random (50/50) whatever the context: it writes the two personas'
         words and never reads the choices;
  weak   the user's own persona's text, for --start_steps steps on users that PPO never
         sees: a reader that is right somewhat more often than chance;
  corpus the world's self-description documents (--start_documents of them), as
         `--stage plus` warm-starts the summarizer of PLUS and the untrained baseline;

or is a saved summarizer (--start_from), trained on other users than PPO's seen ones
(--first_user moves them).

Then PPO (plus/ppo.py, PLUS's settings: KL 0.01 k1, GAE 1 / 0.95, clip 0.2) trains it on
--updates batches of 32 seen p2 users, paid by a reward model for how well it then
predicts the user's choice (`plus_trainer.SummarizerScorer`):

  frozen   an oracle reward model (`train.py --stage plus --method oracle`) that is never
           updated: the best-case reward, does RL alone teach the reading?
  coadapt  a fresh reward model from --init_from, one Bradley–Terry pass per update on the
           same z (`plus_trainer.reward_model_pass`): PLUS itself.

Every --eval_every updates, z is sampled (temperature 0.7, seed 1) for --n_new new p2
users (one record each, from --split) and judged: `right` the share of z that are exactly
the user's persona text, `score` the mean `summary_attribute_accuracy`. Also printed per
update: the summarizer's reward, its KL to the start, its entropy per token and
(coadapt) the reward model's training accuracy. One JSON line per report on stdout;
PPO's progress bar on stderr. --lambd sets GAE's lambda (PLUS's 0.95 by default).
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import time
from pathlib import Path

import torch

from plus import checkpoint, data, ppo, plus_trainer
from plus.reward_head import RewardModel, load_reward_model
from plus.stage_flags import PLUS_WARM_START
from plus.training import lr_at, make_optimizer
from plus.value_head import Critic
from plus.world import POPULATIONS, Persona, make_users, self_description_documents
from plus.world.export import user_records
from plus.world.personas import summary_attribute_accuracy
from plus.world.users import context_text

PROMPT_MAX_LEN, RESPONSE_MAX_LEN, Z_MAX_LEN = 208, 48, 64  # --stage plus's defaults on the world


def records_of(users) -> list:
    return [data.parse_plus_record(r, f"synthetic:{u.id}") for u in users for r in user_records(u)]


def judge(records, zs) -> dict:
    personas = [Persona(tuple(r.persona.split("+"))) for r in records]
    return {"right": sum(z.strip() == p.text for p, z in zip(personas, zs)) / len(zs),
            "score": sum(summary_attribute_accuracy(z, p)["score"] for p, z in zip(personas, zs)) / len(zs)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--init_from", required=True, help="the SFT policy (and the coadapt reward model's start)")
    p.add_argument("--start", choices=("blind", "weak", "corpus"), default="blind")
    p.add_argument("--start_documents", type=int, default=PLUS_WARM_START["documents"],
                   help="--start corpus: self-description documents (default --stage plus's)")
    p.add_argument("--start_steps", type=int, default=None,
                   help=f"warm-start steps of 16 (blind 100, weak 120, corpus {PLUS_WARM_START['steps']})")
    p.add_argument("--start_lr", type=float, default=None,
                   help="the warm start's learning rate (blind, weak: SFT's 3e-3; corpus: "
                        f"{PLUS_WARM_START['learning_rate']}, --stage plus's)")
    p.add_argument("--start_from", default=None, help="a saved summarizer to start from instead (no warm start)")
    p.add_argument("--reward", choices=("frozen", "coadapt"), default="coadapt")
    p.add_argument("--oracle_rm", default=None, help="--reward frozen: the oracle's reward_model directory")
    p.add_argument("--lr", type=float, default=1e-4, help="the summarizer's learning rate")
    p.add_argument("--lambd", type=float, default=0.95, help="GAE lambda (PLUS: 0.95)")
    p.add_argument("--temperature", type=float, default=None, help="sampling temperature (default PPO's)")
    p.add_argument("--updates", type=int, default=100)
    p.add_argument("--users", type=int, default=2000, help="seen users (PPO's; weak starts from as many others)")
    p.add_argument("--first_user", type=int, default=0, help="index of the first seen user in the train split")
    p.add_argument("--n_new", type=int, default=64, help="new users z is judged on (one record each)")
    p.add_argument("--split", choices=("valid", "test"), default="valid", help="the new users' split")
    p.add_argument("--eval_every", type=int, default=20)
    p.add_argument("--out", default="bench_plus_reading", help="where the summarizer is saved")
    args = p.parse_args(argv)
    if args.reward == "frozen" and not args.oracle_rm:
        p.error("--reward frozen needs --oracle_rm")
    torch.manual_seed(0)
    device = torch.device("cpu")

    def report(**row):
        print(json.dumps(row), flush=True)

    seen = make_users("p2", "train", args.users, start=args.first_user)
    texts = [persona.text for persona in POPULATIONS["p2"]]
    if args.start_from:
        documents = []
    elif args.start == "blind":
        rng = random.Random(0)
        documents = [context_text(u.context) + " " + rng.choice(texts) for u in seen]
    elif args.start == "corpus":
        documents = self_description_documents(args.start_documents)
    else:
        documents = [context_text(u.context) + " " + u.persona.text
                     for u in make_users("p2", "train", args.users, start=args.first_user + args.users)]
    summarizer, tokenizer, config = checkpoint.load_gpt(args.start_from or args.init_from)
    t0 = time.perf_counter()
    if args.start_from:
        stats = {"start_from": args.start_from}
    else:
        steps = args.start_steps or {"blind": 100, "weak": 120, "corpus": PLUS_WARM_START["steps"]}[args.start]
        lr = args.start_lr or (PLUS_WARM_START["learning_rate"] if args.start == "corpus" else 3e-3)
        stats = plus_trainer.warm_start(summarizer, tokenizer, documents, steps=steps,
                                        batch_size=16, learning_rate=lr,
                                        prompt_max_len=summarizer.config.block_size - Z_MAX_LEN,
                                        response_max_len=Z_MAX_LEN, device=device)
    ref_summarizer = copy.deepcopy(summarizer)
    records, new = records_of(seen), records_of(make_users("p2", args.split, args.n_new))[::2]
    cfg = ppo.PPOConfig(generate_max_len=Z_MAX_LEN, learning_rate=args.lr, critic_learning_rate=3e-4,
                        max_steps=args.updates, rollout_batch_size=32, train_batch_size=16, micro_train_batch_size=16,
                        ppo_epochs=2, warmup_ratio=0.0, init_kl_coef=0.01, kl_estimator="k1", save_steps=0,
                        lambd=args.lambd, **({"temperature": args.temperature} if args.temperature else {}))
    settings = plus_trainer.PlusSettings(method="plus", prompt_max_len=PROMPT_MAX_LEN,
                                         response_max_len=RESPONSE_MAX_LEN)

    def evaluate() -> dict:
        zs = plus_trainer.fixed_summaries("untrained", new, tokenizer, summarizer, cfg, settings, seed=1)
        summarizer.train()
        return judge(new, zs)

    report(update=0, start=args.start_from or args.start, warm_start_s=round(time.perf_counter() - t0, 1), **stats, **evaluate())
    if args.reward == "frozen":
        reward_model = load_reward_model(args.oracle_rm)[0]
    else:
        reward_model = RewardModel.from_gpt(checkpoint.load_gpt(args.init_from)[0])
    rm_optimizer = make_optimizer(reward_model, cfg.critic_learning_rate, 0.0)
    prompts = plus_trainer.summarizer_prompts(tokenizer, records, summarizer.config.block_size - Z_MAX_LEN)
    scorer = plus_trainer.SummarizerScorer(reward_model, tokenizer, records, PROMPT_MAX_LEN, RESPONSE_MAX_LEN, 64,
                                           device)

    def on_update(step: int, rollout: ppo.Rollout, last: dict) -> dict:
        out = {}
        if args.reward == "coadapt":  # PLUS's step 4, as plus_trainer.train's rm_update
            indices = list(rollout.prompt_indices)
            zs = plus_trainer.z_texts(tokenizer, rollout.response_lists())
            pairs = plus_trainer.conditioned_pairs(tokenizer, [records[i] for i in indices], zs, "train",
                                                   PROMPT_MAX_LEN, RESPONSE_MAX_LEN)
            out = plus_trainer.reward_model_pass(reward_model, rm_optimizer, pairs, tokenizer.pad_id, 16, 16,
                                                 lr_at(step - 1, args.updates, cfg.critic_learning_rate, warmup=1),
                                                 1.0, device)
        row = {"update": step, "reward": round(last["score"], 4), "kl": round(last["kl"], 3),
               "entropy": round(last["entropy"], 4), **{k: round(v, 4) for k, v in out.items()}}
        if step % args.eval_every == 0 or step == args.updates:
            row.update(evaluate())
        report(**row)
        return out

    ppo.train(policy=summarizer, ref_policy=ref_summarizer, critic=Critic.from_reward_model(copy.deepcopy(reward_model)),
              score_fn=scorer, tokenizer=tokenizer, prompts=prompts, out_dir=Path(args.out),
              config={**config, "stage": "bench_plus_reading"}, cfg=cfg, on_update=on_update)


if __name__ == "__main__":
    main()
