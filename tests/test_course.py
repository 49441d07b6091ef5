"""The hub as a course: chapters in the course's order, a code layout that mirrors them, and Start here, which walks
the outline and opens each view already run."""

import ast
from pathlib import Path

import pytest

from hub.app import build_app
from hub.catalog import CATALOG, CHAPTER_OF, CHAPTERS, chapters_markdown, chapters_of
from hub.links import linked_inputs, read_linked_value
from hub.start_here import STEPS

ROOT = Path(__file__).resolve().parent.parent
TABS = [entry.id for entry in CATALOG if entry.tab]


def open_hub(page, url: str) -> None:
    page.goto(url)
    page.wait_for_function("() => window.hubLinkRead === true")  # the link has been read and the tab opened


def open_tabs(page) -> list[str]:
    """The ids of the open tabs, outermost first: the chapter, then the demo (then a view inside it, if it has some)."""
    return page.evaluate(
        "() => [...document.querySelectorAll('[role=tab][aria-selected=true]')]"
        ".filter(t => t.offsetParent).map(t => t.dataset.tabId)"
    )


# --- chapters and the code layout -----------------------------------------------------------------------------


def test_every_tab_is_in_one_chapter_and_its_code_in_that_chapters_folder():
    assert sorted(CHAPTER_OF) == sorted(TABS)
    assert sum(len(chapter.demos) for chapter in CHAPTERS) == len(TABS)
    for entry in CATALOG:
        if entry.tab:
            folder = entry.module.split(".")[1]
            assert folder in CHAPTER_OF[entry.id].packages, f"{entry.module} is outside its chapter's folders"
    for chapter in CHAPTERS:
        for package in chapter.packages:
            assert (ROOT / "demos" / package / "__init__.py").is_file()


def test_the_tabs_follow_the_course_and_demos_orders_the_tabs_within_a_chapter():
    assert [chapter.id for chapter, _ in chapters_of(TABS)] == [chapter.id for chapter in CHAPTERS]
    picked = chapters_of(["fill-mask", "attention", "text-generation"])
    assert [(chapter.id, ids) for chapter, ids in picked] == [
        ("pretrained", ["fill-mask", "text-generation"]),
        ("attention", ["attention"]),
    ]


def test_the_readme_lists_the_chapters_and_their_folders_from_the_catalog():
    assert chapters_markdown() in (ROOT / "README.md").read_text(encoding="utf-8")


def imports_of(path: Path) -> set[str]:
    """The project modules a file imports; `from package import module` imports that module."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            modules = {
                f"{node.module}.{alias.name}" for alias in node.names if is_module(f"{node.module}.{alias.name}")
            }
            names |= modules or {node.module}
            if len(modules) < len(node.names):  # names defined in the module itself
                names.add(node.module)
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
    return {name for name in names if name.split(".")[0] in ("hub", "demos")}


def is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def test_no_module_of_hub_or_demos_imports_itself_in_a_circle():
    modules = {}
    for path in [*(ROOT / "hub").rglob("*.py"), *(ROOT / "demos").rglob("*.py")]:
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = path
    graph = {name: {m for m in imports_of(path) if m in modules and m != name} for name, path in modules.items()}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph[start] - seen:
            if nxt == goal or reaches(nxt, goal, seen | {nxt}):
                return True
        return False

    circles = [name for name in graph if reaches(name, name, set())]
    assert circles == []


def test_hub_imports_demos_only_in_its_entry_points():
    entry_points = {"app.py", "cli.py"}
    for path in (ROOT / "hub").glob("*.py"):
        if path.name not in entry_points:
            assert not any(name.startswith("demos") for name in imports_of(path)), path.name


# --- Start here -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def app(tiny_settings, store):
    return build_app(tiny_settings, store)


@pytest.mark.parametrize("step", STEPS, ids=[step.title for step in STEPS])
def test_each_step_opens_a_tab_of_the_hub_with_values_its_inputs_take(app, step):
    query = dict(step.query)
    inputs = linked_inputs(app)[query.pop("tab")]
    query.pop("run", None)
    for name, text in query.items():
        read_linked_value(inputs[name], name, text)  # raises with the reason when a value would be refused


# --- in a browser ----------------------------------------------------------------------------------------------


def test_every_chapter_link_and_every_tab_link_opens_its_view(page, hub_url):
    for chapter in CHAPTERS:
        open_hub(page, f"{hub_url}?chapter={chapter.id}")
        assert open_tabs(page)[:2] == [f"chapter-{chapter.id}", chapter.demos[0]]
        assert f"chapter={chapter.id}" in page.url
    for demo_id in TABS:
        open_hub(page, f"{hub_url}?tab={demo_id}")
        assert open_tabs(page)[:2] == [f"chapter-{CHAPTER_OF[demo_id].id}", demo_id]
        assert page.url.endswith(f"?tab={demo_id}"), "the address stays the tab's link"


def test_start_here_walks_the_steps_in_presenter_mode_and_opens_each_view_already_run(page, hub_url):
    page.set_viewport_size({"width": 1024, "height": 768})
    open_hub(page, f"{hub_url}?present=1")
    assert open_tabs(page) == ["start-here"]
    first = page.get_by_text(f"Step 1 of {len(STEPS)}: {STEPS[0].title}")
    assert first.is_visible()
    assert page.locator("#start-here-previous").is_disabled()
    page.locator("#start-here-next").click()
    page.get_by_text(f"Step 2 of {len(STEPS)}: {STEPS[1].title}").wait_for()
    assert not first.is_visible()
    page.locator("#start-here-previous").click()
    first.wait_for()

    # The attention step, on MiniLM: the maps are drawn without a click on the tab's own button.
    step = next(n for n, s in enumerate(STEPS, 1) if s.query["tab"] == "attention")
    for _ in range(step - 1):
        page.locator("#start-here-next").click()
    page.get_by_text(f"Step {step} of {len(STEPS)}").wait_for()
    page.locator(f"#start-here-open-{step}").click()
    page.wait_for_function("() => location.search.includes('tab=attention')")
    assert open_tabs(page) == ["chapter-attention", "attention"]
    page.locator("#attention-encoder-overview img").wait_for(state="attached")  # drawn (in a folded accordion)
    assert (
        page.locator("[aria-label='Sentence (at most 64 tokens)'], textarea")
        .first.input_value()
        .startswith("The animal didn't cross the street")
    )
    assert "present=1" in page.url

    # Back to Start here: the step it was on is still shown; on to BERT filling in a blank.
    page.locator("#chapters > .tab-wrapper [role=tab]", has_text="Start here").click()
    page.get_by_text(f"Step {step} of {len(STEPS)}").wait_for()
    attention_step = step
    step = next(n for n, s in enumerate(STEPS, 1) if s.query["tab"] == "fill-mask")
    for _ in range(step - attention_step):
        page.locator("#start-here-next").click()
    page.get_by_text(f"Step {step} of {len(STEPS)}").wait_for()
    page.locator(f"#start-here-open-{step}").click()
    page.locator("#fill-mask-first").get_by_text("%").first.wait_for()
