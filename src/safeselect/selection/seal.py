"""SEAL (Shen et al., ICLR 2025): a bilevel data selector, one logit per task row.

What it computes (METHODS.md section 2). The selector omega has one fp32 logit per
task row and gives weights w = act(omega) that start at 1. Each iteration draws a
task batch B and a safe batch S, then, from the values at the start of the
iteration:

* model step on   lambda * mean_S l_s(theta) + (1 - lambda) * mean_B w_i l_i(theta)
  (weights detached, lambda = 1 / (1 + gamma), gamma from the schedule);
* selector step on  mean_B w_i(omega) * c_i  with c_i detached:
  Algorithm 2 (``memory_efficient``): c_i = l_i(theta);
  Algorithm 1 (``auxiliary``): c_i = l_i(theta) - l_i(theta_hat), where theta_hat
  (a second LoRA adapter on the same frozen base, or a copy of the weights under
  full fine-tuning) first takes ``aux_steps`` steps on mean_B w_i l_i(theta_hat).
  theta_hat is updated before it is read, as in penalty-based bilevel gradient
  descent: L_ft(theta_hat, omega) estimates the value function v(omega), and the
  fresher estimate costs one extra forward pass of the batch.

After training, rows are ranked by their logit; the top ``selection.ratio`` of the
budget is kept and the pipeline fine-tunes on them with plain SFT. The logits are
saved (``selector.safetensors`` + ``selector.json`` with the row ids) so the final
SFT can be rerun from them with :func:`load_selection`.

Distributed (``accelerate launch``): the model goes through ``accelerator.prepare``
(DDP); every batch is split across processes; the selector logits (and theta_hat's
gradients) are fp32 on every process and their gradients are all-reduced before
the step, so every process holds identical logits.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from safeselect.config.schema import LoraConfig, SealConfig
from safeselect.core.io import read_json, write_json
from safeselect.core.rows import Row
from safeselect.errors import UserError, suggest
from safeselect.models import add_lora
from safeselect.registry import registry
from safeselect.selection import selector_cache
from safeselect.selection.base import Selection, SelectionContext, budget_mask
from safeselect.selection.schedules import gamma_at, mixing_weight
from safeselect.training.batching import in_order, length_chunks, length_grouped
from safeselect.training.checkpoint import Checkpointer
from safeselect.training.encode import collate, encode_rows
from safeselect.training.losses import per_row_loss
from safeselect.training.sft import autocast, frozen_weights_cast, make_accelerator

ACTIVATIONS = ("softmax", "sigmoid", "tanh", "relu")
AUX_ADAPTER = "seal_aux"
LOGITS_FILE = "selector.safetensors"
META_FILE = "selector.json"
SELECTOR_FILES = (LOGITS_FILE, META_FILE)

# --------------------------------------------------------------------------- the maths (pure, exact-tested)


def initial_logits(n: int, activation: str) -> Any:
    """fp32 logits at which every weight is exactly 1 (all rows start equal)."""
    import torch

    _check_activation(activation)
    # relu(1) = 1; the other three give 1 at logit 0.
    return torch.full((n,), 1.0 if activation == "relu" else 0.0, dtype=torch.float32)


def selector_weights(logits: Any, activation: str) -> Any:
    """w = act(omega), normalised so that the initial logits give w = 1.

    softmax: N * softmax (mean weight stays 1); sigmoid: 2 * sigmoid, in (0, 2);
    tanh: 1 + tanh, in (0, 2) with twice sigmoid's slope at the start; relu: max(omega, 0),
    unbounded, and a row whose logit reaches 0 gets no gradient again (it stays dropped).
    """
    import torch

    _check_activation(activation)
    if activation == "softmax":
        return logits.numel() * torch.softmax(logits, dim=0)
    if activation == "sigmoid":
        return 2.0 * torch.sigmoid(logits)
    if activation == "tanh":
        return 1.0 + torch.tanh(logits)
    return torch.relu(logits)


def _check_activation(activation: str) -> None:
    if activation not in ACTIVATIONS:
        raise UserError(f"unknown selector activation '{activation}'{suggest(activation, ACTIVATIONS)}")


def model_step_coefficients(n_safe: int, task_weights: Any, lam: float,
                            n_task: int | None = None) -> tuple[Any, Any]:
    """Per-row loss coefficients of the model objective.

    sum_s a_s l_s + sum_i b_i l_i  ==  lam * mean_S l_s + (1 - lam) * mean_B w_i l_i,
    with a_s = lam / |S| and b_i = (1 - lam) * w_i / |B| (weights detached). ``n_task`` is |B|
    when ``task_weights`` are one process's share of the batch (default: all of it).
    """
    import torch

    w = task_weights.detach().float()
    a = torch.full((n_safe,), lam / max(n_safe, 1), dtype=torch.float32, device=w.device)
    b = (1.0 - lam) * w / max(n_task if n_task is not None else w.numel(), 1)
    return a, b


def model_objective(safe_losses: Any, task_losses: Any, task_weights: Any, lam: float) -> Any:
    """lam * mean_S l_s + (1 - lam) * mean_B w_i l_i with the weights detached."""
    a, b = model_step_coefficients(safe_losses.numel(), task_weights, lam)
    return (a * safe_losses).sum() + (b * task_losses).sum()


def selector_costs(task_losses: Any, aux_losses: Any | None = None) -> Any:
    """c_i (detached): l_i(theta) for Algorithm 2, l_i(theta) - l_i(theta_hat) for Algorithm 1."""
    c = task_losses.detach().float()
    return c if aux_losses is None else c - aux_losses.detach().float()


def selector_objective(logits: Any, batch_index: Any, costs: Any, activation: str,
                       batch_size: int | None = None) -> Any:
    """mean_{i in B} w_i(omega) c_i, differentiable in the logits only.

    ``batch_size`` is |B| when ``batch_index`` is one process's share of a batch
    split across processes (the shares' objectives then sum to the batch's).
    For softmax and a full batch the gradient is sigma_j (c_j - sum_i sigma_i c_i);
    for a batch B of N rows it is (N/|B|) sigma_j (c_j [j in B] - sum_{i in B} sigma_i c_i).
    """
    w = selector_weights(logits, activation)[batch_index]
    denom = batch_size if batch_size is not None else max(len(batch_index), 1)
    return (w * costs.detach()).sum() / denom


# --------------------------------------------------------------------------- the training loop


@dataclass
class SelectorRun:
    """What selector training produced, in the order of the task rows it was given."""

    row_ids: list[str]
    logits: np.ndarray  # float32, one per task row
    weights: np.ndarray  # act(logits)
    history: list[dict[str, Any]] = field(default_factory=list)  # one dict per epoch
    epoch_s: list[float] = field(default_factory=list)
    setup_s: float = 0.0
    peak_gpu_memory_mb: float | None = None
    main_process: bool = True
    world_size: int = 1


LossFn = Callable[[Any, dict[str, Any]], Any]


class SealTrainer:
    """The two players (model, selector logits), Algorithm 1's theta_hat, and their optimisers.

    ``model`` is the bare causal LM (no adapter yet); LoRA is added here from
    ``lora_cfg``. ``loss_fn(model, batch) -> Tensor[B]`` is each row's mean response NLL
    (:func:`safeselect.training.losses.per_row_loss` by default; tests pass others).
    """

    def __init__(self, model: Any, tok: Any, task: list[Row], safe: list[Row], seal: SealConfig, *,
                 lora_cfg: LoraConfig, max_length: int, seed: int = 0, max_grad_norm: float = 1.0,
                 weight_decay: float = 0.0, accelerator: Any = None, loss_fn: LossFn | None = None,
                 group_by_length: bool = False, mixed_precision: str = "no") -> None:
        import torch

        if not task:
            raise UserError("seal: the task set is empty")
        if not safe:
            raise UserError("seal: the safety reference set (D_safe) is empty; check data.safety_ref")
        _check_activation(seal.activation)
        betas = list(seal.selector_betas)
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise UserError(f"selection.seal.selector_betas={betas}: give two numbers in [0, 1)")
        self.seal, self.seed, self.max_grad_norm = seal, seed, max_grad_norm
        self.group_by_length = group_by_length
        self.mixed_precision = mixed_precision  # finetune.mixed_precision: the model's passes; the selector stays fp32
        self.acc = accelerator or make_accelerator()
        self.world = self.acc.num_processes
        self.rank = self.acc.process_index
        self.batch_size = seal.batch_size
        if self.world > 1 and self.batch_size % self.world:
            raise UserError(f"selection.seal.batch_size={self.batch_size} must be a multiple of the "
                            f"{self.world} processes")
        self.micro = max(1, min(seal.micro_batch_size, self.batch_size))
        self.loss_fn = loss_fn or per_row_loss
        self.pad_id = tok.pad_token_id
        self.task_rows, self.safe_rows = task, safe
        self.task_items = encode_rows(tok, task, max_length)
        self.safe_items = encode_rows(tok, safe, max_length)

        # Same seed on every process: identical LoRA init (DDP also broadcasts rank 0's weights).
        torch.manual_seed(seed)
        model = add_lora(model, lora_cfg)
        self.lora = bool(lora_cfg.enabled)
        self.auxiliary = seal.algorithm == "auxiliary"
        self.aux_model: Any = None
        aux_params: list[Any] = []
        if self.auxiliary:
            if self.lora:
                # theta_hat: a second adapter on the same frozen base, starting at theta's values.
                model.add_adapter(AUX_ADAPTER, copy.deepcopy(model.peft_config["default"]))
                _copy_adapter(model, "default", AUX_ADAPTER)
                model.set_adapter("default")  # theta trainable, theta_hat frozen while DDP registers params
                aux_params = [p for n, p in model.named_parameters() if f".{AUX_ADAPTER}." in n]
            else:
                # Full fine-tuning: theta_hat is a second copy of the trainable weights.
                self.aux_model = copy.deepcopy(model)
                aux_params = list(self.aux_model.parameters())
        self.main_params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(self.main_params, lr=seal.lr, weight_decay=weight_decay)
        if self.auxiliary:
            aux_opt = torch.optim.AdamW(aux_params, lr=seal.lr, weight_decay=weight_decay)
            self.model, self.opt, self.aux_opt = self.acc.prepare(model, opt, aux_opt)
        else:
            self.model, self.opt = self.acc.prepare(model, opt)
            self.aux_opt = None
        self.core = self.acc.unwrap_model(self.model)  # the peft / HF module under any DDP wrapper
        if self.aux_model is not None:
            # Not DDP-wrapped: its gradients are all-reduced by hand, like the selector's.
            self.aux_model.to(self.acc.device)
            self.aux_model.train()
        self.aux_params = aux_params
        self.model.train()
        self.logits = initial_logits(len(task), seal.activation).to(self.acc.device).requires_grad_(True)
        self.sel_opt = torch.optim.Adam([self.logits], lr=seal.selector_lr, betas=tuple(seal.selector_betas))
        self._safe_rng = np.random.default_rng([seed, 1])
        self._safe_queue: list[int] = []

    # ------------------------------------------------------------------ batches

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        """Task-row positions of each iteration of ``epoch`` (identical on every process).

        Every row once per epoch in a seeded order; with several processes the order
        is padded (wrapping around, as DistributedSampler does) to a multiple of the
        process count so that every process gets a share of every batch.
        """
        perm = np.random.default_rng([self.seed, 0, epoch]).permutation(len(self.task_rows))
        pad = (-len(perm)) % self.world
        if pad:
            perm = np.concatenate([perm, perm[:pad]])
        if self.group_by_length:  # finetune.group_by_length: the same grouping as the plain SFT's batches
            rng = np.random.default_rng([self.seed, 2, epoch])
            lengths = [len(it["input_ids"]) for it in self.task_items]
            return [np.asarray(b) for b in length_grouped(perm.tolist(), lengths, self.batch_size,
                                                          lambda k: rng.permutation(k).tolist())]
        return [perm[s:s + self.batch_size] for s in range(0, len(perm), self.batch_size)]

    def safe_batch(self, size: int) -> np.ndarray:
        """Next ``size`` safe rows from a stream of seeded permutations (D_safe is cycled, not truncated)."""
        while len(self._safe_queue) < size:
            self._safe_queue.extend(self._safe_rng.permutation(len(self.safe_rows)).tolist())
        out, self._safe_queue = self._safe_queue[:size], self._safe_queue[size:]
        return np.asarray(out, dtype=np.int64)

    def weights(self) -> Any:
        return selector_weights(self.logits.detach(), self.seal.activation)

    # ------------------------------------------------------------------ one iteration

    def iteration(self, task_idx: np.ndarray, safe_idx: np.ndarray, gamma: float) -> dict[str, Any]:
        """One SEAL iteration on the task rows ``task_idx`` and safe rows ``safe_idx`` (whole batch, all processes).

        Returns this process's share: ``local_task`` (positions), ``task_losses`` l_i(theta) at the
        start, ``aux_losses`` l_i(theta_hat) after its steps (Algorithm 1), ``costs``, ``safe_losses``.
        """
        import torch

        lam = mixing_weight(gamma)
        n_b, n_s = len(task_idx), len(safe_idx)
        local_task = task_idx[self.rank::self.world]
        local_safe = safe_idx[self.rank::self.world]
        w_start = self.weights()  # from omega at the start: both players read these values
        a, b = model_step_coefficients(n_s, w_start[torch.as_tensor(local_task, device=w_start.device)], lam, n_b)
        # DDP averages gradients over processes; scaling each share by the process count makes the
        # average equal the gradient of the whole batch's objective.
        a, b = a[: len(local_safe)] * self.world, b * self.world

        # ---- model step (Algorithm 1 and 2): safe rows and task rows in shared micro-batches
        self.opt.zero_grad(set_to_none=True)
        if lam < 1.0:
            items = [self.safe_items[i] for i in local_safe] + [self.task_items[i] for i in local_task]
            losses = self._backward_losses(self.model, items, torch.cat([a, b]), sync=True)
            safe_losses, task_losses = losses[: len(local_safe)], losses[len(local_safe):]
        else:
            # gamma = 0: the task term has zero weight, so the task losses need no graph.
            safe_losses = self._backward_losses(self.model, [self.safe_items[i] for i in local_safe], a, sync=True)
            task_losses = self._losses(self.core, [self.task_items[i] for i in local_task])
        if self.max_grad_norm > 0:
            self.acc.clip_grad_norm_(self.main_params, self.max_grad_norm)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)

        # ---- Algorithm 1: theta_hat steps on the weighted task loss, then is read
        aux_losses = None
        if self.auxiliary:
            aux_coef = (w_start[torch.as_tensor(local_task, device=w_start.device)] / n_b).float()
            with self._aux_active() as aux:
                for _ in range(self.seal.aux_steps):
                    self.aux_opt.zero_grad(set_to_none=True)
                    self._backward_losses(aux, [self.task_items[i] for i in local_task], aux_coef, sync=False)
                    self._all_reduce_grads(self.aux_params)
                    if self.max_grad_norm > 0:
                        torch.nn.utils.clip_grad_norm_(self.aux_params, self.max_grad_norm)
                    self.aux_opt.step()
                self.aux_opt.zero_grad(set_to_none=True)
                aux_losses = self._losses(aux, [self.task_items[i] for i in local_task])

        # ---- selector step from omega at the start and the detached costs
        costs = selector_costs(task_losses, aux_losses)
        self.sel_opt.zero_grad(set_to_none=True)
        obj = selector_objective(self.logits, torch.as_tensor(local_task, device=self.logits.device),
                                 costs.to(self.logits.device), self.seal.activation, batch_size=n_b)
        obj.backward()
        if self.world > 1:
            self.logits.grad.copy_(self.acc.reduce(self.logits.grad, reduction="sum"))
        self.sel_opt.step()
        return {"local_task": local_task, "task_losses": task_losses, "aux_losses": aux_losses,
                "costs": costs, "safe_losses": safe_losses, "lambda": lam}

    def _backward_losses(self, module: Any, items: list[dict], coef: Any, sync: bool) -> Any:
        """Accumulate grad of sum_j coef_j l_j over micro-batches; return the detached l_j.

        With ``sync`` (the DDP-wrapped model) only the last micro-batch all-reduces.
        """
        import contextlib

        out = []
        chunks = length_chunks(items, self.micro)
        for k, idx in enumerate(chunks):
            batch = {key: v.to(self.acc.device) for key, v in collate([items[i] for i in idx], self.pad_id).items()}
            last = k == len(chunks) - 1
            ctx = self.acc.no_sync(module) if (sync and not last) else contextlib.nullcontext()
            with ctx:
                with autocast(self.acc.device.type, self.mixed_precision):
                    losses = self.loss_fn(module, batch)
                self.acc.backward((losses.float() * coef[idx].to(losses.device)).sum())
            out.append(losses.detach().float())
        return in_order(out, chunks)

    def _losses(self, module: Any, items: list[dict]) -> Any:
        import torch

        out = []
        chunks = length_chunks(items, self.micro)
        with torch.no_grad(), autocast(self.acc.device.type, self.mixed_precision):
            for idx in chunks:
                batch = {k: v.to(self.acc.device) for k, v in collate([items[i] for i in idx], self.pad_id).items()}
                out.append(self.loss_fn(module, batch).float())
        return in_order(out, chunks)

    def _all_reduce_grads(self, params: list[Any]) -> None:
        """Sum theta_hat's gradients over processes (each share is already divided by |B|)."""
        if self.world == 1:
            return
        import torch

        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = self.acc.reduce(torch.cat([g.reshape(-1) for g in grads]), reduction="sum")
        off = 0
        for p, g in zip(params, grads, strict=True):
            n = g.numel()
            p.grad = flat[off:off + n].view_as(p).clone()
            off += n

    def _aux_active(self) -> Any:
        """Context manager yielding the module that computes l(theta_hat)."""
        import contextlib

        trainer = self

        @contextlib.contextmanager
        def _ctx():
            if trainer.aux_model is not None:
                yield trainer.aux_model
                return
            # Under the unwrapped peft model, so that DDP's hooks on theta's parameters never fire.
            trainer.core.set_adapter(AUX_ADAPTER)
            try:
                yield trainer.core
            finally:
                trainer.core.set_adapter("default")

        return _ctx()

    # ------------------------------------------------------------------ the epochs

    # ------------------------------------------------------------------ resumable state

    def state(self, epoch: int, step: int, sums: dict[str, float], gammas: list[float],
              history: list[dict[str, Any]], epoch_s: list[float]) -> tuple[dict[str, Any], dict[str, Any]]:
        """The loop's position and the selector's own state (accelerate saves the model and its optimisers)."""
        sel_state = self.sel_opt.state_dict()["state"].get(0, {})
        tensors = {"logits": self.logits.detach()}
        tensors.update({f"sel_opt.{k}": v for k, v in sel_state.items()})
        if self.aux_model is not None:
            tensors.update({f"aux.{k}": v for k, v in self.aux_model.state_dict().items()})
        return {"epoch": epoch, "step_in_epoch": step, "sums": sums, "gammas": gammas, "history": history,
                "epoch_s": epoch_s, "safe_rng": self._safe_rng.bit_generator.state,
                "safe_queue": self._safe_queue}, tensors

    def restore(self, state: dict[str, Any], tensors: dict[str, Any]) -> None:
        import torch

        with torch.no_grad():
            self.logits.copy_(tensors["logits"].to(self.logits.device))
        opt_state = {k.split(".", 1)[1]: v.to(self.logits.device) for k, v in tensors.items() if k.startswith("sel_opt.")}
        if opt_state:
            sd = self.sel_opt.state_dict()
            sd["state"] = {0: opt_state}
            self.sel_opt.load_state_dict(sd)
        if self.aux_model is not None:
            self.aux_model.load_state_dict({k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("aux.")})
        self._safe_rng.bit_generator.state = state["safe_rng"]
        self._safe_queue = list(state["safe_queue"])

    def _total(self, sums: dict[str, float]) -> dict[str, float]:
        """Sums over processes (each process summed its own share of every batch)."""
        if self.world == 1:
            return sums
        import torch

        keys = list(sums)
        tot = self.acc.reduce(torch.tensor([float(sums[k]) for k in keys], dtype=torch.float64,
                                           device=self.acc.device), reduction="sum")
        return dict(zip(keys, tot.tolist(), strict=True))

    def checkpoint_key(self) -> str:
        import hashlib
        import json

        payload = {"seal": asdict(self.seal), "seed": self.seed, "world": self.world,
                   "max_grad_norm": self.max_grad_norm,
                   # only when set, so checkpoints written before the key existed keep theirs
                   **({"mixed_precision": self.mixed_precision} if self.mixed_precision != "no" else {}),
                   "task": [(r.row_id, r.prompt, r.response) for r in self.task_rows],
                   "safe": [(r.row_id, r.prompt, r.response) for r in self.safe_rows]}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]

    # ------------------------------------------------------------------ the epochs

    def fit(self, show_progress: bool = True, checkpoint_dir: Any = None, save_every: int = 0,
            tracker: Any = None) -> SelectorRun:
        """All epochs; with ``checkpoint_dir`` + ``save_every`` the state is saved every N iterations and at
        the end, and a call that finds a checkpoint of the same settings resumes from it."""
        # The frozen base as bf16 copies under bf16 autocast (the same values, no cast at every pass).
        with frozen_weights_cast(self.core, self.mixed_precision, self.acc.distributed_type):
            return self._fit(show_progress, checkpoint_dir, save_every, tracker)

    def _fit(self, show_progress: bool, checkpoint_dir: Any, save_every: int, tracker: Any) -> SelectorRun:
        import torch
        from tqdm.auto import tqdm

        seal = self.seal
        steps = math.ceil((len(self.task_rows) + (-len(self.task_rows)) % self.world) / self.batch_size)
        labels = [r.harmful for r in self.task_rows]
        known = all(h is not None for h in labels)
        harm = np.asarray([bool(h) for h in labels]) if known else None
        history: list[dict[str, Any]] = []
        epoch_s: list[float] = []
        ckpt = Checkpointer(checkpoint_dir, save_every, self.checkpoint_key(), self.acc)
        first_epoch, first_step, resumed = 0, 0, None
        restored = ckpt.load()
        if restored is not None:
            resumed, tensors = restored
            self.restore(resumed, tensors)
            first_epoch, first_step = resumed["epoch"], resumed["step_in_epoch"]
            history, epoch_s = list(resumed["history"]), list(resumed["epoch_s"])
            if tracker is not None:
                tracker.rewind("seal", first_epoch * steps + first_step)
        bar = tqdm(total=seal.epochs * steps, initial=first_epoch * steps + first_step,
                   desc=f"seal selector ({seal.algorithm})",
                   disable=not (show_progress and self.acc.is_main_process), leave=False)
        for epoch in range(first_epoch, seal.epochs):
            t0 = time.perf_counter()
            sums = {"safe_loss": 0.0, "task_loss": 0.0, "cost": 0.0, "n_safe": 0, "n_task": 0}
            gammas = []
            if resumed is not None and epoch == first_epoch and first_step > 0:
                # The saved sums are totals over processes: the main process carries them on.
                gammas = list(resumed["gammas"])
                sums = dict(resumed["sums"]) if self.rank == 0 else sums
            for step, task_idx in enumerate(self.epoch_batches(epoch)):
                if epoch == first_epoch and step < first_step:
                    continue  # trained before the checkpoint
                gamma = gamma_at(seal.gamma, epoch, step, steps)
                gammas.append(gamma)
                out = self.iteration(task_idx, self.safe_batch(len(task_idx)), gamma)
                sums["safe_loss"] += float(out["safe_losses"].sum())
                sums["task_loss"] += float(out["task_losses"].sum())
                sums["cost"] += float(out["costs"].sum())
                sums["n_safe"] += len(out["safe_losses"])
                sums["n_task"] += len(out["task_losses"])
                bar.update(1)
                bar.set_postfix(gamma=f"{gamma:.3f}", safe=f"{float(out['safe_losses'].mean()):.3f}")
                done = epoch * steps + step + 1
                if tracker is not None:
                    tracker.log("seal", done, {"safe_loss": float(out["safe_losses"].mean()),
                                               "task_loss": float(out["task_losses"].mean()), "gamma": gamma})
                if ckpt.due(done) and step + 1 < steps:  # an epoch's last step is saved after its record
                    ckpt.save(done, *self.state(epoch, step + 1, self._total(sums), gammas, history, epoch_s))
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            epoch_s.append(time.perf_counter() - t0)
            sums = self._total(sums)
            w = self.weights().cpu().numpy()
            rec: dict[str, Any] = {
                "epoch": epoch, "gamma_start": gammas[0], "gamma_end": gammas[-1],
                "lambda_start": mixing_weight(gammas[0]), "lambda_end": mixing_weight(gammas[-1]),
                "mean_safe_loss": sums["safe_loss"] / max(sums["n_safe"], 1),
                "mean_task_loss": sums["task_loss"] / max(sums["n_task"], 1),
                "mean_cost": sums["cost"] / max(sums["n_task"], 1), "epoch_s": epoch_s[-1],
            }
            if harm is not None:
                rec["mean_weight_harmful"] = float(w[harm].mean()) if harm.any() else None
                rec["mean_weight_benign"] = float(w[~harm].mean()) if (~harm).any() else None
            history.append(rec)
            if ckpt.due((epoch + 1) * steps) or (ckpt.enabled and epoch + 1 == seal.epochs):
                ckpt.save((epoch + 1) * steps, *self.state(epoch + 1, 0, {}, [], history, epoch_s))
        bar.close()
        peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
        return SelectorRun(
            row_ids=[r.row_id for r in self.task_rows],
            logits=self.logits.detach().float().cpu().numpy().copy(),
            weights=self.weights().float().cpu().numpy().copy(),
            history=history, epoch_s=epoch_s, peak_gpu_memory_mb=peak,
            main_process=self.acc.is_main_process, world_size=self.world,
        )


