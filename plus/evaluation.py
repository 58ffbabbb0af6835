"""Evaluation: what eval.py reports, as library functions.

Policies are judged by the built-in world's noiseless gold judge against the reference
TL;DRs and against each other (win rates with Wilson intervals, Stiennon et al. 2020
Fig. 1), by ROUGE, length, EOS rate, the exact KL to the SFT policy and the reward
model's own score; the PPO policies saved along a run give the over-optimization view
(Stiennon et al. 2020 Fig. 5; Gao et al. 2023). Reward models are judged on held-out
comparisons (label accuracy, gold agreement, calibration, the references' mean) and on
minimal pairs. eval.py's docstring says what each number means; `main` there writes
them to report.json and report.md.

The functions take eval.py's parsed flags (`args`) where they need its settings.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import NamedTuple

import torch
from tqdm import tqdm

from kernels import kl_divergence
from plus import checkpoint, data, preferences
from plus.generate import Samples, decode_responses, generate, left_pad
from plus.metrics import rouge_scores, win_rate
from plus.ppo import response_lists, reward_model_scorer
from plus.preference_flags import PREFERENCE_FLAGS, preference_options

POLICY_STAGES = ("sft", "ppo")
REWARD_STAGE = "rm"

# The flags that say how a checkpoint's data is read, with the world's values: a flag the
# user leaves unset takes what the checkpoint's config.json recorded at training, else these.
POLICY_DATA_FLAGS = dict(dataset="synthetic", input_key=None, output_key="summary",
                         prompt_max_len=data.PROMPT_MAX_LEN, generate_max_len=data.RESPONSE_MAX_LEN,
                         on_bad_record="error")
REWARD_DATA_FLAGS = dict(prompt_max_len=data.PROMPT_MAX_LEN, generate_max_len=data.RESPONSE_MAX_LEN,
                         on_bad_record="error", **dict.fromkeys(PREFERENCE_FLAGS))


def checkpoint_dir(args, stage: str) -> Path:
    """The checkpoint evaluated for `stage`: --init_from, else <out_dir>/<stage>."""
    return Path(args.init_from) if args.init_from else Path(args.out_dir) / stage


def trained_with(args, config: dict, defaults: dict) -> argparse.Namespace:
    """`args` where each flag of `defaults` the user left unset (None, or a switch left off)
    holds the value `config` (a checkpoint's config.json) recorded, else the default."""
    merged = argparse.Namespace(**vars(args))
    for flag, default in defaults.items():
        if getattr(args, flag) in (None, False):
            setattr(merged, flag, default if config.get(flag) is None else config[flag])
    return merged


def policy_data_args(args, config: dict) -> argparse.Namespace:
    """The flags the policies are evaluated with, from the SFT policy's `config` where the
    user left them unset: its data keys and caps, and as the prompts the first file it was
    evaluated on during training, else the prompts it held out of its training file
    (`held_out`), else its training data (the world's test split for the world)."""
    merged = trained_with(args, config, POLICY_DATA_FLAGS)
    merged.held_out = None
    if args.dataset is None and isinstance(config.get("eval_dataset"), list):
        merged.dataset = config["eval_dataset"][0]
    elif args.dataset is None:
        merged.held_out = config.get("held_out")
        if merged.held_out is None and merged.dataset != "synthetic":
            print(f"[eval] the SFT policy held no prompts out of {merged.dataset}: evaluated on prompts it "
                  "trained on (--dataset names another file)")
    return merged


class Reference(NamedTuple):
    prompt: list[int]  # the prompt's token ids, cut as in training
    text: str          # its reference response


def heldout(args, tokenizer):
    """(prompt token lists, reference summaries, world Posts or None, what the prompts are).
    On the file SFT trained on, the prompts it held out (`args.held_out`: data.hold_out
    drawn again over the same records, keys, caps and seed), each with its first reference;
    on any other file, its first --n_eval records."""
    if args.dataset == "synthetic":
        from plus.world import World
        posts = World(args.seed).posts("test", args.n_eval)
        prompts = [data.truncate_query(tokenizer, p.subreddit, p.title, p.post, args.prompt_max_len) for p in posts]
        return prompts, [p.summary for p in posts], posts, "the world's test split"

    def parse(record, where):
        return Reference(data.prompt_ids(tokenizer, record, args.input_key, args.prompt_max_len, where),
                         data.get_text(record, args.output_key, where, "--output_key"))
    bad = data.BadRecords(args.on_bad_record)
    if args.held_out:
        _, held = data.hold_out(data.load_file_records(args.dataset, parse, bad), args.held_out["max_prompts"],
                                args.held_out["seed"])
        rows = [held[group[0]] for group in data.group_by_prompt(held)][:args.n_eval]
        source = "the prompts SFT held out of its training"
    else:
        rows = data.load_file_records(args.dataset, parse, bad, limit=args.n_eval)
        source = "the file's first records"
    if bad.total:
        print(f"[eval] {args.dataset}: {bad.summary()}")
    return [r.prompt for r in rows], [r.text for r in rows], None, source


@torch.no_grad()
def sample_policy(model, tokenizer, prompts: list[list[int]], args, ref_model=None, score_fn=None,
                  desc: str = "sample") -> dict[str, list]:
    """One seeded summary per prompt from `model`, in batches. Returns lists over the
    prompts: texts, ended (with EOS), lengths (tokens), and, when given, kl (the exact KL
    to `ref_model`, see `sequence_kl`) and proxy (the score of `score_fn`)."""
    device = torch.device(args.device)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    out = {"texts": [], "ended": [], "lengths": [], "kl": [], "proxy": []}
    model.eval()
    with tqdm(total=len(prompts), desc=desc, dynamic_ncols=True) as bar:
        for start in range(0, len(prompts), args.batch_size):
            batch = prompts[start:start + args.batch_size]
            prompt_ids, prompt_mask = left_pad(batch, tokenizer.pad_id, device)
            samples = generate(model, prompt_ids, prompt_mask, args.generate_max_len, tokenizer.eos_id,
                               tokenizer.pad_id, temperature=args.temperature, generator=generator)
            out["texts"] += decode_responses(tokenizer, samples)
            out["ended"] += samples.ended.tolist()
            out["lengths"] += samples.mask.sum(1).tolist()
            if ref_model is not None:
                out["kl"] += sequence_kl(model, ref_model, prompt_ids, prompt_mask, samples, args.temperature).tolist()
            if score_fn is not None:
                responses = response_lists(samples.tokens, samples.mask)
                scores = score_fn(batch, responses, list(range(start, start + len(batch))))
                out["proxy"] += (scores[0] if isinstance(scores, tuple) else scores).tolist()  # (scores, per-token parts)
            bar.update(len(batch))
    return out


def sequence_kl(model, ref_model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, samples: Samples,
                temperature: float) -> torch.Tensor:
    """KL(pi || pi_ref) of each sampled response [B]: the sum over its tokens of the exact KL
    between the two models' next-token distributions at `temperature`, given the sampled
    prefix (kernels.kl_divergence)."""
    input_ids = torch.cat([prompt_ids, samples.tokens], 1)        # [B, P + N]
    attention_mask = torch.cat([prompt_mask, samples.mask], 1)
    P = prompt_ids.shape[1]                                       # column P - 1 + t predicts response token t
    logits = model.logits(model(input_ids, attention_mask=attention_mask)[:, P - 1:-1])              # [B, N, V]
    ref_logits = ref_model.logits(ref_model(input_ids, attention_mask=attention_mask)[:, P - 1:-1])  # [B, N, V]
    return kl_divergence(logits, ref_logits, temperature=temperature, mask=samples.mask).sum(1)       # [B]


def policy_row(samples: dict, references: list[str], posts, baseline_texts: list[str] | None = None) -> dict:
    """The report row of one policy from its samples (see the module docstring)."""
    texts = samples["texts"]
    row = {"n": len(texts), "eos_rate": sum(samples["ended"]) / len(texts),
           "mean_length": sum(samples["lengths"]) / len(texts), **rouge_scores(texts, references)}
    if posts is not None:
        from plus.world import error_analysis, gold_preference, gold_score
        rate, ci = win_rate([gold_preference(p, t, p.summary) for p, t in zip(posts, texts)])
        row["judge"] = error_analysis(posts, texts)
        row.update(win_rate_vs_reference=rate, win_rate_ci95=list(ci),
                   gold_score=sum(gold_score(p, t) for p, t in zip(posts, texts)) / len(texts),
                   reference_gold_score=sum(gold_score(p, p.summary) for p in posts) / len(posts))
        if baseline_texts is not None:
            rate, ci = win_rate([gold_preference(p, t, b) for p, t, b in zip(posts, texts, baseline_texts)])
            row.update(win_rate_vs_sft=rate, win_rate_vs_sft_ci95=list(ci))
    if samples["kl"]:
        row["kl_to_sft"] = sum(samples["kl"]) / len(texts)
    if samples["proxy"]:
        row["proxy_reward"] = sum(samples["proxy"]) / len(texts)
    return row


def overoptimization_curve(args, ppo_dir: Path, sft_model, tokenizer, prompts, references, posts,
                           score_fn) -> list[dict]:
    """proxy_reward, gold_score, win_rate_vs_sft and kl_to_sft of the SFT policy (step 0),
    every saved PPO snapshot and the final PPO policy, on the first --n_curve posts."""
    n = min(args.n_curve, len(prompts))
    prompts, references, posts = prompts[:n], references[:n], posts[:n] if posts is not None else None
    snapshots = sorted((int(d.name.split("_", 1)[1]), d) for d in (ppo_dir / "checkpoints").glob("step_*")
                       if d.name.split("_", 1)[1].isdigit())
    final_step = checkpoint.load_config(ppo_dir).get("step")
    points = [(0, None)] + snapshots + [(final_step, ppo_dir)]
    curve, sft_texts = [], None
    for step, path in points:
        model = sft_model if path is None else checkpoint.load_gpt(path, args.device)[0]
        samples = sample_policy(model, tokenizer, prompts, args, ref_model=None if path is None else sft_model,
                                score_fn=score_fn, desc=f"curve step {step}")
        row = policy_row(samples, references, posts, baseline_texts=sft_texts)
        sft_texts = sft_texts or samples["texts"]
        curve.append({"step": step, "kl_to_sft": row.get("kl_to_sft", 0.0),
                      **{k: row[k] for k in ("proxy_reward", "gold_score", "win_rate_vs_sft") if k in row}})
    return curve


def plot_curve(curve: list[dict], path: Path) -> bool:
    """Proxy reward and gold score against KL to SFT, as a PNG; False without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    kl = [p["kl_to_sft"] for p in curve]
    fig, proxy_axis = plt.subplots(figsize=(6, 4))
    gold_axis = proxy_axis.twinx()  # two scales: the reward model's and the judge's
    if all("proxy_reward" in p for p in curve):
        proxy_axis.plot(kl, [p["proxy_reward"] for p in curve], "o-", color="tab:blue", label="proxy reward (RM)")
    if all("gold_score" in p for p in curve):
        gold_axis.plot(kl, [p["gold_score"] for p in curve], "s-", color="tab:orange", label="gold score")
    for p, x in zip(curve, kl):
        proxy_axis.annotate(str(p["step"]), (x, p.get("proxy_reward", 0.0)), fontsize=7)
    proxy_axis.set_xlabel("KL(PPO || SFT), nats per summary")
    proxy_axis.set_ylabel("proxy reward", color="tab:blue")
    gold_axis.set_ylabel("gold score", color="tab:orange")
    fig.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def evaluate_reward_model(args, rm_dir: Path) -> dict:
    """report["reward_model"]: the metrics of the first eval set at the top level, every
    set's under "datasets" (see the module docstring). The data flags the user left unset
    are those the model trained with, and the eval sets are --eval_dataset, else those of
    its training, else its training file (row "held_out": false), else the world's valid split."""
    from plus import reward_trainer
    from plus.reward_head import load_reward_model

    model, tokenizer, config = load_reward_model(rm_dir, args.device)
    if "reward" not in config:
        raise checkpoint.CheckpointError(f"{rm_dir}: not a reward model (no \"reward\" section in config.json)")
    args = trained_with(args, config, REWARD_DATA_FLAGS)
    args.eval_dataset = args.eval_dataset or config.get("eval_dataset")
    held_out = bool(args.eval_dataset) or config.get("dataset", "synthetic") == "synthetic"
    if not held_out:
        args.eval_dataset = [config["dataset"]]
        print(f"[eval] rm: no --eval_dataset, at training or here: scored on its training file {config['dataset']}, "
              "which measures fit, not generalization")
    results = {}
    for path in args.eval_dataset or ["synthetic"]:
        name = "valid" if path == "synthetic" else Path(path).stem
        while name in results:
            name += "+"
        pairs, bad = preferences.load_preference_pairs(path, tokenizer, split="valid", n=args.n_pairs,
                                                **preference_options(args, path))
        row = reward_trainer.evaluate(model, {name: pairs}, tokenizer.pad_id, args.batch_size, args.device)[name]
        references = reward_trainer.reference_examples(path, pairs, tokenizer, "valid", args.n_pairs,
                                                       args.prompt_max_len, args.generate_max_len, args.seed)
        rewards = reward_trainer.score(model, references, tokenizer.pad_id, args.batch_size, args.device)
        row.update(reference_mean=float(rewards.mean()), reference_std=float(rewards.std(correction=0)),
                   n_references=len(references), skipped_records=bad.total, held_out=held_out)
        results[name] = row
        print(f"[eval] rm on {name}: " + ", ".join(f"{k}={v:.3f}" for k, v in row.items() if isinstance(v, float)))
    swaps = swap_agreement(model, tokenizer, args) if "synthetic" in (args.eval_dataset or ["synthetic"]) else None
    reward, stats = config["reward"], config["reward"].get("reference") or {}
    headline = next(iter(results))
    return {"dataset": headline, **results[headline],
            # The training references' mean after normalization, from the statistics kept at training time.
            "train_reference_mean": reward["gain"] * stats["reference_mean_raw"] + reward["bias"] if stats else None,
            "gain": reward["gain"], "bias": reward["bias"], "token_surprise": bool(reward.get("token_surprise")),
            "datasets": results, "swap_agreement": swaps}


def swap_agreement(model, tokenizer, args) -> dict[str, dict]:
    """{fact: {"n", "agreement"}, ..., "all": ...}: over the first --n_swap_posts valid
    posts of the world, how often the reward model scores the reference above each of its
    one-fact swaps (a tie counts half). The gold judge prefers the reference in every pair."""
    import random

    from plus import reward_trainer
    from plus.world import World, gold_preference, swapped_references

    rng = random.Random(f"eval/swaps/{args.seed}")
    rows, examples = [], []
    for post in World(args.seed).posts("valid", args.n_swap_posts):
        prompt = data.truncate_query(tokenizer, post.subreddit, post.title, post.post, args.prompt_max_len)
        reference = data.response_ids(tokenizer, post.summary, args.generate_max_len)
        for fact, text in swapped_references(post, rng):
            swapped = data.response_ids(tokenizer, text, args.generate_max_len)
            # Left out: a difference past what the model reads, and (never seen) a swap the
            # gold judge does not rank below the reference.
            if swapped == reference or gold_preference(post, post.summary, text) != 1.0:
                continue
            rows.append(fact)
            examples += [data.SFTExample(prompt, reference), data.SFTExample(prompt, swapped)]
    rewards = reward_trainer.score(model, examples, tokenizer.pad_id, args.batch_size, args.device)
    hits: dict[str, list[float]] = {}
    for i, fact in enumerate(rows):
        r_ref, r_swap = float(rewards[2 * i]), float(rewards[2 * i + 1])
        hits.setdefault(fact, []).append(1.0 if r_ref > r_swap else 0.5 if r_ref == r_swap else 0.0)
    hits["all"] = [h for fact in list(hits) for h in hits[fact]]
    out = {fact: {"n": len(h), "agreement": sum(h) / len(h)} for fact, h in hits.items() if h}
    print("[eval] rm on one-fact swaps: " + ", ".join(f"{k}={v['agreement']:.3f}" for k, v in out.items()))
    return out


def reward_markdown(rm: dict) -> list[str]:
    form = ("the head at the EOS plus the surprise term over the response tokens (`plus/surprise.py`)"
            if rm.get("token_surprise") else "the head at the EOS (`plus/reward_head.py`)")
    lines = ["## Reward model", "", f"The reward: {form}.", "",
             "| eval set | pairs | gold_agreement | label_accuracy | loss | margin | reference_mean | ece |",
             "|---" * 8 + "|"]
    for name, row in rm["datasets"].items():
        cells = [row["n_pairs"]] + [f"{row[k]:.3f}" if k in row else "" for k in
                                    ("gold_agreement", "label_accuracy", "loss", "margin", "reference_mean", "ece")]
        lines.append(f"| {name} | " + " | ".join(map(str, cells)) + " |")
    for name, row in rm["datasets"].items():
        if row.get("held_out") is False:
            lines += ["", f"`{name}` is the file the model trained on (no held-out file was named): its figures "
                          "measure fit, not generalization."]
    if rm["train_reference_mean"] is not None:
        lines += ["", f"Reference summaries of the training posts average {rm['train_reference_mean']:.4f} after "
                      f"normalization (gain {rm['gain']:.4f}, bias {rm['bias']:.4f}); held-out references "
                      f"{rm['reference_mean']:.4f} (std {rm['reference_std']:.3f})."]
    lines += ["", f"Calibration on `{rm['dataset']}`: pairs binned by the model's confidence in the response it "
                  "favors, max(p, 1 - p) with p = sigmoid(r_chosen - r_rejected), against how often that response "
                  "is the labeled (and the gold) choice.", "",
              "| confidence | pairs | mean predicted | label frequency | gold frequency |", "|---" * 5 + "|"]
    for row in rm["calibration"]:
        gold = f"{row['gold_frequency']:.3f}" if "gold_frequency" in row else ""
        lines.append(f"| {row['bin'][0]:.1f}-{row['bin'][1]:.1f} | {row['n']} | {row['mean_predicted']:.3f} | "
                     f"{row['label_frequency']:.3f} | {gold} |")
    if rm.get("swap_agreement"):
        lines += ["", "Minimal pairs: each held-out reference against copies of it with one stated fact given a "
                      "wrong value (the gold judge prefers the reference every time); how often the reward model "
                      "does.", "", "| swapped fact | pairs | reward model prefers the reference |", "|---|---|---|"]
        lines += [f"| {fact} | {row['n']} | {row['agreement']:.3f} |" for fact, row in rm["swap_agreement"].items()]
    return lines


def write_markdown(report: dict, path: Path) -> None:
    lines = ["# Evaluation report", ""]
    if report["policy"]:
        lines += policy_markdown(report)
    if "reward_model" in report:
        lines += ([""] if report["policy"] else []) + reward_markdown(report["reward_model"])
    if report.get("plus"):
        from plus.plus_evaluation import plus_markdown

        lines += ([""] if len(lines) > 2 else []) + plus_markdown(report["plus"], report.get("plus_curves_plot"))
    path.write_text("\n".join(lines) + "\n")


def judge_markdown(judged: dict[str, dict], reference: dict | None) -> list[str]:
    """The error analysis table: facts stated correctly (% of summaries) and wrong or
    invented facts (per 100 summaries), per policy and for the references."""
    from plus.world import ERROR_PENALTY

    columns = dict(judged, **({"reference": reference} if reference else {}))
    facts = list(next(iter(columns.values()))["covered"])
    kinds = sorted({k for j in columns.values() for k in j["errors"]},
                   key=lambda k: -max(j["errors"].get(k, 0.0) for j in columns.values()))
    lines = ["", "## Where the points go", "",
             "Facts stated correctly (% of summaries) and wrong or invented facts (per 100 summaries; each "
             f"costs the gold score {ERROR_PENALTY:g} points), from `plus.world.error_analysis`.", "",
             "| | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    lines += [f"| covered: {f} | " + " | ".join(f"{j['covered'][f]:.0f}%" for j in columns.values()) + " |"
              for f in facts]
    lines += [f"| wrong: {k} | " + " | ".join(f"{j['errors'].get(k, 0.0):.0f}" for j in columns.values()) + " |"
              for k in kinds]
    return lines


def policy_markdown(report: dict) -> list[str]:
    lines = [f"{report['n_eval']} prompts from `{report['dataset']}` "
             f"({report.get('prompts', 'held out')}), temperature {report['temperature']}.", "", "## Policies", ""]
    cols = ["win_rate_vs_reference", "win_rate_ci95", "win_rate_vs_sft", "win_rate_vs_sft_ci95", "gold_score",
            "proxy_reward", "kl_to_sft", "eos_rate", "rouge1", "rouge2", "rougeL", "mean_length"]
    present = [c for c in cols if any(c in r for r in report["policy"].values())]
    lines += ["| policy | " + " | ".join(present) + " |", "|---" * (len(present) + 1) + "|"]
    fmt = lambda v: f"[{v[0]:.3f}, {v[1]:.3f}]" if isinstance(v, list) else f"{v:.3f}"  # noqa: E731
    for name, row in report["policy"].items():
        lines.append(f"| {name} | " + " | ".join(fmt(row[c]) if c in row else "" for c in present) + " |")
    if "kl_to_sft" in present:
        lines += ["", "kl_to_sft: nats per summary, the exact per-token KL(PPO || SFT) at the sampling temperature "
                      "summed over the summary, averaged over the PPO policy's samples."]
    judged = {name: row["judge"] for name, row in report["policy"].items() if "judge" in row}
    if judged:
        lines += judge_markdown(judged, report.get("reference_judge"))
    if report.get("ppo_curve"):
        curve = report["ppo_curve"]
        keys = [k for k in ("kl_to_sft", "proxy_reward", "gold_score", "win_rate_vs_sft") if any(k in p for p in curve)]
        lines += ["", "## Over-optimization: the PPO policy along training", "",
                  f"On the first {report['n_curve']} posts; step 0 is the SFT policy. The proxy reward is what PPO "
                  "maximizes; the gold score is what we want.", "",
                  "| step | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
        lines += [f"| {point['step']} | " + " | ".join(fmt(point[k]) if k in point else "" for k in keys) + " |"
                  for point in curve]
        if report.get("ppo_curve_plot"):
            lines += ["", f"![over-optimization]({report['ppo_curve_plot']})"]
    for name, samples in report.get("samples", {}).items():
        lines += ["", f"## Samples from {name}", ""]
        for s in samples[:3]:
            lines += ["```", s["prompt"], "```", f"- reference: {s['reference']}"]
            lines += [f"- sft: {s['sft']}"] if "sft" in s else []
            lines += [f"- {name}: {s['summary']}", ""]
    return lines


def evaluate_policies(args, out_dir: Path, stages: list[str], report: dict) -> None:
    """Fill report["policy"] and report["samples"] for the policy stages, report["dataset"],
    ["n_eval"] and ["prompts"] with the prompts they used, and, for ppo, report["ppo_curve"]
    (and the plot). The data flags the user left unset are the SFT policy's
    (`policy_data_args`): the one evaluated, else the one PPO started from."""
    from plus.reward_head import load_reward_model

    # One proxy reward model for every row: --reward_pretrain, else the one PPO used, else <out_dir>/rm.
    ppo_config = checkpoint.load_config(checkpoint_dir(args, "ppo")) if "ppo" in stages else {}
    sft_dir = checkpoint_dir(args, "sft") if "sft" in stages else Path(ppo_config.get("init_from") or out_dir / "sft")
    args = policy_data_args(args, checkpoint.load_config(sft_dir) if sft_dir.exists() else {})
    rm_path = args.reward_pretrain or ppo_config.get("reward_pretrain") or out_dir / "rm"
    score_fn = None
    if args.reward_pretrain or Path(rm_path).exists():
        reward_model, rm_tokenizer, rm_config = load_reward_model(rm_path, args.device)
        if "reward" not in rm_config:
            raise checkpoint.CheckpointError(f"{rm_path}: not a reward model (no \"reward\" section in config.json)")
        score_fn = reward_model_scorer(reward_model, rm_tokenizer.pad_id, args.batch_size, args.device)

    sft_samples = None
    for stage in stages:
        t0 = time.perf_counter()
        model, tokenizer, config = checkpoint.load_gpt(checkpoint_dir(args, stage), args.device)
        prompts, references, posts, source = heldout(args, tokenizer)
        report.update(dataset=args.dataset, n_eval=len(prompts), prompts=source)
        if stage == "ppo":
            sft_model = checkpoint.load_gpt(Path(config.get("init_from") or out_dir / "sft"), args.device)[0]
            if sft_samples is None:  # the SFT baseline: the same posts, the same seed
                sft_samples = sample_policy(sft_model, tokenizer, prompts, args, desc="eval sft (baseline)")
            samples = sample_policy(model, tokenizer, prompts, args, ref_model=sft_model, score_fn=score_fn,
                                    desc="eval ppo")
            row = policy_row(samples, references, posts, baseline_texts=sft_samples["texts"])
        else:
            samples = sample_policy(model, tokenizer, prompts, args, score_fn=score_fn, desc=f"eval {stage}")
            row = policy_row(samples, references, posts)
            sft_samples = samples if stage == "sft" else sft_samples
        report["policy"][stage] = row
        if posts is not None and "reference_judge" not in report:
            from plus.world import error_analysis
            report["reference_judge"] = error_analysis(posts, references)
        report["samples"][stage] = [
            {"prompt": tokenizer.decode(p), "reference": r, "summary": t,
             **({"sft": sft_samples["texts"][i]} if stage == "ppo" else {})}
            for i, (p, r, t) in enumerate(list(zip(prompts, references, samples["texts"]))[:20])]
        print(f"[eval] {stage} ({time.perf_counter() - t0:.0f}s): "
              + ", ".join(f"{k}={v:.3f}" for k, v in row.items() if isinstance(v, float)))
        if stage == "ppo":
            t0 = time.perf_counter()
            report["n_curve"] = min(args.n_curve, len(prompts))
            report["ppo_curve"] = overoptimization_curve(args, checkpoint_dir(args, "ppo"), sft_model, tokenizer,
                                                         prompts, references, posts, score_fn)
            plot = out_dir / "eval" / "overoptimization.png"
            plot.parent.mkdir(parents=True, exist_ok=True)
            if plot_curve(report["ppo_curve"], plot):
                report["ppo_curve_plot"] = plot.name
            print(f"[eval] over-optimization view ({time.perf_counter() - t0:.0f}s): "
                  + "; ".join(", ".join(f"{k}={v:.3g}" for k, v in point.items()) for point in report["ppo_curve"]))
