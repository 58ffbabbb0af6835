"""Fully sharded data parallelism (FSDP), written by hand on torch.distributed.

Why shard
---------
Data parallelism (DDP) gives every process a full replica: weights, gradients and
optimizer state. With AdamW in float32 that is 4 + 4 + 8 = 16 bytes per parameter on
every GPU (the ZeRO paper counts the same 16 bytes for mixed precision: 2 for bf16/fp16
weights, 2 for their gradients, 12 for the fp32 master copy and Adam's two moments). A
1B-parameter model needs 16 GB per GPU before a single activation is stored, however
many GPUs share the work.

ZeRO (Rajbhandari et al. 2020, "ZeRO: Memory Optimizations Toward Training Trillion
Parameter Models") removes the redundancy in three stages: stage 1 partitions the
optimizer state over the N processes, stage 2 the gradients too, stage 3 the parameters
too, which brings those 16 bytes per parameter down to 16 / N (their example: a 7.5B
model on 64 GPUs goes from 120 GB to 1.9 GB per GPU). PyTorch's FSDP (Zhao et al. 2023,
"PyTorch FSDP: Experiences on Scaling Fully Sharded Data Parallel") is ZeRO stage 3
built into PyTorch. This file is the same algorithm with every step visible.

Two collectives do the work (N processes, a tensor of n elements):

    all-gather       each process holds n/N elements; afterwards every one holds all n.
    reduce-scatter   each holds n elements; afterwards process r holds the sum over all
                     processes of elements [r*n/N, (r+1)*n/N).

DDP's all-reduce is exactly a reduce-scatter followed by an all-gather (that is how the
ring all-reduce runs), so each process moves about 2n elements per step. FSDP gathers
the parameters twice (forward and backward) and reduce-scatters the gradients once: 3n,
1.5 times DDP's volume (ZeRO §7), bought with an N-fold cut in memory.

Units and flat parameters
-------------------------
Gathering tensor by tensor would mean hundreds of small messages, each paying the
network's latency. So the model is cut into *units*: each transformer block is one, and
everything outside the blocks (embeddings, final norm, output head, reward or value
head) is the *root* unit. A unit's parameters are flattened into one 1-D buffer, padded
with zeros to a multiple of N, and process r keeps the slice [r*S, (r+1)*S), S = ceil(n/N):

    unit parameters   q_proj.weight [32, 32] | q_proj.bias [32] | ... | down_proj.bias [32]
    flat buffer       [ ------------------------- n elements --------------------- | pad ]
    shards            [ rank 0: S ][ rank 1: S ] ... [ rank N-1: S ]      (N * S >= n)

Each shard is an `nn.Parameter` in float32, the only parameter the optimizer ever sees;
the original parameters are deleted from their modules (torch's first FSDP calls such a
buffer a FlatParameter, and so does this file). A unit keeps up to three flat buffers,
because the optimizer treats each flat shard as one tensor: matrices (weight decay),
vectors (biases, norm gains: no decay) and frozen parameters (no gradient).
Parameters that are one tensor seen under two names (GPT-2's output head is its token
embedding) are stored once; they must sit in the same unit, which the root guarantees.

One training step
-----------------
forward    The root's parameters are all-gathered when the first root module runs and
           stay until the backward is over (the output head is used after the forward,
           by the loss); after a forward without gradients, until a forward needs them
           differentiable or the optimizer has changed the shards. Each block, when called: all-gather its flat buffers, point its
           modules' weight attributes at views of the gathered buffer, run the block,
           then point them back at empty placeholders. Nothing else refers to the
           gathered buffer, so it is freed: only one block's weights are whole at a time.

           One trap: autograd saves tensors for the backward (a linear layer saves its
           weight, to compute dL/dx = dL/dy W), and a saved weight would keep the whole
           gathered buffer alive. So while a block runs, a saved-tensor hook replaces
           every saved view of the gathered buffer by a note (which buffer, shape,
           strides, offset), and the matching unpack hook in the backward re-gathers the
           buffer and rebuilds the view from the note.

backward   The gathered buffer is the output of an autograd Function (`_GatherShard`)
           whose input is the shard. Autograd runs that Function's backward once every
           use of the unit's weights has delivered its gradient, i.e. exactly when the
           unit's gradient is complete. Its backward reduce-scatters the full gradient
           (summed, then divided by N: the mean over processes, as DDP computes) into
           a gradient for the shard, which autograd accumulates into `shard.grad`, and
           frees the re-gathered weights. When the whole backward is done, a callback
           frees the root.

step       The optimizer updates the shards, each process its 1/N of every tensor.
           Gradient-norm clipping needs the norm of the whole gradient: each process
           sums the squares of its shard gradients, one all-reduce adds the sums.

So each process holds, outside a forward/backward, 1/N of the parameters, gradients and
optimizer state; inside, additionally one block's full weights (and its gradient) and the
root's. `world_size` 1 runs the same code with copies instead of collectives.

Gradient accumulation. With micro-batches, reducing every micro-step's gradient would
repeat the reduce-scatter for nothing. Inside `no_sync()` the unit's full gradient is
added to a local buffer instead (memory: one unreduced gradient per unit, what DDP holds
all the time), and the micro-step outside `no_sync()` reduce-scatters the sum once. The
parameters are still gathered at every micro-step: a process owns only its shards.

Mixed precision (`param_dtype=torch.bfloat16`). The shards and the optimizer stay in
float32; the shard is cast to bf16 before the all-gather (half the traffic), the unit
computes in bf16, and its gradient is cast back to float32 before the reduce-scatter, so
the sum over processes and the accumulation happen in float32.

Checkpoints. `full_state_dict()` gathers the weights unit by unit and keeps them on
rank 0 only, on the CPU, under the names the unwrapped model uses: the checkpoint format
(plus/checkpoint.py) does not change and loads in single-process code.
`load_full_state_dict()` goes the other way. `optimizer_state_dict()` collects every
process's optimizer state as it is (sharded) onto rank 0, with the world size and the
size of every flat buffer (rank 0's memory then holds the whole optimizer state once;
at a scale where that does not fit, each process would write its own file);
`load_optimizer_state_dict()` resumes from it exactly, and on a different number of
processes re-cuts the moment tensors (concatenate the old shards, drop the old padding,
pad and slice for the new world).

Rules for the code that uses it
-------------------------------
* Every forward is a collective: all processes must run the same forwards in the same
  order. Loops whose length differs between processes (sampling that stops when its own
  rows have ended, evaluating uneven shares of a data set) run inside
  `summon_full_params()`, which gathers every unit once and runs plain local forwards
  (memory: one full model per process for that time; inference only).
* Move the model to its device before wrapping; build the optimizer after wrapping,
  from `module.parameters()`: they are the shards.
* Outside a forward the modules hold empty placeholders where their weights were; read
  the weights with `full_state_dict()` or inside `summon_full_params()`.

Left out, compared with torch's FSDP: overlapping communication with computation
(prefetching the next unit's all-gather on a separate CUDA stream), hybrid sharding
(shard within a node, replicate across nodes), CPU offload, and FSDP2's per-parameter
sharding with DTensor. Every collective here is synchronous, so the order of events is
the order of the code.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial

import torch
import torch.distributed as dist
import torch.nn as nn

from plus.gpt import Block

# torch 2.13 renamed all_gather_into_tensor / reduce_scatter_tensor; older versions have
# only the old names (same semantics).
_all_gather_into_tensor = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
_reduce_scatter_tensor = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor

FORMAT = "plus-fsdp-sharded-optimizer"  # marks an optimizer state saved by `optimizer_state_dict`


@dataclass(eq=False)
class _Slot:
    """One original parameter inside a flat buffer."""

    names: list[str]                     # its state_dict names (two for a tied embedding / head)
    owners: list[tuple[nn.Module, str]]  # where modules look it up: getattr(module, attribute)
    shape: torch.Size
    offset: int                          # its first element in the flat buffer

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(eq=False)
class FlatParameter:
    """The parameters of one unit that the optimizer treats alike, flattened and sharded."""

    kind: str                  # "matrices" | "vectors" | "frozen"
    slots: list[_Slot]
    numel: int                 # real elements (n)
    shard_numel: int           # S = ceil(n / N): each process's share
    padded_numel: int          # N * S: the gathered buffer, padding included
    shard: nn.Parameter        # float32 [S]: this process's slice, what the optimizer steps
    placeholder: torch.Tensor  # empty tensor (compute dtype) that modules hold between uses
    full: torch.Tensor | None = None               # the gathered buffer of the running forward
    full_version: int = -1                         # shard._version when `full` was gathered
    full_for_backward: torch.Tensor | None = None  # re-gathered for the backward
    pending_grad: torch.Tensor | None = None       # unreduced float32 gradient summed inside no_sync()


@dataclass(eq=False)
class _Unit:
    module: nn.Module
    is_root: bool
    flats: list[FlatParameter] = field(default_factory=list)


@dataclass(eq=False)
class _SavedParameter:
    """What the pack hook stores instead of a saved view of a gathered buffer."""

    flat: FlatParameter
    shape: torch.Size
    stride: tuple[int, ...]
    offset: int


class _GatherShard(torch.autograd.Function):
    """shard [S] -> gathered buffer [N * S]; the gradient flows back as a reduce-scatter.

    Autograd calls `backward` once every use of the unit's parameters has contributed
    its gradient, so `full_grad` is the unit's complete gradient."""

    @staticmethod
    def forward(ctx, shard, fsdp: "FullyShardedDataParallel", flat: FlatParameter):
        ctx.fsdp, ctx.flat = fsdp, flat
        return fsdp._all_gather(flat, fsdp.compute_dtype)

    @staticmethod
    def backward(ctx, full_grad):
        fsdp, flat = ctx.fsdp, ctx.flat
        fsdp._queue_post_backward()
        flat.full_for_backward = None  # this unit's backward is over: free its re-gathered weights
        return fsdp._reduce_gradient(flat, full_grad), None, None


