"""A pinned sample of the built-in world, written here as constants: post ids and texts,
reference TL;DRs, gold scores and breakdowns, perturbations, comparisons with their labels,
other writers' references, swapped references, corpus documents and exported files.

Every world id, text, score and label is part of the world's definition: the demo's
measurements, the exported files and any data set built from the world depend on them.
A change to how the world is generated or judged changes some of these constants; a
change to how the code is organized must change none. Long texts are pinned by their
sha256; gold scores are compared exactly (the judge's arithmetic is deterministic).
"""

import hashlib
import json
import random

from plus import world

# (split, seed, index): every split, a few seeds (negative included), small and large indices.
POST_KEYS = [(split, seed, index) for split, seed in (("train", 0), ("valid", 0), ("test", 0), ("corpus", 0),
                                                        ("train", 1), ("test", 7), ("corpus", -1), ("valid", 123))
             for index in (0, 1, 17, 123456)][:30]
PERSONA = {"brevity": 10.0, "formality": 1.0, "details": 2.0, "feelings": 0.5}


def digest(obj) -> str:
    """sha256 of the JSON text of obj (floats written in full by repr)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def post_digests() -> dict[str, str]:
    out = {}
    for split, seed, index in POST_KEYS:
        p = world.make_post(index, split, seed)
        assert world.post_from_id(p.id) == p
        out[p.id] = digest([p.id, p.subreddit, p.title, p.post, p.summary, p.query(), p.facts])
    return out


def gold_scores() -> dict[str, list[float]]:
    """Per post: the reference, the complete summary, the reference for a persona, then
    one perturbation of each kind (in PERTURBATIONS order)."""
    out = {}
    for split, seed, index in POST_KEYS[::3]:
        p = world.make_post(index, split, seed)
        rng = random.Random(p.id)
        texts = [p.summary, world.complete_summary(p)] + [world.perturb(p, k, rng) for k in world.PERTURBATIONS]
        scores = [world.gold_score(p, t) for t in texts]
        out[p.id] = scores[:2] + [world.gold_score(p, p.summary, PERSONA)] + scores[2:]
    return out


def perturbation_digests() -> dict[str, str]:
    """Per post: the perturbed texts and the gold breakdowns of every text of gold_scores."""
    out = {}
    for split, seed, index in POST_KEYS[::3]:
        p = world.make_post(index, split, seed)
        rng = random.Random(p.id)
        texts = [p.summary, world.complete_summary(p)] + [world.perturb(p, k, rng) for k in world.PERTURBATIONS]
        breakdowns = [world.gold_breakdown(p, t) for t in texts] + [world.gold_breakdown(p, p.summary, PERSONA)]
        out[p.id] = digest([texts, breakdowns])
    return out


def reference_digests() -> dict[str, str]:
    """Per post: three other writers' references and the swapped references."""
    out = {}
    for split, seed, index in POST_KEYS[1::4]:
        p = world.make_post(index, split, seed)
        out[p.id] = digest([world.other_references(p, 3), world.swapped_references(p, random.Random(p.id))])
    return out


def train_comparisons() -> list[dict]:
    return world.make_comparisons(world.World(0), "train", 200, summaries_per_post=world.TRAIN_SUMMARIES_PER_POST)


def other_comparisons() -> dict[str, str]:
    """One comparison per post (held-out style), and comparisons of policy samples."""
    valid = world.make_comparisons(world.World(0), "valid", 60, seed=3)
    posts = world.World(2).posts("test", 5)
    samples = {p.id: [world.perturb(p, k, random.Random(k)) for k in ("paraphrase", "drop_fact", "filler")]
               for p in posts}
    policy = world.make_comparisons(world.World(2), "test", 20, seed=1, policy_samples=samples)
    return {"valid": digest(valid), "policy": digest(policy)}


def corpus_digests() -> list[str]:
    return ([digest(text) for text in world.World(0).corpus(8)]
            + [digest(text) for text in world.World(3).corpus(4, start=1000)])


