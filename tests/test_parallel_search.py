"""MC samples over 2 CPU processes with torch.distributed (gloo): the processes see different data
and noise, so only the gradient averaging keeps them identical."""

from pathlib import Path

import torch
import torch.distributed as dist

from core.data import synthetic
from search.settings import merged_settings
from search.strategy.parallel import search_in_processes
from search.strategy.pretrain import pretrain_state
from search.strategy.udc import UDCSearch
from tests.test_udc_search import BUDGET_BYTES, TINY

SETTINGS = {**TINY, "warmup_steps": 8, "search_steps": 48, "samples": 2, "finetune_steps": 16}


def _search_and_dump(rank, workdir, dataset, state):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{workdir}/rendezvous", rank=rank, world_size=2)
    search = UDCSearch(dataset, budget_bytes=BUDGET_BYTES, settings=SETTINGS, quiet=True, pretrained=state)
    model = search.search()
    torch.save({"pi": search.decisions.state_dict(), "theta": model.state_dict(), "world": search.world,
                "history": search.history}, Path(workdir) / f"rank{rank}.pt")
    dist.destroy_process_group()


def test_processes_stay_in_step(tmp_path):
    dataset = synthetic(n_train=512, n_test=64)
    state = pretrain_state(dataset, merged_settings(SETTINGS), quiet=True)
    torch.multiprocessing.spawn(_search_and_dump, args=(str(tmp_path), dataset, state), nprocs=2, join=True)
    first, second = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert first["world"] == second["world"] == 2
    # each process computed its own loss on its own half of the batch ...
    assert first["history"][0]["task"] != second["history"][0]["task"]
    # ... yet pi and theta are bit-identical after the search, and pi has moved
    for key, value in first["pi"].items():
        torch.testing.assert_close(value, second["pi"][key], rtol=0, atol=0)
    assert any(value.abs().max() > 0 for value in first["pi"].values())
    for key, value in first["theta"].items():
        torch.testing.assert_close(value, second["theta"][key], rtol=0, atol=0)


def test_search_in_processes_returns_the_first_processes_candidate():
    dataset = synthetic(n_train=512, n_test=64)
    candidate, searched = search_in_processes(2, dataset, budget_bytes=BUDGET_BYTES, settings=SETTINGS, quiet=True)
    meta = candidate.spec["meta"]
    assert meta["processes"] == 2 and meta["constraint_met"]
    assert meta["size_bits"] <= 8 * BUDGET_BYTES
    # None only where a layer's search-time range rounds every weight to zero, which this search does not do
    assert searched is not None
    searched_meta = searched.spec["meta"]
    assert searched_meta["stage"] == "searched" and searched_meta["processes"] == 2
    assert searched.name == f"{candidate.name}-searched"
    assert searched_meta["decisions"] == meta["decisions"]  # finetuning keeps the searched configuration
    assert {k: v.shape for k, v in searched.weights.items()} == {k: v.shape for k, v in candidate.weights.items()}
