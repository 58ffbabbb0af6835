"""PLUS evaluation: each method's reward model against each user's own gold choice, and
what the summaries z say about the users (Nam et al. 2025: held-out reward-model
accuracy by method and benchmark, Pets-OOD, the summaries themselves).

A user u has a persona, whose noiseless gold judge prefers one response of each held-out
comparison (x, y_a, y_b): y_u^+ (the record's eval_chosen), the other y_u^-. A method's
reward model, reading that method's z_u in its cue (`plus_trainer.fixed_summaries`:
nothing for Bradley–Terry, the raw context for in-context, one sample of the initial or
of the trained summarizer for untrained and PLUS, the persona's own text for oracle), is
right on the pair when

    r(x, y_u^+ | z_u) > r(x, y_u^- | z_u)        (a tie counts half),

and its accuracy is the mean over the pairs, with a Wilson 95% interval
(`plus.metrics.win_rate`); on pets, also over its contested pairs and its shared ones
apart. Seen users are those a run trained on, scored on other posts than their training
pairs; new users are held-out users on new posts; the ood population's users have
persona combinations no run trained on.

Beside accuracy:

* the quality of z (`z_quality`): the world's judge of z
  (`plus.world.summary_attribute_accuracy`) scores z against the user's persona, +1 per
  attribute stated right and -1 per attribute wrong or extra, over the persona's
  attributes; reported are the mean score, the share of z that score 1 (every attribute
  right, nothing extra) and z's mean length in tokens;
* transfer (`evaluate_population`): the oracle's reward model, trained on the personas'
  true descriptions, reads the z of PLUS and of the untrained summarizer. Its accuracy
  asks whether z carries what the true description carries, in words a model that never
  saw a summarizer understands, apart from any private code z and its own reward model
  agreed on while they were trained together;
* the start (`evaluate_population`): the grounded reward model every method started
  from, before any training, reading the persona's own text: how much of the reading the
  methods begin with;
* what the reward models read in z (`reading`): the grounded model, PLUS's and the
  oracle's, each reading the persona's own text and that text with one axis's sentence
  flipped (`plus.world.flipped`), on the new users. A sentence whose flip does not move the
  accuracy is one the reward model does not read, and so one PLUS's reward never pays a
  summarizer to get right;
* the information ceiling (`information_ceiling`, on the built-in world): the accuracy
  of the Bayes-optimal prediction from each user's context, knowing every persona's gold
  judge and the labelers' noise (`plus.world.ceiling_hits`). 2-4 noisy past choices do
  not always name the user's persona, and no method that reads them can do better;
* examples (`before_after_examples`): z of the same new users before RL (the initial
  summarizer) and after it (PLUS's), each with its judge's score;
* training curves (`read_curves`): the reward model's accuracy on the comparisons of
  each update, before its step, and the summarizer's mean reward per update, from each
  run's metrics.jsonl.

`plus_markdown` renders all of it for report.md, `plot_curves` the curves as a PNG.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from plus import checkpoint, ppo
from plus.data import PlusRecord
from plus.metrics import win_rate
from plus.plus_trainer import METHODS, PlusSettings, conditioned_pairs, fixed_summaries
from plus.reward_trainer import score_pairs
from plus.world.personas import AXES, Persona, flipped, summary_attribute_accuracy

POPULATION_ORDER = ("pets", "p2", "p4", "ood")  # the report's column order; other populations follow
SPLITS = ("seen", "new")
Z_SOURCES = ("plus", "untrained")  # the summarizers whose z the oracle's reward model reads (transfer)
READERS = ("grounded", "plus", "oracle")  # the reward models whose reading of z `reading` measures
CURVE_KEYS = ("rm_accuracy", "summarizer_reward")
CURVE_ROWS = 10  # report.md's curve tables show about this many updates
# Users scored per population and split (seen, new): as many seen users as new ones, so the
# two accuracies are measured at the same precision; scoring every seen user (thousands)
# would cost most of the evaluation.
PLUS_EVAL_USERS = 256


# ----------------------------------------------------------------------------------------
# One reward model, one set of z

def _rate(hits: list[float]) -> dict:
    rate, (low, high) = win_rate(hits)
    return {"accuracy": rate, "ci95": [low, high], "n_pairs": len(hits)}


def _rate_by_kind(hits: list[float], contested: list[bool]) -> dict:
    """`_rate` of the hits, and where the pairs are of both kinds (pets), of its contested
    and its shared pairs apart, under "contested" and "shared"."""
    out = _rate(hits)
    if set(contested) == {True, False}:
        for name, kind in (("contested", True), ("shared", False)):
            out[name] = _rate([h for h, c in zip(hits, contested) if c is kind])
    return out


def information_ceiling(users) -> dict:
    """The mean of `plus.world.ceiling_hits` over the users' evaluation pairs, with its
    Wilson interval (and, on pets, over its contested and its shared pairs apart), as
    `accuracy` reports a reward model's."""
    from plus.world.users import ceiling_hits

    hits, contested = [], []
    for user in users:
        hits += ceiling_hits(user)
        contested += [c.contested for c in user.evaluation_comparisons]
    return _rate_by_kind(hits, contested)


