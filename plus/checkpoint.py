"""Checkpoint directories: save, load and resume, crash-safe.

A checkpoint is a directory (ARCHITECTURE.md):

    model.safetensors   every weight, heads and normalization buffers included
    config.json         {"format": "plus", "stage": ..., "model": GPTConfig fields, ...extra}
    tokenizer.json      the tokenizer, so a checkpoint is self-contained
    trainer_state.json  step, data position, ...      } only what `--resume` needs to
    optimizer.pt        optimizer state_dict          } continue exactly where a run
    rng.pt              python / numpy / torch RNGs   } stopped
    metrics.jsonl       one JSON object per logged step

Atomicity. A crash in the middle of a save must never leave a directory that loads but
holds half-new, half-old files. So a save writes everything into `<dir>.saving/`, then
swaps directories: `<dir>` -> `<dir>.previous`, `<dir>.saving` -> `<dir>`, and finally
deletes `<dir>.previous`. At every instant either `<dir>` or `<dir>.previous` is a
complete checkpoint, and `resolve()` finds whichever exists.

A Hugging Face model directory (config.json with a "model_type") loads through the same
functions (`load_config`, `load_state_dict`, `load_tokenizer`, `load_gpt`), read by
plus/hf.py, so it goes wherever a checkpoint directory goes.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

FORMAT = "plus"
WEIGHTS, CONFIG, TOKENIZER = "model.safetensors", "config.json", "tokenizer.json"
TRAINER_STATE, OPTIMIZER, RNG, METRICS = "trainer_state.json", "optimizer.pt", "rng.pt", "metrics.jsonl"


class CheckpointError(ValueError):
    """A checkpoint directory that is missing, incomplete or not ours."""


def resolve(path) -> Path:
    """The complete checkpoint at `path`, falling back to `<path>.previous` left by a
    save that was interrupted between its two renames."""
    path = Path(path)
    if (path / CONFIG).is_file() and (path / WEIGHTS).is_file() or is_hf_dir(path):
        return path
    previous = path.with_name(path.name + ".previous")
    if (previous / CONFIG).is_file() and (previous / WEIGHTS).is_file():
        return previous
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint directory")
    raise CheckpointError(f"{path}: not a checkpoint (needs {CONFIG} and {WEIGHTS})")


def is_hf_dir(path) -> bool:
    """A Hugging Face model directory (plus/hf.py) rather than a plus checkpoint."""
    from plus import hf

    return hf.is_hf_dir(path)


def unique_state_dict(module: torch.nn.Module | dict) -> dict[str, torch.Tensor]:
    """state_dict (of a module, or given) without aliases: a tied output head shares the
    embedding's storage and safetensors refuses to store one tensor twice; the tie is
    restored by the model."""
    out, seen = {}, set()
    for name, tensor in (module if isinstance(module, dict) else module.state_dict()).items():
        key = (tensor.data_ptr(), tensor.shape, tensor.stride()) if tensor.numel() else None
        if key is not None and key in seen:
            continue
        seen.add(key)
        out[name] = tensor.detach().contiguous().cpu()
    return out


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    path,
    model: torch.nn.Module,
    config: dict,
    tokenizer=None,
    trainer_state: dict | None = None,
    optimizer: torch.optim.Optimizer | dict | None = None,
    metrics_file=None,
    keep: tuple[str, ...] = (),
    state_dict: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write a checkpoint directory atomically (see module docstring); returns its path.

    `config` is stored as config.json (with "format": "plus" added). With `trainer_state`,
    the optimizer and RNG states are saved too, for an exact `--resume`. `metrics_file`
    (the live metrics.jsonl of the run) is copied in, so the directory tells its history.
    `keep` names subdirectories of the checkpoint being replaced that move into the new
    one (the PPO stage's snapshots, <dir>/checkpoints/step_N); everything else is replaced.
    A sharded model (plus/fsdp.py) passes its gathered weights as `state_dict` and its
    gathered optimizer state as `optimizer` (a dict); the files are the same.
    """
    path = Path(path)
    staging = path.with_name(path.name + ".saving")
    previous = path.with_name(path.name + ".previous")
    if staging.exists():  # left over from a crash during an earlier save: never complete
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        save_file(unique_state_dict(model if state_dict is None else state_dict), str(staging / WEIGHTS),
                  metadata={"format": "pt"})
        _write_json(staging / CONFIG, {**config, "format": FORMAT})
        if tokenizer is not None:
            tokenizer.save(staging / TOKENIZER)
        if trainer_state is not None:
            _write_json(staging / TRAINER_STATE, trainer_state)
            torch.save(rng_state(), staging / RNG)
            if optimizer is not None:
                torch.save(optimizer if isinstance(optimizer, dict) else optimizer.state_dict(), staging / OPTIMIZER)
        if metrics_file is not None and Path(metrics_file).is_file():
            shutil.copyfile(metrics_file, staging / METRICS)
        _readable_by_all(staging)
    except BaseException as e:
        shutil.rmtree(staging, ignore_errors=True)  # never complete, and it may hold the space a retry needs
        # A full disk or a quota: Python and the tokenizer raise OSError, safetensors its own
        # error, torch.save a plain RuntimeError (not a subclass such as out of memory).
        if isinstance(e, (OSError, SafetensorError)) or type(e) is RuntimeError:
            kept = "the checkpoint saved there before is intact" if _complete(path) else "nothing was saved"
            raise CheckpointError(f"{path}: could not write the checkpoint ({_first_line(e)}); {kept}") from None
        raise
    for name in keep:
        if (path / name).is_dir():
            os.replace(path / name, staging / name)
    # The swap: at each moment one complete checkpoint exists at `path` or `previous`.
    if previous.exists():
        shutil.rmtree(previous)
    if path.exists():
        os.replace(path, previous)
    os.replace(staging, path)
    if previous.exists():
        shutil.rmtree(previous)
    return path


