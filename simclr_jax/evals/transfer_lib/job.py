"""The transfer job: for each dataset and protocol, select on validation, refit on
train + validation, evaluate once on test; results.json and transfer.md after each one.

    <workdir>/results.json            results[dataset][protocol] (+ the encoder evaluated)
    <workdir>/transfer.md             the paper-style table
    <workdir>/<dataset>/features/     cached frozen features (linear)
    <workdir>/<dataset>/linear/       the regularisation path so far (path.json)
    <workdir>/<dataset>/finetune/     each grid point's train state and metrics, grid.json

A rerun skips every finished (dataset, protocol) whose protocol settings are unchanged, and
within an unfinished one the finished grid points; a SIGTERM stops after the point in
progress (fine-tuning: saves its train state) and the job exits 0. A dataset that cannot be
evaluated is one `error:` line (exit 2) with the finished ones kept in results.json.
"""

import dataclasses
import json
import os

import jax
import ml_collections
from absl import logging
from etils import epath

from simclr_jax import transfer_config
from simclr_jax.config import get_config as pretrain_defaults
from simclr_jax.core import checkpointing, parallel, workdir_lock
from simclr_jax.core.preemption import PreemptionWatcher
from simclr_jax.data import builders
from simclr_jax.errors import UserError
from simclr_jax.evals import features, loop, pretrained
from simclr_jax.evals.pretrained import Pretrained
from simclr_jax.evals.transfer_lib import (
    datasets,
    finetune_protocol,
    host_features,
    lbfgs_device,
    linear_protocol,
    logreg,
    report,
    splits,
    state_files,
)
from simclr_jax.evals.transfer_lib.datasets import Target

RANDOM = "random"


def load_encoder(config: ml_collections.ConfigDict, mesh) -> Pretrained:
    """The encoder of config.pretrained, or a random init (`random`, `random:RUN`)."""
    spec = config.pretrained
    if spec == RANDOM or spec.startswith(RANDOM + ":"):
        if spec == RANDOM:
            arch = pretrain_defaults()
        else:
            arch = pretrained.read_config(pretrained.resolve_checkpoint(spec[7:])[0])
        arch = ml_collections.ConfigDict(arch.to_dict())
        for key in ("resnet_depth", "width_multiplier", "image_size"):
            if config[key] is not None:
                arch[key] = config[key]
        return pretrained.random_init(arch, seed=config.seed, mesh=mesh)
    return pretrained.load(spec, mesh=mesh)


def _path_config(c: ml_collections.ConfigDict) -> linear_protocol.PathConfig:
    return linear_protocol.PathConfig(num=c.linear_num_lambdas, low=c.linear_lambda_min,
                                      high=c.linear_lambda_max, max_iter=c.linear_max_iter,
                                      tol=c.linear_tol, threads=c.linear_threads)


def _finetune_config(c: ml_collections.ConfigDict,
                     image_size: int) -> finetune_protocol.FinetuneConfig:
    return finetune_protocol.FinetuneConfig(
        learning_rates=tuple(float(v) for v in c.finetune_learning_rates),
        weight_decays=tuple(float(v) for v in c.finetune_weight_decays),
        num_steps=c.finetune_steps, batch_size=c.finetune_batch_size,
        eval_batch_size=c.eval_batch_size, crop_area_min=c.finetune_crop_area_min,
        image_size=image_size, seed=c.seed, log_every_steps=c.log_every_steps,
        checkpoint_every_steps=c.checkpoint_every_steps)


def protocol_settings(c: ml_collections.ConfigDict, protocol: str, image_size: int) -> dict:
    """What a finished result must have been computed with to be kept by a rerun."""
    common = {"image_size": image_size, "val_fraction": c.val_fraction, "seed": c.seed,
              "data_dir": c.data_dir}
    if protocol == "linear":
        common["solver"] = c.linear_solver
        common["crop_fraction"] = c.linear_crop_fraction
        path = dataclasses.asdict(_path_config(c))
        path.pop("threads")  # how fast, not what is computed
        return json.loads(json.dumps({**common, **path}))
    fc = dataclasses.asdict(_finetune_config(c, image_size))
    for key in ("log_every_steps", "checkpoint_every_steps"):
        fc.pop(key)
    return json.loads(json.dumps({**common, **fc}))


def _linear(pre: Pretrained, target: Target, data: splits.TransferSplits, c, image_size: int,
            directory: str, mesh, watcher, encoder: dict) -> dict:
    key = {"dataset": target.dataset, "data_dir": c.data_dir, "image_size": image_size,
           "val_fraction": c.val_fraction, "seed": c.seed}

    def host(name: str, source):
        x, y = host_features.split_features(
            pre, source, cache_dir=directory, name=name, data_key=key, image_size=image_size,
            global_batch=c.eval_batch_size, mesh=mesh, crop_fraction=c.linear_crop_fraction)
        return x, (data.multi_hot[name] if data.multi_hot is not None else y)

    host_data = linear_protocol.HostSplits(train=host("train", data.train),
                                           val=host("val", data.val),
                                           test=lambda: host("test", data.test))
    identity = {**protocol_settings(c, "linear", image_size), **encoder,
                "dataset": target.name}
    path = _path_config(c)
    if c.linear_solver == "device":
        if target.multi_label:
            raise UserError(f"config.linear_solver='device' fits single-label sets, and "
                            f"{target.name} is multi-label: use linear_solver='sklearn'")

        def new_model():
            return lbfgs_device.DeviceLinearModel(data.num_classes, path.max_iter, path.tol,
                                                  mesh)
    else:
        def new_model():
            return logreg.LinearModel(target.multi_label, path.max_iter, path.tol,
                                      path.threads)
    return linear_protocol.run(host_data, target.metric, target.multi_label, path,
                               os.path.join(directory, "linear"), identity, watcher, new_model)