def _copy_adapter(peft_model: Any, src: str, dst: str) -> None:
    """Set adapter ``dst``'s weights to adapter ``src``'s (theta_hat starts at theta)."""
    import torch

    params = dict(peft_model.named_parameters())
    with torch.no_grad():
        for name, p in params.items():
            if f".{dst}." in name:
                p.copy_(params[name.replace(f".{dst}.", f".{src}.")])


def train_selector(model: Any, tok: Any, task: list[Row], safe: list[Row], seal: SealConfig, *,
                   lora_cfg: LoraConfig, max_length: int, seed: int = 0, max_grad_norm: float = 1.0,
                   weight_decay: float = 0.0, accelerator: Any = None, loss_fn: LossFn | None = None,
                   show_progress: bool = True, checkpoint_dir: Any = None, save_every: int = 0,
                   tracker: Any = None, group_by_length: bool = False, mixed_precision: str = "no") -> SelectorRun:
    """Train SEAL's selector on ``task`` against ``safe`` with ``model`` (bare LM; LoRA added here)."""
    t0 = time.perf_counter()
    trainer = SealTrainer(model, tok, task, safe, seal, lora_cfg=lora_cfg, max_length=max_length, seed=seed,
                          max_grad_norm=max_grad_norm, weight_decay=weight_decay, accelerator=accelerator,
                          loss_fn=loss_fn, group_by_length=group_by_length, mixed_precision=mixed_precision)
    setup_s = time.perf_counter() - t0
    run = trainer.fit(show_progress=show_progress, checkpoint_dir=checkpoint_dir, save_every=save_every,
                      tracker=tracker)
    run.setup_s = setup_s
    return run