def accuracy(reward_model, tokenizer, records: list[PlusRecord], zs: list[str | None], settings: PlusSettings,
             device) -> dict:
    """The reward model's accuracy on the records' evaluation pairs, each conditioned on
    its z, against the user's gold choice (ties half), with its Wilson 95% interval. Where
    the records hold both contested pairs (the population's personas disagree) and shared
    ones (pets), also each kind's apart, under "contested" and "shared": on shared pairs a
    reward model that ignores z can be right for every user, on contested ones for one
    persona's users only, so about half the time."""
    pairs = conditioned_pairs(tokenizer, records, zs, "eval", settings.prompt_max_len, settings.response_max_len)
    chosen, rejected = score_pairs(reward_model, pairs, tokenizer.pad_id, settings.eval_batch_size, device)
    hits = ((chosen > rejected).double() + 0.5 * (chosen == rejected).double()).tolist()
    return _rate_by_kind(hits, [r.eval_contested for r in records])


Z_QUALITY_KEYS = ("summary_attribute_accuracy", "summary_all_correct", "summary_axes", "z_tokens")


def reading(reward_model, tokenizer, records: list[PlusRecord], settings: PlusSettings, device) -> dict:
    """{"own": `accuracy` with each record's persona text as z, axis: `accuracy` with the
    persona's pole of that axis flipped (`plus.world.flipped`), for each axis a persona of
    the records holds}: what each sentence of z is worth to this reward model."""
    personas = [Persona(tuple(r.persona.split("+"))) for r in records]
    out = {"own": accuracy(reward_model, tokenizer, records, [p.text for p in personas], settings, device)}
    for axis in [a for a in AXES if any(p.pole(a) for p in personas)]:
        out[axis] = accuracy(reward_model, tokenizer, records, [flipped(p, axis).text for p in personas], settings,
                             device)
    return out


def z_quality(tokenizer, records: list[PlusRecord], zs: list[str | None]) -> dict:
    """z_tokens (mean length of the text z in tokens) and, over the records that name a
    persona, summary_attribute_accuracy (the judge's mean score), summary_all_correct
    (the share of z scoring 1) and summary_axes: per axis, of the z written for users whose
    persona holds a pole of it (n_z, one per record), the share that state that pole
    (`right`) and the share that state the other one (`wrong`; the rest say nothing of
    it). The score adds the axes up; the axes show which of them a summarizer reads.
    Empty when no z is text."""
    texts = [(r, z) for r, z in zip(records, zs) if z is not None]
    if not texts:
        return {}
    out = {"z_tokens": sum(len(tokenizer.encode(z)) for _, z in texts) / len(texts)}
    judged = [summary_attribute_accuracy(z, Persona(tuple(r.persona.split("+")))) for r, z in texts if r.persona]
    if judged:
        out["summary_attribute_accuracy"] = sum(j["score"] for j in judged) / len(judged)
        out["summary_all_correct"] = sum(j["score"] == 1.0 for j in judged) / len(judged)
        axes = {}
        for axis, poles in AXES.items():
            right = sum(any(p in j["correct"] for p in poles) for j in judged)
            wrong = sum(any(p in j["wrong"] for p in poles) for j in judged)
            held = right + wrong + sum(any(p in j["omitted"] for p in poles) for j in judged)
            if held:
                axes[axis] = {"right": right / held, "wrong": wrong / held, "n_z": held}
        out["summary_axes"] = axes
    return out


def evaluate(reward_model, tokenizer, records: list[PlusRecord], zs: list[str | None], settings: PlusSettings,
             device) -> dict:
    """`accuracy` and `z_quality` of one reward model reading one set of z."""
    return {**accuracy(reward_model, tokenizer, records, zs, settings, device), **z_quality(tokenizer, records, zs)}


