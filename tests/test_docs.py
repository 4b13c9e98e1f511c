"""The docs site: its commands compose, its config reference covers every YAML file, and it builds strictly.

The strict build needs the `docs` extra (`pip install -e ".[docs]"`) and is skipped without it; the other
two tests need only the project.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser

from lit_rlhf.config import CONFIG_DIR

ROOT = Path(__file__).resolve().parents[1]
PAGES = [*sorted((ROOT / "docs").rglob("*.md")), ROOT / "README.md"]
COMMAND = re.compile(r"python -m lit_rlhf\.(train|evaluate|generate)\b(.*)")
# Commands that need the reader's own files on the search path (their configs are not in this repository).
NEEDS_USER_CONFIG = re.compile(r"\+experiment=my_|hydra\.searchpath")
PLACEHOLDER = re.compile(r"<[^<>]*>")
HYDRA_FLAG = re.compile(r"\s--(cfg|package|info)\s+\S+")  # Hydra's own flags, not overrides

sys.path.insert(0, str(ROOT / "docs" / "hooks"))
import reference  # noqa: E402  (docs/hooks/reference.py, the mkdocs hook)


def documented_commands() -> list[tuple[str, str, list[str]]]:
    """(page, command, arguments) of every `python -m lit_rlhf.<command>` line in a bash block of the docs."""
    found = []
    for page in PAGES:
        for block in re.findall(r"```bash\n(.*?)```", page.read_text(), flags=re.DOTALL):
            for line in block.replace("\\\n", " ").splitlines():
                match = COMMAND.search(line)
                if not match or NEEDS_USER_CONFIG.search(line):
                    continue
                arguments = shlex.split(HYDRA_FLAG.sub("", PLACEHOLDER.sub("X", match.group(2))), comments=True)
                found.append((str(page.relative_to(ROOT)), match.group(1), arguments))
    return found


def one_job(arguments: list[str]) -> list[str]:
    """The overrides of a sweep's first job: each swept value replaced by its first choice."""
    overrides = [argument for argument in arguments if argument != "-m"]
    single = []
    for override in OverridesParser.create().parse_overrides(overrides):
        if not override.is_sweep_override():
            single.append(override.input_line)
        elif override.is_choice_sweep() and not override.value().tags and "glob" not in override.input_line:
            single.append(f"{override.get_key_element()}={next(override.sweep_string_iterator())}")
        # glob(...) and interval(...) sweeps are Hydra's to expand; the rest of the command still composes.
    return single


COMMANDS = documented_commands()


def test_the_docs_have_commands():
    assert len(COMMANDS) > 40
    assert {command for _, command, _ in COMMANDS} == {"train", "evaluate", "generate"}


@pytest.mark.parametrize(
    ("page", "command", "arguments"), COMMANDS, ids=[f"{page}:{n}" for n, (page, *_) in enumerate(COMMANDS)]
)
def test_every_documented_command_composes(page, command, arguments):
    """Each key and choice a page uses exists: a renamed key fails here, not in a reader's terminal."""
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        compose(command, overrides=one_job(arguments), return_hydra_config=True)


def test_config_reference_covers_every_file_and_comment():
    pages = reference.pages()
    text = "\n".join(pages.values())
    for path in sorted(CONFIG_DIR.rglob("*.yaml")):
        relative = path.relative_to(CONFIG_DIR).as_posix()
        if path.parent != CONFIG_DIR:
            assert f"file: `conf/{relative}`" in text, f"{relative} has no section in the config reference"
        for comment in reference.parse(path).comments.values():
            assert reference.markdown_text(comment) in text, f"{relative}: comment not shown: {comment}"
    regularizer = pages["reference/config/regularizer.md"]
    assert "| `regularizer.kl.coef` | `0.05` | beta: the fixed coefficient" in regularizer
    assert "### `in_reward` (train.yaml's default)" in regularizer
    assert "[`lit_rlhf.losses`](lit_rlhf.losses.md)" in pages["reference/api/index.md"]


@pytest.mark.slow
@pytest.mark.skipif(
    any(importlib.util.find_spec(name) is None for name in ("mkdocs", "material", "mkdocstrings_handlers")),
    reason='the docs extra is not installed (pip install -e ".[docs]")',
)
def test_site_builds_strictly(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (tmp_path / "site" / "reference" / "config" / "regularizer" / "index.html").exists()
    assert (tmp_path / "site" / "reference" / "api" / "lit_rlhf.losses" / "index.html").exists()