def judge_and_labeler_digests() -> dict[str, str]:
    posts = world.World(0).posts("test", 40)
    rng = random.Random(11)
    summaries = [world.perturb(p, rng.choice(world.PERTURBATIONS), rng) for p in posts]
    labeler = world.Labeler(seed=5, weights=PERSONA)
    choices = [labeler.choose(p, p.summary, s) for p, s in zip(posts, summaries)]
    return {
        "error_analysis": digest([world.error_analysis(posts, [p.summary for p in posts]),
                                  world.error_analysis(posts, summaries, PERSONA)]),
        "gold_preference": digest([world.gold_preference(p, p.summary, s) for p, s in zip(posts, summaries)]),
        "labeler": digest(choices),
    }


def export_digests(tmp_path) -> dict[str, str]:
    written = world.export(tmp_path, seed=2, n_train=5, n_valid=3, n_test=2, n_comparisons=12)
    return {name: hashlib.sha256((tmp_path / name).read_bytes()).hexdigest() for name in written}


# ---- the tests ---------------------------------------------------------------------------
def test_posts_are_pinned():
    assert post_digests() == POST_DIGESTS


def test_gold_scores_are_pinned():
    assert gold_scores() == GOLD_SCORES
    assert perturbation_digests() == PERTURBATION_DIGESTS


def test_other_and_swapped_references_are_pinned():
    assert reference_digests() == REFERENCE_DIGESTS


def test_comparisons_and_labels_are_pinned():
    records = train_comparisons()
    assert "".join(str(r["choice"]) for r in records) == TRAIN_CHOICES
    assert "".join(str(r["gold_choice"]) for r in records) == TRAIN_GOLD_CHOICES
    assert sorted({r["info"]["id"] for r in records}) == TRAIN_COMPARISON_POSTS
    assert digest(records) == TRAIN_COMPARISONS_DIGEST
    assert other_comparisons() == OTHER_COMPARISON_DIGESTS


def test_corpus_is_pinned():
    assert corpus_digests() == CORPUS_DIGESTS


def test_judge_summaries_and_labelers_are_pinned():
    assert judge_and_labeler_digests() == JUDGE_AND_LABELER_DIGESTS
    assert world.count_post_variants() == POST_VARIANTS


def test_export_is_pinned(tmp_path):
    assert export_digests(tmp_path) == EXPORT_DIGESTS


