import pytest
import torch

from plus import checkpoint
from plus.gpt import GPT, GPTConfig
from plus.tokenizer import Tokenizer


def tiny(seed):
    torch.manual_seed(seed)
    return GPT(GPTConfig.gpt2_style(vocab_size=300, block_size=16, n_layer=1, n_head=2, n_embd=8))


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train(["hello world"] * 20, vocab_size=300)


def save(path, model, tok, step=1):
    return checkpoint.save_checkpoint(path, model, {"stage": "sft", "model": model.config.to_dict()}, tokenizer=tok,
                                      trainer_state={"step": step}, optimizer=torch.optim.AdamW(model.parameters()))


def test_round_trip(tmp_path, tok):
    model = tiny(0)
    save(tmp_path / "ck", model, tok)
    loaded, tok2, config = checkpoint.load_gpt(tmp_path / "ck")
    for (n, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), n
    assert loaded.lm_head.weight is loaded.tok_emb.weight  # the tie survives
    assert tok2.encode("hello world") == tok.encode("hello world")
    assert config["stage"] == "sft" and checkpoint.load_trainer_state(tmp_path / "ck")[0] == {"step": 1}


def test_crash_during_save_leaves_previous_checkpoint_loadable(tmp_path, tok, monkeypatch):
    old, new = tiny(0), tiny(1)
    save(tmp_path / "ck", old, tok, step=1)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed while writing")

    # A crash while the new files are being written: the old directory is untouched.
    monkeypatch.setattr(checkpoint, "_write_json", crash)
    with pytest.raises(KeyboardInterrupt):
        save(tmp_path / "ck", new, tok, step=2)
    monkeypatch.undo()
    loaded, _, _ = checkpoint.load_gpt(tmp_path / "ck")
    assert torch.equal(loaded.tok_emb.weight, old.tok_emb.weight)

    # A crash between the two renames: only <dir>.previous exists, and it still loads.
    real_replace = checkpoint.os.replace

    def replace_then_crash(src, dst):
        if str(dst) == str(tmp_path / "ck"):  # ck -> ck.previous happened; ck.saving -> ck dies
            raise KeyboardInterrupt("killed between renames")
        real_replace(src, dst)

    monkeypatch.setattr(checkpoint.os, "replace", replace_then_crash)
    with pytest.raises(KeyboardInterrupt):
        save(tmp_path / "ck", new, tok, step=2)
    monkeypatch.undo()
    assert not (tmp_path / "ck").exists()
    loaded, _, _ = checkpoint.load_gpt(tmp_path / "ck")
    assert torch.equal(loaded.tok_emb.weight, old.tok_emb.weight)
    assert checkpoint.load_trainer_state(tmp_path / "ck")[0]["step"] == 1

    # The next save completes normally and cleans up.
    save(tmp_path / "ck", new, tok, step=3)
    loaded, _, _ = checkpoint.load_gpt(tmp_path / "ck")
    assert torch.equal(loaded.tok_emb.weight, new.tok_emb.weight)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


@pytest.mark.parametrize("writer", ["save_file", "_write_json"])
def test_a_full_disk_during_a_save_leaves_the_previous_checkpoint(tmp_path, tok, monkeypatch, writer):
    """The write fails (ENOSPC): one CheckpointError line naming the directory, the
    checkpoint saved before loads as it was, and the unfinished files are gone."""
    old = tiny(0)
    save(tmp_path / "ck", old, tok, step=1)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint, writer, disk_full)
    with pytest.raises(checkpoint.CheckpointError) as info:
        save(tmp_path / "ck", tiny(1), tok, step=2)
    assert str(info.value) == (f"{tmp_path / 'ck'}: could not write the checkpoint ([Errno 28] No space left on "
                               "device); the checkpoint saved there before is intact")
    with pytest.raises(checkpoint.CheckpointError, match="; nothing was saved$"):
        save(tmp_path / "new", tiny(1), tok)
    monkeypatch.undo()
    loaded, _, _ = checkpoint.load_gpt(tmp_path / "ck")
    assert torch.equal(loaded.tok_emb.weight, old.tok_emb.weight)
    assert checkpoint.load_trainer_state(tmp_path / "ck")[0]["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def test_errors_name_the_directory(tmp_path):
    with pytest.raises(checkpoint.CheckpointError, match="no such checkpoint"):
        checkpoint.load_gpt(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(checkpoint.CheckpointError, match="not a checkpoint"):
        checkpoint.load_gpt(tmp_path / "empty")


@pytest.mark.parametrize("name, damage, message", [
    (checkpoint.WEIGHTS, lambda f: f.write_bytes(f.read_bytes()[:40]), "unreadable weights"),
    (checkpoint.WEIGHTS, lambda f: f.write_bytes(b"\xff" * 8 + b"{not json"), "unreadable weights"),
    (checkpoint.TOKENIZER, lambda f: f.write_text('{"model": 3}'), "unreadable tokenizer"),
    (checkpoint.TOKENIZER, lambda f: f.unlink(), "missing"),
    (checkpoint.CONFIG, lambda f: f.write_text("{\n  oops"), ":2: invalid JSON"),
    (checkpoint.OPTIMIZER, lambda f: f.write_bytes(f.read_bytes()[:100]), "unreadable"),
    (checkpoint.TRAINER_STATE, lambda f: f.write_text("{"), "invalid JSON"),
])
def test_a_damaged_checkpoint_file_is_one_line_naming_it(tmp_path, tok, name, damage, message):
    save(tmp_path / "ck", tiny(0), tok)
    damage(tmp_path / "ck" / name)
    with pytest.raises(checkpoint.CheckpointError) as info:
        checkpoint.load_gpt(tmp_path / "ck")
        checkpoint.load_trainer_state(tmp_path / "ck")
    text = str(info.value)
    assert text.startswith(str(tmp_path / "ck" / name)) and message in text and "\n" not in text


def test_only_file_and_format_errors_become_checkpoint_errors(tmp_path, tok, monkeypatch):
    """Running out of memory while loading is not a damaged file: it propagates as itself."""
    save(tmp_path / "ck", tiny(0), tok)

    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(checkpoint, "load_file", out_of_memory)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        checkpoint.load_state_dict(tmp_path / "ck")


def test_a_truncated_init_checkpoint_stops_the_cli_with_one_line(tmp_path, tok, capsys):
    import train

    save(tmp_path / "ck", tiny(0), tok)
    weights = tmp_path / "ck" / checkpoint.WEIGHTS
    weights.write_bytes(weights.read_bytes()[:40])
    assert train.main(["--stage", "sft", "--init_from", str(tmp_path / "ck"), "--out_dir", str(tmp_path / "out"),
                       "--max_steps", "1", "--no_progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(weights) in err[0] and "unreadable weights" in err[0]
    assert not (tmp_path / "out" / "sft").exists()


def test_checkpoint_files_share_one_mode(tmp_path, tok):
    import os

    umask = os.umask(0)
    os.umask(umask)
    save(tmp_path / "ck", tiny(0), tok)
    modes = {f.name: f.stat().st_mode & 0o777 for f in (tmp_path / "ck").iterdir()}
    assert set(modes.values()) == {0o666 & ~umask}, modes