def _finetune(pre: Pretrained, target: Target, data: splits.TransferSplits, c,
              image_size: int, directory: str, mesh, encoder: dict) -> dict:
    if target.multi_label:
        raise UserError(f"the fine-tune protocol trains a softmax classifier: {target.name} is "
                        f"multi-label; use --config.protocol=linear for it")
    parallel.check_global_batch(c.finetune_batch_size, mesh, "finetune_batch_size")
    identity = {**protocol_settings(c, "finetune", image_size), **encoder,
                "dataset": target.name}
    return finetune_protocol.run(pre, _finetune_config(c, image_size), data, target.metric,
                                 os.path.join(directory, "finetune"), mesh, identity)


def _encoder_identity(pre: Pretrained, spec: str) -> dict:
    return {"pretrained": spec, "checkpoint": pre.path, "checkpoint_step": pre.step,
            "encoder_weights": features.weights_digest(pre)}


def _read_results(workdir: str, encoder: dict) -> dict:
    doc = state_files.read_json(os.path.join(workdir, "results.json"))
    if doc is None:
        return {}
    if doc.get("encoder") != encoder:
        raise UserError(
            f"{workdir}/results.json holds transfer results of another encoder "
            f"({doc.get('encoder', {}).get('pretrained')!r}, step "
            f"{doc.get('encoder', {}).get('checkpoint_step')}): use a new --workdir for "
            f"{encoder['pretrained']!r}")
    return doc.get("results", {})


def _write(workdir: str, encoder: dict, config: ml_collections.ConfigDict,
           results: dict) -> None:
    if jax.process_index() != 0:
        return
    doc = {"job": "transfer", "encoder": encoder, "config": config.to_dict(),
           "results": results}
    state_files.write_json(os.path.join(workdir, "results.json"), doc)
    (epath.Path(workdir) / "transfer.md").write_text(report.markdown(doc))


def _finished(result: dict | None, settings: dict) -> bool:
    return bool(result) and result.get("settings") == settings


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """The transfer job (library entry point); returns results.json's content."""
    transfer_config.validate(config)
    entries = datasets.expand(config.datasets)
    mesh = parallel.make_mesh()
    parallel.check_global_batch(config.eval_batch_size, mesh, "eval_batch_size")
    builders.hide_accelerators_from_tf()
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)
    with workdir_lock.locked(str(checkpointing.absolute(workdir))):
        pre = load_encoder(config, mesh)
        image_size = config.image_size or pre.config.image_size
        encoder = _encoder_identity(pre, config.pretrained)
        results = _read_results(workdir, encoder)
        watcher = PreemptionWatcher()
        try:
            for entry in entries:
                _one_dataset(entry, pre, config, image_size, workdir, mesh, watcher, encoder,
                             results)
        except loop.Preempted as notice:
            logging.warning("transfer: %s", notice)
            if jax.process_index() == 0:
                print(f"transfer: {notice}", flush=True)
            return {"results": results, "preempted": True}
        finally:
            watcher.close()
    if jax.process_index() == 0:
        print(f"transfer: {report.summary(results)} -> {os.path.join(workdir, 'results.json')}",
              flush=True)
    return {"results": results}


def _one_dataset(entry: str, pre: Pretrained, config, image_size: int, workdir: str, mesh,
                 watcher, encoder: dict, results: dict) -> None:
    name = entry.partition("@")[0]
    todo = [p for p in transfer_config.protocols(config)
            if not _finished(results.get(name, {}).get(p),
                             protocol_settings(config, p, image_size))]
    if not todo:
        logging.info("transfer: %s already finished; skipping it", name)
        return
    target = datasets.resolve(entry, config.data_dir)
    data = splits.load(target, data_dir=config.data_dir, image_size=image_size,
                       val_fraction=config.val_fraction, seed=config.seed)
    directory = os.path.join(workdir, target.slug)
    for protocol in todo:
        if watcher(0):
            raise loop.Preempted(0, 0, directory)
        if protocol == "finetune" and target.multi_label and config.protocol == "both":
            # `both` over a mix (the paper's list has VOC2007): the linear protocol only.
            logging.warning("transfer: %s is multi-label: linear protocol only (fine-tuning "
                            "trains a softmax classifier)", name)
            continue
        logging.info("transfer: %s, %s protocol (validation: %s)", name, protocol,
                     data.validation)
        if protocol == "linear":
            out = _linear(pre, target, data, config, image_size, directory, mesh, watcher,
                          encoder)
        else:
            out = _finetune(pre, target, data, config, image_size, directory, mesh, encoder)
        out = {**out, "validation": data.validation, "num_classes": data.num_classes,
               "settings": protocol_settings(config, protocol, image_size)}
        results.setdefault(name, {})[protocol] = out
        _write(workdir, encoder, config, results)
