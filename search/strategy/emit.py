"""What a search emits: the candidate's name, the budget and decision figures it records, and the
finished candidate (three-stage finetuning, then the candidate contract). The budget verdict an emitted
candidate records is computed from its own weights, as deployed: what finetuning did to them is in it."""

from __future__ import annotations

import copy
import warnings

import numpy as np

from core import budgets
from core.candidate import Candidate, layer_shapes
from core.data import Dataset
from core.size_model import effective_bits, layer_size_bits
from search.space import GraphNet, SearchableLayer, build_torch, to_candidate
from search.strategy.budget import Budget, BudgetWarning
from search.strategy.finetune import finetune
from search.strategy.uniform import evaluate


COST_KEYS = {"size": "size_bits", "macs": "macs", "flash": "flash_bytes_predicted"}


def searched_name(strategy: str, supernet: str, limits: dict[str, float]) -> str:
    """e.g. ``udc-mbv2-flash38.912kB``, ``udc-mbv2-24kB`` (a size bound) or ``udc-mbv2-2000000macs``."""
    return f"{strategy}-{supernet}-{budgets.label(limits)}"


def budget_meta(budget: Budget, exact: float, met: bool) -> dict:
    """``size_bits``/``macs``/``flash_bytes_predicted``: the exact cost of the emitted configuration."""
    return {"budget_bytes": budget.budget_bytes, "budget_macs": budget.macs, "budget_flash_bytes": budget.flash_bytes,
            "constraint_met": met, COST_KEYS[budget.kind]: exact}


def size_bound_bits(candidate: Candidate) -> float:
    """The size bound of a candidate's weights: per weight tensor N*(s*b + H2(s)) with s its share of nonzeros
    and b its layer's bits, or more where its distinct nonzero values need more (what the harness's size
    bound counts on the same tensors)."""
    total = 0.0
    for entry in candidate.weight_layers():
        weight = np.asarray(candidate.weights[f"{entry['name']}.weight"])
        bits = max(int(entry["bits"]), effective_bits(weight))
        total += layer_size_bits(weight.size, int(np.count_nonzero(weight)) / weight.size, bits)
    return float(total)


def deployed_macs(candidate: Candidate) -> float:
    """MACs of a candidate: each weight once per output pixel."""
    shapes = layer_shapes(candidate.spec)
    return float(sum(candidate.weights[f"{entry['name']}.weight"].size * int(np.prod(shapes[entry["name"]][:-1]))
                     for entry in candidate.weight_layers()))


def deployed_cost(candidate: Candidate, budget: Budget) -> float:
    """The cost of ``candidate`` read off its weights, in ``budget``'s kind: the predicted Flash of its codes,
    its size bound (bits) or its MACs."""
    if budget.kind == "flash":
        return budget.flash_cost.candidate_bytes(candidate)
    return size_bound_bits(candidate) if budget.kind == "size" else deployed_macs(candidate)


def deployed_verdict(candidate: Candidate, budget: Budget) -> dict:
    """``budget_meta`` of the candidate as emitted (``deployed_cost``)."""
    exact = deployed_cost(candidate, budget)
    return budget_meta(budget, exact, bool(exact <= budget.limit))


def decisions_meta(model: GraphNet) -> dict:
    inactive = model.inactive_layers()
    return {name: {"bits": layer.bits, "nonzero": layer.nonzero, "width": layer.width,
                   "op": "identity" if name in inactive else layer.op}
            for name, layer in model.layers.items() if isinstance(layer, SearchableLayer)}


def searched_candidate(model: GraphNet, settings: dict, meta: dict, budget: Budget) -> Candidate | None:
    """The configuration as searched, before finetuning (weights Q(theta) * m at the selected options), with
    its own budget verdict; None where a layer's search-time range leaves no nonzero weight, which
    finetuning repairs."""
    name = searched_name(meta["strategy"], settings["supernet"], meta.get("budgets") or budget.limits)
    model = copy.deepcopy(model)
    model.refresh_masks()
    try:
        candidate = to_candidate(model, f"{name}-searched",
                                 {**meta, "stage": "searched", "decisions": decisions_meta(model)})
    except ValueError:
        return None
    candidate.spec["meta"].update(deployed_verdict(candidate, budget))
    return candidate


