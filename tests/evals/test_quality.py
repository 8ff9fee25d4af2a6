"""Quality on real data with a robust margin: a briefly pretrained encoder beats random init.

The cheap, in-suite version of bench/linear_eval_quality.py (digits at their native 8 px, ResNet-18
at 1/8 width): both linear eval (cached features) and kNN, measured in one run.
"""

import pytest
from clu import metric_writers

from simclr_jax import eval_config
from simclr_jax.core import parallel, train
from simclr_jax.evals import jobs, linear_eval_lib, pretrained, weighted_knn

MARGIN = 0.15  # absolute top-1; the measured gap is several times larger (see README)


@pytest.mark.slow(55)
def test_pretrained_encoder_beats_random_init_by_a_clear_margin(tmp_path, tfds_dir, tiny_config):
    pre = tiny_config(batch_size=128, num_train_steps=100, checkpoint_every_steps=100,
                      log_every_steps=50, proj_out_dim=32)
    train.train_and_evaluate(pre, str(tmp_path))
    ev = eval_config.get_config("linear_eval")
    ev.update(dict(cache_features=True, learning_rate=0.4, num_epochs=30))
    mesh, writer = parallel.make_mesh(), metric_writers.MultiWriter([])
    got = {}
    for name, encoder in (("pretrained", pretrained.load(str(tmp_path), mesh=mesh)),
                          ("random", pretrained.random_init(pre, seed=pre.seed, mesh=mesh))):
        config = jobs.resolve_config(ev, encoder.config)
        results, _ = linear_eval_lib.train_and_eval(encoder, config, mesh, writer)
        splits = jobs.load_splits(config, "kNN")
        neighbours = weighted_knn.knn_eval(encoder, splits.train_eval, splits.test,
                                           image_size=config.image_size,
                                           k=config.knn_k, temperature=config.knn_temperature,
                                           global_batch=config.eval_batch_size, mesh=mesh)
        got[name] = (results["top1"], neighbours["knn_top1"])
    print(f"linear / kNN top-1: pretrained {got['pretrained']}, random init {got['random']}")
    assert got["pretrained"][0] >= got["random"][0] + MARGIN, got
    assert got["pretrained"][1] >= got["random"][1] + MARGIN, got
