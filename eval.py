"""Evaluate the checkpoints under --out_dir and write <out_dir>/eval/report.{json,md}.

    python eval.py                          # everything that exists under runs/demo
    python eval.py --stage sft --n_eval 400
    python eval.py --stage plus             # the PLUS runs under <out_dir>/plus/<population>/<method>

For each policy checkpoint (sft, ppo) it samples one summary per held-out post at the
sampling temperature (0.7, as in Huang et al. 2024), seeded, and reports:

* win_rate_vs_reference: how often the noiseless gold judge of the built-in world prefers
  the policy's summary to the post's reference TL;DR (ties count half), with a 95% Wilson
  interval: the headline metric of Stiennon et al. 2020 (their Fig. 1);
* gold_score: the judge's mean score;  eos_rate: responses that ended by themselves;
* rouge1/rouge2/rougeL against the references;  mean_length in tokens;
* proxy_reward: the reward model's mean (normalized) score of the summaries, where a
  reward model exists (<out_dir>/rm, or --reward_pretrain); references score 0.

For the PPO policy also:

* win_rate_vs_sft (and its 95% interval): the gold judge's preference for the PPO
  summary over the SFT policy's summary of the same post (SFT sampled with the same seed);
* kl_to_sft: KL(pi_PPO || pi_SFT) per summary, in nats, measured as the mean over
  sampled summaries of the *exact* per-token KL between the two next-token distributions
  (at the sampling temperature) summed over the summary's tokens. By the chain rule its
  expectation is the sequence-level KL, with less variance than summed log-ratios (k1);
* the over-optimization view (Stiennon et al. 2020, Fig. 5; Gao et al. 2023): proxy
  reward, gold score and KL along the policies saved during PPO (--save_steps writes
  <out_dir>/ppo/checkpoints/step_N), on the first --n_curve posts; as a table in
  report.md, and as overoptimization.png when matplotlib is installed. The proxy reward
  keeps rising with KL; where the gold score stops following it, the policy exploits
  the reward model's errors.

On a file of your own there is no gold judge: ROUGE, length and EOS rate are reported.
Data flags left unset (--dataset, the keys, the length caps, --on_bad_record) are those the
checkpoint trained with, from its config.json: the policies are evaluated on the prompts
the SFT policy held out of its training file (or on its first --eval_dataset file), and a
reward model on its training --eval_dataset files (or, with none, on its training file,
which the report says). report.json's dataset, n_eval and prompts say which prompts were
used and how many. `--init_from DIR` evaluates that checkpoint instead of <out_dir>/<stage>.

For the reward model (rm) it scores held-out comparisons (--eval_dataset, default
--n_pairs of the world's valid split; each file is reported separately) and reports, as
plus/reward_trainer.py's `pair_metrics` defines them: label_accuracy (against the noisy
labels), gold_agreement (against the noiseless gold preference, where known), loss, mean
chosen / rejected rewards, margin, a calibration table; and reference_mean, the mean
normalized reward of held-out reference summaries (the world's references of those
posts, or a file's chosen responses): training set it to 0 on the training references
(train_reference_mean), so a value near 0 here means the normalization carries over.
On the world it also scores minimal pairs (--n_swap_posts valid posts): each reference
against copies of it with one stated fact given a wrong value
(`plus.world.swapped_references`), and reports per fact how often the reward model
prefers the reference (swap_agreement). Only the post tells the two apart, so this is
the plainest test of whether a reward model checks a summary against its post.

For PLUS (`--stage plus`, plus/plus_evaluation.py) each run's reward model scores the
held-out comparisons of the first --n_seen_users seen users it trained on (other posts
than their training pairs) and of --n_new_users new users, each comparison conditioned
on the method's z (bt: none, icl: the raw context, untrained: a sample of the initial
summarizer, plus: a sample of the trained one, oracle: the persona's own text), against
the user's noiseless gold choice. A run trained on a PLUS file is scored on the eval pairs
(eval_prompt / eval_chosen / eval_rejected) of its file's first --n_seen_users users and,
with --eval_dataset FILE, of that file's first --n_new_users users, against the choice
the file records; its population is the file's name. report.json holds, for population
`pets`, `p2`, `p4` or `ood` (or a file's name) and method `bt`, `icl`, `untrained`,
`plus` or `oracle`:

* plus.<population>.<method>.<seen|new>.accuracy, with .ci95 (Wilson, 95%) and .n_pairs;
  pets, whose comparisons are half contested, half shared, has each kind's apart under
  <seen|new>.<contested|shared> (the same keys);
* plus.<population>.<method>.summary_attribute_accuracy: how well z states the new users'
  personas (plus.world.summary_attribute_accuracy: +1 per attribute right, -1 per
  attribute wrong or extra, over the persona's attributes; the mean), with
  .summary_all_correct (the share of z with every attribute right), .summary_axes.<axis>
  (.right / .wrong: of the z for users holding a pole of the axis, the share that state
  it / the other pole) and .z_tokens (z's mean length in tokens); the same per split under
  <seen|new>;
* plus.<population>.<method>.curves: {step, rm_accuracy[, summarizer_reward]}, the run's
  metrics.jsonl per update (under the population the run trained on);
* plus.<population>.transfer.<plus|untrained>.<seen|new>.accuracy: the oracle's reward
  model reading PLUS's (or the untrained summarizer's) z, where both runs exist;
* plus.<population>.grounded.<seen|new>.accuracy: the grounded reward model every run
  started from (`<out_dir>/plus/reward_init`), before any training, reading the persona's
  own text, where every run of the population started from it;
* plus.<population>.reads.<grounded|plus|oracle>.<own|length|content|register>.accuracy:
  a reward model on the new users reading the persona's own text, and that text with one
  axis's sentence flipped (what each sentence of z is worth to it);
* plus.<population>.ceiling.<seen|new>.accuracy: the information ceiling, the
  Bayes-optimal prediction from each user's context knowing every persona's gold judge
  and the labelers' noise (`plus.plus_evaluation.information_ceiling`): the most any
  method that reads the context can score on new users (on seen users, whose training
  pairs a method may have learned, a reference);
* plus.<population>.examples.<persona>: three new users' z before RL (the initial
  summarizer) and after (PLUS's summarizer), with each z's score.

`ood` is a population of new users only, whose persona combinations no run trained on:
plus.ood.<method>.new is the run trained on p4 (the population that holds every pole of
every axis, in other combinations), so plus.ood.<method> has no `seen` and no curves.
report.md shows these as tables, and the curves as plus_curves.png when matplotlib is
installed.

Each evaluation replaces the sections it evaluates and keeps the others of an existing
report.json (an `eval.py --stage plus` leaves the policies' and the reward model's rows
as they were, and the reverse); report.md is written from the whole report.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from plus import checkpoint, data
from plus.cli import ArgumentParser, print_error
from plus.evaluation import (POLICY_STAGES, REWARD_STAGE, checkpoint_dir, evaluate_policies, evaluate_reward_model,
                             write_markdown)
from plus.plus_evaluation import PLUS_EVAL_USERS
from plus.preference_flags import add_preference_args

PLUS_STAGE = "plus"


def evaluate_plus(args, out_dir: Path, report: dict) -> None:
    """Fill report["plus"] (`plus.plus_evaluation.evaluate_population`'s results by
    population, see the module docstring) for every run under <out_dir>/plus, and
    report["plus_curves_plot"] where the curves could be plotted."""
    from plus.plus_evaluation import evaluate_population, information_ceiling, plot_curves
    from plus.world import make_users
    from plus.world.export import user_records

    ceilings: dict[tuple[str, str], dict] = {}

    def records(population: str, split: str, n: int, seed: int) -> list:
        users = make_users(population, split, n, seed=seed)
        ceilings[population, "seen" if split == "train" else "new"] = information_ceiling(users)
        return [data.parse_plus_record(r, f"synthetic:{u.id}") for u in users for r in user_records(u)]

    def file_records(path: str, n_users: int, on_bad_record: str) -> list:
        """The records of the first n_users users of a PLUS file (a record without a
        user_id is a user of its own)."""
        kept, users = [], set()
        found, bad = data.load_plus_records(path, on_bad_record)
        if bad.total:
            print(f"[eval] {path}: {bad.summary()}")
        for r in found:
            user = r.user_id or r.source
            if user in users or len(users) < n_users:
                users.add(user)
                kept.append(r)
        return kept

    groups: dict[tuple, dict[str, Path]] = {}  # runs trained on the same users, by method
    for run_dir in sorted(p.parent for p in (out_dir / PLUS_STAGE).glob("*/*/reward_model")):
        config = checkpoint.load_config(run_dir / "reward_model")
        if config["dataset"] != "synthetic" and not Path(config["dataset"]).is_file():
            print(f"[eval] {run_dir}: trained on {config['dataset']}, which is not there: skipped")
            continue
        key = (config["population"], config["dataset"], config.get("n_users"), config["seed"],
               config.get("on_bad_record") or "error")
        groups.setdefault(key, {})[config["method"]] = run_dir
    if args.eval_dataset and not any(dataset != "synthetic" for _, dataset, *_ in groups):
        raise data.DataError(f"--eval_dataset: no run under {out_dir / PLUS_STAGE} was trained on a file (the "
                             "built-in world's runs are scored on its own new users)")
    out: dict[str, dict] = {}
    for (population, dataset, n_users, seed, on_bad_record), run_dirs in groups.items():
        if dataset == "synthetic":
            sets = {(population, "seen"): records(population, "train", min(n_users, args.n_seen_users), seed),
                    (population, "new"): records(population, "test", args.n_new_users, seed)}
            if population == "p4":  # new persona combinations, scored by the models trained on p4
                sets["ood", "new"] = records("ood", "test", args.n_new_users, seed)
        else:  # a file's users: their own held-out pairs; new users: --eval_dataset's
            sets = {(population, "seen"): file_records(dataset, args.n_seen_users, on_bad_record)}
            if args.eval_dataset:
                sets[population, "new"] = file_records(args.eval_dataset[0], args.n_new_users,
                                                       args.on_bad_record or on_bad_record)
        for name, result in evaluate_population(run_dirs, sets, args.device, args.seed).items():
            out.setdefault(name, {}).update(result)
            ceiling = {split: ceilings[p, split] for p, split in sets if p == name and (p, split) in ceilings}
            if ceiling:
                out[name]["ceiling"] = ceiling
            print(f"[eval] plus {name}: " + "; ".join(
                f"{method} " + ", ".join(f"{split} {r[split]['accuracy']:.3f}" for split in ("seen", "new")
                                         if split in r) for method, r in result.items() if method in run_dirs))
    report["plus"] = out
    report.pop("plus_curves_plot", None)
    plot = out_dir / "eval" / "plus_curves.png"
    plot.parent.mkdir(parents=True, exist_ok=True)
    if plot_curves(out, plot):
        report["plus_curves_plot"] = plot.name


def previous_report(path: Path) -> dict:
    """The report an earlier run wrote, whose sections this run keeps where it does not
    evaluate them (a policy, the reward model, PLUS); a fresh one where there is none."""
    report = {}
    if path.is_file():
        try:
            report = json.loads(path.read_text())
        except (OSError, ValueError):
            print(f"[eval] {path}: unreadable, written anew")
    if not isinstance(report, dict):
        report = {}
    return {"policy": {}, "samples": {}, **report}


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--out_dir", default="runs/demo")
    p.add_argument("--stage", choices=POLICY_STAGES + (REWARD_STAGE, PLUS_STAGE), default=None,
                   help="evaluate one stage (default: all present; with --init_from, the checkpoint's)")
    p.add_argument("--init_from", default=None,
                   help="evaluate this checkpoint instead of <out_dir>/<stage> (the report still goes to "
                        "<out_dir>/eval)")
    # Data flags left unset take what the checkpoint was trained with (its config.json): the
    # SFT policy's for the policies, the reward model's for rm.
    p.add_argument("--dataset", default=None,
                   help="'synthetic' (the world's test split) or a file of prompts and references (default: the "
                        "prompts the SFT policy held out of its training file, or its data)")
    p.add_argument("--input_key", default=None, help="prompt field (default: the one the checkpoint trained with)")
    p.add_argument("--output_key", default=None,
                   help="reference field (default: the one the checkpoint trained with, else 'summary')")
    p.add_argument("--n_eval", type=int, default=400, help="held-out prompts at most")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--prompt_max_len", type=int, default=None,
                   help=f"default: the checkpoint's, else {data.PROMPT_MAX_LEN}")
    p.add_argument("--generate_max_len", type=int, default=None,
                   help=f"default: the checkpoint's, else {data.RESPONSE_MAX_LEN}")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--reward_pretrain", default=None,
                   help="reward model for proxy_reward (default: the one PPO used, else <out_dir>/rm)")
    p.add_argument("--n_curve", type=int, default=100, help="posts per saved PPO policy in the over-optimization view")
    p.add_argument("--eval_dataset", nargs="+", default=None,
                   help="rm: held-out preference files, each reported separately (default: the world's valid split); "
                        "plus: one PLUS file of new users, whose eval pairs score the runs trained on a file")
    p.add_argument("--n_pairs", type=int, default=1024,
                   help="rm: held-out comparisons per --eval_dataset (the world's: one per post, its valid split)")
    p.add_argument("--n_swap_posts", type=int, default=200,
                   help="rm on the world: valid posts whose reference is scored against its one-fact swaps")
    p.add_argument("--n_seen_users", type=int, default=PLUS_EVAL_USERS,
                   help="plus: the first N of the seen users the runs trained on, whose held-out comparisons "
                        f"are scored (default {PLUS_EVAL_USERS}; two each)")
    p.add_argument("--n_new_users", type=int, default=PLUS_EVAL_USERS,
                   help=f"plus: new users (the world's test split) per population (default {PLUS_EVAL_USERS})")
    p.add_argument("--on_bad_record", choices=("error", "skip"), default=None,
                   help="default: the checkpoint's, else error")
    add_preference_args(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.n_swap_posts < 0:
        parser.error("--n_swap_posts must be >= 0")
    for flag in ("n_seen_users", "n_new_users"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be >= 1")
    if args.stage == PLUS_STAGE and args.eval_dataset and len(args.eval_dataset) > 1:
        parser.error("--stage plus takes one --eval_dataset: a PLUS file of new users")
    out_dir = Path(args.out_dir)
    if args.init_from and args.stage == PLUS_STAGE:
        parser.error("--init_from names one checkpoint; --stage plus evaluates the runs under <out_dir>/plus")
    if args.init_from and args.stage is None:
        try:
            args.stage = checkpoint.load_config(args.init_from).get("stage")
        except checkpoint.CheckpointError as e:
            print_error(str(e))
            return 1
        if args.stage not in POLICY_STAGES + (REWARD_STAGE,):
            parser.error(f"--init_from {args.init_from} is a {args.stage or 'model'} checkpoint: name what to "
                         f"evaluate it as with --stage {{{','.join(POLICY_STAGES + (REWARD_STAGE,))}}}")
    stages = [args.stage] if args.stage else [s for s in POLICY_STAGES + (REWARD_STAGE, PLUS_STAGE)
                                              if (out_dir / s).exists()]
    if not stages:
        print_error(f"{out_dir}: no checkpoints to evaluate (run train.py first)")
        return 1
    if args.eval_dataset and {REWARD_STAGE, PLUS_STAGE} <= set(stages):
        parser.error("--eval_dataset names rm's preference files or plus's new users: say which with --stage")
    eval_dir = out_dir / "eval"
    report = previous_report(eval_dir / "report.json")
    try:
        policies = [s for s in stages if s in POLICY_STAGES]
        if policies:
            report["temperature"] = args.temperature
            evaluate_policies(args, out_dir, policies, report)
        if REWARD_STAGE in stages:
            report["reward_model"] = evaluate_reward_model(args, checkpoint_dir(args, REWARD_STAGE))
        if PLUS_STAGE in stages:
            evaluate_plus(args, out_dir, report)
    except (data.DataError, checkpoint.CheckpointError) as e:
        print_error(str(e))
        return 1
    eval_dir.mkdir(parents=True, exist_ok=True)
    (eval_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    write_markdown(report, eval_dir / "report.md")
    print(f"[eval] wrote {eval_dir / 'report.json'} and report.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
