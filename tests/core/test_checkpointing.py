"""Checkpoints: the manifest that finds damaged files, the shape check before a restore, and a
failed save as one clear error that keeps the previous step."""

import errno
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest
from etils import epath

from simclr_jax.core import checkpointing, parallel, train
from simclr_jax.errors import UserError


@pytest.fixture
def run(pretrained_run, tmp_path) -> Path:
    """A copy of the session's 4-step run (checkpoints 2 and 4, written by this code)."""
    return Path(shutil.copytree(pretrained_run, tmp_path / "run"))


def biggest_file(step_dir: Path) -> Path:
    return max((p for p in (step_dir / "state").rglob("*") if p.is_file()),
               key=lambda p: p.stat().st_size)


def flip_bit(path: Path, offset: int) -> bytes:
    data = path.read_bytes()
    changed = bytearray(data)
    changed[offset] ^= 0x10
    path.write_bytes(bytes(changed))
    return data


def test_a_flipped_bit_reads_back_as_wrong_numbers_without_any_error(run):
    """Why the manifest exists: Orbax / TensorStore keep no checksum of the array data."""
    before = checkpointing.read_numpy(str(run), 4)
    flip_bit(biggest_file(run / "checkpoints" / "4"), 1000)
    after = checkpointing.read_numpy(str(run), 4)
    changed = [not np.array_equal(a, b) for a, b in zip(
        jax.tree_util.tree_leaves(before), jax.tree_util.tree_leaves(after), strict=True)]
    assert sum(changed) == 1  # one array silently differs (by a few ulps, or NaN / inf)


def test_manifest_names_the_flipped_truncated_or_missing_file(run):
    step_dir = run / "checkpoints" / "4"
    assert (step_dir / checkpointing.MANIFEST).exists()
    assert checkpointing.damage(epath.Path(step_dir)) == ""
    target = biggest_file(step_dir)
    name = str(target.relative_to(step_dir))
    original = flip_bit(target, 1000)
    assert checkpointing.damage(epath.Path(step_dir)) == (
        f"file {name} does not match its checksum (its contents changed after the save)")
    target.write_bytes(original[:len(original) // 2])
    assert checkpointing.damage(epath.Path(step_dir)) == (
        f"file {name} has {len(original) // 2} bytes, {len(original)} when it was saved")
    target.unlink()
    assert checkpointing.damage(epath.Path(step_dir)) == f"file {name} is missing"
    target.write_bytes(original)
    assert checkpointing.damage(epath.Path(step_dir)) == ""
    # A step without a manifest (an older version's, or killed before writing it) is trusted.
    (step_dir / checkpointing.MANIFEST).unlink()
    flip_bit(target, 1000)
    assert checkpointing.damage(epath.Path(step_dir)) == ""


def _state_target(tiny_config, **overrides):
    config = tiny_config(**overrides)
    mesh = parallel.make_mesh()
    parts = train.build_training(config, mesh)
    return train.abstract_state(parts.model, parts.tx, config, mesh)


def test_restore_of_another_architecture_is_refused_before_orbax_reads(run, tiny_config,
                                                                       monkeypatch):
    """Orbax aborts a mismatched restore at the first array and leaves the other reads on a
    closed event loop ('Event loop is closed' tracebacks at exit): it must never start."""
    mngr = checkpointing.checkpoint_manager(str(run), read_only=True)
    monkeypatch.setattr(mngr, "restore", lambda *a, **k: pytest.fail("Orbax restore started"))
    with pytest.raises(UserError, match=r"checkpoint step 4 .* does not match .*shapes differ: "
                       r"params/encoder/\S+ \(\d+,\) vs expected \(\d+,\)"):
        checkpointing.restore(mngr, 4, _state_target(tiny_config, width_multiplier=0.25))
    mngr.close()


def test_failed_save_is_one_error_naming_the_path_and_keeps_the_previous_step(
        run, tmp_path, tiny_config, monkeypatch):
    """Disk full during an async save (simulated: every file write under step 4 fails)."""
    target = _state_target(tiny_config)
    mngr = checkpointing.checkpoint_manager(str(run), read_only=True)
    state = checkpointing.restore(mngr, 2, target)
    mngr.close()
    workdir = tmp_path / "new"
    writer = checkpointing.Writer(checkpointing.checkpoint_manager(str(workdir)))
    writer.save(2, state, tiny_config())
    writer.finish()

    real_write = epath.Path.write_text

    def disk_full(self, *args, **kwargs):
        if "/checkpoints/4" in str(self):
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(epath.Path, "write_text", disk_full)
    with pytest.raises(UserError) as error:
        writer.save(4, state, tiny_config())
        writer.finish()
    message = str(error.value)
    assert message.startswith(f"could not write checkpoint step 4 to {workdir / 'checkpoints'}")
    assert "No space left on device" in message and "(step 2) is intact" in message
    monkeypatch.undo()
    writer.close()
    assert checkpointing.finished_steps(epath.Path(workdir / "checkpoints")) == [2]
    assert checkpointing.damage(epath.Path(workdir / "checkpoints" / "2")) == ""
    mngr = checkpointing.checkpoint_manager(str(workdir))
    restored = checkpointing.restore(mngr, 2, target)
    mngr.close()
    for a, b in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(restored),
                    strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_save_on_the_cpu_devices_compiles_nothing_and_restores_the_same(tmp_path):
    """Orbax's replica-parallel default would slice every replicated array once per device,
    each slice shape its own XLA program (164 compilations in a 4-step run on 8 CPU devices);
    on CPU the arrays are written whole, so a save compiles nothing. Leading axes that split
    over the 8 devices (what replica-parallel slices), shapes no other test uses (so the
    persistent compilation cache cannot hide a compilation)."""
    import orbax.checkpoint as ocp

    mesh = parallel.make_mesh()
    assert mesh.devices.size == 8
    rng = np.random.default_rng(0)
    tree = {"a": rng.normal(size=(24, 7)).astype(np.float32),
            "b": rng.normal(size=(88,)).astype(np.float32),
            "c": rng.integers(0, 9, (40, 5, 3)).astype(np.int32)}
    state = jax.device_put(tree, parallel.replicated(mesh))
    jax.block_until_ready(state)
    compiles = []

    def listen(event: str, seconds: float, **_) -> None:
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(seconds)

    mngr = checkpointing.checkpoint_manager(str(tmp_path))
    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        mngr.save(1, args=ocp.args.Composite(state=ocp.args.StandardSave(state)))
        mngr.wait_until_finished()
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
        mngr.close()
    assert compiles == []
    back = checkpointing.read_numpy(str(tmp_path))
    for key, value in tree.items():
        np.testing.assert_array_equal(back[key], value)
