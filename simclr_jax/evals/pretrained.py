"""Loading a pretrained SimCLR encoder for downstream use (the eval jobs and users' models).

    from simclr_jax import downstream                      # = simclr_jax.evals.pretrained
    enc = downstream.load_encoder("runs/default")          # newest step of a pretraining run
    h = enc.module.apply(enc.variables, images, train=False)  # images: float in [0, 1]

`enc.module` is a Flax Linen ResNet, usable as a submodule of your own model; `enc.variables` is
{'params', 'batch_stats'} for it; `enc.width` is h's width. Only the encoder (and, on request,
the projection head) is read from the checkpoint, never the optimiser state, and every array is
placed on the mesh given at restore time, so an 8-device checkpoint loads on one device.
"""

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from simclr_jax.config import with_legacy_defaults
from simclr_jax.core import backend, checkpointing, parallel
from simclr_jax.errors import UserError
from simclr_jax.models import ProjectionHead, ResNet, build_model
from simclr_jax.models.simclr import DTYPES, build_encoder


@dataclasses.dataclass(frozen=True)
class Pretrained:
    """An encoder f (and head g) with its variables, and where they came from."""

    module: ResNet
    variables: dict  # {'params': ..., 'batch_stats': ...} of the encoder
    width: int  # width of h
    step: int  # pretraining step of the checkpoint (0 for random init)
    config: ml_collections.ConfigDict  # the pretraining config
    path: str  # the step directory ('' for random init)
    head: ProjectionHead | None = None
    head_variables: dict | None = None
    # The online probe's {'kernel', 'bias'} (an imported official checkpoint: head_supervised).
    probe_variables: dict | None = None


def checkpoints_root(path: str) -> epath.Path | None:
    """The directory holding step directories: DIR/checkpoints, or DIR itself if it holds steps."""
    p = checkpointing.absolute(path)
    if (p / "checkpoints").is_dir():
        return p / "checkpoints"
    return p if p.is_dir() and ocp.path.step.checkpoint_steps(p) else None


def list_steps(path: str) -> list[int]:
    """Finished checkpoint steps of a pretraining workdir, ascending ([] if none yet)."""
    root = checkpoints_root(path)
    return checkpointing.finished_steps(root) if root is not None else []


def _unreadable(step_dir: epath.Path, why: str) -> UserError:
    return checkpointing.UnreadableCheckpoint(
        f"checkpoint {step_dir} is unreadable ({why}): pass another step with "
        f"--config.pretrained={step_dir.parent}/<step>, or the workdir for its newest "
        f"readable step")


def intact_steps(path: str) -> list[int]:
    """list_steps without the steps whose files no longer match their manifest (each one
    named in the log)."""
    root, out = checkpoints_root(path), []
    for step in list_steps(path):
        if why := checkpointing.damage(root / str(step)):
            logging.warning("Skipping checkpoint step %d of %s: it is unreadable (%s)", step,
                            path, why)
        else:
            out.append(step)
    return out


def resolve_checkpoint(path: str) -> tuple[epath.Path, int]:
    """(step directory, step) for a workdir (newest intact step) or a step dir like
    DIR/checkpoints/200 (a UserError if its files are damaged)."""
    p = checkpointing.absolute(path)
    if not p.exists():
        raise UserError(f"pretrained path {path} does not exist (config.pretrained): pass the "
                        f"pretraining run's --workdir or one of its checkpoints/<step> dirs")
    if (p / "state").is_dir() and p.name.isdigit():
        if why := checkpointing.damage(p):
            raise _unreadable(p, why)
        return p, int(p.name)
    steps = intact_steps(path)
    if not steps:
        damaged = " (every checkpoint in it is damaged, see the warnings above)" if list_steps(
            path) else ""
        raise UserError(
            f"{path} holds no finished checkpoint{damaged} (config.pretrained): expected a "
            f"pretraining workdir with checkpoints/<step>/ or a step directory such as "
            f"{p / 'checkpoints' / '1000'}; if pretraining is still starting, rerun with --wait")
    return checkpoints_root(path) / str(steps[-1]), steps[-1]


def read_config(step_dir: epath.Path) -> ml_collections.ConfigDict:
    """The pretraining config saved next to the state (item 'config'); keys added since it was
    written take their legacy values (config.LEGACY), i.e. the network it was trained as."""
    try:
        return with_legacy_defaults(ocp.JsonCheckpointHandler().restore(step_dir / "config"))
    except (FileNotFoundError, ValueError) as e:
        raise UserError(f"checkpoint {step_dir} has no readable config item (was it written by "
                        f"simclr_jax.pretrain?): {e}") from None


# Which keys / shapes two variable trees differ in (kept under its old name).
architecture_diff = checkpointing.tree_diff


def expected_config(pretrain_config: ml_collections.ConfigDict,
                    overrides: dict | None = None) -> ml_collections.ConfigDict:
    """The pretraining config with the non-None architecture `overrides` applied."""
    config = ml_collections.ConfigDict(pretrain_config.to_dict())
    config.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return config


