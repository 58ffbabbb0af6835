"""PLUS evaluation (plus/plus_evaluation.py, eval.py --stage plus): accuracy and its Wilson
interval with a reward model whose scores are known by hand, the judge of z on hand-made
z, the curves against the metrics lines written, and, on tiny runs of every method, each
number of report.json recomputed pair by pair, the ood population, transfer, examples,
report.md's tables, and sections of the report kept across evaluations; pets' contested and
shared pairs apart."""

import importlib.util
import json
import math
import shutil
from dataclasses import replace

import pytest
import torch

import eval as evaluate_cli
import train
from plus import checkpoint, plus_evaluation
from plus.data import PlusRecord, format_query, parse_plus_record
from plus.generate import sample_texts
from plus.plus_trainer import METHODS, PREFERENCE_CUE, PlusSettings, conditioned_pairs, context_prompt_ids
from plus.reward_head import RewardModel, load_reward_model
from plus.tokenizer import Tokenizer
from plus.world import POPULATIONS, World, gold_score, make_users
from plus.world.labelers import LABELER_TAU
from plus.world.export import user_records
from plus.world.personas import Persona, flipped, summary_attribute_accuracy
from plus.world.users import HELD_OUT_PER_USER, parse_summary
from test_plus_trainer import tiny_policy

BRIEF = "brief+feelings+formal"


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train(list(World(0).corpus(300)) + [PREFERENCE_CUE.format(z="I like short summaries.")],
                           vocab_size=1000)


def wilson(p, n, z=1.96):
    center = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return center - half, center + half


# ---- one reward model, one set of z -----------------------------------------------------------
class CountingRewardModel(RewardModel):
    """reward = how often "good" occurs in the response, negated when the prompt's z says
    "short": a reward model whose every score is known by hand."""

    def __init__(self, config, tokenizer):
        super().__init__(config)
        self.tokenizer = tokenizer

    def raw_rewards(self, input_ids, attention_mask, response_tokens=None, segment_ids=None, read_at=None,
                    return_logprobs=False):
        if segment_ids is None:  # one (prompt, response) a row
            sequences = [[t for t, m in zip(ids, mask) if m]
                         for ids, mask in zip(input_ids.tolist(), attention_mask.tolist())]
        else:  # packed rows (collate_shared_prompts): the prompt, then the response read at (row, column)
            sequences = []
            for row, column in read_at.tolist():
                ids, segments = input_ids[row].tolist(), segment_ids[row].tolist()
                sequences.append([t for t, k in zip(ids, segments) if k in (0, segments[column])])
        rewards = []
        for ids in sequences:
            prompt, response = self.tokenizer.decode(ids).split("TL;DR:", 1)
            rewards.append(response.split().count("good") * (-1.0 if "short" in prompt else 1.0))
        return torch.tensor(rewards)


def record(chosen, rejected, persona=BRIEF, user="u"):
    query = format_query("cats", "my cat", "She sleeps all day.")
    return PlusRecord(context="c", context_messages=[{"role": "user", "content": "c"}], reward_prompt=query,
                      chosen="a", rejected="b", train_prompt=query, train_chosen="a", train_rejected="b",
                      eval_prompt=query, eval_chosen=chosen, eval_rejected=rejected, user_id=user, persona=persona,
                      source=f"hand:{user}")


def test_accuracy_and_its_wilson_interval_by_hand(tok):
    model = CountingRewardModel(tiny_policy(tok).config, tok)
    records = [record("good good day", "good day"), record("good good day", "good day"),
               record("good day", "good good good"), record("good one", "good two"), record("good", "bad")]
    zs = [None, "I like short summaries.", "I like short summaries.", "I like long ones.", "Whatever."]
    # rewards (chosen, rejected): (2, 1) right; (-2, -1) wrong; (-1, -3) right; (1, 1) tie; (1, 0) right
    hits = [1, 0, 1, 0.5, 1]
    out = plus_evaluation.accuracy(model, tok, records, zs, PlusSettings(prompt_max_len=200, response_max_len=16),
                                   "cpu")
    p = sum(hits) / len(hits)
    assert out["accuracy"] == pytest.approx(p) and out["n_pairs"] == 5
    assert out["ci95"] == pytest.approx(list(wilson(p, 5)))