# ---- the pinned values (computed once, see the module docstring) -------------------------
POST_DIGESTS = {'s0-train-000000': 'c22cf6b7aa598df60df47505b90f85b2c8e7185c2b0f48ad88e40ab2541a1a59',
 's0-train-000001': '5942733237f5c02dca48fc8c6c69cf8cece4dbcfc13fa8c1ef78fc0a6e005383',
 's0-train-000017': '82a261b530122c747f3fb1a0aed19735cf5056ba90e188fdb30d133f8892be37',
 's0-train-123456': '802b6d6c50f880784ace02193732a96137bb3698419d99fa32f95609b64219cc',
 's0-valid-000000': '2d78c72eefb885a773f6a8708856000d51f8fb04b560a8fb486a0a3ef2c32a4a',
 's0-valid-000001': 'a20da6473bbcca1d7c0ff11aa43f03947f262e85e5b8e4d42376a6e7ed5da86d',
 's0-valid-000017': 'e44a0f6ca9a5bd9b821c65be3ac061c56ff2213bdcbffa769d6e443823c2b614',
 's0-valid-123456': '2b1d6a1477a928efe21c887a22be6e1c422bbccb5f0bcd0a70b0161c88625d52',
 's0-test-000000': '6112733ff97790c84435ea200237ba72b73400af27b65acef64e6df6466dfc14',
 's0-test-000001': '592fe15c0b655f6fd05ea1d1d9eb61a43bb7d288c66a29680ea6d99e7cb5519f',
 's0-test-000017': '23858e7d1adc8e6315714b7759577428a6cc4647c3477eacaa0c9daa61f8dbcb',
 's0-test-123456': 'd2c2e8f3201828138844a3169eb0e9db92fb8fffaec80021ad770003e4e6d17d',
 's0-corpus-000000': '1f8f6038a01baa5ab94316a2cdafbd702ac0de90bbd2dd7317fc4cb0a5c8c2ba',
 's0-corpus-000001': '0e8df4e20ad1ee55f01e9b12009906d9b914adaefd50ef07580bbbc7f8fed0fa',
 's0-corpus-000017': '0512213bbe25f4492259ef99bc860e014db894ccce1be8e990e6eb9cc922ae21',
 's0-corpus-123456': '4c725340ec196945667736703dbe61666e4e15423b53ff0827bbc2cc4f12da96',
 's1-train-000000': 'febdf395e061c2697f96d4a464cda396db60b07fcd4a94e2100514d417636758',
 's1-train-000001': '5d1bc83d968794c55b277a588428fca24ebebc9e22bea6e0265927bb5cf0b9c8',
 's1-train-000017': '040a440ed3437b131d8c3aa4ecb96ea58c434b118e119c5e1bdf8804babb6154',
 's1-train-123456': '213f9042575a3b1e421ac551ba0feb2bb9ba0667a9c281ccaf4b253f59584280',
 's7-test-000000': 'c17a26da617c5cff4c03818f014677311b2397c8499974c89bdac2aaa652f752',
 's7-test-000001': '7ce9626c4bf83133102cedc7f187b9b125cbc8645bc374047a7b4c8b032b621c',
 's7-test-000017': 'c716816dd1bc7f5b7f8f2e69beb3fab88ab8740e7cf81107a367dc16e6cbaea9',
 's7-test-123456': '7bcbd839bf55482ea439fa5a62490e8a23cfaba68b26a0eba8b654517570764a',
 's-1-corpus-000000': 'a28c5773c669eb9d25813f1996efbda62c2ab85b0ce678f18ac827b7ea0675bc',
 's-1-corpus-000001': 'ee5d2ac56f1f55fe40878df3136513e2341b6cb24c140790f35436bbd145322a',
 's-1-corpus-000017': '96d98a04a5b253b4ed7031907e279f0850ade649aa2f41ce38de2ccb9b6761d4',
 's-1-corpus-123456': '021a09943f8f947345037dc891774400c2d8b72ad4defae1b7eeb22aaffccd8d',
 's123-valid-000000': '6b9945055c37444fcb82927ab62bb48ad2d387995ddcaccfca4ccf4e8d9b32eb',
 's123-valid-000001': '78ee3f9ece2df282e6295447e3fb73f0ca84d47ab780eedce53ef6cee65f1522'}

GOLD_SCORES = {'s0-train-000000': [5.6, 8.62, 4.0, 5.14, 6.9, 3.1, 3.4, 5.6, 5.6, 5.08, 2.2199999999999998, 2.2, -10.4,
                     -10.0],
 's0-train-123456': [5.66, 8.26, -2.9000000000000004, 4.74, 6.54, 0.74, 3.5, 5.62, 5.66, 5.18, 3.98,
                     2.1399999999999997, -8.84, -10.0],
 's0-valid-000017': [7.16, 8.379999999999999, 0.26666666666666633, 6.7, 7.92, 2.2, 4.96, 7.12, 7.16, 7.04,
                     3.68, 4.92, -8.84, -10.0],
 's0-test-000001': [7.12, 8.46, -0.3000000000000007, 6.66, 8.46, 3.62, 4.92, 7.12, 7.12, 6.8, 5.4, 7.04,
                    -8.88, -10.0],
 's0-corpus-000000': [5.66, 8.34, -2.9000000000000004, 5.2, 6.12, 2.16, 3.46, 5.7, 5.66, 4.7700000000000005,
                      4.9, 1.0649999999999986, -8.84, -10.0],
 's0-corpus-123456': [8.379999999999999, 8.379999999999999, -0.20000000000000107, 7.5, 8.3, 5.88, 6.18, 8.34,
                      8.379999999999999, 8.1, 5.32, 0.0699999999999994, -11.120000000000001, -10.0],
 's1-train-000017': [6.62, 8.34, 0.1999999999999993, 5.78, 7.5, 3.2, 4.42, 6.54, 6.62, 6.18,
                     4.4399999999999995, 3.1399999999999997, -8.88, -10.0],
 's7-test-000001': [7.62, 8.46, 2.1999999999999993, 6.74, 8.46, 5.12, 5.46, 7.54, 7.62, 7.14,
                    1.6400000000000001, 3.7700000000000005, -8.88, -10.0],
 's-1-corpus-000000': [6.36, 8.46, 1.5999999999999996, 5.9, 7.24, 3.36, 4.08, 6.32, 6.36, 6.0, 4.64, 3.04,
                       -8.64, -10.0],
 's-1-corpus-123456': [7.16, 8.46, 1.5999999999999996, 6.24, 8.0, 4.66, 4.92, 7.12, 7.16, 6.8, 6.4,
                       2.0950000000000006, -8.84, -10.0]}