# --------------------------------------------------------------------------- the selector entry point and files


def select(ctx: SelectionContext) -> Selection:
    """Train the selector (with ``selection.seal.selector_model`` if set), save it, keep the top ratio.

    With ``selection.seal.logits_from`` the logits saved by an earlier run are reused instead.
    """

    seal = ctx.selection.seal
    ratio, budget = ctx.selection.ratio, ctx.selection.budget
    if seal.logits_from:  # the final SFT from a selector trained earlier: no selector training here
        sel = load_selection(seal.logits_from, ratio, budget, ctx.response_tokens,
                             row_ids=[r.row_id for r in ctx.task])
        sel.info["logits_from"] = str(seal.logits_from)
        return sel
    if ctx.load_model is None:
        raise UserError("seal needs a model to train its selector: run it through the pipeline")
    key = _cache_key(ctx) if seal.reuse else None
    with selector_cache.training_lock(key):  # parallel runs with the same key: one trains, the others reuse
        hit = selector_cache.cached(key, SELECTOR_FILES)
        if hit is not None:
            return _reused_selection(ctx, hit)
        run = _train(ctx, key)
    sel = _selection(run.row_ids, run.logits, seal.activation, ratio, budget, ctx.response_tokens)
    sel.info.update({
        "algorithm": seal.algorithm, "selector_model": seal.selector_model or ctx.value("model.name"),
        "selector_epoch_s": run.epoch_s, "selector_epoch_s_mean": float(np.mean(run.epoch_s)),
        "selector_setup_s": run.setup_s, "history": run.history,
        "peak_gpu_memory_mb": run.peak_gpu_memory_mb, "selector_file": str(Path(ctx.out_dir) / LOGITS_FILE),
    })
    return sel


