"""README.md stays accurate: its table of contents lists every section, and its layout table names
paths that exist and every package and top-level folder. (Its request examples are run against a
served model in tests/integration/test_demo.py; its metric regexes in test_train.py.)"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def headings() -> list[tuple[int, str]]:
    """(level, text) of the ## and ### headings outside code blocks."""
    prose = re.sub(r"```.*?```", "", README, flags=re.S)
    return [(len(hashes), text.strip()) for hashes, text in re.findall(r"^(#{2,3}) (.+)$", prose, flags=re.M)]


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def contents() -> list[tuple[int, str, str]]:
    """(indent level, text, anchor) of each entry of the **Contents** list."""
    block = README.split("**Contents**", 1)[1].split("\n## ", 1)[0]
    entries = re.findall(r"^( *)- \[(.+?)\]\(#(.+?)\)$", block, flags=re.M)
    return [(2 + len(indent) // 2, text, target) for indent, text, target in entries]


def test_contents_lists_every_section_in_order() -> None:
    listed = contents()
    assert [(level, text) for level, text, _ in listed] == headings()
    for _, text, target in listed:
        assert target == anchor(text), f"{text}: link #{target}, GitHub makes #{anchor(text)}"


def test_anchor_follows_github() -> None:
    assert anchor("Training (`train`)") == "training-train"
    assert anchor("Auxiliary channel, negative sampling, bucketing, row_sparse") == (
        "auxiliary-channel-negative-sampling-bucketing-row_sparse"
    )


def layout_paths() -> list[str]:
    table = README.split("## Layout", 1)[1].split("\n## ", 1)[0]
    return [path for cell in re.findall(r"^\| (.+?) \|", table, flags=re.M) for path in re.findall(r"`([^`]+)`", cell)]


def test_layout_paths_exist() -> None:
    paths = layout_paths()
    assert paths
    for path in paths:
        if "*" in path:
            assert list(ROOT.glob(path)), path
        else:
            assert (ROOT / path).exists(), f"the README's layout names {path}, which does not exist"


def test_layout_names_every_module_of_the_package_top_training_serving_and_retrieval() -> None:
    text = README.split("## Layout", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`([^`/]+\.py)`", text)) | {Path(p).name for p in re.findall(r"`([^`]+\.py)`", text)}
    package = ROOT / "container" / "object2vec"
    folders = [package] + [package / name for name in ("training", "serving", "retrieval")]
    missing = sorted(
        str(path.relative_to(package))
        for folder in folders
        for path in folder.glob("*.py")
        if not path.name.startswith("__") and path.name not in named
    )
    assert not missing, f"the README's layout table does not name {missing}"


def test_layout_names_every_package_and_top_level_folder() -> None:
    named = [Path(path.rstrip("/")) for path in layout_paths()]
    listed = {str(path) for path in named} | {str(parent) for path in named for parent in path.parents}
    package = ROOT / "container" / "object2vec"
    subpackages = {str(p.parent.relative_to(ROOT)) for p in package.glob("*/__init__.py")}
    folders = {"benchmarks", "docker", "local_test", "tests", ".ci"}
    missing = (subpackages | folders | {"container/object2vec"}) - listed
    assert not missing, f"the README's layout table lacks {sorted(missing)}"
