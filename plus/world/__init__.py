"""The built-in summarization world: Reddit-style posts, reference TL;DRs, a gold judge
and simulated labelers.

Stiennon et al. 2020 ("Learning to summarize from human feedback") trained on Reddit
TL;DR posts and paid human labelers to compare summaries. To run the whole recipe on a
laptop, and to *measure* it, this package replaces both with a procedural world:

1. **Posts from latent facts** (posts.py). Every post is written from a small set of
   facts: the narrator (age, gender), the other party (relation, age, gender), a
   duration or an amount of money, the central event, a complication, a feeling and the
   question asked, plus 1-4 distractor sentences. Each fact has several paraphrases,
   sentences move around, titles vary, and a register (casual or formal) picks between
   word variants such as "bf"/"boyfriend" or "don't"/"do not". The language is small and
   closed (about 700 words), so a 4k-token BPE covers it and a 2-5M-parameter model can
   learn it. Posts have 57-110 words (about 95 BPE tokens), references 9-35 words.

2. **Reference TL;DRs written like people write them** (references.py). The reference
   always states the central event (and who did it) but keeps each lesser fact only
   with some probability, the way human TL;DRs vary in quality. A model that imitates
   references inherits their gaps; a policy that always states every important fact
   concisely beats them. That is the headroom RLHF is meant to find.

3. **A gold judge** (judge.py). `gold_score` knows the latent facts and reads a summary
   by recognizing the surface forms the world can produce for each fact, so it works on
   a model's free-form output.

4. **Simulated labelers** (labelers.py). A labeler prefers summary a over b with
   probability sigmoid((gold(a) - gold(b)) / tau) (a Bradley-Terry labeler), with tau
   calibrated so that labelers agree with the noiseless gold choice about 75% of the
   time, as Stiennon's labelers agreed with researchers 73-77% of the time.

5. **Users who disagree** (personas.py, users.py), for PLUS (Nam et al. 2025). A persona
   re-weights the gold judge along three axes (length: brief | thorough; content:
   feelings | numbers; register: formal | casual) and has a canonical text z*; a user has
   a persona, a context of past comparisons labeled by the persona's labeler, and
   held-out comparisons; populations pets, p2, p4 and ood follow the paper's benchmarks.

Everything is deterministic: any post can be regenerated alone from its id
("s0-train-000123"), in any process (posts.py), and any user from its id
("s0-p2-train-000012", users.py).

The files, in reading order: tables.py and groups.py (what posts are written from),
templates.py (realizing a template), posts.py, references.py, reading.py (how the judge
reads a text), judge.py, perturbations.py (summaries of varying quality), labelers.py,
comparisons.py, corpus.py (pretraining texts), personas.py and users.py (users who
disagree), export.py and __main__.py (files, CLI).

Entry points: `make_post` / `post_from_id` / `World(seed).posts(split, n)` give posts;
`World.corpus` the pretraining texts; `gold_score` / `gold_breakdown` /
`gold_preference` the judge; `complete_summary` the reference with every fact kept;
`perturb` summaries of varying quality; `Labeler` and `make_comparisons` labeled
comparisons; `export` (or `python -m plus.world --export DIR`) the JSONL files;
`python -m plus.world --show 3` prints examples, `--calibrate` recomputes LABELER_TAU.
`Persona`, `POPULATIONS`, `make_user` / `user_from_id` give users; `context_messages` /
`context_text` render a user's context and `parse_summary` reads z back;
`summary_attribute_accuracy` judges a z, `flipped` / `opposite` change a persona's
poles; `self_descriptions` gives words for z, and `self_description_documents` the
corpus's texts that end with what a person wants, `pole_document` those of one-pole people
with one choice each; `persona_posterior` / `ceiling_hits` are the Bayes reader of a
context and the most any method can score from it.
"""

from plus.data import QUERY_FORMAT
from plus.world.comparisons import PAIR_KINDS, TRAIN_SUMMARIES_PER_POST, calibrate_labeler_tau, make_comparisons
from plus.world.export import export
from plus.world.groups import GROUPS, ROMANCE
from plus.world.judge import (BREVITY_COST, DEFAULT_WEIGHTS, EMPTY_SCORE, ERROR_PENALTY, FACT_WEIGHTS, LENGTH_PENALTY,
                              REPEAT_PENALTY, error_analysis, gold_breakdown, gold_preference, gold_score)
from plus.world.labelers import LABELER_TAU, Labeler
from plus.world.perturbations import PERTURBATIONS, perturb, swapped_references
from plus.world.personas import (ATTRIBUTES, AXES, Persona, describe, flipped, opposite, self_descriptions,
                                 stated_attributes, summary_attribute_accuracy)
from plus.world.posts import SPLITS, Post, World, count_post_variants, make_post, post_from_id
from plus.world.references import LESSER_FACTS, TRAIN_REFERENCES_PER_POST, complete_summary, other_references
from plus.world.tables import CLOSERS, DISTRACTORS, FEELING_FACTS, SyntheticWorldError
from plus.world.users import (HELD_OUT_PER_USER, POPULATIONS, SUMMARY_MARKER, USER_SPLITS, User, UserComparison,
                              context_messages, context_text, is_contested, make_user, make_users, parse_summary,
                              ceiling_hits, persona_posterior, pole_document, self_description_document,
                              self_description_documents, user_from_id)

__all__ = [
    "World", "Post", "make_post", "post_from_id", "count_post_variants", "SPLITS", "QUERY_FORMAT",
    "other_references", "complete_summary", "LESSER_FACTS", "TRAIN_REFERENCES_PER_POST",
    "gold_score", "gold_breakdown", "gold_preference", "error_analysis", "FACT_WEIGHTS", "DEFAULT_WEIGHTS",
    "ERROR_PENALTY", "BREVITY_COST", "LENGTH_PENALTY", "REPEAT_PENALTY", "EMPTY_SCORE",
    "perturb", "swapped_references", "PERTURBATIONS",
    "Labeler", "LABELER_TAU", "make_comparisons", "calibrate_labeler_tau", "PAIR_KINDS", "TRAIN_SUMMARIES_PER_POST",
    "export", "GROUPS", "ROMANCE", "DISTRACTORS", "CLOSERS", "FEELING_FACTS", "SyntheticWorldError",
    "AXES", "ATTRIBUTES", "Persona", "flipped", "opposite", "summary_attribute_accuracy", "stated_attributes",
    "describe", "self_descriptions", "POPULATIONS", "USER_SPLITS", "HELD_OUT_PER_USER", "User", "UserComparison",
    "make_user", "make_users", "user_from_id", "is_contested", "context_messages", "context_text", "parse_summary",
    "SUMMARY_MARKER", "self_description_document", "self_description_documents", "pole_document",
    "persona_posterior", "ceiling_hits",
]
