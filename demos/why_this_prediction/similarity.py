"""Similarity mode, for an encoder without a word head (all-MiniLM-L6-v2, the encoder that works offline): there is
no word to explain, so attribution and patching explain the cosine similarity between the text's sentence embedding
and a second sentence's ("why is this text close to A?"), or cos(text, A) - cos(text, B) ("why closer to A than to
B?"). The sentence embedding is sentence-transformers' for all-MiniLM-L6-v2: the mean of the last layer's hidden
states over the tokens the attention mask keeps (a text alone has no padding: all of them)."""

from dataclasses import dataclass
from typing import Any

import torch
from torch.nn.functional import cosine_similarity

from hub.checks import check_text
from hub.errors import HubError
from hub.inside import ENCODER, MAX_CHARS, Transformer, tokenize

TARGET_NAME = "Target (the sentence to compare with)"
CONTRAST_NAME = "Rather than (a second sentence)"


def is_similarity(t: Transformer) -> bool:
    """An encoder without a word head explains a similarity, not a word."""
    return t.kind == ENCODER and t.word_head() is None


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(batch, tokens, width) -> (batch, width), float32: the mean over the tokens the attention mask keeps."""
    mask = mask.unsqueeze(-1).float()
    return (hidden.float() * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


def embed(t: Transformer, sentence: Any, name: str) -> torch.Tensor:
    """One sentence's embedding (width,): the model run on it alone, mean-pooled."""
    check_text(sentence, name, MAX_CHARS)
    try:
        tokens = tokenize(t, sentence)
    except HubError as error:
        raise HubError(f"{name}: {error}") from None
    with torch.no_grad():  # not inference mode: integrated gradients differentiate through cos(., A)
        hidden = t.model(input_ids=tokens.ids).last_hidden_state
    return mean_pool(hidden, torch.ones_like(tokens.ids))[0]


@dataclass
class Similarity:
    """What is explained: cos(text, A), or cos(text, A) - cos(text, B)."""

    compare_with: str  # A
    rather_than: str | None  # B
    a: torch.Tensor  # A's embedding
    b: torch.Tensor | None

    def of(self, hidden: torch.Tensor) -> torch.Tensor:
        """The last layer's hidden states of the text, (rows, tokens, width) -> one value per row."""
        pooled = mean_pool(hidden, torch.ones(hidden.shape[:2], device=hidden.device))
        value = cosine_similarity(pooled, self.a[None])
        return value if self.b is None else value - cosine_similarity(pooled, self.b[None])

    def run(self, t: Transformer, **inputs: torch.Tensor) -> torch.Tensor:
        """The model run on a batch of the text (input_ids or inputs_embeds), one value per row."""
        return self.of(t.model(**inputs).last_hidden_state)

    def words(self) -> str:
        a = repr(self.compare_with)
        return f"cos(text, {a})" if self.b is None else f"cos(text, {a}) − cos(text, {self.rather_than!r})"


def read_similarity(t: Transformer, target: Any, contrast: Any, contrast_name: str = CONTRAST_NAME) -> Similarity:
    """A and (optionally) B, each embedded alone."""
    if target is None or (isinstance(target, str) and not target.strip()):
        because = f"{t.notice} " if t.notice else ""
        raise HubError(
            f"{because}{t.name} has no word-prediction head, so this view explains a sentence similarity instead of "
            "a word: write the sentence to compare the text with ('Compare with' on the page, target in the API), "
            "and optionally a second one ('why closer to A than to B')."
        )
    a = embed(t, target, TARGET_NAME)
    if contrast is None or (isinstance(contrast, str) and not contrast.strip()):
        return Similarity(target, None, a, None)
    if contrast == target:
        raise HubError(f"{contrast_name.split(' (')[0]} must be another sentence than the target: 'closer to A than to "
                       "B' needs two sentences.")  # fmt: skip
    return Similarity(target, contrast, a, embed(t, contrast, contrast_name))


POOLING_CODE = """

def sentence_embedding(hidden, mask):  # sentence-transformers' mean pooling over the tokens the mask keeps
    mask = mask.unsqueeze(-1).float()
    return (hidden.float() * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


def embed(sentence):
    inputs = tokenizer(sentence, return_tensors="pt")
    with torch.no_grad():
        return sentence_embedding(model(**inputs).last_hidden_state, inputs.attention_mask)


"""


