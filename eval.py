"""Evaluate the checkpoints under --out_dir and write <out_dir>/eval/report.{json,md}.

    python eval.py                          # everything that exists under runs/demo
    python eval.py --stage sft --n_eval 400

For each policy checkpoint (sft, and later ppo) it samples one summary per held-out post
at the sampling temperature (0.7, as in Huang et al. 2024) and reports:

* win_rate_vs_reference: how often the noiseless gold judge of the built-in world prefers
  the policy's summary to the post's reference TL;DR (ties count half), with a 95% Wilson
  interval: the headline metric of Stiennon et al. 2020 (their Fig. 1);
* gold_score: the judge's mean score;  eos_rate: responses that ended by themselves;
* rouge1/rouge2/rougeL against the references;  mean_length in tokens.

On a file of your own (--dataset, OpenAI TL;DR format) there is no gold judge: ROUGE,
length and EOS rate are reported.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from plus import checkpoint, data
from plus.generate import sample_texts
from plus.metrics import rouge_scores, win_rate

POLICY_STAGES = ("sft",)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--out_dir", default="runs/demo")
    p.add_argument("--stage", choices=POLICY_STAGES, default=None, help="evaluate one stage (default: all present)")
    p.add_argument("--dataset", default="synthetic", help="'synthetic' (the world's test split) or a TL;DR file")
    p.add_argument("--input_key", default=None)
    p.add_argument("--output_key", default="summary")
    p.add_argument("--n_eval", type=int, default=400, help="held-out posts")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--prompt_max_len", type=int, default=200)
    p.add_argument("--generate_max_len", type=int, default=48)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return p


def heldout(args, tokenizer):
    """(prompt token lists, reference summaries, world Posts or None)."""
    if args.dataset == "synthetic":
        from plus.synthetic import World
        posts = World(args.seed).posts("test", args.n_eval)
        prompts = [data.truncate_query(tokenizer, p.subreddit, p.title, p.post, args.prompt_max_len) for p in posts]
        return prompts, [p.summary for p in posts], posts

    def parse(record, where):
        return (data.prompt_ids(tokenizer, record, args.input_key, args.prompt_max_len, where),
                data.get_text(record, args.output_key, where))
    rows = data.load_file_records(args.dataset, parse, data.BadRecords("error"), limit=args.n_eval)
    return [r[0] for r in rows], [r[1] for r in rows], None


def evaluate_policy(args, stage_dir: Path) -> tuple[dict, list[dict]]:
    model, tokenizer, _ = checkpoint.load_gpt(stage_dir, args.device)
    prompts, references, posts = heldout(args, tokenizer)
    with tqdm(total=len(prompts), desc=f"eval {stage_dir.name}", dynamic_ncols=True) as bar:
        texts, ended, lengths = sample_texts(model, tokenizer, prompts, args.generate_max_len, args.batch_size,
                                             temperature=args.temperature, seed=args.seed, progress=bar)
    row = {"n": len(texts), "eos_rate": sum(ended) / len(ended), "mean_length": sum(lengths) / len(lengths),
           **rouge_scores(texts, references)}
    if posts is not None:
        from plus.synthetic import gold_preference, gold_score
        outcomes = [gold_preference(p, t, p.summary) for p, t in zip(posts, texts)]
        rate, ci = win_rate(outcomes)
        row.update(win_rate_vs_reference=rate, win_rate_ci95=list(ci),
                   gold_score=sum(gold_score(p, t) for p, t in zip(posts, texts)) / len(texts),
                   reference_gold_score=sum(gold_score(p, p.summary) for p in posts) / len(posts))
    samples = [{"prompt": tokenizer.decode(p), "reference": r, "summary": t}
               for p, r, t in list(zip(prompts, references, texts))[:20]]
    return row, samples


def write_markdown(report: dict, path: Path) -> None:
    lines = ["# Evaluation report", "", f"{report['n_eval']} held-out posts from `{report['dataset']}`, "
             f"temperature {report['temperature']}.", "", "## Policies", ""]
    cols = ["win_rate_vs_reference", "win_rate_ci95", "gold_score", "eos_rate", "rouge1", "rouge2", "rougeL", "mean_length"]
    present = [c for c in cols if any(c in r for r in report["policy"].values())]
    lines += ["| policy | " + " | ".join(present) + " |", "|---" * (len(present) + 1) + "|"]
    fmt = lambda v: f"[{v[0]:.3f}, {v[1]:.3f}]" if isinstance(v, list) else f"{v:.3f}"  # noqa: E731
    for name, row in report["policy"].items():
        lines.append(f"| {name} | " + " | ".join(fmt(row[c]) if c in row else "" for c in present) + " |")
    for name, samples in report.get("samples", {}).items():
        lines += ["", f"## Samples from {name}", ""]
        for s in samples[:3]:
            lines += ["```", s["prompt"], "```", f"- reference: {s['reference']}", f"- {name}: {s['summary']}", ""]
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    out_dir = Path(args.out_dir)
    stages = [args.stage] if args.stage else [s for s in POLICY_STAGES if (out_dir / s).exists()]
    if not stages:
        print(f"error: {out_dir}: no checkpoints to evaluate (run train.py first)", file=sys.stderr)
        return 1
    report = {"dataset": args.dataset, "n_eval": args.n_eval, "temperature": args.temperature,
              "policy": {}, "samples": {}}
    try:
        for stage in stages:
            t0 = time.perf_counter()
            report["policy"][stage], report["samples"][stage] = evaluate_policy(args, out_dir / stage)
            print(f"[eval] {stage} ({time.perf_counter() - t0:.0f}s): "
                  + ", ".join(f"{k}={v:.3f}" for k, v in report["policy"][stage].items() if isinstance(v, float)))
    except (data.DataError, checkpoint.CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    eval_dir = out_dir / "eval"
    eval_dir.mkdir(parents=True, exist_ok=True)
    (eval_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    write_markdown(report, eval_dir / "report.md")
    print(f"[eval] wrote {eval_dir / 'report.json'} and report.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
