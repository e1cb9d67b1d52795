"""The documentation's links resolve, and the README's Quick start runs what CI runs.

Every relative link of README.md, CHANGELOG.md and docs/*.md must name an existing file or folder,
and every #anchor a heading of its Markdown file, by GitHub's rule for heading ids: the heading's
rendered text lowercased, punctuation other than - and _ dropped, each space a hyphen, and the n-th
repeat of an id suffixed -n. Links and headings inside code (fenced blocks, inline spans) do not count.
"""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
BRACKETED = r"\[((?:[^\[\]]|\[[^\[\]]*\])*)\]"  # [text], the text holding at most one level of brackets
LINK = re.compile(r"!?" + BRACKETED + r"\(\s*<?([^\s)>]*)>?(?:\s+\"[^\"]*\")?\s*\)")  # [text](target "title")
DEFINITION = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?([^\s>]+)>?")  # [name]: target
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:|^//")


def classify(lines):
    """(line, kind, info) per line: kind "prose", or "open", "code", "close" for a fenced block's
    opening line, content and closing line; info is the opening line's info string."""
    fence = None
    for line in lines:
        match = FENCE.match(line)
        if fence is None and match:
            fence = match.group(1)
            yield line, "open", match.group(2).strip()
        elif fence is None:
            yield line, "prose", None
        elif match and match.group(1)[0] == fence[0] and len(match.group(1)) >= len(fence) \
                and not match.group(2).strip():
            fence = None
            yield line, "close", None
        else:
            yield line, "code", None


def prose_lines(path):
    """(line number, line) of the lines of path outside fenced code blocks."""
    for number, (line, kind, _) in enumerate(classify(path.read_text(encoding="utf-8").splitlines()), 1):
        if kind == "prose":
            yield number, line


def fenced_blocks(lines):
    """The fenced code blocks among lines: [(info string, [content lines])]."""
    blocks = []
    for line, kind, info in classify(lines):
        if kind == "open":
            blocks.append((info, []))
        elif kind == "code":
            blocks[-1][1].append(line)
    return blocks


def heading_text(markdown):
    """The text GitHub renders for a heading: code spans as their content, links as their text,
    no HTML tags or emphasis marks."""
    parts = INLINE_CODE.split(markdown)  # [text, ticks, code, text, ticks, code, ..., text]
    rendered = []
    for i, part in enumerate(parts):
        if i % 3 == 2:
            rendered.append(part.strip())
        elif i % 3 == 0:
            part = re.sub(r"!?" + BRACKETED + r"\([^)]*\)", r"\1", part)
            part = re.sub(r"<[^>]+>", "", part)
            rendered.append(re.sub(r"\*+|(?<!\w)_+|_+(?!\w)", "", part))
    return "".join(rendered)


def slug(text):
    """GitHub's id for a heading of this rendered text, before repeats are numbered."""
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(path):
    """The ids of every heading of the Markdown file at path, repeats suffixed -1, -2, ... as GitHub does."""
    ids, seen = set(), {}
    for _, line in prose_lines(path):
        match = HEADING.match(line)
        if match:
            base = slug(heading_text(match.group(2)))
            count = seen.get(base, 0)
            seen[base] = count + 1
            ids.add(base if count == 0 else f"{base}-{count}")
    return ids


def links(path):
    """(line number, target) of every link and link definition in the prose of the file at path."""
    for number, line in prose_lines(path):
        definition = DEFINITION.match(line)
        if definition:
            yield number, definition.group(1)
        for match in LINK.finditer(INLINE_CODE.sub("", line)):
            yield number, match.group(2)


