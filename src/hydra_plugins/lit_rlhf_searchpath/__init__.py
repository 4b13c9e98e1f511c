"""Your configs next to ours: `./conf` of the working directory is on Hydra's search path.

Run from a project folder holding `conf/experiment/my_grpo.yaml` and `+experiment=my_grpo` finds it, as
`conf/reward/my_mix.yaml` becomes `reward=my_mix`. Your folder comes first, so a file of yours with the
name of one of ours replaces it. Elsewhere, name the folder: `hydra.searchpath=[file:///path/to/conf]`.
"""

from __future__ import annotations

from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

USER_CONFIG_DIR = "conf"


class UserConfigSearchPath(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        folder = Path.cwd() / USER_CONFIG_DIR
        if folder.is_dir():
            search_path.prepend(provider="lit-rlhf-user", path=f"file://{folder}")
