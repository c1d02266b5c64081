"""The README and docs/ name only things that exist: repository paths, links and their anchors,
the sections of docs/reference.md that code comments cite; the README's test command is the one
CI runs, and the README stays a front door.

What counts as a repository path: a word of an inline code span (`...`) or a link target that
starts with a top-level entry of the repository that git keeps (so `runs/demo/...`, an output,
and `src/models/predictor.py` of another project are not checked), with no placeholder in it
(`<task>`, `{workdir}`, `*`); a `:name` suffix (`manifest.py:assign_splits`) and a `#anchor` are
stripped. A path that leaves the repository (`../...`) is always an error. Code spans resolve
from the repository root; link targets from the file that holds them, as GitHub renders them.
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
CODE_SPAN = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"\]\(([^)\s]+)\)")
PLACEHOLDER = re.compile(r"[<>{}*$|=\[\]]|://")


def _ignored(name: str) -> bool:
    patterns = [p.strip().strip("/") for p in (ROOT / ".gitignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]
    return name == ".git" or any(fnmatch.fnmatch(name, p) for p in patterns)


TOP = {p.name for p in ROOT.iterdir() if not _ignored(p.name)}


def _prose(text: str) -> str:
    return FENCE.sub("", text)  # fenced blocks are commands and pictures, not references


def _path_words(text: str) -> list[str]:
    words = []
    for span in CODE_SPAN.findall(_prose(text)):
        for word in span.split():
            word = word.strip(",;()").rstrip(":")
            if PLACEHOLDER.search(word) or word.startswith("-"):
                continue
            word = re.sub(r"(\.\w+):[\w.]+$", r"\1", word).split("#")[0].split("::")[0]
            if word.startswith("../") or word.split("/")[0] in TOP:
                words.append(word)
    return words


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    return {_anchor(m) for m in re.findall(r"^#+ (.+)$", _prose(path.read_text()), re.M)}


@pytest.mark.parametrize("doc", DOCS, ids=[str(d.relative_to(ROOT)) for d in DOCS])
def test_every_repository_path_named_exists(doc: Path) -> None:
    text = doc.read_text()
    missing = []
    for word in _path_words(text):
        target = (ROOT / word).resolve()
        if not target.is_relative_to(ROOT) or not (ROOT / word).exists():
            missing.append(f"`{word}`")
    for link in LINK.findall(_prose(text)):
        if link.startswith(("http://", "https://", "mailto:")):
            continue
        file_part, _, anchor = link.partition("#")
        target = (doc.parent / file_part).resolve() if file_part else doc
        if not target.is_relative_to(ROOT) or not target.exists():
            missing.append(f"link {link}")
        elif anchor and target.suffix == ".md" and anchor not in _anchors(target):
            missing.append(f"link {link} (no such heading)")
    assert not missing, f"{doc.relative_to(ROOT)} names what does not exist: {', '.join(missing)}"


def test_the_path_rule_checks_what_it_should() -> None:
    words = _path_words("`app/pipeline.py` `thinkjepa/data/manifest.py:assign_splits` `runs/demo/report.md` "
                        "`<workdir>/logs` `../shared/x.py` `python benchmarks/bench_guidance.py --seed 3` "
                        "`pyproject.toml` `src/models/predictor.py` `thinkjepa.<X>.<Y>`")
    assert words == ["app/pipeline.py", "thinkjepa/data/manifest.py", "../shared/x.py",
                     "benchmarks/bench_guidance.py", "pyproject.toml"]
    assert _anchor("The whole pipeline on SLURM: index once, a job array") == "the-whole-pipeline-on-slurm-index-once-a-job-array"


def test_code_comments_cite_sections_that_docs_reference_has() -> None:
    sections = set(re.findall(r"^## (\d+)\.", (ROOT / "docs" / "reference.md").read_text(), re.M))
    cited = {}
    for folder in ("thinkjepa", "app", "cache_schema", "extract", "train", "evaluate", "benchmarks", "tests"):
        for path in (ROOT / folder).rglob("*.py"):
            for a, b in re.findall(r"docs/reference\.md §(\d+)(?:-(\d+))?", path.read_text()):
                cited.setdefault(a, path.name)
                if b:
                    cited.setdefault(b, path.name)
    for path in (ROOT / "pyproject.toml", ROOT / "pipelines.yaml"):
        for a in re.findall(r"docs/reference\.md §(\d+)", path.read_text()):
            cited.setdefault(a, path.name)
    assert cited, "no comment cites docs/reference.md: the rule below checks nothing"
    assert not {s: f for s, f in cited.items() if s not in sections}


def test_readme_is_a_front_door_and_its_test_command_is_what_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 220
    ci = (ROOT / ".ci" / "run").read_text()
    test_lines = [line.split("#")[0].strip() for line in readme.splitlines() if re.match(r"uv run .*pytest\s", line)]
    assert test_lines, "the README's quick start names no test command"
    assert test_lines[0] in [line.strip() for line in ci.splitlines()], test_lines[0]