def test_pets_accuracy_splits_contested_from_shared_pairs_by_hand(tok):
    model = CountingRewardModel(tiny_policy(tok).config, tok)
    pairs = [("good good day", "good day"), ("good day", "good good good"), ("good one", "good two"),
             ("good", "bad"), ("good good", "bad")]
    contested = [True, True, False, False, False]
    records = [replace(record(c, r), eval_contested=k) for (c, r), k in zip(pairs, contested)]
    # rewards (chosen, rejected) without z: (2, 1) right; (1, 3) wrong; (1, 1) tie; (1, 0) right; (2, 0) right
    settings = PlusSettings(prompt_max_len=200, response_max_len=16)
    out = plus_evaluation.accuracy(model, tok, records, [None] * 5, settings, "cpu")
    assert out["accuracy"] == pytest.approx(3.5 / 5) and out["n_pairs"] == 5
    assert out["contested"]["accuracy"] == pytest.approx(1 / 2) and out["contested"]["n_pairs"] == 2
    assert out["shared"]["accuracy"] == pytest.approx(2.5 / 3) and out["shared"]["n_pairs"] == 3
    assert out["shared"]["ci95"] == pytest.approx(list(wilson(2.5 / 3, 3)))
    # one kind only (p2, p4: contested only), or records that do not say: no split
    for kinds in ([True] * 5, [None] * 5):
        one_kind = [replace(r, eval_contested=k) for r, k in zip(records, kinds)]
        assert "contested" not in plus_evaluation.accuracy(model, tok, one_kind, [None] * 5, settings, "cpu")
    md = "\n".join(plus_evaluation.plus_markdown({"pets": {"bt": {"new": out}}}))
    assert "| method | pets new contested | pets new shared |" in md
    low, high = wilson(0.5, 2)
    assert f"| bt | 50.0 [{100 * low:.1f}, {100 * high:.1f}] | 83.3 [" in md


def test_the_world_marks_each_eval_pair_contested_or_shared():
    records, half = users_records("pets", "test", 8), HELD_OUT_PER_USER // 2
    held = [c for u in make_users("pets", "test", 8) for c in u.held_out[half:]]  # the eval pairs, in order
    assert [r.eval_contested for r in records] == [c.contested for c in held]
    assert {r.eval_contested for r in records} == {True, False}
    assert {r.eval_contested for r in users_records("p2", "test", 4)} == {True}


def test_z_quality_by_hand(tok):
    persona = Persona(tuple(BRIEF.split("+")))
    zs = [persona.text, "", "I like complete summaries that keep every fact.", "I like short summaries.", None,
          "Keep it short."]
    records = [record("x", "y") for _ in zs[:-1]] + [record("x", "y", persona="")]
    out = plus_evaluation.z_quality(tok, records, zs)
    # scores: every attribute right 1; nothing said 0; the length axis wrong -1/3; one of three right 1/3;
    # None is no z; the last names no persona (its length counts, its score does not).
    assert out["summary_attribute_accuracy"] == pytest.approx((1 + 0 - 1 / 3 + 1 / 3) / 4)
    assert out["summary_all_correct"] == pytest.approx(1 / 4)
    # per axis over the four judged z: length right in the full text and "short", wrong in
    # "complete"; content and register right in the full text only
    assert out["summary_axes"] == {"length": {"right": 2 / 4, "wrong": 1 / 4, "n_z": 4},
                                   "content": {"right": 1 / 4, "wrong": 0.0, "n_z": 4},
                                   "register": {"right": 1 / 4, "wrong": 0.0, "n_z": 4}}
    texts = [z for z in zs if z is not None]
    assert out["z_tokens"] == pytest.approx(sum(len(tok.encode(z)) for z in texts) / len(texts))
    assert plus_evaluation.z_quality(tok, records, [None] * len(records)) == {}