def finish_candidate(model: GraphNet, dataset: Dataset, settings: dict, quiet: bool, meta: dict,
                     budget: Budget, norms: dict | None = None, original: GraphNet | None = None) -> Candidate:
    """Finetune the selected configuration in three stages and emit it with the budget verdict of its
    finetuned weights (a warning where they miss the budget); with ``compare_number_format`` a copy is also
    finetuned with the other number format, for the weight-norm comparison of Fig. 3. Given ``norms`` (what
    ``finetune`` returned), ``model`` has had that finetuning already, in the settings' number format, and is
    emitted as it is; ``original``, the configuration before it, is what the comparison then finetunes."""
    s = settings

    def tune(network: GraphNet, qhat: bool) -> dict:
        return finetune(network, dataset, s["finetune_steps"], s["finetune_batch_size"], s["finetune_lr"],
                        s["stage_fractions"], s["quant_noise"], qhat, s["seed"], quiet,
                        f"finetune ({'Q-hat' if qhat else 'Q'})", recipe=s)

    if norms is None:
        other = copy.deepcopy(model) if s["compare_number_format"] else None
        norms = tune(model, s["qhat"])
    else:
        other = copy.deepcopy(original) if s["compare_number_format"] and original is not None else None
    label = "qhat" if s["qhat"] else "plain"
    weight_norm = {"before": norms["before"], f"after_{label}": norms["after"], f"trajectory_{label}": norms["trajectory"]}
    if other is not None:
        other_label = "plain" if s["qhat"] else "qhat"
        other_norms = tune(other, not s["qhat"])
        weight_norm.update({f"after_{other_label}": other_norms["after"],
                            f"trajectory_{other_label}": other_norms["trajectory"],
                            f"accuracy_{other_label}": evaluate(other, dataset.x_test, dataset.y_test)})
    meta = {**meta, "supernet": s["supernet"], "dataset": dataset.name, "weight_norm": weight_norm, "search": dict(s)}
    return emit_candidate(model, dataset, meta, budget)


RECOVERY_SHARE = 4  # a measured move is followed by 1/4 of the finetuning steps at the final stage


def recover(model: GraphNet, dataset: Dataset, settings: dict) -> None:
    """A short finetune of a configuration moved after finetuning: the final stage only (every weight
    quantized, masks at their fractions), a quarter of the finetuning steps."""
    s = settings
    finetune(model, dataset, max(1, s["finetune_steps"] // RECOVERY_SHARE), s["finetune_batch_size"],
             s["finetune_lr"], (0.0, 0.0, 1.0), s["quant_noise"], s["qhat"], s["seed"], True, "recovery finetune",
             recipe=s)


def emit_candidate(model: GraphNet, dataset: Dataset, meta: dict, budget: Budget) -> Candidate:
    """The selected configuration of ``model`` as a candidate with the budget verdict of its weights (a
    warning where they miss the budget) and its float test accuracy."""
    name = searched_name(meta["strategy"], meta["supernet"], meta.get("budgets") or budget.limits)
    candidate = to_candidate(model, name, {**meta, "decisions": decisions_meta(model)})
    verdict = deployed_verdict(candidate, budget)
    candidate.spec["meta"].update(verdict)
    if not verdict["constraint_met"]:
        cost = verdict[COST_KEYS[budget.kind]]
        warnings.warn(f"{meta['strategy']}: the deployed candidate costs {budget.describe(cost)}, over the budget of "
                      f"{budget.describe(budget.limit)}: constraint NOT met", BudgetWarning, stacklevel=2)
    candidate.spec["meta"]["accuracy_float"] = evaluate(build_torch(candidate), dataset.x_test, dataset.y_test)
    return candidate
