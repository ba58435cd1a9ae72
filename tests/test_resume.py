"""The iterable dataset's global order, sharding and exact mid-epoch resume (also elastic), and the map-style resume."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

torch = pytest.importorskip("torch")

import chexmask_u_tools as cxu  # noqa: E402
from chexmask_u_tools.errors import InputError  # noqa: E402
from chexmask_u_tools.train.datasets import CheXmaskUIterableDataset  # noqa: E402

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "guide" / "training.md"
STREAM = {"missing": "masks_only", "size": 8, "block_rows": 8, "shuffle": True, "seed": 3, "shuffle_buffer": 24}


@pytest.fixture(scope="module")
def table() -> pl.DataFrame:
    return cxu.load_sample().head(61)  # 61 rows: blocks of 8 leave a short last block


def stream(table, **keywords) -> CheXmaskUIterableDataset:
    return CheXmaskUIterableDataset(table, None, **{**STREAM, **keywords})


def rows(samples) -> list[int]:
    return [int(sample["row"]) for sample in samples]


def take(dataset, n: int) -> tuple[list[int], dict]:
    iterator = iter(dataset)
    got = [int(next(iterator)["row"]) for _ in range(n)]
    return got, dataset.state_dict()


def test_the_order_depends_on_seed_and_epoch_only(table):
    one = stream(table)
    order = one.order()
    assert sorted(order.tolist()) == list(range(61))
    assert np.array_equal(stream(table).order(), order)
    assert not np.array_equal(one.order(epoch=1), order)
    assert np.array_equal(stream(table, shuffle=False).order(), np.arange(61))
    one.set_epoch(1)
    assert rows(one) == one.order(epoch=1).tolist()  # row = the stored position here (every row kept)


@pytest.mark.parametrize("world", [1, 2, 3, 4, 5])
def test_every_row_once_per_epoch_over_ranks_and_workers(table, world):
    reference = rows(stream(table))
    seen = []
    for rank in range(world):
        shard = stream(table, rank=rank, world_size=world)
        loader = torch.utils.data.DataLoader(shard, batch_size=3, num_workers=2)
        seen += [r for batch in loader for r in batch["row"].tolist()]
    assert sorted(seen) == sorted(reference) == list(range(61))


@pytest.mark.parametrize("cut", [0, 1, 5, 8, 13, 60, 61])
def test_resume_after_n_samples_yields_exactly_the_rest(table, cut):
    reference = rows(stream(table))
    first, state = take(stream(table), cut)
    resumed = stream(table)
    resumed.load_state_dict(state)
    assert first + rows(resumed) == reference


def test_resume_follows_the_states_epoch(table):
    dataset = stream(table)
    dataset.set_epoch(4)
    first, state = take(dataset, 9)
    resumed = stream(table)
    resumed.load_state_dict(state)
    assert resumed.epoch == 4
    assert first + rows(resumed) == stream(table).order(epoch=4).tolist()


def test_stateful_dataloader_with_two_workers_resumes_exactly(table):
    stateful = pytest.importorskip("torchdata.stateful_dataloader")
    reference = [r for batch in stateful.StatefulDataLoader(stream(table), batch_size=4, num_workers=2) for r in batch["row"].tolist()]
    for batches in (1, 5, 15):  # mid-block, several blocks, the very end
        loader = stateful.StatefulDataLoader(stream(table), batch_size=4, num_workers=2)
        iterator = iter(loader)
        first = [r for _ in range(batches) for r in next(iterator)["row"].tolist()]
        state = loader.state_dict()
        del iterator, loader
        again = stateful.StatefulDataLoader(stream(table), batch_size=4, num_workers=2)
        again.load_state_dict(state)
        rest = [r for batch in again for r in batch["row"].tolist()]
        assert first + rest == reference


@pytest.mark.parametrize(("before", "after"), [(4, 2), (4, 1), (3, 2)])
def test_elastic_resume_on_another_number_of_ranks(table, before, after):
    order = stream(table).order().tolist()
    consumed, states = [], []
    for rank in range(before):
        got, state = take(stream(table, rank=rank, world_size=before), 3 + 2 * rank)  # ranks stop at different points
        consumed += got
        states.append(state)
    merged = stream(table).merge_states(states)
    resumed = []
    for rank in range(after):
        shard = stream(table, rank=rank, world_size=after)
        shard.load_state_dict(merged)
        resumed += rows(shard)
    assert sorted(consumed + resumed) == list(range(61))
    remaining = [r for r in order if r not in set(consumed)]
    single = stream(table)
    single.load_state_dict(merged)
    assert rows(single) == remaining  # the global order of what remained, whatever the topology


def test_stateful_dataloader_states_merge_for_another_worker_count(table):
    stateful = pytest.importorskip("torchdata.stateful_dataloader")
    loader = stateful.StatefulDataLoader(stream(table), batch_size=4, num_workers=2)
    iterator = iter(loader)
    first = [r for _ in range(3) for r in next(iterator)["row"].tolist()]
    state = loader.state_dict()
    del iterator, loader
    merged = stream(table).merge_states([state])
    rest = [r for batch in torch.utils.data.DataLoader(_loaded(table, merged), batch_size=5, num_workers=3) for r in batch["row"].tolist()]
    assert sorted(first + rest) == list(range(61))


def _loaded(table, state) -> CheXmaskUIterableDataset:
    dataset = stream(table)
    dataset.load_state_dict(state)
    return dataset


def test_bad_states_are_refused_with_the_fix(table):
    _, state = take(stream(table, rank=0, world_size=2), 3)
    with pytest.raises(InputError, match="merge_states"):
        _resume_elsewhere(table, state)
    with pytest.raises(InputError, match="consumers \\[1\\] are missing"):
        stream(table).merge_states([state])
    with pytest.raises(InputError, match="seed"):
        stream(table, seed=4).load_state_dict(state)
    with pytest.raises(InputError, match="not a CheXmaskUIterableDataset state"):
        stream(table).load_state_dict({"epoch": 0})


def _resume_elsewhere(table, state) -> list[int]:
    dataset = stream(table, rank=0, world_size=3)
    dataset.load_state_dict(state)
    return rows(dataset)


def test_map_style_resume_through_the_sampler_as_the_guide_shows(tmp_path, monkeypatch):
    text = GUIDE.read_text(encoding="utf-8")
    section = text.split("### Resuming the map-style dataset", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "guide"}
    exec(compile(code, "training guide: map-style resume", "exec"), namespace)
    assert namespace["first"] + namespace["rest"] == namespace["whole_epoch"]