def _reused_selection(ctx: SelectionContext, hit: Path) -> Selection:
    """The selection from a cached training (another ratio, or SEAL without SafeInstr, ran it before)."""
    selector_cache.copy_into(hit, Path(ctx.out_dir), SELECTOR_FILES)
    sel = load_selection(ctx.out_dir, ctx.selection.ratio, ctx.selection.budget, ctx.response_tokens,
                         row_ids=[r.row_id for r in ctx.task])
    meta = read_json(Path(ctx.out_dir) / META_FILE)
    sel.info.update({
        "selector_model": meta.get("selector_model"), "selector_reused": str(hit),
        # the reused training's own times (this run spent none on it; resources.selection_s says so)
        "selector_epoch_s": meta.get("epoch_s"), "selector_epoch_s_mean": float(np.mean(meta.get("epoch_s") or [0])),
        "selector_setup_s": meta.get("setup_s"), "history": meta.get("history"),
    })
    return sel


def _train(ctx: SelectionContext, key: str | None) -> SelectorRun:
    """Train the selector of ``ctx``, save it in the run folder and (one process) store it under ``key``."""
    seal = ctx.selection.seal
    model, tok = ctx.load_model(seal.selector_model)
    device = ctx.value("device")
    acc = make_accelerator(cpu=True if device == "cpu" else (False if device == "cuda" else None))
    # Clipping and weight decay follow the final fine-tune (finetune.*), as METHODS.md section 2 says.
    run = train_selector(model, tok, ctx.task, ctx.safety_ref, seal, lora_cfg=ctx.value("model.lora"),
                         max_length=ctx.value("model.max_length"), seed=ctx.value("seed"),
                         max_grad_norm=ctx.value("finetune.max_grad_norm"),
                         weight_decay=ctx.value("finetune.weight_decay"), accelerator=acc,
                         show_progress=ctx.show_progress, group_by_length=ctx.value("finetune.group_by_length"),
                         mixed_precision=ctx.value("finetune.mixed_precision"),
                         checkpoint_dir=ctx.checkpoint_dir / "seal" if ctx.checkpoint_dir else None,
                         save_every=ctx.checkpoint_every, tracker=ctx.tracker)
    del model
    if run.main_process:
        save_selector(ctx.out_dir, run, seal, model_name=ctx.value("model.name"), lora=ctx.value("model.lora"),
                      max_length=ctx.value("model.max_length"), seed=ctx.value("seed"))
        selector_cache.store(key if run.world_size == 1 else None, Path(ctx.out_dir), SELECTOR_FILES)
    return run


