"""Exact-once evaluation input: every example once over all processes, padding masked."""

import collections

import numpy as np
import pytest

from simclr_jax.data import eval_input, sources


@pytest.fixture(scope="module")
def data_dir(sharded_digits) -> str:
    return sharded_digits


@pytest.mark.parametrize("kind", ["memory", "stream", "folder"])
@pytest.mark.parametrize("process_count", [1, 3])
def test_eval_reads_every_example_once_on_any_process_count(tmp_path, data_dir, kind,
                                                            process_count, tiny_config,
                                                            folder_config, write_images):
    if kind == "folder":
        write_images(tmp_path / "imgs", 10)
        config, split, batch = folder_config(tmp_path / "imgs", data_dir=data_dir), "train", 6
    else:
        config, split, batch = tiny_config(data_dir=data_dir, data_mode=kind), "test", 24
    seen, lengths, num_examples = collections.Counter(), set(), None
    for p in range(process_count):
        source = sources.open_source(config, split, process_index=p,
                                     process_count=process_count, for_eval=True)
        num_examples = len(source)
        batches = list(eval_input.eval_dataset(
            source, image_size=12, global_batch=batch, process_index=p,
            process_count=process_count).as_numpy_iterator())
        lengths.add(len(batches))
        for b in batches:
            assert b["image"].shape == (batch // process_count, 12, 12, 3)
            assert (b["index"][~b["mask"]] == -1).all()
            seen.update(b["index"][b["mask"]].tolist())
            if source.labels is not None:  # labels travel with their example
                np.testing.assert_array_equal(b["label"][b["mask"]],
                                              source.labels[b["index"][b["mask"]]])
    assert lengths == {-(-num_examples // batch)}  # same number of batches on every process
    assert seen == collections.Counter(range(num_examples))  # each example exactly once
    assert num_examples % batch  # the last batch is padded in every case here