def test_before_after_examples_take_the_first_users_of_each_persona():
    other = "thorough+numbers+formal"
    records = [record("x", "y", BRIEF, "u0"), record("x", "y", BRIEF, "u0"), record("x", "y", other, "u1"),
               record("x", "y", BRIEF, "u2"), record("x", "y", BRIEF, "u3")]
    before = ["", "b1", "I like short summaries.", "b3", "b4"]
    after = [Persona(tuple(BRIEF.split("+"))).text, "a1", "Give me the whole story.", "a3", "a4"]
    out = plus_evaluation.before_after_examples(records, before, after, n=2)
    assert [row["user"] for row in out[BRIEF]] == ["u0", "u2"] and [row["user"] for row in out[other]] == ["u1"]
    assert out[BRIEF][0] == {"user": "u0", "before": "", "before_score": 0.0,
                             "after": after[0], "after_score": 1.0}
    # thorough+numbers+formal: "short" is the wrong length (-1/3); "whole story" the right one (1/3)
    assert out[other][0]["before_score"] == pytest.approx(-1 / 3)
    assert out[other][0]["after_score"] == pytest.approx(1 / 3)


def test_curves_are_the_metrics_lines_and_the_table_shows_every_kth_update(tmp_path):
    lines = [{"step": s, "rm_accuracy": s / 40, "summarizer_reward": -s / 10, "rm_loss": 0.6} for s in range(1, 24)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    curves = plus_evaluation.read_curves(tmp_path / "metrics.jsonl")
    assert curves == {"step": list(range(1, 24)), "rm_accuracy": [s / 40 for s in range(1, 24)],
                      "summarizer_reward": [-s / 10 for s in range(1, 24)]}
    (tmp_path / "bt.jsonl").write_text("".join(json.dumps({"step": s, "rm_accuracy": 0.5}) + "\n" for s in (1, 2)))
    assert plus_evaluation.read_curves(tmp_path / "bt.jsonl") == {"step": [1, 2], "rm_accuracy": [0.5, 0.5]}
    # 23 updates, about 10 rows: every 3rd (ceil(23 / 10)) from the first, and the last.
    assert plus_evaluation.curve_rows(23) == [0, 3, 6, 9, 12, 15, 18, 21, 22]
    assert plus_evaluation.curve_rows(3) == [0, 1, 2] and plus_evaluation.curve_rows(0) == []
    plus = {"p2": {"plus": {"curves": curves}, "bt": {"curves": {"step": [1, 2], "rm_accuracy": [0.5, 0.5]}}}}
    md = plus_evaluation.plus_markdown(plus)
    start = md.index("| update | bt rm_accuracy | plus rm_accuracy | plus summarizer_reward |")
    rows = [line for line in md[start + 2:] if line.startswith("| ")]
    assert rows[0] == "| 1 | 0.500 | 0.025 | -0.100 |" and rows[1] == "| 4 |  | 0.100 | -0.400 |"  # bt ran 2
    assert [int(r.split(" | ")[0][2:]) for r in rows] == [1, 4, 7, 10, 13, 16, 19, 22, 23]
    has_matplotlib = importlib.util.find_spec("matplotlib") is not None
    assert plus_evaluation.plot_curves(plus, tmp_path / "curves.png") == has_matplotlib
    assert (tmp_path / "curves.png").exists() == has_matplotlib
    assert not plus_evaluation.plot_curves({"p2": {"plus": {}}}, tmp_path / "none.png")


# ---- eval.py --stage plus on tiny runs ---------------------------------------------------------
N_USERS, N_NEW = 2, 2
TRAIN_FLAGS = ["--n_users", str(N_USERS), "--max_steps", "2", "--rollout_batch_size", "2", "--train_batch_size", "2",
               "--micro_train_batch_size", "2", "--ppo_epochs", "1", "--generate_max_len", "8", "--prompt_max_len",
               "240", "--warm_start_steps", "2", "--grounding_steps", "2", "--no_progress"]


@pytest.fixture(scope="module")
def runs(tok, tmp_path_factory):
    """<out>/sft (a tiny policy) and every method trained on p4, evaluated."""
    out = tmp_path_factory.mktemp("plus_eval")
    policy = tiny_policy(tok)
    checkpoint.save_checkpoint(out / "sft", policy, {"stage": "sft", "model": policy.config.to_dict()}, tokenizer=tok)
    assert train.main(["--stage", "plus", "--out_dir", str(out), "--population", "p4", "--method", "all"]
                      + TRAIN_FLAGS) == 0
    assert evaluate_cli.main(["--out_dir", str(out), "--stage", "plus", "--n_new_users", str(N_NEW)]) == 0
    return out


def users_records(population, split, n):
    return [parse_plus_record(r, f"synthetic:{u.id}") for u in make_users(population, split, n)
            for r in user_records(u)]


def z_of(summarizer_dir, tok, records):
    """What a summarizer writes for each record, sampled as eval.py does (seed 0, PPO's
    temperature, one batch), written out here."""
    summarizer = checkpoint.load_gpt(summarizer_dir)[0]
    prompts = [context_prompt_ids(tok, r.context, summarizer.config.block_size - 8) for r in records]
    texts, _, _ = sample_texts(summarizer, tok, prompts, 8, batch_size=64, temperature=0.7, seed=0)
    return [parse_summary(t) for t in texts]


def accuracy_pair_by_pair(rm_dir, records, zs):
    """Each evaluation pair scored as two unpadded sequences, one at a time."""
    model, tok, _ = load_reward_model(rm_dir)
    hits = []
    # responses: what the prompt cap leaves of block_size (256 - 240), the TL;DR cap 48 at most
    for pair in conditioned_pairs(tok, records, zs, "eval", 240, 256 - 240):
        with torch.no_grad():
            r = [float(model.raw_rewards(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long)))
                 for ids in (pair.prompt + pair.chosen, pair.prompt + pair.rejected)]
        hits.append(1.0 if r[0] > r[1] else 0.5 if r[0] == r[1] else 0.0)
    return sum(hits) / len(hits), len(hits)


