"""Never delete what the run did not write; one run per folder.

Output folders (run, checkpoints, export, cache) are new, empty or carry our marker; any other non-empty
folder is refused in one line before training starts, and its files stay as they were. A second run into a
folder in use is refused, naming the process that holds it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from conftest import CLI_FAST, compose_config
from reliability_tools import one_line, start_cli

from lit_rlhf.callbacks.export import save_pretrained_atomically
from lit_rlhf.command import find_user_error
from lit_rlhf.errors import OutputError
from lit_rlhf.outputs import MARKER, RunFolderLock, claim_folder, replace_folder_atomically
from lit_rlhf.train import build


def project_folder(path: Path) -> dict[str, str]:
    """A folder of the user's: a few files and a subfolder. Returns name -> SHA-256 of the contents."""
    (path / "src").mkdir(parents=True)
    (path / "notes.txt").write_text("my notes\n")
    (path / "config.json").write_text('{"mine": true}\n')
    (path / "src" / "main.py").write_text("print('hello')\n")
    return contents(path)


def contents(path: Path) -> dict[str, str]:
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() for p in path.rglob("*") if p.is_file()
    }


def test_claim_creates_marks_accepts_ours_and_refuses_a_foreign_folder(tmp_path):
    new = claim_folder(tmp_path / "new", "export", "paths.export_dir")
    assert (new / MARKER).is_file()
    assert claim_folder(new, "export", "paths.export_dir") == new  # ours: accepted again
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (claim_folder(empty, "export", "paths.export_dir") / MARKER).is_file()

    before = project_folder(tmp_path / "project")
    with pytest.raises(OutputError) as refused:
        claim_folder(tmp_path / "project", "export", "paths.export_dir")
    message = str(refused.value)
    assert "\n" not in message
    assert "holds 3 entries lit-rlhf did not write (config.json, notes.txt, src)" in message
    assert "paths.export_dir=" in message
    assert contents(tmp_path / "project") == before and not (tmp_path / "project" / MARKER).exists()


@pytest.mark.parametrize("setting", ["paths.export_dir", "paths.checkpoint_dir", "paths.cache_dir"])
def test_a_run_pointed_at_a_project_folder_is_refused_before_training(tmp_path, setting):
    project = tmp_path / "project"
    before = project_folder(project)
    with pytest.raises(Exception) as refused:
        build(compose_config("rm_tiny", tmp_path / "run", [f"{setting}={project}"]))
    error = find_user_error(refused.value)
    assert isinstance(error, OutputError) and "\n" not in str(error)
    assert "refusing to write the" in str(error) and f"{setting}=..." in str(error)
    assert contents(project) == before and not (project / MARKER).exists()


def test_export_into_the_working_directory_is_refused_and_deletes_nothing(tmp_path, monkeypatch):
    # `paths.export_dir=.` used to swap the working directory away and delete it, the run's checkpoint included.
    before = project_folder(tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OutputError, match="refusing to write the export into"):
        save_pretrained_atomically(object(), None, Path("."))
    assert contents(tmp_path) == before


def test_an_earlier_export_is_replaced_atomically(tmp_path):
    def write(text):
        return lambda folder: (folder.mkdir(), (folder / "config.json").write_text(text))

    target = replace_folder_atomically(tmp_path / "export", write("first"), "export", "paths.export_dir")
    assert (target / "config.json").read_text() == "first" and (target / MARKER).exists()
    replace_folder_atomically(target, write("second"), "export", "paths.export_dir")
    assert (target / "config.json").read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"], "no temporary or old folder left"


@pytest.mark.slow
def test_a_second_run_into_a_folder_in_use_is_refused_naming_the_owner(tmp_path):
    run_dir = tmp_path / "run"
    claim_folder(run_dir, "run", "hydra.run.dir")
    lock = RunFolderLock(run_dir)
    lock.acquire()  # a live run: this test process holds the folder
    try:
        second = start_cli(["+experiment=rm_tiny", *CLI_FAST, f"hydra.run.dir={run_dir}"], cwd=tmp_path)
        _, stderr = second.communicate(timeout=300)
    finally:
        lock.release()
    assert second.returncode == 2
    line = one_line(stderr, "error:")
    assert f"the run folder {run_dir} is in use by another run (process {os.getpid()} on" in line
    assert not (run_dir / "status.json").exists(), "the refused run wrote nothing of its own into the folder"


def test_a_run_folder_holding_only_what_hydra_wrote_is_adopted_and_any_other_is_refused(tmp_path):
    from lit_rlhf.command import claim_run_folder

    fresh = tmp_path / "fresh"
    (fresh / ".hydra").mkdir(parents=True)
    (fresh / "train.log").write_text("")
    assert (claim_run_folder(fresh) / MARKER).is_file()
    before = project_folder(tmp_path / "project")
    (tmp_path / "project" / ".hydra").mkdir()  # Hydra wrote its record into the user's folder just now
    with pytest.raises(OutputError, match=r"Choose a new or empty folder with hydra\.run\.dir="):
        claim_run_folder(tmp_path / "project")
    assert contents(tmp_path / "project") == before
