"""The pretraining monitor: every `config.knn_every_steps`, the kNN accuracy of the encoder being
trained (evals/weighted_knn.py) and, when the run has an online probe, the probe's accuracy on
the same eval split (as the official TF2 code's eval/label_top_1_accuracy), logged with the
other metrics.

core.train.train_and_evaluate takes it as `monitor=` (an evaluation is a higher layer than the
training loop, so the pretrain command passes it in).
"""

import jax
import jax.numpy as jnp
import ml_collections

from simclr_jax.core import backend, parallel
from simclr_jax.core.train import TrainState
from simclr_jax.data import sources
from simclr_jax.data.sources import Source
from simclr_jax.errors import UserError
from simclr_jax.evals import features, linear_cached
from simclr_jax.evals.classifier import Classifier
from simclr_jax.evals.pretrained import Pretrained
from simclr_jax.evals.weighted_knn import bank_metrics
from simclr_jax.models.simclr import build_encoder


def probe_metrics(probe: dict, test: features.Bank, mesh) -> dict[str, float]:
    """Exact top-1 / top-5 of the online probe (a dense layer on h) on the eval bank."""
    model = Classifier(None, None, test.num_classes, frozen_encoder=True)
    state = TrainState(step=jnp.zeros((), jnp.int32), params={"classifier": probe},
                       batch_stats={}, opt_state=())
    (metrics,) = linear_cached.eval_on_bank(model, (state,), test, mesh)
    return {"probe_eval_top1": metrics["top1"], "probe_eval_top5": metrics["top5"]}


class Monitor:
    """kNN accuracy of the encoder being pretrained: core.train.train_and_evaluate's monitor.

    The bank is the pretraining split (unaugmented), the queries config.eval_split; both are
    streamed through the encoder at every evaluation, never held in host memory.
    """

    def __init__(self, config: ml_collections.ConfigDict, train: Source, mesh):
        def open_split(split: str) -> Source:
            return sources.open_source(config, split, process_index=jax.process_index(),
                                       process_count=jax.process_count(), for_eval=True)

        # A random-access pretraining split is the whole split on every process: the bank as
        # it is. A streamed one is this process's equal shard: reopened for an exact pass.
        if not (isinstance(train, Source) and train.random_access):
            train = open_split(config.train_split)
        test = open_split(config.eval_split)
        if train.num_classes == 0 or test.num_classes == 0:
            raise UserError(f"config.knn_every_steps={config.knn_every_steps} needs labels, but "
                            f"dataset {config.dataset!r} has none: set config.knn_every_steps=0")
        self.config, self.train, self.test, self.mesh = config, train, test, mesh
        self.encoder = build_encoder(config, backend.conv_module(config.conv_impl))
        parallel.check_global_batch(config.batch_size, mesh)

    def __call__(self, state) -> dict[str, float]:
        """{'knn_top1', 'knn_top5'} of the encoder in `state` (a core.train.TrainState), and
        {'probe_eval_top1', 'probe_eval_top5'} of its online probe if it has one."""
        c = self.config
        pre = Pretrained(module=self.encoder, width=self.encoder.out_width,
                         step=int(state.step), config=c, path="",
                         variables={"params": state.params["encoder"],
                                    "batch_stats": state.batch_stats["encoder"]})
        train, test = (features.compute(pre, source, image_size=c.image_size,
                                        global_batch=c.batch_size, mesh=self.mesh)
                       for source in (self.train, self.test))
        results = bank_metrics(train, test, k=c.knn_k, temperature=c.knn_temperature,
                               mesh=self.mesh)
        out = {"knn_top1": results["knn_top1"], "knn_top5": results["knn_top5"]}
        if "probe" in state.params:
            out.update(probe_metrics(state.params["probe"], test, self.mesh))
        return out
