"""Compiled memory (XLA's memory_analysis, nothing is run or allocated): the NT-Xent loss per
device at large global batches, chunked and not; the train step with and without remat.

    python bench/memory.py --what=loss        # 8 simulated devices, B = 4k ... 64k
    python bench/memory.py --what=remat       # ResNet-50 step at 224 px, remat none / blocks
    python bench/memory.py --what=loss --batches=32768 --devices=0   # the real local devices

`--what=loss`: jit(value_and_grad) of the loss on z1, z2 (B, 128) f32 sharded over the devices,
as in the train step (each device's anchors against the all-gathered views); prints the
per-device temporary bytes of `core.losses.contrastive_loss` and of
`core.chunked_loss.nt_xent_chunked` for each --chunks entry.
`--what=remat`: the whole `core.train.make_train_step` (augmentation, forward, backward, LARS)
lowered on abstract inputs, remat='none' vs 'blocks'; temporaries per device.
"""

import os
import sys

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

flags.DEFINE_list("what", ["loss", "remat"], "loss and/or remat.")
flags.DEFINE_integer("devices", 8, "Simulated CPU devices (set before JAX starts); 0 = use the "
                     "machine's own devices (GPU/TPU).")
flags.DEFINE_list("batches", ["4096", "8192", "16384", "32768", "65536"], "Global batches.")
flags.DEFINE_list("chunks", ["1024"], "loss_chunk_size values to compare with the plain loss.")
flags.DEFINE_integer("dim", 128, "Projection output dim.")
flags.DEFINE_integer("remat_depth", 50, "ResNet depth of the remat case.")
flags.DEFINE_integer("remat_image_size", 224, "Image size of the remat case.")
flags.DEFINE_integer("remat_batch", 0, "Global batch of the remat case (0 = 2 per device).")
flags.DEFINE_string("remat_dtype", "float32", "Compute dtype of the remat case.")
FLAGS = flags.FLAGS


def mib(n: float) -> str:
    return f"{n / 2**20:10.1f} MiB"


def compiled_memory(fn, *abstract_args):
    """XLA's memory analysis of jit(fn) compiled for these abstract arguments."""
    import jax

    return jax.jit(fn).lower(*abstract_args).compile().memory_analysis()


def loss_table() -> None:
    import jax
    import jax.numpy as jnp

    from simclr_jax.core import chunked_loss, losses, parallel

    mesh = parallel.make_mesh()
    n = mesh.devices.size
    sharding = parallel.batch_sharded(mesh)
    chunks = [int(c) for c in FLAGS.chunks]
    print(f"NT-Xent value+grad, temporaries per device ({n} devices, d={FLAGS.dim}, f32):")
    print("| global batch | per device | plain | " + " | ".join(f"chunk {c}" for c in chunks)
          + " |")
    print("|---|---|---|" + "---|" * len(chunks))
    for b in (int(x) for x in FLAGS.batches):
        z = jax.ShapeDtypeStruct((b, FLAGS.dim), jnp.float32, sharding=sharding)

        def plain(z1, z2):
            return losses.contrastive_loss(z1, z2, 0.1, mesh=mesh)[0]

        row = [compiled_memory(jax.value_and_grad(plain, argnums=(0, 1)), z, z)]
        for c in chunks:
            def chunked(z1, z2, c=c):
                return chunked_loss.nt_xent_chunked(z1, z2, 0.1, c, mesh=mesh)[0]

            row.append(compiled_memory(jax.value_and_grad(chunked, argnums=(0, 1)), z, z))
        print(f"| {b} | {b // n} | " + " | ".join(mib(m.temp_size_in_bytes).strip()
                                                 for m in row) + " |", flush=True)


def remat_table() -> None:
    from functools import partial

    import jax
    import jax.numpy as jnp

    from simclr_jax.config import base_config
    from simclr_jax.core import backend, optim, parallel, train
    from simclr_jax.models import build_model

    mesh = parallel.make_mesh()
    n = mesh.devices.size
    batch = FLAGS.remat_batch or 2 * n
    size = FLAGS.remat_image_size
    print(f"ResNet-{FLAGS.remat_depth} train step at {size} px, global batch {batch} "
          f"({batch // n} per device, {n} devices), {FLAGS.remat_dtype}; per device:")
    print("| remat | temporaries | arguments | outputs |")
    print("|---|---|---|---|")
    for remat in ("none", "blocks"):
        c = base_config()
        c.update(dict(resnet_depth=FLAGS.remat_depth, image_size=size, batch_size=batch,
                      remat=remat, dtype=FLAGS.remat_dtype))
        model = build_model(c, num_classes=1000, conv=backend.conv_module(c.conv_impl))
        schedule = optim.learning_rate_schedule(c, 100, 10_000)
        tx = optim.build_optimizer(c, schedule)
        state = jax.eval_shape(partial(train.create_train_state, model, tx,
                                       image_size=size), jax.random.PRNGKey(0))
        rep, shard = parallel.replicated(mesh), parallel.batch_sharded(mesh)
        state = jax.tree_util.tree_map(
            partial(lambda x, rep: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep),
                    rep=rep), state)
        views = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.uint8, sharding=shard)
        abstract_batch = {"view1": views, "view2": views,
                          "label": jax.ShapeDtypeStruct((batch,), jnp.int32, sharding=shard)}
        step = train.make_train_step(model, tx, schedule, c, mesh)
        m = step.lower(state, abstract_batch).compile().memory_analysis()
        print(f"| {remat} | {mib(m.temp_size_in_bytes).strip()} | "
              f"{mib(m.argument_size_in_bytes).strip()} | {mib(m.output_size_in_bytes).strip()} |",
              flush=True)


def main(argv) -> None:
    del argv
    if "loss" in FLAGS.what:
        loss_table()
    if "remat" in FLAGS.what:
        remat_table()


if __name__ == "__main__":
    # The simulated device count must be set before JAX starts.
    if "--devices=0" not in sys.argv:
        count = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--devices=")), "8")
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                   + f" --xla_force_host_platform_device_count={count}")
    app.run(main)