PERTURBATION_DIGESTS = {'s0-train-000000': '2522e3347a7f0fdf94a08f5e0b1a2ed578826e99e1af8efeb19214ac62502570',
 's0-train-123456': 'de6e6c7cdd4efbd4895b5bbe1d22a921a09d1b14c8a556fa8f5b56a6d926ed97',
 's0-valid-000017': '4bc1a8575021dce1d30ec69be5f897b90b9733fde738b0a3a3a716571e700bda',
 's0-test-000001': '158ff5da600e3cc4a770f95abd31bb55cdf5d0f9fef27927bc6bb12d69dd2c5a',
 's0-corpus-000000': 'f381363e9f189a05b92b5cfc9ab3b685335e4627001d6f6823f2535f3bf165b9',
 's0-corpus-123456': '6897a4b15e3c1900c118b4aecb9ba7a3d387734fa1bda4711106d17638562776',
 's1-train-000017': '3bf7dc64c6094299e7b02cc6ae1f754a5b8c0820e21656bb93323ac7f413f937',
 's7-test-000001': 'df9b61514637412330851aeedde8ff03535559174589f9d9ec3d5fe28a306de8',
 's-1-corpus-000000': '9df364a0e50c0126e7826f8808182cdcd6a6d3bfd413ac159bed30c48b99dee0',
 's-1-corpus-123456': '1ee6e6d7fa613b440fb6059fdea19e123a89258fc5ffd6fa96667e025a577f7a'}

REFERENCE_DIGESTS = {'s0-train-000001': '0c52f9cf87a2b373fada0077014df3fba88f12f83a37097d5890070195772096',
 's0-valid-000001': '9c9dbf8ff9c782e65cdd2e8f309974b23a6ebe535965cd90386926f4e405618c',
 's0-test-000001': '4a95972e09162edc6519997e86b23e9660ae362b29165050f153ace906d24dc0',
 's0-corpus-000001': '21df9fb34b123213b0d139ef80b9a298aff1f523c0d39bb1d4daeb4dff30ef28',
 's1-train-000001': '356c362b24fed96c416009e370d6d17a20b21ea95b4740bc09aa7cc2d89f28a7',
 's7-test-000001': 'f6af4fdb769e142e6d28f65c6083f0c156d6c89f1ddb1dca35ae2d0068d65530',
 's-1-corpus-000001': '0bdb980ad09caca39724597cf0097e5738d45202cc3c7a80884dbfc8ce011674',
 's123-valid-000001': 'ef3fb6845e5c37cf445be1d9dee07d4f2f7fc38798993189491a5a5bb9dcf3ce'}

TRAIN_COMPARISONS_DIGEST = 'eec52daae412c6b46ed9bac8713b9627d791f70982a0cb85e1d1f3c47011cd41'

TRAIN_CHOICES = '00110011110000100110100010000011110100100000110110001110001100100000011110111100111101000101000011001111101011011000001101000001011111110010010101011000010011101101010010001011000101100111110100111001'

