"""mkdocs hook: the configuration and Python API reference pages, generated at build time.

The config pages are written from `src/lit_rlhf/conf/**/*.yaml` and their comments (a file's leading
comment block describes the choice, a comment block above a key describes the key), the API pages from
each public package's `__all__` through mkdocstrings. Nothing generated is committed, so neither can
drift from the code. `mkdocs.yml` names this file under `hooks:`; the nav entries
`reference/config/index.md` and `reference/api/index.md` are expanded into one page per group or package.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "lit_rlhf"
CONF = PACKAGE / "conf"
CONFIG_DIR = "reference/config"
API_DIR = "reference/api"
PRIMARY = ("train", "evaluate", "generate")
# How a choice of each group is selected on the command line, when not `group=choice`.
SELECTORS = {"experiment": "+experiment={}"}
KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[^\s#:-][^:#]*?):(?:\s|$)")
ITEM_LINE = re.compile(r"^(?P<indent> *)- (?P<item>.*)$")


@dataclass
class ConfigFile:
    """One YAML file of the config tree: its description, package, defaults list and documented keys."""

    path: Path
    description: list[str] = field(default_factory=list)
    package: str | None = None
    defaults: list[tuple[str, str]] = field(default_factory=list)  # (entry, its comment)
    comments: dict[str, str] = field(default_factory=dict)  # dotted key within the file -> comment
    values: dict[str, str | None] = field(default_factory=dict)  # dotted key -> its value as written

    @property
    def group(self) -> str:
        return self.path.parent.relative_to(CONF).as_posix()

    @property
    def choice(self) -> str:
        return self.path.stem


def parse(path: Path) -> ConfigFile:
    """Read a config file line by line: YAML loaders drop the comments, and reformat the values."""
    parsed = ConfigFile(path)
    lines = path.read_text().splitlines()
    body = 0
    for body, line in enumerate(lines):  # noqa: B007 - the index where the leading comment block ends
        if not line.startswith("#"):
            break
        text = line[1:].strip()
        if text.startswith("@package"):
            parsed.package = text.split(maxsplit=1)[1]
        else:
            parsed.description.append(line[1:].removeprefix(" ").rstrip())
    else:
        body = len(lines)

    stack: list[tuple[int, str]] = []
    pending: list[str] = []
    items: dict[str, list[str]] = {}  # a key written with an empty value -> its block-list items
    for line in lines[body:]:
        stripped = line.strip()
        if not stripped:
            pending = []
            continue
        if stripped.startswith("#"):
            pending.append(stripped[1:].strip())
            continue
        item = ITEM_LINE.match(line)
        if item:
            if stack and stack[0][1] == "defaults":
                parsed.defaults.append((item["item"].strip(), " ".join(pending)))
            elif stack:
                items.setdefault(".".join(name for _, name in stack), []).append(item["item"].strip())
        elif key := KEY_LINE.match(line):
            indent = len(key["indent"])
            while stack and stack[-1][0] >= indent:
                stack.pop()
            stack.append((indent, key["key"].strip()))
            dotted = ".".join(name for _, name in stack)
            if pending:
                parsed.comments[dotted] = " ".join(pending)
            value = line[key.end() :].strip()
            if dotted != "defaults":
                parsed.values[dotted] = value or None
        pending = []

    for dotted, value in list(parsed.values.items()):
        if value is not None:
            continue
        if dotted in items:
            parsed.values[dotted] = "[" + ", ".join(items[dotted]) + "]"
        elif any(other.startswith(dotted + ".") for other in parsed.values):
            del parsed.values[dotted]  # a mapping: its leaves carry the values
        else:
            parsed.values[dotted] = "null"
    return parsed


def package_of(config: ConfigFile) -> str:
    """Where the file's keys land in the composed config (Hydra's default package is the group path)."""
    if config.package == "_global_" or config.group == ".":
        return ""
    if config.package:
        return config.package
    return config.group.replace("/", ".")


def markdown_text(text: str) -> str:
    """A comment as Markdown inside a table cell: code spans kept, the rest escaped."""
    parts = re.split(r"(`[^`]*`)", text)
    out = []
    for part in parts:
        if part.startswith("`") and part.endswith("`") and len(part) > 1:
            out.append(part.replace("|", "\\|"))
            continue
        for char in "\\*_[]|":
            part = part.replace(char, "\\" + char)
        out.append(part.replace("<", "&lt;").replace(">", "&gt;"))
    return "".join(out)


def code(text: str) -> str:
    """A value as written in the file, as a code span."""
    text = text.replace("|", "\\|")
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def key_table(config: ConfigFile) -> list[str]:
    """| key | default | what it is | for every leaf and every commented key of the file."""
    package = package_of(config)
    keys = list(config.values)
    for key in config.comments:
        if key not in config.values and key != "defaults":
            # A commented mapping (its leaves follow it) or a key the loader dropped: show it before its leaves.
            after = next((i for i, leaf in enumerate(keys) if leaf.startswith(key + ".")), len(keys))
            keys.insert(after, key)
    if not keys:
        return []
    rows = ["| key | default | description |", "|---|---|---|"]
    for key in keys:
        full = f"{package}.{key}" if package else key
        default = code(config.values[key]) if key in config.values else ""
        rows.append(f"| `{full}` | {default} | {markdown_text(config.comments.get(key, ''))} |")
    return rows


def description(lines: list[str]) -> list[str]:
    """A leading comment block as Markdown: prose joined into paragraphs, indented lines (commands) as code."""
    out: list[str] = []
    prose: list[str] = []
    code_lines: list[str] = []

    def flush() -> None:
        if prose:
            out.extend([markdown_text(" ".join(prose)), ""])
            prose.clear()
        if code_lines:
            out.extend(["```text", *code_lines, "```", ""])
            code_lines.clear()

    for line in lines:
        if line.startswith("  "):
            if prose:
                flush()
            code_lines.append(line.strip())
        else:
            if code_lines:
                flush()
            if line:
                prose.append(line)
            else:
                flush()
    flush()
    return out


def selector(config: ConfigFile) -> str:
    template = SELECTORS.get(config.group, config.group + "={}")
    return template.format(config.choice)


def primary_defaults() -> dict[str, str]:
    """group -> its default choice in train.yaml."""
    chosen = {}
    for entry, _ in parse(CONF / "train.yaml").defaults:
        if ":" in entry:
            group, choice = (part.strip() for part in entry.split(":", 1))
            chosen[group] = choice
    return chosen


def choice_section(config: ConfigFile, defaults: dict[str, str], level: str) -> list[str]:
    default = " (train.yaml's default)" if defaults.get(config.group) == config.choice else ""
    lines = [f"{level} `{config.choice}`{default}", ""]
    lines += description(config.description)
    lines += [f"Select: `{selector(config)}` · file: `conf/{config.path.relative_to(CONF).as_posix()}`", ""]
    if config.defaults:
        lines.append("Defaults list:")
        lines.append("")
        lines += [f"- `{entry}`" + (f": {markdown_text(note)}" if note else "") for entry, note in config.defaults]
        lines.append("")
    table = key_table(config)
    lines += [*table, ""] if table else ["No keys of its own.", ""]
    return lines


def groups() -> dict[str, list[str]]:
    """Top-level group -> its group paths (itself and nested groups such as regularizer/kl/estimator)."""
    found: dict[str, set[str]] = {}
    for path in CONF.rglob("*.yaml"):
        group = path.parent.relative_to(CONF).as_posix()
        if group != ".":
            found.setdefault(group.split("/")[0], set()).add(group)
    return {top: sorted(found[top]) for top in sorted(found)}


def group_page(top: str, group_paths: list[str], defaults: dict[str, str]) -> str:
    lines = [f"# `{top}`", ""]
    lines += [
        "Generated from the YAML files under `src/lit_rlhf/conf/"
        + top
        + "/` and their comments when the site is built. Keys are written as you override them on the "
        "command line; `???` marks a value you must give.",
        "",
    ]
    for group in group_paths:
        configs = [parse(path) for path in sorted((CONF / group).glob("*.yaml"))]
        nested = len(group_paths) > 1
        if nested:
            lines += [f"## `{group}`", ""]
        names = ", ".join(f"`{config.choice}`" for config in configs)
        lines += [f"Choices: {names}.", ""]
        for config in configs:
            lines += choice_section(config, defaults, "###" if nested else "##")
    return "\n".join(lines)


def config_index(tops: dict[str, list[str]]) -> str:
    lines = [
        "# Configuration",
        "",
        "Every config group and key, generated from `src/lit_rlhf/conf` and its comments when the site is "
        "built, so it cannot drift from the code. A run composes a primary config (below) with one choice per "
        "group; `group=choice` switches a choice, `key=value` sets a key, `+experiment=NAME` applies an "
        "experiment's patch. See [Config groups](../../concepts/config-groups.md) for how they fit together.",
        "",
        "| group | choices |",
        "|---|---|",
    ]
    for top, group_paths in tops.items():
        for group in group_paths:
            choices = ", ".join(f"`{path.stem}`" for path in sorted((CONF / group).glob("*.yaml")))
            lines.append(f"| [`{group}`]({top}.md) | {choices} |")
    lines.append("")
    for name in PRIMARY:
        config = parse(CONF / f"{name}.yaml")
        lines += [f"## `{name}.yaml`", ""]
        lines += description(config.description)
        lines += ["Defaults list:", ""]
        lines += [f"- `{entry}`" + (f": {markdown_text(note)}" if note else "") for entry, note in config.defaults]
        lines += ["", *key_table(config), ""]
    return "\n".join(lines)


def public_packages() -> list[str]:
    """Dotted names of every package whose `__init__.py` declares `__all__` (conf excluded)."""
    found = []
    for init in sorted(PACKAGE.rglob("__init__.py")):
        tree = ast.parse(init.read_text())
        declares = any(
            isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets)
            for node in tree.body
        )
        if declares and init.parent != PACKAGE:
            found.append(".".join(init.parent.relative_to(PACKAGE.parent).parts))
    return found


def api_page(package: str) -> str:
    return f"# `{package}`\n\n::: {package}\n    options:\n      show_root_heading: false\n"


def api_index(packages: list[str]) -> str:
    lines = [
        "# Python API",
        "",
        "What a user may import: each package lists its public names in `__all__`, and these pages are "
        "generated from those names and their docstrings when the site is built. Anything not listed is "
        "private and may change. `import lit_rlhf` alone is cheap: the subpackages load on first use.",
        "",
        "| package | |",
        "|---|---|",
    ]
    for package in packages:
        init = PACKAGE.parent.joinpath(*package.split("."), "__init__.py")
        docstring = ast.get_docstring(ast.parse(init.read_text())) or ""
        summary = docstring.split("\n\n")[0].replace("\n", " ")
        lines.append(f"| [`{package}`]({package}.md) | {markdown_text(summary)} |")
    lines += [
        "",
        "## `lit_rlhf`",
        "",
        "The top level re-exports the four stage modules (from `lit_rlhf.modules`), `Reward` (from `lit_rlhf.rewards`)",
        "and the errors that reach the user as one line:",
        "",
        "::: lit_rlhf",
        "    options:",
        "      show_root_heading: false",
        "      members: [UserError, ConfigError, DataError]",
        "",
    ]
    return "\n".join(lines)


def pages() -> dict[str, str]:
    """Every generated page: its path under docs/ -> its Markdown."""
    tops = groups()
    defaults = primary_defaults()
    generated = {f"{CONFIG_DIR}/index.md": config_index(tops)}
    generated |= {f"{CONFIG_DIR}/{top}.md": group_page(top, paths, defaults) for top, paths in tops.items()}
    packages = public_packages()
    generated[f"{API_DIR}/index.md"] = api_index(packages)
    generated |= {f"{API_DIR}/{package}.md": api_page(package) for package in packages}
    return generated


def expand_nav(nav: list, sections: dict[str, list]) -> list:
    """Replace each nav entry that points at a generated index by a section holding all its pages."""
    expanded = []
    for entry in nav:
        if isinstance(entry, dict):
            title, target = next(iter(entry.items()))
            if isinstance(target, list):
                expanded.append({title: expand_nav(target, sections)})
            elif target in sections:
                expanded.append({title: sections[target]})
            else:
                expanded.append(entry)
        else:
            expanded.append(entry)
    return expanded


def on_config(config):
    tops = groups()
    packages = public_packages()
    sections = {
        f"{CONFIG_DIR}/index.md": [f"{CONFIG_DIR}/index.md", *({top: f"{CONFIG_DIR}/{top}.md"} for top in tops)],
        f"{API_DIR}/index.md": [f"{API_DIR}/index.md", *({package: f"{API_DIR}/{package}.md"} for package in packages)],
    }
    config["nav"] = expand_nav(config["nav"], sections)
    return config


def on_files(files, config):
    from mkdocs.structure.files import File

    for path, content in pages().items():
        files.append(File.generated(config, path, content=content))
    return files
