"""I/O faults: a full disk while saving, a read-only output folder. One line each, no temporary file left,
the earlier checkpoint intact. Real faults where this machine lets root mount a small tmpfs (full or
read-only); an injected ENOSPC in the checkpoint writer everywhere."""

from __future__ import annotations

import contextlib
import errno
import subprocess
from pathlib import Path

import pytest
from conftest import compose_config
from reliability_tools import leftovers, load_finite_checkpoint

from lit_rlhf.command import find_user_error
from lit_rlhf.errors import OutputError
from lit_rlhf.train import build, fit

RM = ["data.batch_size=4", "data.val_batch_size=8", "callbacks.checkpoint.every_n_batches=1"]


def user_error_of_fit(run) -> OutputError:
    with pytest.raises(Exception) as failed:
        fit(run)
    error = find_user_error(failed.value)
    assert isinstance(error, OutputError), failed.value
    assert "\n" not in str(error)
    return error


def test_a_full_disk_while_checkpointing_is_one_line_and_keeps_the_earlier_checkpoint(tmp_path):
    run = build(compose_config("rm_tiny", tmp_path, RM))
    writer = run.trainer.strategy.checkpoint_io
    save, calls = writer.save_checkpoint, []

    def second_save_fills_the_disk(checkpoint, path, storage_options=None):
        calls.append(path)
        if len(calls) == 1:
            return save(checkpoint, path, storage_options)
        Path(path).write_bytes(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    writer.save_checkpoint = second_save_fills_the_disk
    error = user_error_of_fit(run)
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert str(error) == f"cannot write the checkpoint {last}: no space left on the device"
    assert not leftovers(tmp_path), "the half-written temporary was left behind"
    checkpoint = load_finite_checkpoint(last)
    assert checkpoint["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]["processed"] == 1


@contextlib.contextmanager
def small_tmpfs(path: Path, options: str):
    """A tmpfs mounted at `path` (root and mount rights needed; skips the test otherwise)."""
    path.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def test_a_read_only_output_folder_is_refused_before_training(tmp_path):
    with small_tmpfs(tmp_path / "readonly", "ro,size=1m") as readonly, pytest.raises(Exception) as refused:
        build(compose_config("rm_tiny", tmp_path / "run", [*RM, f"paths.export_dir={readonly / 'export'}"]))
    error = find_user_error(refused.value)
    assert str(error) == (
        f"cannot write the export folder {readonly / 'export'} (paths.export_dir): {readonly} is not writable "
        "(read-only file system)"
    )


def test_a_disk_that_fills_during_the_export_is_one_line_and_leaves_nothing(tmp_path):
    with small_tmpfs(tmp_path / "full", "size=1m") as full:  # the tiny model's weights alone are 3.4 MB
        run = build(compose_config("rm_tiny", tmp_path / "run", [*RM, f"paths.export_dir={full / 'export'}"]))
        error = user_error_of_fit(run)
        assert str(error) == f"cannot write the export {full / 'export'}: no space left on the device"
        assert list(full.iterdir()) == [], "the partial export was left on the full disk"
    load_finite_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
