"""The UDC search (the UDC paper's Alg. 2 and Sec. 4; docs/papers.md) and vanilla DNAS as a setting of it.

Per layer: a bitwidth and a nonzero-fraction decision; per width group (layers whose kept widths
must agree: a layer, the depthwise layer after it, the members of a residual chain): a width
decision; per skippable residual block: block vs identity. After a float pretraining (BN folded) the
search warms theta up with pi frozen at uniform, then learns pi and theta together on
L_task + lambda * L_E, where L_E = mean_s |E(z_s) - e*| / e* over S Monte-Carlo samples that share
one step (the batch is split into S groups). Afterwards the argmax configuration gamma(pi) is
checked exactly against the budget, finetuned in three stages and emitted as a candidate.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from core.budgets import searched_kind
from core.candidate import Candidate
from core.data import Dataset
from core.errors import UsageError
from search import cost
from search.decisions import DecisionSpace
from search.device import process_device
from search.flash_cost import WeightEncoder
from search.relaxation import exponential, linear, mixed_sample, projected_log_probabilities, ste_top_kappa
from search.settings import DNAS_SETTINGS, UDC_QUICK, merged_settings
from search.space import Add, GraphNet, SearchableLayer, make_supernet
from search.strategy.base import Strategy
from search.strategy.budget import (BudgetWarning, budget_limits, check_range, cost_range, repair_configuration,
                                    select_configuration, smallest_cost)
from search.strategy.emit import COST_KEYS, budget_meta, finish_candidate, recover, searched_candidate
from search.strategy.measured import (CALIBRATION_SEED, DeployedFigures, move_options, recalibrate, searched_budget,
                                      verify_measured)
from search.strategy.pretrain import pretrain_state
from search.strategy import recipe
from search.strategy.relaxed_cost import RelaxedCost
from search.strategy.uniform import MASK_INTERVAL, training_batches

class UDCSearch(Strategy):
    """UDC (or vanilla DNAS with ``vanilla=True``) under ``budgets`` (``core.budgets``; shorthands: ``budget_bytes``,
    a size bound, and ``macs``); measured budgets use the harness's providers (``search.strategy.measured``).

    ``run()`` pretrains (unless given ``pretrained``, a state from ``pretrain_state``), searches,
    checks the argmax configuration against the budget (repairing it loudly if it misses), finetunes
    it and returns the candidate; ``search()`` alone returns the searched supernet with the argmax
    selected. Inside a ``torch.distributed`` process group the S Monte-Carlo samples of each step
    are spread over the processes and the gradients averaged, so every process takes the same steps.
    """

    extra_defaults: dict = {}  # a strategy built on this one adds its own settings here

    def __init__(self, dataset: Dataset, budget_bytes: float | None = None, macs: int | None = None,
                 settings: dict | None = None, vanilla: bool = False, quiet: bool = False,
                 pretrained: dict[str, torch.Tensor] | None = None, budgets: dict[str, float] | None = None,
                 deployed_figures: DeployedFigures | None = None, weight_encoder: WeightEncoder | None = None):
        self.settings = merged_settings(settings, {**UDC_QUICK, **self.extra_defaults})
        if vanilla:
            self.settings.update(DNAS_SETTINGS)
        self.strategy = "dnas" if vanilla else "udc"
        self.dataset, self.quiet, self.pretrained = dataset, quiet, pretrained
        self.rank, self.world = 0, 1
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            self.rank, self.world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        if self.settings["samples"] % self.world:
            raise UsageError(f"samples={self.settings['samples']} must be a multiple of the {self.world} processes")
        self.device = process_device(self.settings["device"], self.rank)  # the network's; decisions stay on the CPU
        self.limits = budget_limits(budgets, budget_bytes, macs)
        self.deployed_figures = deployed_figures
        self.fixed = self._fixed_options(searched_kind(self.limits) == "macs")
        self.model = self._folded_supernet(pretrained=False)
        self.budget, self.flash_model = searched_budget(self.model, self.limits, self._calibration_supernet, dataset,
                                                        deployed_figures, weight_encoder, quiet)
        self.minimum, self.maximum = cost_range(self.model, self.budget)
        check_range(self.budget, self.minimum, self.maximum, self.settings["supernet"])
        self.timings: dict[str, float] = {}

    def _calibration_supernet(self) -> GraphNet:
        """The supernet at one fixed initialisation, whatever the search's seed, so its calibration compiles are
        found in the cache again."""
        with torch.random.fork_rng():
            torch.manual_seed(CALIBRATION_SEED)
            return self._folded_supernet(pretrained=False)

    # -- setup

    def _fixed_options(self, mac_budget: bool) -> dict[str, float]:
        """The options no decision searches, held by every layer throughout: a single bit option is that
        bitwidth (quantized to it, counted at it); under a MAC budget, which bits and sparsity do not
        change, 8 bits and dense unless ``mac_compression`` asks for them to be searched too."""
        s = self.settings
        fixed = {axis: s[key][0] for axis, key in (("bits", "bit_options"), ("nonzero", "nonzero_options"))
                 if len(s[key]) == 1}
        if mac_budget and not s["mac_compression"]:
            if 8 not in s["bit_options"]:
                raise UsageError(f"a MAC budget keeps weights at 8 bits and dense, but bit_options {s['bit_options']} "
                                 "has no 8; add it, or set mac_compression = true to search bits and sparsity")
            fixed = {"bits": 8, "nonzero": 1.0}
        return fixed

    def _folded_supernet(self, pretrained: bool) -> GraphNet:
        s = self.settings
        model = make_supernet(s["supernet"], self.dataset.input_shape, self.dataset.num_classes, batchnorm=False,
                              bit_options=s["bit_options"], nonzero_options=s["nonzero_options"],
                              width_options=s["width_options"])
        if not s["search_depth"]:
            model.blocks.clear()
        if pretrained:
            if self.pretrained is None:
                started = time.perf_counter()
                self.pretrained = pretrain_state(self.dataset, s, self.quiet or self.rank > 0)
                self.timings["pretrain_s"] = time.perf_counter() - started
            model.load_state_dict(self.pretrained)
        for layer in model.searchable_layers():
            layer.select(bits=self.fixed.get("bits"), nonzero=self.fixed.get("nonzero", 1.0))
        if pretrained and self.budget.kind == "flash":  # Vela's Flash of networks with these weights
            self.flash_model = recalibrate(self.budget, model, self.dataset, self.deployed_figures, self.quiet)
        return model

    def _build_decisions(self, model: GraphNet) -> None:
        self.width_keys = model.width_keys()
        decisions = DecisionSpace.of(model, single_options=False, without=tuple(self.fixed)).relaxed()
        self.decisions = decisions
        self.block_of = model.block_of()
        self.sampling_groups: dict[tuple[int, int], list[str]] = {}
        for key, decision in decisions.items():
            options = len(decision.options)
            self.sampling_groups.setdefault((options, self._kappa(key, options)), []).append(key)

    def _kappa(self, key: str, options: int) -> int:
        kind = key.rsplit(":", 1)[1]
        kappa = self.settings.get(f"kappa_{kind}")
        return options if kappa is None else kappa

    # -- one step

    def sample(self, progress: float, frozen: bool, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """z per decision, [S', K] for this process's S' = S / processes samples: mixed z-hat / z-tilde
        (z-tilde w.p. vartheta), STE top-kappa forward."""
        s = self.settings
        tau = exponential(*s["tau"], progress)
        vartheta = linear(*s["vartheta"], progress) if s["rejection"] and not frozen else 0.0
        samples = {}
        for (_, kappa), keys in self.sampling_groups.items():  # one batched draw per (K, kappa)
            log_pi = torch.stack([self.decisions[key].logits for key in keys])
            z = mixed_sample(log_pi.detach() if frozen else log_pi, tau, s["samples"] // self.world, vartheta, generator)
            z = ste_top_kappa(z, kappa)
            samples.update(zip(keys, z.unbind(1)))  # one autograd node for the group, not one per key
        return samples

    def relax(self, model: GraphNet, z: dict[str, torch.Tensor]) -> None:
        choices, gates = {}, {}
        for name, layer in model.layers.items():
            if isinstance(layer, SearchableLayer):
                choice = {axis: z[f"{name}:{axis}"] for axis in ("bits", "nonzero") if f"{name}:{axis}" in z}
                width_key = f"{self.width_keys[name]}:width"
                if width_key in z:
                    choice["width"] = z[width_key]
                choices[name] = choice
            elif isinstance(layer, Add) and f"{name}:op" in z:
                gates[name] = self.decisions[f"{name}:op"].expected(z[f"{name}:op"])
        model.relax(choices, gates)

    def relaxed_cost(self, model: GraphNet, z: dict[str, torch.Tensor]) -> torch.Tensor:
        """E({z}) per sample, [S]: the cost model at the expected options sum_k z[k] option_k
        (``relaxed_cost.RelaxedCost``, built once for ``model``)."""
        built = getattr(self, "_relaxed_cost", None)
        if built is None or built[0] is not model or built[1] is not self.decisions:
            built = self._relaxed_cost = (model, self.decisions,
                                          RelaxedCost(model, self.decisions, self.width_keys, self.block_of, self.budget))
        return built[2](z)

    @torch.no_grad()
    def project(self, xi: float) -> None:
        """pi <- P_S(pi) for every decision, all in one batched bisection."""
        logits = [decision.logits for decision in self.decisions.values()]
        torch._foreach_copy_(logits, projected_log_probabilities(logits, xi))

    def expected_z(self) -> dict[str, torch.Tensor]:
        """pi itself as a single 'sample': the expected options of eq. 6 (vanilla DNAS)."""
        return {key: decision.probs().unsqueeze(0) for key, decision in self.decisions.items()}

    def search_batches(self, rng: np.random.Generator, steps: int, batch_size: int):
        """The batches theta trains on: the training set's, reshuffled at every pass."""
        return training_batches(self.dataset, rng, steps, batch_size, self.device)

    def task_loss(self, model: GraphNet, z: dict[str, torch.Tensor], images: torch.Tensor, labels: torch.Tensor,
                  warming_up: bool) -> torch.Tensor:
        """L_task of a step: the network relaxed to z, on the step's batch (its S groups under the S samples)."""
        self.relax(model, z)
        return F.cross_entropy(model(images), labels)

    def objective(self, model: GraphNet, z: dict[str, torch.Tensor], task: torch.Tensor, phase: float,
                  size_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 7: L_task + lambda * E|E(z) - e*| / e*; returns the loss and the relaxed costs E(z)."""
        relaxed = self.relaxed_cost(model, z)
        return task + size_weight * cost.size_penalty(relaxed, self.budget.limit), relaxed

    def _average_gradients(self, parameters: list[torch.nn.Parameter]) -> None:
        """All processes end the step with the mean gradient over all S samples (one all-reduce, on the
        network's device: NCCL reduces GPU tensors, gloo CPU ones; the decisions' gradients travel with it)."""
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
        flat = torch.cat([g.reshape(-1).to(self.device) for g in grads])
        torch.distributed.all_reduce(flat)
        flat /= self.world
        offset = 0
        for parameter, grad in zip(parameters, grads):
            parameter.grad = flat[offset:offset + grad.numel()].view_as(grad).to(grad.device)
            offset += grad.numel()

    # -- the search

    def search(self) -> GraphNet:
        """Search with ``size_weight``, or once per ``lambda_sweep`` value keeping the best (the
        lambda tuning UDC's relative penalty avoids; Table 3's ablation); the argmax is selected."""
        sweep = self.settings["lambda_sweep"]
        if not sweep:
            return self._search_once(self.settings["size_weight"])
        tried = []
        for size_weight in sweep:
            model = self._search_once(size_weight)
            exact = self.budget.exact(model)
            recent = [h["task"] for h in self.history[-max(1, len(self.history) // 5):]]
            tried.append({"lambda": size_weight, "cost": exact, "met": exact <= self.budget.limit,
                          "task": float(np.mean(recent)), "state": (model, self.decisions, self.history)})
        met = [t for t in tried if t["met"]]
        best = min(met, key=lambda t: t["task"]) if met else min(tried, key=lambda t: t["cost"])
        model, self.decisions, self.history = best["state"]
        self.lambda_sweep = [{k: t[k] for k in ("lambda", "cost", "met", "task")} | {"chosen": t is best}
                             for t in tried]
        return model

    def _search_once(self, size_weight: float) -> GraphNet:
        s = self.settings
        model = self._folded_supernet(pretrained=True).to(self.device)
        started = time.perf_counter()
        self._build_decisions(model)
        for layer in model.searchable_layers():
            layer.init_option_ranges()
        if self.budget.kind == "flash":  # the encoded bytes of the pretrained weights, not the initial ones
            self.budget.flash_cost.refresh(model)
        torch.manual_seed(s["seed"])
        rng = np.random.default_rng(s["seed"])
        # Each process draws its own Gumbel noise; data and everything else are shared.
        generator = torch.Generator().manual_seed(s["seed"] + 7919 * self.rank)
        samples, share = s["samples"], s["samples"] // self.world
        warmup_steps, search_steps = s["warmup_steps"] // samples, s["search_steps"] // samples
        total = warmup_steps + search_steps
        theta_optimizer = recipe.theta_optimizer(model, s["theta_lr"], s)
        theta_schedule = recipe.search_schedule(theta_optimizer, warmup_steps, search_steps, s)
        pi_optimizer = torch.optim.Adam(self.decisions.parameters(), lr=s["pi_lr"], fused=True)
        parameters = [p for p in model.parameters() if p.requires_grad] + list(self.decisions.parameters())
        batches = recipe.batches(self.search_batches(rng, total, s["batch_size"] * samples), s, rng)
        progress = tqdm(batches, total=total, desc=f"{self.strategy} search", leave=False,
                        disable=True if self.quiet or self.rank > 0 else None)
        model.train()
        self.history = []
        for step, (images, labels) in enumerate(progress):
            if self.world > 1:  # this process's S' samples see their S' groups of the batch
                group = slice(self.rank * share * s["batch_size"], (self.rank + 1) * share * s["batch_size"])
                images, labels = images[group], labels[group]
            warming_up = step < warmup_steps
            # Warm-up anneals tau over its own span, as appendix E does.
            phase = step / max(1, warmup_steps) if warming_up else (step - warmup_steps) / max(1, search_steps)
            if step % MASK_INTERVAL == 0:
                for layer in model.searchable_layers():
                    layer.refresh_option_masks()
            z = self.sample(phase, warming_up, generator)
            task = self.task_loss(model, {key: value.to(self.device) for key, value in z.items()}, images, labels,
                                  warming_up)
            loss, relaxed = task, None
            if not warming_up:
                estimate = z if s["size_estimate"] == "samples" else self.expected_z()
                loss, relaxed = self.objective(model, estimate, task, phase, size_weight)
            theta_optimizer.zero_grad(set_to_none=True)
            pi_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.world > 1:
                self._average_gradients(parameters)
            theta_optimizer.step()
            theta_schedule.step()
            if not warming_up:
                pi_optimizer.step()
                if s["projection"]:
                    self.project(linear(*s["xi"], phase))
            if step % 20 == 0:
                progress.set_postfix(task=f"{task.item():.3f}", loss=f"{loss.item():.3f}")
                self.history.append({"step": step, "task": task.item(), "loss": loss.item(),
                                     "relaxed_cost": None if relaxed is None else relaxed.mean().item()})
        progress.close()
        model.relax()
        if self.budget.kind == "flash":  # the verdict and the repair cost the searched weights
            self.budget.flash_cost.refresh(model)
        select_configuration(model, self.argmax_configuration(model))
        self.timings["search_s"] = self.timings.get("search_s", 0.0) + time.perf_counter() - started
        return model

    def argmax_configuration(self, model: GraphNet) -> dict:
        """gamma(pi): every decision at its most likely option."""
        layers = {}
        for name, layer in model.layers.items():
            if isinstance(layer, SearchableLayer):
                choice = {}
                for axis, default in (("bits", self.fixed.get("bits", layer.bit_options[0])),
                                      ("nonzero", self.fixed.get("nonzero", 1.0))):
                    key = f"{name}:{axis}"
                    choice[axis] = self.decisions[key].argmax_option() if key in self.decisions else default
                width_key = f"{self.width_keys[name]}:width"
                choice["width"] = self.decisions[width_key].argmax_option() if width_key in self.decisions else 1.0
                layers[name] = choice
        skipped = [b for b in model.blocks if self.decisions[f"{b}:op"].argmax_option() == 0.0]
        return {"layers": layers, "skipped": skipped}

    def check_constraint(self, model: GraphNet) -> tuple[float, bool]:
        """The exact cost of the selected configuration and whether it meets the budget; warns if not."""
        exact = self.budget.exact(model)
        met = exact <= self.budget.limit
        if not met:
            warnings.warn(f"{self.strategy}: the searched configuration costs {self.budget.describe(exact)}, over "
                          f"the budget of {self.budget.describe(self.budget.limit)}: constraint NOT met",
                          BudgetWarning, stacklevel=2)
        return exact, met

    def repair(self, model: GraphNet) -> list[str]:
        """Move gamma(pi) under the budget (``budget.repair_configuration``); the result is left selected."""
        config, moves = repair_configuration(model, self.budget, self.argmax_configuration(model), self.decisions,
                                             self.width_keys)
        select_configuration(model, config)
        return moves

    def enforce_budget(self, model: GraphNet) -> dict:
        """Check gamma(pi) against the budget; if it misses, say so loudly and, with ``repair``, move it
        under the budget (still loudly). Returns the budget figures of the configuration for the
        candidate's meta (the emitted candidate's own verdict comes from its deployed weights)."""
        exact_argmax, met_argmax = self.check_constraint(model)
        meta = {"constraint_met_argmax": met_argmax, "repair_moves": []}
        if not met_argmax and self.settings["repair"]:
            meta["repair_moves"] = self.repair(model)
            warnings.warn(f"{self.strategy}: repaired the configuration with {len(meta['repair_moves'])} move(s) "
                          f"to {self.budget.describe(self.budget.exact(model))} ({', '.join(meta['repair_moves'])})",
                          BudgetWarning, stacklevel=2)
        exact = self.budget.exact(model)
        if exact > self.budget.limit and self.settings["repair"]:
            smallest = smallest_cost(model, self.budget, self.decisions, self.width_keys)
            if smallest > self.budget.limit:
                warnings.warn(f"{self.strategy}: no configuration of its decisions meets the budget (the smallest "
                              f"costs {self.budget.describe(smallest)}): constraint NOT met", BudgetWarning,
                              stacklevel=2)
            else:
                warnings.warn(f"{self.strategy}: the repair stopped at {self.budget.describe(exact)} though a "
                              f"configuration of its decisions costs {self.budget.describe(smallest)}: constraint "
                              "NOT met", BudgetWarning, stacklevel=2)
        return {**budget_meta(self.budget, exact, exact <= self.budget.limit), **meta,
                f"{COST_KEYS[self.budget.kind].removesuffix('_predicted')}_gamma_pi": exact_argmax}

    def run(self) -> Candidate | None:
        """The finetuned candidate; None in every process but the first of a process group."""
        model = self.search()
        if self.rank > 0:
            return None
        budget_figures = self.enforce_budget(model)
        started = time.perf_counter()
        meta = {"strategy": self.strategy, "budgets": self.limits, **budget_figures, "processes": self.world,
                "pi": {key: [round(p, 4) for p in d.probs().tolist()] for key, d in self.decisions.items()},
                "search_history": self.history}
        if getattr(self, "lambda_sweep", None):
            meta["lambda_sweep"] = self.lambda_sweep
        self.searched = searched_candidate(model, self.settings, meta, self.budget)
        candidate = self.deploy(model, meta)
        self.timings["finetune_s"] = time.perf_counter() - started
        candidate.spec["meta"]["timings_s"] = {k: round(v, 1) for k, v in self.timings.items()}
        return candidate

    # -- the deployed candidate, measured

    def deploy(self, model: GraphNet, meta: dict, norms: dict | None = None, original: GraphNet | None = None
               ) -> Candidate:
        """Finetune the selected configuration (unless ``norms`` says it was: ``emit.finish_candidate``) and emit
        it; where a budget is measured (Flash, NPU cycles, SRAM), compile it and move it cheaper until it fits
        (``measured.verify_measured``)."""
        if self.budget.kind == "flash":
            meta = {**meta, "flash_model": self.flash_model.to_meta()}
        candidate = finish_candidate(model, self.dataset, self.settings, self.quiet, meta, self.budget, norms, original)
        if self.deployed_figures is None or len(self.limits) == 1 and self.budget.kind != "flash":
            return candidate  # a lone size bound or MAC budget: the emitted verdict counted it exactly
        options, log_probability = move_options(model, getattr(self, "decisions", None), tuple(self.fixed))
        return verify_measured(candidate, model, self.dataset, self.budget, self.limits, self.deployed_figures,
                               options, log_probability, lambda moved: recover(moved, self.dataset, self.settings))