def broken_links(path, root=ROOT):
    """'FILE:LINE: TARGET: why' for each relative link or anchor of path that resolves to nothing."""
    problems = []
    for number, target in links(path):
        if SCHEME.match(target):
            continue
        where = f"{path.relative_to(root)}:{number}: {target}"
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not target:
            problems.append(f"{where}: empty link")
        elif not linked.exists():
            problems.append(f"{where}: no file {file_part} next to {path.relative_to(root)}")
        elif anchor and linked.suffix != ".md":
            problems.append(f"{where}: #{anchor} into a file that is not Markdown")
        elif anchor and anchor not in anchors(linked):
            problems.append(f"{where}: no heading with id '{anchor}' in {linked.relative_to(root)}")
    return problems


def section(path, title):
    """The lines of path's level-2 section `title`, up to the next heading of level 1 or 2."""
    lines, inside = [], False
    for line, kind, _ in classify(path.read_text(encoding="utf-8").splitlines()):
        match = HEADING.match(line) if kind == "prose" else None
        if match and len(match.group(1)) <= 2:
            inside = len(match.group(1)) == 2 and match.group(2).strip() == title
        elif inside:
            lines.append(line)
    return lines


def ci_commands():
    """The commands .ci/run runs: its lines other than blanks, comments, `set` and `cd`."""
    lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines
            if line.strip() and not line.lstrip().startswith("#") and not re.match(r"\s*(set|cd)\s", line)]


def test_heading_ids_follow_github():
    assert slug(heading_text("The official CCNet models (InPlace-ABN)")) == "the-official-ccnet-models-inplace-abn"
    assert slug(heading_text("InPlace-ABN: memory of a training step")) == "inplace-abn-memory-of-a-training-step"
    assert slug(heading_text("export_onnx.py: ONNX")) == "export_onnxpy-onnx"
    assert slug(heading_text("`__init__.py` and **bold** _emphasis_")) == "__init__py-and-bold-emphasis"
    assert slug(heading_text("[check.py](../check.py): precision")) == "checkpy-precision"


def test_repeated_headings_are_numbered_and_code_blocks_hold_none(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n## Notes\n```bash\n## Not a heading\n```\n## Notes\n### Notes\n", encoding="utf-8")
    assert anchors(page) == {"title", "notes", "notes-1", "notes-2"}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(page):
    problems = broken_links(page)
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_a_broken_link_and_a_broken_anchor_are_named(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "other.md").write_text("# Other page\n## A section\n", encoding="utf-8")
    page = tmp_path / "README.md"
    page.write_text("[fine](docs/other.md#a-section) [here](#top) `[code](missing.md)`\n# Top\n"
                    "[gone](docs/missing.md)\n[wrong](docs/other.md#no-such-section)\n"
                    "```\n[in a block](missing.md)\n```\n[web](https://example.com/x.md#y) [folder](docs/)\n",
                    encoding="utf-8")
    assert broken_links(page, root=tmp_path) == [
        "README.md:3: docs/missing.md: no file docs/missing.md next to README.md",
        "README.md:4: docs/other.md#no-such-section: no heading with id 'no-such-section' in docs/other.md",
    ]


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(ROOT / target.partition("#")[0]).resolve() for _, target in links(ROOT / "README.md")
              if not SCHEME.match(target)}
    unlinked = [str(page.relative_to(ROOT)) for page in PAGES if page.resolve() not in linked]
    assert unlinked == ["README.md"], f"README.md does not link to {', '.join(unlinked[1:])}"


def test_quick_start_has_two_command_blocks_the_second_what_ci_runs():
    blocks = fenced_blocks(section(ROOT / "README.md", "Quick start"))
    assert len(blocks) == 2, f"README.md's Quick start has {len(blocks)} fenced blocks, not 2: {blocks}"
    (demo_info, demo), (tests_info, tests) = blocks
    assert demo_info == tests_info == "bash", f"Quick start's blocks are {demo_info!r} and {tests_info!r}, not bash"
    assert len(demo) == 1 and demo[0].endswith("&& bash demo.sh"), f"the first block does not run demo.sh: {demo}"
    assert tests == ci_commands(), f"Quick start's second block {tests} is not what .ci/run runs: {ci_commands()}"