def similarity_code(s: Similarity) -> str:
    """The lines that embed A (and B) and define f(hidden) = the similarity explained, for the Code accordions."""
    b = "" if s.b is None else f"b = embed({s.rather_than!r})\n"
    minus = "" if s.b is None else " - cosine_similarity(e, b)"
    return f"""{POOLING_CODE}a = embed({s.compare_with!r})
{b}

def f(hidden):  # {s.words()}; the text alone has no padding: every token counts
    e = sentence_embedding(hidden, torch.ones(hidden.shape[:2]))
    return cosine_similarity(e, a){minus}
"""


def attribution_code(t: Transformer, text: str, s: Similarity, baseline_id: int, steps: int, dtype: torch.dtype) -> str:
    """Library code that prints the three methods' scores (and the delta) for the similarity, from the same weights."""
    return f"""import torch
from captum.attr import FeatureAblation, InputXGradient, LayerIntegratedGradients
from torch.nn.functional import cosine_similarity
from transformers import AutoModel, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained({t.name!r})
model = AutoModel.from_pretrained({t.name!r}, dtype={dtype}).eval()
{similarity_code(s)}
ids = tokenizer({text!r}, return_tensors="pt").input_ids
# The baseline: every token replaced by {t.tokenizer.convert_ids_to_tokens(baseline_id)!r}, special tokens kept
special = torch.tensor(tokenizer.all_special_ids)
baseline = torch.where(torch.isin(ids, special), ids, torch.full_like(ids, {baseline_id}))

lig = LayerIntegratedGradients(lambda x: f(model(input_ids=x).last_hidden_state), model.get_input_embeddings())
ig, delta = lig.attribute(ids, baselines=baseline, n_steps={steps}, return_convergence_delta=True)
print("integrated_gradients", [round(s, 4) for s in ig.sum(-1)[0].tolist()], "delta", round(float(delta[0]), 6))

embeddings = model.get_input_embeddings()(ids).detach().requires_grad_()
ixg = InputXGradient(lambda e: f(model(inputs_embeds=e).last_hidden_state)).attribute(embeddings)
print("input_x_gradient", [round(s, 4) for s in ixg.sum(-1)[0].tolist()])


def similarity(x):  # what occlusion watches: the similarity itself
    with torch.no_grad():
        return f(model(input_ids=x).last_hidden_state)


drops = FeatureAblation(similarity).attribute(ids, baselines=baseline)
print("occlusion", [round(s, 6) for s in drops[0].tolist()])
"""


def patching_code(t: Transformer, clean: str, corrupted: str, s: Similarity, dtype: torch.dtype) -> str:
    """Plain transformers with one hook per patch, one run per cell: prints the heatmap's rows in percent."""
    return f"""import torch
from torch.nn.functional import cosine_similarity
from transformers import AutoModel, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained({t.name!r})
model = AutoModel.from_pretrained({t.name!r}, dtype={dtype}).eval()
{similarity_code(s)}
clean = tokenizer({clean!r}, return_tensors="pt").input_ids
corrupted = tokenizer({corrupted!r}, return_tensors="pt").input_ids
points = [model.embeddings, *model.encoder.layer]  # their output: the residual stream after the embeddings, layer 1, ...


def value(ids):
    with torch.no_grad():
        return float(f(model(input_ids=ids).last_hidden_state))


clean_stream = []
handles = [p.register_forward_hook(lambda m, a, out: clean_stream.append(out.clone())) for p in points]
clean_value = value(clean)
for h in handles:
    h.remove()
corrupted_value = value(corrupted)
for layer, point in enumerate(points):
    row = []
    for p in range(clean.shape[1]):
        def put_back(module, args, out, layer=layer, p=p):
            out = out.clone()
            out[0, p] = clean_stream[layer][0, p]
            return out
        handle = point.register_forward_hook(put_back)
        row.append(round(100 * (value(corrupted) - corrupted_value) / (clean_value - corrupted_value), 2))
        handle.remove()
    print("embeddings" if layer == 0 else f"layer {{layer}}", row)
"""