# ----------------------------------------------------------------------------------------
# The runs of one population

@dataclass
class Run:
    """A trained `<out_dir>/plus/<population>/<method>` directory, loaded."""

    path: Path
    method: str
    reward_model: object
    tokenizer: object
    config: dict
    cfg: ppo.PPOConfig
    settings: PlusSettings

    @property
    def initial_summarizer(self) -> Path:
        """The summarizer every method started from (the warm-started one)."""
        return Path(self.config.get("summarizer_from", self.config["init_from"]))

    @property
    def summarizer(self) -> Path | None:
        """The summarizer whose samples are this method's z: PLUS's trained one, the
        initial one for untrained; None where z is not sampled."""
        return {"plus": self.path / "summarizer", "untrained": self.initial_summarizer}.get(self.method)


def load_run(run_dir: Path, device) -> Run:
    from plus.reward_head import load_reward_model

    reward_model, tokenizer, config = load_reward_model(run_dir / "reward_model", device)
    cfg = ppo.PPOConfig(**{**config["ppo"], "device": str(device)})
    settings = PlusSettings(method=config["method"], prompt_max_len=config["prompt_max_len"],
                            response_max_len=config.get("response_max_len", config["generate_max_len"]),
                            **config.get("summarizer_input", {}))
    return Run(run_dir, config["method"], reward_model, tokenizer, config, cfg, settings)


class SummarizerSamples:
    """The z a summarizer checkpoint writes for each set of records, sampled once, seeded
    (`fixed_summaries`, at PPO's temperature): the untrained run's z and PLUS's z before
    RL come from the same initial summarizer, so they are the same z."""

    def __init__(self, device, seed: int):
        self.device, self.seed = device, seed
        self.models: dict[str, object] = {}
        self.zs: dict[tuple[str, tuple[str, str]], list[str]] = {}

    def __call__(self, path: Path, key: tuple[str, str], records: list[PlusRecord], run: Run) -> list[str]:
        if (str(path), key) not in self.zs:
            if str(path) not in self.models:
                self.models[str(path)] = checkpoint.load_gpt(path, self.device)[0]
            self.zs[str(path), key] = fixed_summaries("plus", records, run.tokenizer, self.models[str(path)], run.cfg,
                                                      run.settings, self.seed)
        return self.zs[str(path), key]


def run_summaries(run: Run, sets: dict[tuple[str, str], list[PlusRecord]],
                  samples: SummarizerSamples) -> dict[tuple[str, str], list[str | None]]:
    """The run's method's z of each set of records."""
    if run.summarizer is None:
        return {key: fixed_summaries(run.method, records, run.tokenizer, None, run.cfg, run.settings, samples.seed)
                for key, records in sets.items()}
    return {key: samples(run.summarizer, key, records, run) for key, records in sets.items()}


def before_after_examples(records: list[PlusRecord], before: list[str], after: list[str],
                          n: int = 3) -> dict[str, list[dict]]:
    """{persona: [{"user", "before", "before_score", "after", "after_score"}, ...]}: the
    first n users of each persona (the first record of each user), with the z of the
    initial summarizer and of PLUS's, and the judge's score of each."""
    out: dict[str, list[dict]] = {}
    users = set()
    for r, z0, z1 in zip(records, before, after):
        user = r.user_id or r.source
        if not r.persona or user in users or len(out.setdefault(r.persona, [])) >= n:
            continue
        users.add(user)
        persona = Persona(tuple(r.persona.split("+")))
        out[r.persona].append({"user": user, "before": z0,
                               "before_score": summary_attribute_accuracy(z0, persona)["score"],
                               "after": z1, "after_score": summary_attribute_accuracy(z1, persona)["score"]})
    return {persona: rows for persona, rows in out.items() if rows}


def read_curves(metrics_path: Path) -> dict[str, list]:
    """{"step": [...], "rm_accuracy": [...][, "summarizer_reward": [...]]}: the per-update
    series of a run's metrics.jsonl (a key only where every line has it)."""
    lines = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    out = {"step": [m["step"] for m in lines]}
    out.update({key: [m[key] for m in lines] for key in CURVE_KEYS if lines and all(key in m for m in lines)})
    return out