def _complete(path: Path) -> bool:
    """Whether `resolve` finds a complete checkpoint at `path` (or its `.previous`)."""
    try:
        resolve(path)
        return True
    except CheckpointError:
        return False


def _readable_by_all(directory: Path) -> None:
    """Give every file written into `directory` the mode a new file gets from the umask
    (0644 under the usual 022): safetensors writes its file 0600, which would keep a
    shared checkpoint's weights from its other readers."""
    umask = os.umask(0)
    os.umask(umask)
    for file in directory.rglob("*"):
        if file.is_file():
            file.chmod(0o666 & ~umask)


def load_config(path) -> dict:
    path = resolve(path)
    if is_hf_dir(path):
        from plus import hf

        return hf.load_config(path)
    try:
        config = json.loads((path / CONFIG).read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path / CONFIG}:{e.lineno}: invalid JSON ({e.msg})") from None
    if config.get("format") != FORMAT:
        raise CheckpointError(f"{path / CONFIG}: not a plus checkpoint config (no \"format\": \"plus\")")
    return config


def load_state_dict(path, device="cpu") -> dict[str, torch.Tensor]:
    if is_hf_dir(resolve(path)):
        from plus import hf

        return hf.load_state_dict(resolve(path), device)
    file = resolve(path) / WEIGHTS
    try:
        return load_file(str(file), device=str(device))
    except (SafetensorError, OSError) as e:  # a bad header, a short file, a file that cannot be read
        raise CheckpointError(f"{file}: unreadable weights ({_first_line(e)})") from None


def load_tokenizer(path):
    """The checkpoint's tokenizer.json, or a one-line CheckpointError naming it."""
    from plus.tokenizer import Tokenizer

    if is_hf_dir(resolve(path)):
        from plus import hf

        return hf.load_tokenizer(resolve(path))
    file = resolve(path) / TOKENIZER
    if not file.is_file():
        raise CheckpointError(f"{file}: missing (a checkpoint carries its tokenizer)")
    try:
        return Tokenizer.load(file)
    except Exception as e:  # the tokenizers library raises its own exception type
        raise CheckpointError(f"{file}: unreadable tokenizer ({_first_line(e)})") from None


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def load_into(module: torch.nn.Module, state_dict: dict[str, torch.Tensor], allow_missing: tuple[str, ...] = ()) -> None:
    """load_state_dict that tolerates only the aliases dropped by unique_state_dict (and
    the names in `allow_missing`), and says precisely what does not fit."""
    aliases = set(module.state_dict()) - set(unique_state_dict(module))
    missing, unexpected = module.load_state_dict(state_dict, strict=False)
    missing = [k for k in missing if k not in aliases and not k.startswith(allow_missing)]
    if missing or unexpected:
        raise CheckpointError(f"weights do not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")


def load_trainer_state(path) -> tuple[dict, dict | None, dict]:
    """(trainer_state, optimizer_state or None, rng_state) for `--resume`."""
    path = resolve(path)
    if not (path / TRAINER_STATE).is_file():
        raise CheckpointError(f"{path}: has no {TRAINER_STATE}; it was not saved for resuming")
    try:
        state = json.loads((path / TRAINER_STATE).read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path / TRAINER_STATE}:{e.lineno}: invalid JSON ({e.msg})") from None
    loaded = {}
    for name in (OPTIMIZER, RNG):
        if (path / name).is_file():
            try:
                loaded[name] = torch.load(path / name, weights_only=False)
            except Exception as e:  # a truncated or foreign pickle
                raise CheckpointError(f"{path / name}: unreadable ({_first_line(e)})") from None
        elif name == RNG:
            raise CheckpointError(f"{path / RNG}: missing; the checkpoint cannot be resumed exactly")
    return state, loaded.get(OPTIMIZER), loaded[RNG]


def load_gpt(path, device="cpu"):
    """(GPT, Tokenizer, config dict) from a policy checkpoint directory."""
    from plus.gpt import GPT, GPTConfig

    path = resolve(path)
    if is_hf_dir(path):
        from plus import hf

        return hf.load_gpt(path, device)
    config = load_config(path)
    if "model" not in config:
        raise CheckpointError(f"{path / CONFIG}: missing the \"model\" section")
    model = GPT(GPTConfig.from_dict(config["model"]))
    load_into(model, load_state_dict(path))
    return model.to(device), load_tokenizer(path), config