TRAIN_GOLD_CHOICES = '00101110110010011110100111100011110111101110110100101110101010101001010100101101011101000101001111001110101000011000101101101101011110010010010110001010010010111101100010001101110101100111011100010001'

TRAIN_COMPARISON_POSTS = ['s0-train-000000', 's0-train-000001', 's0-train-000002', 's0-train-000003', 's0-train-000004',
 's0-train-000005', 's0-train-000006', 's0-train-000007', 's0-train-000008', 's0-train-000009',
 's0-train-000010', 's0-train-000011', 's0-train-000012', 's0-train-000013', 's0-train-000014',
 's0-train-000015', 's0-train-000016', 's0-train-000017', 's0-train-000018', 's0-train-000019',
 's0-train-000020', 's0-train-000021', 's0-train-000022', 's0-train-000023', 's0-train-000024',
 's0-train-000025', 's0-train-000026', 's0-train-000027', 's0-train-000028', 's0-train-000029',
 's0-train-000030', 's0-train-000031', 's0-train-000032', 's0-train-000033', 's0-train-000034']

OTHER_COMPARISON_DIGESTS = {'valid': 'da60f7c57552ae59accc3be3bf36ebc311b033f8dc9c19d09eb7edd88b1bef38',
 'policy': '32a6964153ec3881c2aff5daf951de18582af90a75fdd1202a56e4cd89f93fac'}

CORPUS_DIGESTS = ['fd10ce90d0f4204582e3ee9f4c01486eded6168c34cf29935bb0da913fb7cca0',
 '6566f4dd4e4eb781822db2b996ef5de71a5845a4c759099a1068ea34f4459662',
 'bf8dd043001b1c4b3287c56d425bc3d8372bc46c81779a14694a3a51e06a684e',
 '8d474936472398c6765b1d96cbd4635fa274fb7e4453bf12b0e9d3457585e0bf',
 'ecf4280601aa4189ee8214780853bffbfcde3b714721bd9f5e876df3846caef4',
 'b11efa8ce2a40c818c3736e3a6772560ade30452b6a831c2c261bc8dc6a76de3',
 'b34ce6997953dbda41587fa0ce1d36e26f6e15d58786bb419752b34ddc07c88c',
 '345ce101fbe5c70e713735db1e2e4b68bf99fef2a58681259fe4bf4bcfd818aa',
 '6444d883d4299918b4c866f5552f8171caea2c4682cfd65cbd9a78a6729614cf',
 '1b8e992bdcdeb01bc7fdc0508624f42e7e2cb45e0b4b8df796e1c18eb875fb48',
 'a2127aaf0356ddd71145d62c5ff3ba10477e630c9e06d45a6766734c207b668d',
 '2a43596f1aa36e6d603ea3a24de715f87a216db18a03f36a48596e2a76f88d80']

JUDGE_AND_LABELER_DIGESTS = {'error_analysis': 'dd284db7092f64ea7bc27561f905bf3d26cf1912c7e72b47cb4fbfecdc8ab714',
 'gold_preference': 'b68498b351514d89db44499e9d70610cc49cb96970fb474b78c75bef66c4d192',
 'labeler': 'd239d7690b0e02e792e764883b0efdb14533d45f9202283881e6e8bb847e1a68'}

POST_VARIANTS = 67940006384640

EXPORT_DIGESTS = {'train.jsonl': 'c8a8aad7db6c215b0381649c3844785e489c0d1017a8d01d0e560727e38f2ef3',
 'valid.jsonl': 'b38d5287ad840135237cddf54e98ea07498e2951c8abadc620ef62d0bb99e2c3',
 'test.jsonl': '8a3a4f4e10993f4ab951ab99d25737846fa2433e86f0206a98108301df41462a',
 'comparisons_train.jsonl': '4fadb7f1dd11cf0add17f05e2568ef7158c15dfdcb6a2a60a6bc42c7f806d346',
 'comparisons_valid.jsonl': '7ecdb06be46a061b1581321facfa33f8e5c64c5fd60523cf0bce98cf8a5d9175'}