def evaluate_population(run_dirs: dict[str, Path], sets: dict[tuple[str, str], list[PlusRecord]], device="cpu",
                        seed: int = 0, n_examples: int = 3) -> dict[str, dict]:
    """Evaluate the method runs trained on one population.

    run_dirs: {method: run directory}; sets: {(report population, split): records}, e.g.
    ("p4", "seen"), ("p4", "new"), ("ood", "new"). Returns {report population: {method:
    {split: `evaluate`, the Z_QUALITY_KEYS of the new users, "curves" (`read_curves`, under
    the population trained on)},
    "transfer": {z source: {split: `accuracy`}}, "examples": `before_after_examples` of
    the new users, "grounded": {split: `accuracy`}, "reads": {reader: `reading` of the new
    users}}}; transfer where the oracle and a z source ran, examples where PLUS ran,
    grounded where every run started from the same grounded reward model (`reward_from`):
    that model before any method trained it, reading the persona's own text (the oracle's
    z), which says how much of the reading a method starts with; reads for each of READERS
    that is there, where every new user has a persona."""
    from plus.reward_head import load_reward_model

    samples = SummarizerSamples(device, seed)
    out: dict[str, dict] = {population: {} for population, _ in sets}
    zs_of, kept, runs = {}, {}, []
    for method in [m for m in METHODS if m in run_dirs]:
        run = load_run(run_dirs[method], device)
        runs.append(run)
        zs_of[method] = run_summaries(run, sets, samples)
        for (population, split), records in sets.items():
            result = out[population].setdefault(method, {})
            result[split] = evaluate(run.reward_model, run.tokenizer, records, zs_of[method][population, split],
                                     run.settings, device)
            if split == "new":
                result.update({k: v for k, v in result[split].items() if k in Z_QUALITY_KEYS})
        if (run.path / checkpoint.METRICS).is_file() and run.config["population"] in out:
            out[run.config["population"]][method]["curves"] = read_curves(run.path / checkpoint.METRICS)
        if method in ("plus", "oracle"):
            kept[method] = run
    if "plus" in kept:  # the same users' z before RL: the initial summarizer's
        for (population, split), records in sets.items():
            if split == "new":
                before = samples(kept["plus"].initial_summarizer, (population, split), records, kept["plus"])
                out[population]["examples"] = before_after_examples(records, before, zs_of["plus"][population, split],
                                                                    n_examples)
    starts, readers = {run.config.get("reward_from") for run in runs}, {}
    if len(starts) == 1 and None not in starts:  # every method started from the grounded reward model
        grounded, tokenizer, _ = load_reward_model(next(iter(starts)), device)
        readers["grounded"] = grounded
        run = runs[0]
        for (population, split), records in [(key, r) for key, r in sets.items() if all(x.persona for x in r)]:
            out[population].setdefault("grounded", {})[split] = accuracy(
                grounded, tokenizer, records, fixed_summaries("oracle", records, tokenizer, None, run.cfg,
                                                              run.settings, seed), run.settings, device)
    readers.update({m: kept[m].reward_model for m in READERS if m in kept})
    for (population, split), records in sets.items():
        if split == "new" and all(r.persona for r in records):
            for name, model in readers.items():
                out[population].setdefault("reads", {})[name] = reading(model, runs[0].tokenizer, records,
                                                                        runs[0].settings, device)
    oracle = kept.get("oracle")
    for source in [s for s in Z_SOURCES if s in zs_of and oracle is not None]:
        for (population, split), records in sets.items():
            out[population].setdefault("transfer", {}).setdefault(source, {})[split] = accuracy(
                oracle.reward_model, oracle.tokenizer, records, zs_of[source][population, split], oracle.settings,
                device)
    return out


# ----------------------------------------------------------------------------------------
# report.md and the plot

def _ordered_populations(plus: dict) -> list[str]:
    return sorted(plus, key=lambda p: (POPULATION_ORDER.index(p) if p in POPULATION_ORDER else len(POPULATION_ORDER),
                                       p))


def _percent_cell(result: dict | None) -> str:
    if not result:
        return ""
    low, high = result["ci95"]
    return f"{100 * result['accuracy']:.1f} [{100 * low:.1f}, {100 * high:.1f}]"


def _quality_cell(result: dict | None) -> str:
    if not result or "z_tokens" not in result:
        return ""
    judged = (f"{result['summary_attribute_accuracy']:.2f} / {100 * result['summary_all_correct']:.0f}% / "
              if "summary_attribute_accuracy" in result else "")
    return judged + f"{result['z_tokens']:.1f}"


