"""Weighted kNN evaluation of h (Wu et al. 2018, "InstDisc"): a job and a pretraining monitor.

Each test example's L2-normalised h is compared (cosine) with the h of every training example;
its k nearest neighbours vote for their class with weight exp(sim / T) (k=200, T=0.1 by
default). Inside pretraining, `config.knn_every_steps` logs knn_top1 / knn_top5 with the other
metrics, and, when the run has an online probe, the probe's probe_eval_top1 / probe_eval_top5
on the same eval split (as the official TF2 code's eval/label_top_1_accuracy). No training, no
augmentation: a cheap, hyperparameter-free read of the encoder. The command is
simclr_jax/knn.py.
"""

from functools import partial

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from simclr_jax.core import parallel
from simclr_jax.core.losses import l2_normalize
from simclr_jax.data import splits
from simclr_jax.data.splits import ArraySplit
from simclr_jax.errors import UserError
from simclr_jax.evals import jobs
from simclr_jax.evals.pretrained import Pretrained
from simclr_jax.models.simclr import build_encoder


@partial(jax.jit, static_argnames=("num_classes", "k", "temperature"))
def knn_scores(queries: jnp.ndarray, bank: jnp.ndarray, bank_labels: jnp.ndarray, *,
               num_classes: int, k: int, temperature: float) -> jnp.ndarray:
    """Class scores (B, C): sum of exp(cos / T) over each query's k most similar bank rows."""
    sim = l2_normalize(queries) @ l2_normalize(bank).T
    top_sim, top_idx = jax.lax.top_k(sim, min(k, bank.shape[0]))
    votes = jax.nn.one_hot(bank_labels[top_idx], num_classes, dtype=jnp.float32)
    return jnp.einsum("bk,bkc->bc", jnp.exp(top_sim / temperature), votes)


def knn_metrics(train_h: np.ndarray, train_labels: np.ndarray, test_h: np.ndarray,
                test_labels: np.ndarray, *, num_classes: int, k: int, temperature: float,
                global_batch: int, mesh: jax.sharding.Mesh) -> dict[str, float]:
    """Exact kNN top-1 / top-5 of the test features against the training features."""
    replicated = parallel.replicated(mesh)
    bank = jax.device_put(train_h, replicated)
    labels = jax.device_put(train_labels, replicated)
    batches = jobs.host_batches({"h": test_h, "label": test_labels}, global_batch, mesh)
    metrics = jobs.topk_metrics(
        ((knn_scores(b["h"], bank, labels, num_classes=num_classes, k=k,
                     temperature=temperature), b["label"], b["mask"]) for b in batches),
        with_loss=False)
    return {"knn_top1": metrics["top1"], "knn_top5": metrics["top5"],
            "num_eval_examples": metrics["num_examples"]}


def knn_eval(pre: Pretrained, train: ArraySplit, test: ArraySplit, *, image_size: int,
             k: int, temperature: float, global_batch: int, mesh) -> dict[str, float]:
    """kNN accuracy of `pre`'s h on `test`, the bank being `train` (eval preprocessing)."""
    train_h = jobs.features(pre, train, image_size, global_batch, mesh)
    test_h = jobs.features(pre, test, image_size, global_batch, mesh)
    return knn_metrics(train_h, train.labels, test_h, test.labels, num_classes=train.num_classes,
                       k=k, temperature=temperature, global_batch=global_batch, mesh=mesh)


@jax.jit
def _probe_logits(probe: dict, h: jnp.ndarray) -> jnp.ndarray:
    return h.astype(jnp.float32) @ probe["kernel"] + probe["bias"]


def probe_metrics(probe: dict, test_h: np.ndarray, test_labels: np.ndarray, *,
                  global_batch: int, mesh: jax.sharding.Mesh) -> dict[str, float]:
    """Exact top-1 / top-5 of the online probe (a dense layer on h) on the eval features."""
    batches = jobs.host_batches({"h": test_h, "label": test_labels}, global_batch, mesh)
    metrics = jobs.topk_metrics(((_probe_logits(probe, b["h"]), b["label"], b["mask"])
                                 for b in batches), with_loss=False)
    return {"probe_eval_top1": metrics["top1"], "probe_eval_top5": metrics["top5"]}


def evaluate(pre: Pretrained, config: ml_collections.ConfigDict, mesh, writer) -> dict:
    """jobs.EvaluateFn of the kNN job: one metrics row at the checkpoint's step."""
    train, test = jobs.load_splits(config, "kNN evaluation")
    results = knn_eval(pre, train, test, image_size=config.image_size, k=config.knn_k,
                       temperature=config.knn_temperature,
                       global_batch=config.eval_batch_size, mesh=mesh)
    writer.write_scalars(pre.step, {"knn_top1": results["knn_top1"],
                                    "knn_top5": results["knn_top5"]})
    return {**results, "num_train_examples": len(train)}


class Monitor:
    """kNN accuracy of the encoder being pretrained: core.train.train_and_evaluate's monitor.

    The bank is the pretraining split (unaugmented), the queries config.eval_split.
    """

    def __init__(self, config: ml_collections.ConfigDict, train, mesh):
        # The pretraining split serves as the bank when it is held in memory (any object with
        # images / labels / num_classes); a streamed one is read into memory here.
        if getattr(train, "images", None) is None:
            train = splits.load_split(config.dataset, config.train_split, config.data_dir)
        test = splits.load_split(config.dataset, config.eval_split, config.data_dir)
        if train.labels is None or test.labels is None:
            raise UserError(f"config.knn_every_steps={config.knn_every_steps} needs labels, but "
                            f"dataset {config.dataset!r} has none: set config.knn_every_steps=0")
        self.config, self.train, self.test, self.mesh = config, train, test, mesh
        self.encoder = build_encoder(config)

    def __call__(self, state) -> dict[str, float]:
        """{'knn_top1', 'knn_top5'} of the encoder in `state` (a core.train.TrainState), and
        {'probe_eval_top1', 'probe_eval_top5'} of its online probe if it has one."""
        c = self.config
        pre = Pretrained(module=self.encoder, width=self.encoder.out_width,
                         step=int(state.step), config=c, path="",
                         variables={"params": state.params["encoder"],
                                    "batch_stats": state.batch_stats["encoder"]})
        train_h = jobs.features(pre, self.train, c.image_size, c.batch_size, self.mesh)
        test_h = jobs.features(pre, self.test, c.image_size, c.batch_size, self.mesh)
        results = knn_metrics(train_h, self.train.labels, test_h, self.test.labels,
                              num_classes=self.train.num_classes, k=c.knn_k,
                              temperature=c.knn_temperature, global_batch=c.batch_size,
                              mesh=self.mesh)
        out = {"knn_top1": results["knn_top1"], "knn_top5": results["knn_top5"]}
        if "probe" in state.params:
            out.update(probe_metrics(state.params["probe"], test_h, self.test.labels,
                                     global_batch=c.batch_size, mesh=self.mesh))
        return out


def run(config: ml_collections.ConfigDict, workdir: str, *, wait: bool = False,
        wait_timeout_s: float = 3600.0) -> dict:
    """The kNN job (library entry point)."""
    return jobs.run_job("knn", config, workdir, evaluate, wait=wait,
                        wait_timeout_s=wait_timeout_s)