def abstract_variables(module, image_size: int) -> dict:
    """Shapes of `module`'s variables (no compute, no memory)."""
    x = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
    return jax.eval_shape(lambda x: module.init(jax.random.PRNGKey(0), x, train=False), x)


def load(path: str, *, mesh: jax.sharding.Mesh | None = None, with_head: bool = False,
         with_probe: bool = False, architecture: dict | None = None) -> Pretrained:
    """Restores the encoder (and head, and probe) of a pretraining checkpoint onto `mesh`
    (replicated).

    `architecture` (e.g. {'resnet_depth': 50, 'width_multiplier': 2.0}) states what the caller
    expects; a checkpoint of another architecture is a UserError naming the keys and shapes
    that differ. Default mesh: all devices.
    """
    step_dir, step = resolve_checkpoint(path)
    stored_config = read_config(step_dir)
    config = expected_config(stored_config, architecture)
    model = build_model(config)
    expected = abstract_variables(model, config.image_size)
    want = {"params": {"encoder": expected["params"]["encoder"]},
            "batch_stats": {"encoder": expected["batch_stats"]["encoder"]}}
    if with_head:  # a head of mode 'none' has no variables: nothing to read
        for collection in want:
            if head := expected[collection].get("head"):
                want[collection]["head"] = head
    stored = checkpointing.read_state_metadata(step_dir)
    have = {c: {k: stored.get(c, {}).get(k, {}) for k in want[c]} for c in want}
    if diff := architecture_diff(want, have):
        raise UserError(
            f"checkpoint {step_dir} is not the expected architecture (resnet_depth="
            f"{config.resnet_depth}, width_multiplier={config.width_multiplier}, "
            f"sk_ratio={config.sk_ratio}, se_ratio={config.se_ratio}, shortcut="
            f"{config.shortcut}, proj_head_mode={config.proj_head_mode}, num_proj_layers="
            f"{config.num_proj_layers}): {diff}")
    if with_probe:
        probe = stored.get("params", {}).get("probe")
        if not probe or set(probe) != {"kernel", "bias"}:
            raise UserError(
                f"checkpoint {step_dir} has no online probe (config.classifier_from_probe=True "
                f"needs one: pretrain with config.online_probe=True on a labelled dataset, or "
                f"import an official checkpoint that has head_supervised)")
        want["params"]["probe"] = probe
    mesh = mesh if mesh is not None else parallel.make_mesh()
    sharding = parallel.replicated(mesh)
    target = jax.tree_util.tree_map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), want)
    try:
        restored = ocp.PyTreeCheckpointer().restore(
            step_dir / "state", args=ocp.args.PyTreeRestore(
                item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
                partial_restore=True))
    except Exception as e:  # noqa: BLE001  (TensorStore's read errors come as many types)
        raise _unreadable(step_dir, " ".join(str(e).split())[:300]) from None
    pre = _pretrained(config, restored, step, str(step_dir), with_head)
    if with_probe:
        pre = dataclasses.replace(pre, probe_variables=dict(restored["params"]["probe"]))
    return pre


def random_init(config: ml_collections.ConfigDict, *, seed: int = 0,
                mesh: jax.sharding.Mesh | None = None, with_head: bool = False) -> Pretrained:
    """The same architecture with fresh random weights: the baseline a checkpoint must beat."""
    model = build_model(config)
    sharding = parallel.replicated(mesh if mesh is not None else parallel.make_mesh())
    x = jnp.zeros((1, config.image_size, config.image_size, 3))
    variables = parallel.run_once(lambda k: model.init(k, x, train=False),
                                  jax.random.PRNGKey(seed), out_shardings=sharding)
    return _pretrained(config, variables, 0, "", with_head)


def _pretrained(config, variables, step, path, with_head) -> Pretrained:
    encoder = build_encoder(config, backend.conv_module(config.conv_impl))
    head = head_variables = None
    if with_head:
        head = ProjectionHead(mode=config.proj_head_mode, num_layers=config.num_proj_layers,
                              out_dim=config.proj_out_dim, dtype=DTYPES[config.dtype])
        head_variables = {c: variables[c].get("head", {}) for c in ("params", "batch_stats")}
    return Pretrained(
        module=encoder, width=encoder.out_width, step=step, config=config, path=path,
        variables={c: variables[c]["encoder"] for c in ("params", "batch_stats")},
        head=head, head_variables=head_variables)


def load_encoder(path: str, *, mesh: jax.sharding.Mesh | None = None) -> Pretrained:
    """The encoder of a pretraining workdir (newest step) or step directory.

    Returns a Pretrained whose `.module`, `.variables` and `.width` are the Linen ResNet, its
    {'params', 'batch_stats'} and h's width.
    """
    return load(path, mesh=mesh)