class FullyShardedDataParallel(nn.Module):
    """Shard `module` over the processes of `process_group` (the default group if None).

    The module is changed in place: its parameters are replaced by flat shards registered
    on the units (as `fsdp_flat_matrices`, `fsdp_flat_vectors`, `fsdp_flat_frozen`), and
    the units gather what they need when they run, so calling the module itself or this
    wrapper is the same. `unit_types`: the module classes that become units (the rest is
    the root). `param_dtype`: the compute dtype (None: float32). With
    `sync_module_states`, rank 0's weights are broadcast first, so every process shards
    the same model (DDP does the same at construction).
    """

    def __init__(self, module: nn.Module, unit_types: tuple[type, ...] = (Block,),
                 param_dtype: torch.dtype | None = None, process_group=None, sync_module_states: bool = True):
        super().__init__()
        self.module = module
        self.group = process_group
        distributed = dist.is_available() and dist.is_initialized()
        self.world_size = dist.get_world_size(process_group) if distributed else 1
        self.rank = dist.get_rank(process_group) if distributed else 0
        self.src_rank = dist.get_global_rank(process_group, 0) if distributed and process_group is not None else 0
        self.compute_dtype = param_dtype or torch.float32
        self._state_dict_keys = list(module.state_dict().keys())  # the unwrapped names, in order
        self._sync_gradients = True
        self._summoned = 0
        self._post_backward_queued = False

        # ---- find the units; the root is everything outside them ------------------------
        blocks = [m for m in module.modules() if isinstance(m, unit_types) and m is not module]
        self.units = [_Unit(m, is_root=False) for m in blocks] + [_Unit(module, is_root=True)]
        self.root = self.units[-1]
        home = {}  # id(submodule) -> the unit it belongs to (absent: the root)
        for unit in self.units[:-1]:
            for sub in unit.module.modules():
                if id(sub) in home:
                    raise ValueError("FSDP: units may not be nested inside each other")
                home[id(sub)] = unit

        # ---- every parameter once, with every (module, attribute, name) that refers to it
        params, places = {}, {}
        for prefix, sub in module.named_modules(remove_duplicate=False):
            for attr, p in sub._parameters.items():
                if p is not None:
                    params[id(p)] = p
                    places.setdefault(id(p), []).append((sub, attr, f"{prefix}.{attr}" if prefix else attr))
        members = {id(unit): [] for unit in self.units}
        for key, where in places.items():
            units = {id(home.get(id(sub), self.root)) for sub, _, _ in where}
            if len(units) > 1:
                raise ValueError(f"FSDP: {[name for _, _, name in where]} are one tensor used in different units; "
                                 "tied parameters must sit in the same unit")
            members[units.pop()].append(key)

        # ---- flatten, pad and shard each unit's parameters, one flat buffer per kind ------
        for unit in self.units:
            for kind in ("matrices", "vectors", "frozen"):
                chosen = [(params[k], places[k]) for k in members[id(unit)] if _kind(params[k]) == kind]
                if chosen:
                    unit.flats.append(self._make_flat(unit, kind, chosen, sync_module_states))
        self._flat_of = {id(flat.shard): flat for unit in self.units for flat in unit.flats}

        # ---- make the units gather what they need when they run --------------------------
        for unit in self.units[:-1]:
            self._wrap_unit_forward(unit)
        for sub in module.modules():
            if id(sub) not in home:
                sub.register_forward_pre_hook(self._before_root_module)

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    # ------------------------------------------------------------------------------------
    # Building

    def _make_flat(self, unit: _Unit, kind: str, chosen: list, sync_module_states: bool) -> FlatParameter:
        """Copy the `chosen` parameters into one padded float32 buffer, keep this process's
        slice as a new Parameter of the unit, and take the originals out of their modules."""
        slots, offset = [], 0
        for p, where in chosen:
            names, owners = [name for _, _, name in where], [(sub, attr) for sub, attr, _ in where]
            slots.append(_Slot(names, owners, p.shape, offset))
            offset += p.numel()
        numel, device = offset, chosen[0][0].device
        shard_numel = -(-numel // self.world_size)  # ceil: the padding is at most N - 1 elements
        flat = torch.zeros(shard_numel * self.world_size, dtype=torch.float32, device=device)
        for slot, (p, _) in zip(slots, chosen):
            flat[slot.offset:slot.offset + slot.numel] = p.detach().reshape(-1)
        if sync_module_states and self.world_size > 1:
            dist.broadcast(flat, src=self.src_rank, group=self.group)
        shard = nn.Parameter(flat[self.rank * shard_numel:(self.rank + 1) * shard_numel].clone(),
                             requires_grad=kind != "frozen")
        shard.holds_matrices = kind == "matrices"  # read by plus.training.make_optimizer (weight decay)
        unit.module.register_parameter(f"fsdp_flat_{kind}", shard)
        result = FlatParameter(kind, slots, numel, shard_numel, shard_numel * self.world_size, shard,
                               placeholder=torch.empty(0, dtype=self.compute_dtype, device=device))
        for slot in slots:
            for owner, attr in slot.owners:
                owner._parameters.pop(attr, None)  # (a module listed twice is visited twice)
                setattr(owner, attr, result.placeholder)
        return result

    def _wrap_unit_forward(self, unit: _Unit) -> None:
        inner = unit.module.forward
        pack, unpack = partial(self._pack, unit), self._unpack

        def forward(*args, **kwargs):
            if self._summoned:
                self._check_inference()
                return inner(*args, **kwargs)
            self._unshard(unit)
            try:
                with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
                    return inner(*args, **kwargs)
            finally:
                self._reshard(unit)  # reshard after forward: only one block is whole at a time

        unit.module.forward = forward

    # ------------------------------------------------------------------------------------
    # Collectives

    def _all_gather(self, flat: FlatParameter, dtype: torch.dtype) -> torch.Tensor:
        """The whole padded flat buffer [N * S] in `dtype`, on every process."""
        shard = flat.shard.detach().to(dtype)
        full = torch.empty(flat.padded_numel, dtype=dtype, device=shard.device)
        if self.world_size == 1:
            full.copy_(shard)
        else:
            _all_gather_into_tensor(full, shard, group=self.group)
        return full

    def _reduce_gradient(self, flat: FlatParameter, full_grad: torch.Tensor) -> torch.Tensor | None:
        """The mean over processes of the unit's gradient, this process's slice of it (or
        None inside no_sync(), where the gradient is kept whole for a later micro-step)."""
        grad = full_grad.float()
        if not self._sync_gradients:
            flat.pending_grad = grad.clone() if flat.pending_grad is None else flat.pending_grad.add_(grad)
            return None
        if flat.pending_grad is not None:
            grad, flat.pending_grad = grad + flat.pending_grad, None
        shard_grad = torch.empty(flat.shard_numel, dtype=torch.float32, device=grad.device)
        if self.world_size == 1:
            shard_grad.copy_(grad)
        else:
            _reduce_scatter_tensor(shard_grad, grad.contiguous(), op=dist.ReduceOp.SUM, group=self.group)
        return shard_grad.div_(self.world_size)

    # ------------------------------------------------------------------------------------
    # Gather before use, free after

    def _unshard(self, unit: _Unit) -> None:
        """All-gather the unit's flat buffers and point its modules at views of them."""
        for flat in unit.flats:
            if torch.is_grad_enabled() and flat.shard.requires_grad:
                full = _GatherShard.apply(flat.shard, self, flat)  # differentiable: grads flow to the shard
            else:
                with torch.no_grad():
                    full = self._all_gather(flat, self.compute_dtype)
            flat.full, flat.full_version = full, flat.shard._version
            # One split into all the parameters: its backward concatenates their gradients
            # into the gradient of `full` in one go; the padding gets a zero gradient.
            pieces = torch.split(full, [slot.numel for slot in flat.slots] + [flat.padded_numel - flat.numel])
            for slot, piece in zip(flat.slots, pieces):
                view = piece.view(slot.shape)
                for owner, attr in slot.owners:
                    setattr(owner, attr, view)

    def _reshard(self, unit: _Unit) -> None:
        """Point the unit's modules back at placeholders; the gathered buffer is freed."""
        for flat in unit.flats:
            flat.full = None
            for slot in flat.slots:
                for owner, attr in slot.owners:
                    setattr(owner, attr, flat.placeholder)

    def _before_root_module(self, module, args) -> None:
        """Forward pre-hook of every module of the root: gather the root's parameters,
        unless this forward can reuse the gathered ones: still current (the optimizer has
        not changed the shards since) and differentiable if gradients are wanted."""
        if self._summoned:
            self._check_inference()
            return
        flats = self.root.flats
        gathered = all(flat.full is not None for flat in flats)
        current = gathered and all(flat.full_version == flat.shard._version for flat in flats)
        grad_ok = not torch.is_grad_enabled() or all(flat.full.requires_grad or not flat.shard.requires_grad
                                                     for flat in flats if flat.full is not None)
        if not (gathered and current and grad_ok):
            self._unshard(self.root)

    # ------------------------------------------------------------------------------------
    # Backward: re-gather, then free

    def _pack(self, unit: _Unit, tensor: torch.Tensor):
        """Saved-tensor pack hook while `unit` runs: a view of a gathered buffer is saved
        as a note, so that freeing the buffer after the forward really frees it."""
        if tensor.layout is torch.strided and tensor.numel():
            ptr = tensor.untyped_storage().data_ptr()
            for flat in unit.flats:
                if flat.full is not None and ptr == flat.full.untyped_storage().data_ptr():
                    return _SavedParameter(flat, tensor.shape, tensor.stride(), tensor.storage_offset())
        return tensor

    def _unpack(self, saved):
        """Saved-tensor unpack hook in the backward: rebuild the view from a re-gathered buffer."""
        if not isinstance(saved, _SavedParameter):
            return saved
        flat = saved.flat
        if flat.full_for_backward is None:
            self._queue_post_backward()
            with torch.no_grad():
                flat.full_for_backward = self._all_gather(flat, self.compute_dtype)
        return flat.full_for_backward.as_strided(saved.shape, saved.stride, saved.offset)

    def _queue_post_backward(self) -> None:
        if not self._post_backward_queued:
            self._post_backward_queued = True
            torch.autograd.Variable._execution_engine.queue_callback(self._post_backward)

    def _post_backward(self) -> None:
        """Runs when the backward pass is over: free what is still gathered (the root,
        and any frozen unit whose weights were re-gathered to pass gradients through)."""
        self._post_backward_queued = False
        for unit in self.units:
            for flat in unit.flats:
                flat.full_for_backward = None
        if not self._summoned:
            self._reshard(self.root)

    # ------------------------------------------------------------------------------------
    # The public API

    @contextmanager
    def no_sync(self):
        """Backward passes inside keep each unit's gradient unreduced and local; the next
        backward outside reduce-scatters the sum (gradient accumulation, as DDP's no_sync)."""
        previous, self._sync_gradients = self._sync_gradients, False
        try:
            yield
        finally:
            self._sync_gradients = previous

    @torch.no_grad()
    def clip_grad_norm_(self, max_norm: float) -> torch.Tensor:
        """Scale the shard gradients so the norm of the *whole* gradient is at most
        max_norm; returns that norm before clipping (as torch.nn.utils.clip_grad_norm_)."""
        grads = [flat.shard.grad for unit in self.units for flat in unit.flats if flat.shard.grad is not None]
        device = self.root.flats[0].shard.device if self.root.flats else torch.device("cpu")
        squares = torch.zeros((), dtype=torch.float32, device=device)
        for g in grads:
            squares += g.float().square().sum()  # the padding's gradient is 0: it adds nothing
        if self.world_size > 1:
            dist.all_reduce(squares, op=dist.ReduceOp.SUM, group=self.group)
        total = squares.sqrt()
        scale = (max_norm / (total + 1e-6)).clamp(max=1.0)  # the same rule as torch's clip_grad_norm_
        for g in grads:
            g.mul_(scale.to(g.dtype))
        return total

    @contextmanager
    def summon_full_params(self):
        """Gather every unit and keep it gathered inside the block: forwards there make no
        collectives, so processes may run different numbers of them. Inference only."""
        if not self._summoned:
            with torch.no_grad():
                for unit in self.units:
                    self._unshard(unit)
        self._summoned += 1
        try:
            yield
        finally:
            self._summoned -= 1
            if not self._summoned:
                for unit in self.units:
                    self._reshard(unit)

    def _check_inference(self) -> None:
        if torch.is_grad_enabled() and any(flat.shard.requires_grad for unit in self.units for flat in unit.flats):
            raise RuntimeError("FSDP: inside summon_full_params() the weights are detached copies and gradients "
                               "would not reach the shards; run training forwards outside it (or under no_grad)")

    @torch.no_grad()
    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """On rank 0: every parameter and buffer, unsharded, float32 parameters, on the CPU,
        under the unwrapped module's state_dict names (tied names share one tensor). On
        the other ranks: {}. Every process must call it (it all-gathers unit by unit, so
        at most one unit is whole on the accelerator at a time)."""
        tensors = {}
        for unit in self.units:
            for flat in unit.flats:
                full = self._all_gather(flat, torch.float32)
                if self.rank == 0:
                    full = full[:flat.numel].cpu()
                    for slot in flat.slots:
                        value = full[slot.offset:slot.offset + slot.numel].view(slot.shape).clone()
                        for name in slot.names:
                            tensors[name] = value
                del full
        if self.rank != 0:
            return {}
        for name in self._state_dict_keys:
            if name not in tensors:  # a buffer (e.g. the reward normalization): never sharded
                tensors[name] = self.module.get_buffer(name).detach().cpu().clone()
        return {name: tensors[name] for name in self._state_dict_keys}

    @torch.no_grad()
    def load_full_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load unsharded weights (e.g. a checkpoint's model.safetensors, where a tied name
        may be missing): every process reads them all and keeps its slice."""
        slots = [slot for unit in self.units for flat in unit.flats for slot in flat.slots]
        param_names = {name for slot in slots for name in slot.names}
        buffer_names = [name for name in self._state_dict_keys if name not in param_names]
        missing = [slot.names[0] for slot in slots if not any(n in state_dict for n in slot.names)]
        missing += [name for name in buffer_names if name not in state_dict]
        unexpected = sorted(set(state_dict) - set(self._state_dict_keys))
        if missing or unexpected:
            raise ValueError(f"FSDP: the state dict does not fit the model: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}")
        for unit in self.units:
            for flat in unit.flats:
                full = torch.zeros(flat.padded_numel, dtype=torch.float32, device=flat.shard.device)
                for slot in flat.slots:
                    value = next(state_dict[n] for n in slot.names if n in state_dict)
                    if value.shape != slot.shape:
                        raise ValueError(f"FSDP: {slot.names[0]} has shape {tuple(value.shape)} in the state dict, "
                                         f"{tuple(slot.shape)} in the model")
                    full[slot.offset:slot.offset + slot.numel] = value.reshape(-1)
                flat.shard.copy_(full[self.rank * flat.shard_numel:(self.rank + 1) * flat.shard_numel])
            self._reshard(unit)
        for name in buffer_names:
            self.module.get_buffer(name).copy_(state_dict[name])

    def optimizer_state_dict(self, optimizer: torch.optim.Optimizer) -> dict | None:
        """On rank 0: every process's optimizer state (each over its own shards), the world
        size and the size of each flat buffer; None elsewhere. Every process must call it."""
        numels = self._flat_numels(optimizer)
        state = _to_cpu(optimizer.state_dict())
        if self.world_size == 1:
            shards = [state]
        else:
            shards = [None] * self.world_size if self.rank == 0 else None
            dist.gather_object(state, shards, dst=self.src_rank, group=self.group)
        if self.rank != 0:
            return None
        return {"format": FORMAT, "world_size": self.world_size, "numels": numels, "shards": shards}

    def load_optimizer_state_dict(self, optimizer: torch.optim.Optimizer, saved: dict) -> None:
        """Resume from `optimizer_state_dict()`'s output: exactly, on the same number of
        processes; on another, after re-cutting each moment tensor for this world."""
        if not isinstance(saved, dict) or saved.get("format") != FORMAT:
            raise ValueError("the optimizer state was not saved by FSDP (it was saved with --strategy ddp or by a "
                             "single process); resume it with the strategy that saved it")
        numels = self._flat_numels(optimizer)
        if saved["numels"] != numels:
            raise ValueError(f"the FSDP optimizer state holds flat buffers of sizes {saved['numels'][:6]}..., this "
                             f"model {numels[:6]}...: it was saved for a different model")
        if saved["world_size"] == self.world_size:
            optimizer.load_state_dict(saved["shards"][self.rank])
            return
        old_world, old_shards = saved["world_size"], saved["shards"]
        state = {}
        for index, numel in enumerate(numels):
            per_rank = [shard["state"].get(index) for shard in old_shards]
            if per_rank[0] is None:
                continue
            old_shard_numel = -(-numel // old_world)
            entry = {}
            for key, value in per_rank[0].items():
                if torch.is_tensor(value) and value.dim() == 1 and value.numel() == old_shard_numel:
                    whole = torch.cat([rank_state[key] for rank_state in per_rank])[:numel]  # old padding dropped
                    entry[key] = self._my_slice(whole, numel)
                else:
                    entry[key] = value  # the step count: the same on every process
            state[index] = entry
        optimizer.load_state_dict({"state": state, "param_groups": old_shards[0]["param_groups"]})

    def _my_slice(self, whole: torch.Tensor, numel: int) -> torch.Tensor:
        shard_numel = -(-numel // self.world_size)
        padded = torch.zeros(shard_numel * self.world_size, dtype=whole.dtype)
        padded[:numel] = whole
        return padded[self.rank * shard_numel:(self.rank + 1) * shard_numel].clone()

    def _flat_numels(self, optimizer: torch.optim.Optimizer) -> list[int]:
        """The real size of the flat buffer behind each optimizer parameter, in order."""
        params = [p for group in optimizer.param_groups for p in group["params"]]
        strangers = [i for i, p in enumerate(params) if id(p) not in self._flat_of]
        if strangers:
            raise ValueError("FSDP: the optimizer holds parameters that are not this model's shards; build it "
                             "after wrapping, from module.parameters()")
        return [self._flat_of[id(p)].numel for p in params]


FSDP = FullyShardedDataParallel


def _kind(p: nn.Parameter) -> str:
    if not p.requires_grad:
        return "frozen"
    return "matrices" if p.dim() >= 2 else "vectors"


def _to_cpu(obj):
    if torch.is_tensor(obj):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    return obj