def _axis_cell(result: dict | None) -> str:
    return f"{100 * result['right']:.0f} / {100 * result['wrong']:.0f}" if result else ""


def _text_cell(z: str) -> str:
    return " ".join(z.split()).replace("|", "\\|") or "(empty)"


def curve_rows(n: int, rows: int = CURVE_ROWS) -> list[int]:
    """Indices of the updates a curve table shows: every k-th, k = ceil(n / rows), from the
    first, and the last."""
    k = max(1, math.ceil(n / rows))
    return sorted(set(range(0, n, k)) | ({n - 1} if n else set()))


def plus_markdown(plus: dict, plot: str | None = None) -> list[str]:
    """report.md's PLUS section from report.json's "plus" (`evaluate_population`'s
    results by population)."""
    populations = _ordered_populations(plus)
    columns = [(p, s) for p in populations for s in SPLITS if any(s in plus[p].get(m, {}) for m in METHODS)]
    header = "| method | " + " | ".join(f"{p} {s}" for p, s in columns) + " |"
    lines = ["## PLUS: reward models conditioned on a summary of each user", "",
             "Held-out accuracy (%) against each user's own choice (the world's: the noiseless gold one; a file's: "
             "the one it records), with 95% Wilson intervals. "
             "Seen users: the users a run trained on, on other posts than their training pairs; new users: held-out "
             "users on new posts; ood: new users whose persona combinations no run trained on, scored by the runs "
             "trained on p4.", "", header, "|---" * (len(columns) + 1) + "|"]
    for method in METHODS:
        if any(method in plus[p] for p in populations):
            lines.append(f"| {method} | " + " | ".join(_percent_cell(plus[p].get(method, {}).get(s))
                                                      for p, s in columns) + " |")
    if any("grounded" in plus[p] for p in populations):
        lines.append("| before training: the grounded reward model, oracle z | " + " | ".join(
            _percent_cell(plus[p].get("grounded", {}).get(s)) for p, s in columns) + " |")
    if any("ceiling" in plus[p] for p in populations):
        lines.append("| the information ceiling: the most any method reading the context can get on new users | " + " | ".join(
            _percent_cell(plus[p].get("ceiling", {}).get(s)) for p, s in columns) + " |")
    kinds = [(p, s, k) for p, s in columns for k in ("contested", "shared")
             if any(k in plus[p].get(m, {}).get(s, {}) for m in METHODS)]
    if kinds:
        lines += ["", "The same accuracies on the contested pairs (the population's personas disagree: a reward model "
                      "that ignores z is right for one persona's users only) and on the shared ones, apart.", "",
                  "| method | " + " | ".join(f"{p} {s} {k}" for p, s, k in kinds) + " |",
                  "|---" * (len(kinds) + 1) + "|"]
        for method in METHODS:
            if any(method in plus[p] for p, _, _ in kinds):
                lines.append(f"| {method} | " + " | ".join(
                    _percent_cell(plus[p].get(method, {}).get(s, {}).get(k)) for p, s, k in kinds) + " |")
    if any("transfer" in plus[p] for p in populations):
        lines += ["", "Transfer: the oracle's reward model (trained on the personas' true descriptions) reading other "
                      "summarizers' z; accuracy (%) as above.", "", header.replace("| method |", "| z read |"),
                  "|---" * (len(columns) + 1) + "|"]
        for source in Z_SOURCES:
            if any(source in plus[p].get("transfer", {}) for p in populations):
                lines.append(f"| {source} z | " + " | ".join(
                    _percent_cell(plus[p].get("transfer", {}).get(source, {}).get(s)) for p, s in columns) + " |")
    reads = [(p, name, plus[p]["reads"][name]) for p in populations for name in READERS
             if name in plus[p].get("reads", {})]
    if reads:
        lines += ["", "What the reward models read in z, new users: accuracy (%) reading the persona's own text, and "
                      "that text with one axis's sentence flipped to the other pole. A flip that leaves the accuracy "
                      "where it was is a sentence the reward model does not read, and PLUS's reward does not pay for.",
                  "", "| population | reward model | own text | " + " | ".join(f"{a} flipped" for a in AXES) + " |",
                  "|---" * (len(AXES) + 3) + "|"]
        lines += [f"| {p} | {name} | " + " | ".join(_percent_cell(r.get(k)) for k in ("own",) + tuple(AXES)) + " |"
                  for p, name, r in reads]
    lines += ["", "What z says about new users: the judge of z's mean score (+1 per persona attribute stated right, "
                  "-1 per attribute wrong or extra, over the persona's attributes) / the share of z with every "
                  "attribute right / mean length in tokens.", "",
              "| method | " + " | ".join(populations) + " |", "|---" * (len(populations) + 1) + "|"]
    for method in METHODS:
        if any("z_tokens" in plus[p].get(method, {}) for p in populations):
            lines.append(f"| {method} | " + " | ".join(_quality_cell(plus[p].get(method)) for p in populations) + " |")
    axis_rows = [(method, p, plus[p][method]["summary_axes"]) for method in METHODS for p in populations
                 if plus[p].get(method, {}).get("summary_axes")]
    if axis_rows:
        lines += ["", "Per axis, new users: of the z for users whose persona holds a pole of the axis, the share "
                      "that state it / state the other pole (%).", "",
                  "| method | population | " + " | ".join(AXES) + " |", "|---" * (len(AXES) + 2) + "|"]
        lines += [f"| {method} | {p} | " + " | ".join(_axis_cell(axes.get(axis)) for axis in AXES) + " |"
                  for method, p, axes in axis_rows]
    for population in populations:
        examples = plus[population].get("examples")
        if not examples:
            continue
        lines += ["", f"### z before and after RL: {population}, new users", "",
                  "The initial summarizer's z (before RL) and PLUS's (after), for the same users, with the judge's "
                  "score.", "", "| persona | user | before RL | score | after RL | score |", "|---" * 6 + "|"]
        for persona, rows in examples.items():
            lines += [f"| {persona} | {row['user']} | {_text_cell(row['before'])} | {row['before_score']:.2f} | "
                      f"{_text_cell(row['after'])} | {row['after_score']:.2f} |" for row in rows]
    for population in populations:
        curves = {m: plus[population][m]["curves"] for m in METHODS if "curves" in plus[population].get(m, {})}
        if not curves:
            continue
        series = [(m, "rm_accuracy") for m in curves if "rm_accuracy" in curves[m]]
        series += [(m, "summarizer_reward") for m in curves if "summarizer_reward" in curves[m]]
        steps = sorted({s for c in curves.values() for s in c["step"]})
        values = {(m, key): dict(zip(curves[m]["step"], curves[m][key])) for m, key in series}
        lines += ["", f"### Training curves: {population}", "",
                  "Per update: the reward model's accuracy on the update's training comparisons (before its step) "
                  "and PLUS's summarizer reward, clip(log sigma(r_chosen - r_rejected), -10, 10) averaged over the "
                  "update's users (a z without EOS is paid PPO's fixed penalty instead).", "",
                  "| update | " + " | ".join(f"{m} {key}" for m, key in series) + " |",
                  "|---" * (len(series) + 1) + "|"]
        for i in curve_rows(len(steps)):
            step = steps[i]
            lines.append(f"| {step} | " + " | ".join(f"{values[s][step]:.3f}" if step in values[s] else ""
                                                     for s in series) + " |")
    if plot:
        lines += ["", f"![PLUS training curves]({plot})"]
    return lines