def test_report_json_has_every_key_each_recomputed_pair_by_pair(runs, tok):
    report = json.loads((runs / "eval" / "report.json").read_text())["plus"]
    assert set(report) == {"p4", "ood"}  # ood: new persona combinations, read by the models trained on p4
    assert set(report["p4"]) == set(report["ood"]) == set(METHODS) | {"transfer", "examples", "grounded", "reads",
                                                                      "ceiling"}
    sets = {("p4", "seen"): users_records("p4", "train", N_USERS), ("p4", "new"): users_records("p4", "test", N_NEW),
            ("ood", "new"): users_records("ood", "test", N_NEW)}
    for (population, split), records in sets.items():
        oracle_z = [Persona(tuple(r.persona.split("+"))).text for r in records]
        plus_z = z_of(runs / "plus" / "p4" / "plus" / "summarizer", tok, records)
        for method, zs in (("oracle", oracle_z), ("plus", plus_z), ("bt", [None] * len(records))):
            result = report[population][method][split]
            accuracy, n = accuracy_pair_by_pair(runs / "plus" / "p4" / method / "reward_model", records, zs)
            assert result["accuracy"] == pytest.approx(accuracy) and result["n_pairs"] == n == len(records)
            assert result["ci95"] == pytest.approx(list(wilson(accuracy, n)))
            if method != "bt":
                scores = [summary_attribute_accuracy(z, Persona(tuple(r.persona.split("+"))))["score"]
                          for r, z in zip(records, zs)]
                assert result["summary_attribute_accuracy"] == pytest.approx(sum(scores) / len(scores))
        # Transfer: the oracle's reward model reading PLUS's z.
        accuracy, _ = accuracy_pair_by_pair(runs / "plus" / "p4" / "oracle" / "reward_model", records, plus_z)
        assert report[population]["transfer"]["plus"][split]["accuracy"] == pytest.approx(accuracy)
        # The start: the grounded reward model, untrained by any method, reading the persona's text.
        accuracy, n = accuracy_pair_by_pair(runs / "plus" / "reward_init", records, oracle_z)
        assert report[population]["grounded"][split]["accuracy"] == pytest.approx(accuracy)
        assert report[population]["grounded"][split]["n_pairs"] == n
        # The information ceiling: the posterior over the population's personas from each
        # user's context (a product of the labelers' probabilities), its vote on each pair.
        users = make_users(population, "train" if split == "seen" else "test", N_USERS if split == "seen" else N_NEW)
        personas, hits = POPULATIONS[population], []
        for user in users:
            weights = []
            for p in personas:
                product = 1.0
                for c in user.context:
                    a, b = (gold_score(c.post, text, p.weights) for text in c.summaries)
                    product *= 1 / (1 + math.exp((-1 if c.choice == 0 else 1) * (a - b) / LABELER_TAU))
                weights.append(product)
            for c in user.held_out[HELD_OUT_PER_USER // 2:]:
                votes = sum(w for w, p in zip(weights, personas)
                            if gold_score(c.post, c.summaries[0], p.weights) > gold_score(c.post, c.summaries[1],
                                                                                        p.weights))
                share = votes / sum(weights)  # a tie (personas alike on the context) counts half
                hits.append(0.5 if abs(share - 0.5) < 1e-9 else float((share > 0.5) == (c.gold_choice == 0)))
        ceiling = report[population]["ceiling"][split]
        assert ceiling["accuracy"] == pytest.approx(sum(hits) / len(hits)) and ceiling["n_pairs"] == len(records)
        if split == "new":  # what the reward models read: the persona's text with one axis flipped
            assert set(report[population]["reads"]) == {"grounded", "plus", "oracle"}
            for reader, rm_dir in (("grounded", runs / "plus" / "reward_init"),
                                   ("plus", runs / "plus" / "p4" / "plus" / "reward_model")):
                reads = report[population]["reads"][reader]
                assert set(reads) == {"own", "length", "content", "register"}
                assert reads["own"]["accuracy"] == pytest.approx(accuracy_pair_by_pair(rm_dir, records, oracle_z)[0])
                for axis in ("length", "content", "register"):
                    zs = [flipped(Persona(tuple(r.persona.split("+"))), axis).text for r in records]
                    assert reads[axis]["accuracy"] == pytest.approx(accuracy_pair_by_pair(rm_dir, records, zs)[0])
    assert "seen" not in report["ood"]["plus"] and "curves" not in report["ood"]["plus"]
    for population in ("p4", "ood"):
        for method in report[population]:
            if method in METHODS and method != "bt":
                assert report[population][method]["summary_attribute_accuracy"] == \
                    report[population][method]["new"]["summary_attribute_accuracy"]
    assert report["ood"]["oracle"]["summary_attribute_accuracy"] == 1.0
    assert report["ood"]["oracle"]["summary_all_correct"] == 1.0
    assert "summary_attribute_accuracy" not in report["p4"]["bt"] and "z_tokens" not in report["p4"]["bt"]
    assert set(report["p4"]["transfer"]) == set(report["ood"]["transfer"]) == {"plus", "untrained"}


def test_untrained_z_examples_and_curves_of_the_runs(runs, tok):
    report = json.loads((runs / "eval" / "report.json").read_text())["plus"]
    new = users_records("p4", "test", N_NEW)
    before = z_of(runs / "plus" / "summarizer_init", tok, new)  # the initial summarizer: untrained's z
    after = z_of(runs / "plus" / "p4" / "plus" / "summarizer", tok, new)
    accuracy, _ = accuracy_pair_by_pair(runs / "plus" / "p4" / "untrained" / "reward_model", new, before)
    assert report["p4"]["untrained"]["new"]["accuracy"] == pytest.approx(accuracy)
    accuracy, _ = accuracy_pair_by_pair(runs / "plus" / "p4" / "oracle" / "reward_model", new, before)
    assert report["p4"]["transfer"]["untrained"]["new"]["accuracy"] == pytest.approx(accuracy)
    # The first record of each new user (two records a user), one user per persona here.
    first = {}
    for i, r in enumerate(new):
        first.setdefault(r.user_id, i)
    examples = report["p4"]["examples"]
    assert sum(len(rows) for rows in examples.values()) == N_NEW
    for persona, rows in examples.items():
        for row in rows:
            i = first[row["user"]]
            assert new[i].persona == persona and (row["before"], row["after"]) == (before[i], after[i])
            assert row["after_score"] == summary_attribute_accuracy(after[i], Persona(tuple(persona.split("+"))))[
                "score"]
    for method in METHODS:
        lines = [json.loads(m) for m in (runs / "plus" / "p4" / method / "metrics.jsonl").read_text().splitlines()]
        curves = report["p4"][method]["curves"]
        assert curves["step"] == [m["step"] for m in lines] == [1, 2]
        assert curves["rm_accuracy"] == [m["rm_accuracy"] for m in lines]
        assert ("summarizer_reward" in curves) == (method == "plus")
    plus_lines = (runs / "plus" / "p4" / "plus" / "metrics.jsonl").read_text().splitlines()
    assert report["p4"]["plus"]["curves"]["summarizer_reward"] == [json.loads(m)["summarizer_reward"]
                                                                   for m in plus_lines]


def cell(result):
    low, high = result["ci95"]
    return f"{100 * result['accuracy']:.1f} [{100 * low:.1f}, {100 * high:.1f}]"


def test_report_md_shows_the_tables_of_report_json(runs):
    report = json.loads((runs / "eval" / "report.json").read_text())["plus"]
    md = (runs / "eval" / "report.md").read_text()
    assert "| method | p4 seen | p4 new | ood new |" in md
    for method in METHODS:
        p4, ood = report["p4"][method], report["ood"][method]
        assert f"| {method} | {cell(p4['seen'])} | {cell(p4['new'])} | {cell(ood['new'])} |" in md
    start, ood = report["p4"]["grounded"], report["ood"]["grounded"]
    assert (f"| before training: the grounded reward model, oracle z | {cell(start['seen'])} | {cell(start['new'])} | "
            f"{cell(ood['new'])} |") in md
    ceiling, ood = report["p4"]["ceiling"], report["ood"]["ceiling"]
    assert (f"| the information ceiling: the most any method reading the context can get on new users | {cell(ceiling['seen'])} | "
            f"{cell(ceiling['new'])} | {cell(ood['new'])} |") in md
    for population in ("p4", "ood"):
        for reader in ("grounded", "plus", "oracle"):
            reads = report[population]["reads"][reader]
            assert f"| {population} | {reader} | " + " | ".join(
                cell(reads[k]) for k in ("own", "length", "content", "register")) + " |" in md
    transfer, ood = report["p4"]["transfer"]["plus"], report["ood"]["transfer"]["plus"]
    assert f"| plus z | {cell(transfer['seen'])} | {cell(transfer['new'])} | {cell(ood['new'])} |" in md
    oracle, ood = report["p4"]["oracle"], report["ood"]["oracle"]
    assert f"| oracle | 1.00 / 100% / {oracle['z_tokens']:.1f} | 1.00 / 100% / {ood['z_tokens']:.1f} |" in md
    for population in ("p4", "ood"):  # the oracle states every pole right, on the axes each persona holds
        assert f"| oracle | {population} | 100 / 0 | 100 / 0 | 100 / 0 |" in md
        axes = report[population]["plus"]["summary_axes"]
        assert f"| plus | {population} | " + " | ".join(
            f"{100 * axes[a]['right']:.0f} / {100 * axes[a]['wrong']:.0f}" for a in ("length", "content", "register")) \
            + " |" in md
    for population in ("p4", "ood"):
        assert f"### z before and after RL: {population}, new users" in md
        for persona, rows in report[population]["examples"].items():
            row = rows[0]
            assert f"| {persona} | {row['user']} | " in md and f" | {row['after_score']:.2f} |" in md
    assert "### Training curves: p4" in md and "### Training curves: ood" not in md


def test_report_md_columns_follow_the_populations(tmp_path):
    result = {"accuracy": 0.75, "ci95": [0.5, 0.9], "n_pairs": 4}
    plus = {"ood": {"plus": {"new": result}}, "p2": {"plus": {"seen": result, "new": result}},
            "pets": {"bt": {"new": result}}}
    md = plus_evaluation.plus_markdown(plus)
    assert "| method | pets new | p2 seen | p2 new | ood new |" in md
    assert "| bt | 75.0 [50.0, 90.0] |  |  |  |" in md
    assert "| plus |  | 75.0 [50.0, 90.0] | 75.0 [50.0, 90.0] | 75.0 [50.0, 90.0] |" in md


def test_report_sections_accumulate_across_evaluations(runs):
    report_path, md_path = runs / "eval" / "report.json", runs / "eval" / "report.md"
    plus = json.loads(report_path.read_text())["plus"]
    policy = ["--out_dir", str(runs), "--stage", "sft", "--n_eval", "2", "--batch_size", "2",
              "--generate_max_len", "4"]
    assert evaluate_cli.main(policy) == 0  # a policy evaluation keeps the PLUS section
    report = json.loads(report_path.read_text())
    assert report["plus"] == plus and set(report["policy"]) == {"sft"} and report["n_eval"] == 2
    md = md_path.read_text()
    assert "## Policies" in md and "## PLUS" in md
    # A reward-model section, as an `eval.py --stage rm` would have left it.
    report["reward_model"] = {"dataset": "valid", "datasets": {"valid": {"n_pairs": 2, "gold_agreement": 0.5}},
                              "train_reference_mean": None, "calibration": []}
    report_path.write_text(json.dumps(report))
    assert evaluate_cli.main(["--out_dir", str(runs), "--stage", "plus", "--n_new_users", str(N_NEW)]) == 0
    again = json.loads(report_path.read_text())  # and a PLUS evaluation keeps the policy's and the reward model's
    assert again["policy"] == report["policy"] and again["reward_model"] == report["reward_model"]
    assert again["plus"] == plus and again["n_eval"] == 2
    md = md_path.read_text()
    assert "## Policies" in md and "## Reward model" in md and "| valid | 2 | 0.500 |" in md and "## PLUS" in md


def test_n_seen_users_scores_the_first_seen_users_only(runs, tmp_path):
    """--n_seen_users 1: the seen split is the first trained user's two held-out pairs."""
    shutil.copytree(runs / "plus", tmp_path / "plus")
    assert evaluate_cli.main(["--out_dir", str(tmp_path), "--stage", "plus", "--n_new_users", "1",
                              "--n_seen_users", "1"]) == 0
    report = json.loads((tmp_path / "eval" / "report.json").read_text())["plus"]
    first = users_records("p4", "train", 1)
    accuracy, n = accuracy_pair_by_pair(runs / "plus" / "p4" / "bt" / "reward_model", first, [None] * len(first))
    assert report["p4"]["bt"]["seen"]["n_pairs"] == n == 2
    assert report["p4"]["bt"]["seen"]["accuracy"] == pytest.approx(accuracy)


def test_a_file_run_is_scored_on_its_users_and_on_the_eval_dataset_users(tok, tmp_path, capsys):
    """A run trained on a PLUS file: seen, the eval pairs of the file's first --n_seen_users
    users; new, those of --eval_dataset's users; each against the choice the file records,
    recomputed pair by pair. No information ceiling: a file's personas have no gold judge."""
    from plus.data import load_plus_records
    from plus.world.export import export_plus

    export_plus(tmp_path / "files", "p2", n_train=3, n_new=2)
    train_file, new_file = (str(tmp_path / "files" / f"p2_{s}.jsonl") for s in ("train", "test"))
    policy = tiny_policy(tok)
    checkpoint.save_checkpoint(tmp_path / "sft", policy, {"stage": "sft", "model": policy.config.to_dict()},
                               tokenizer=tok)
    for method in ("bt", "oracle"):
        assert train.main(["--stage", "plus", "--out_dir", str(tmp_path), "--dataset", train_file, "--method", method,
                           "--max_steps", "2", "--rollout_batch_size", "2", "--train_batch_size", "2",
                           "--micro_train_batch_size", "2", "--prompt_max_len", "240", "--no_progress"]) == 0
    assert evaluate_cli.main(["--out_dir", str(tmp_path), "--stage", "plus", "--eval_dataset", new_file,
                              "--n_seen_users", "2"]) == 0
    report = json.loads((tmp_path / "eval" / "report.json").read_text())["plus"]
    assert set(report) == {"p2_train"} and "ceiling" not in report["p2_train"]
    records = load_plus_records(train_file)[0]
    first_two = list(dict.fromkeys(r.user_id for r in records))[:2]
    sets = {"seen": [r for r in records if r.user_id in first_two], "new": load_plus_records(new_file)[0]}
    assert len(sets["seen"]) == 4 and len(sets["new"]) == 4  # two records a user
    for split, these in sets.items():
        for method, zs in (("bt", [None] * len(these)),
                           ("oracle", [Persona(tuple(r.persona.split("+"))).text for r in these])):
            accuracy, n = accuracy_pair_by_pair(tmp_path / "plus" / "p2_train" / method / "reward_model", these, zs)
            result = report["p2_train"][method][split]
            assert result["accuracy"] == pytest.approx(accuracy) and result["n_pairs"] == n == len(these)
    assert "| oracle | " in (tmp_path / "eval" / "report.md").read_text()
    # --eval_dataset where no run was trained on a file: an error, and no report written
    (tmp_path / "world" / "plus").mkdir(parents=True)
    assert evaluate_cli.main(["--out_dir", str(tmp_path / "world"), "--stage", "plus", "--eval_dataset",
                              new_file]) == 1
    assert f"--eval_dataset: no run under {tmp_path / 'world' / 'plus'} was trained on a file" in \
        capsys.readouterr().err
    assert not (tmp_path / "world" / "eval").exists()


def test_a_grounded_file_run_without_personas_is_scored(tok, tmp_path):
    """A file without personas, trained from the grounded reward model: scored pair by pair;
    the grounded model's own row (it reads the persona's text) is left out, not an error."""
    from plus.data import load_plus_records
    from plus.world.export import export_plus

    export_plus(tmp_path / "files", "p2", n_train=2, n_new=0)
    lines = (tmp_path / "files" / "p2_train.jsonl").read_text().splitlines()
    stripped = tmp_path / "users.jsonl"
    stripped.write_text("".join(json.dumps({k: v for k, v in json.loads(line).items() if k != "persona"}) + "\n"
                                for line in lines))
    policy = tiny_policy(tok)
    checkpoint.save_checkpoint(tmp_path / "sft", policy, {"stage": "sft", "model": policy.config.to_dict()},
                               tokenizer=tok)
    assert train.main(["--stage", "plus", "--out_dir", str(tmp_path), "--dataset", str(stripped), "--method", "bt",
                       "--grounding_steps", "1", "--max_steps", "1", "--rollout_batch_size", "2",
                       "--train_batch_size", "2", "--micro_train_batch_size", "2", "--prompt_max_len", "240",
                       "--no_progress"]) == 0
    assert evaluate_cli.main(["--out_dir", str(tmp_path), "--stage", "plus"]) == 0
    report = json.loads((tmp_path / "eval" / "report.json").read_text())["plus"]["users"]
    assert "grounded" not in report and "reads" not in report
    records = load_plus_records(stripped)[0]
    accuracy, n = accuracy_pair_by_pair(tmp_path / "plus" / "users" / "bt" / "reward_model", records,
                                        [None] * len(records))
    assert report["bt"]["seen"]["accuracy"] == pytest.approx(accuracy) and report["bt"]["seen"]["n_pairs"] == n == 4


def test_plus_eval_flags_that_cannot_work(capsys, tmp_path):
    for argv, message in ((["--n_new_users", "0"], "--n_new_users must be >= 1"),
                          (["--n_seen_users", "-1"], "--n_seen_users must be >= 1"),
                          (["--eval_dataset", "a.jsonl", "b.jsonl"], "--stage plus takes one --eval_dataset")):
        with pytest.raises(SystemExit):
            evaluate_cli.main(["--out_dir", str(tmp_path), "--stage", "plus"] + argv)
        assert message in capsys.readouterr().err