def _cache_key(ctx: SelectionContext) -> str | None:
    """The selector cache key of this context (None without a model identity, e.g. outside the pipeline)."""
    # Checked before model_id, whose aligned-model lookup waits at a barrier under a multi-process launch.
    if ctx.model_id is None or not selector_cache.single_process():
        return None
    seal = ctx.selection.seal
    shared = {k: ctx.value(k) for k in registry("selectors").entry("seal").shared}
    return selector_cache.selector_key(seal=seal, task=ctx.task, safety_ref=ctx.safety_ref,
                                       model_id=ctx.model_id(seal.selector_model), shared=shared,
                                       selection_seed=ctx.selection.seed)


def _selection(row_ids: list[str], logits: np.ndarray, activation: str, ratio: float, budget: str,
               tokens: list[int] | None) -> Selection:
    import torch

    weights = selector_weights(torch.as_tensor(logits, dtype=torch.float32), activation).numpy()
    kept = budget_mask(logits, ratio, budget, tokens)
    return Selection(list(row_ids), [float(x) for x in logits], kept.tolist(), [float(x) for x in weights],
                     info={"method": "seal"})


def save_selector(out_dir: str | Path, run: SelectorRun, seal: SealConfig, *, model_name: str, lora: LoraConfig,
                  max_length: int, seed: int) -> None:
    """``selector.safetensors`` (the logits) + ``selector.json`` (row ids in logit order, config, history)."""
    import torch
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{LOGITS_FILE}.tmp"
    save_file({"logits": torch.as_tensor(run.logits, dtype=torch.float32).contiguous()}, str(tmp))
    tmp.replace(out / LOGITS_FILE)
    write_json(out / META_FILE, {
        "method": "seal",
        "row_ids": run.row_ids,
        "activation": seal.activation,
        "algorithm": seal.algorithm,
        "seal": asdict(seal),
        "model": model_name,
        "selector_model": seal.selector_model or model_name,
        "lora": asdict(lora),
        "max_length": max_length,
        "seed": seed,
        "gamma_per_epoch": [[h["gamma_start"], h["gamma_end"]] for h in run.history],
        "lambda_per_epoch": [[h["lambda_start"], h["lambda_end"]] for h in run.history],
        "history": run.history,
        "epoch_s": run.epoch_s,
        "setup_s": run.setup_s,
        "world_size": run.world_size,
        "peak_gpu_memory_mb": run.peak_gpu_memory_mb,
    })