def plot_curves(plus: dict, path: Path) -> bool:
    """The training curves of every population as a PNG (a row per population: the reward
    models' accuracy by method, PLUS's summarizer reward); False without matplotlib or
    without curves."""
    populations = [p for p in _ordered_populations(plus)
                   if any("curves" in plus[p].get(m, {}) for m in METHODS)]
    if not populations:
        return False
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(len(populations), 2, figsize=(9, 3 * len(populations)), squeeze=False)
    for (accuracy_axis, reward_axis), population in zip(axes, populations):
        for i, method in enumerate(METHODS):  # a method has one color in every panel
            curves = plus[population].get(method, {}).get("curves", {})
            if "rm_accuracy" in curves:
                accuracy_axis.plot(curves["step"], curves["rm_accuracy"], color=f"C{i}", label=method)
            if "summarizer_reward" in curves:
                reward_axis.plot(curves["step"], curves["summarizer_reward"], color=f"C{i}", label=method)
        accuracy_axis.set_title(f"{population}: reward model accuracy (training pairs)", fontsize=9)
        reward_axis.set_title(f"{population}: summarizer reward", fontsize=9)
        accuracy_axis.legend(fontsize=7)
        for axis in (accuracy_axis, reward_axis):
            axis.set_xlabel("update")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