def load_selection(out_dir: str | Path, ratio: float, budget: str = "rows", tokens: list[int] | None = None,
                   row_ids: list[str] | None = None) -> Selection:
    """Rebuild a SEAL selection from saved logits, at any ratio / budget, without retraining.

    ``row_ids`` (optional) puts the rows in that order (or a subset of them): logits are
    matched by id, never by position, so filtered or shuffled task lists stay correct.
    ``tokens`` are the response token counts in the order of the returned rows.
    """
    from safetensors.torch import load_file

    out = Path(out_dir)
    if not (out / LOGITS_FILE).exists():
        raise UserError(f"no SEAL selector in {out} (expected {LOGITS_FILE} and {META_FILE})")
    meta = read_json(out / META_FILE)
    logits = load_file(str(out / LOGITS_FILE))["logits"].float().numpy()
    saved = [str(r) for r in meta["row_ids"]]
    if len(saved) != len(logits):
        raise UserError(f"{out / META_FILE}: {len(saved)} row ids for {len(logits)} logits")
    if row_ids is not None:
        pos = {rid: i for i, rid in enumerate(saved)}
        missing = [r for r in row_ids if r not in pos]
        if missing:
            raise UserError(f"{len(missing)} row id(s) have no SEAL logit in {out}, e.g. '{missing[0]}'")
        idx = np.asarray([pos[r] for r in row_ids], dtype=np.int64)
        saved, logits = list(row_ids), logits[idx]
    if tokens is not None and len(tokens) != len(saved):
        raise UserError(f"{len(tokens)} token counts for {len(saved)} rows")
    sel = _selection(saved, logits, meta["activation"], ratio, budget, tokens)
    sel.info.update({"algorithm": meta.get("algorithm"), "selector_file": str(out / LOGITS_FILE)})
    return sel
