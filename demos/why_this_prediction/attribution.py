"""Which input tokens made this prediction: integrated gradients and gradient x input on the token embeddings
(Captum), occlusion by the baseline token, how far the methods agree, and "why A rather than B". An encoder without
a word head (MiniLM) explains a sentence similarity instead (see similarity.py)."""

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from captum.attr import FeatureAblation, InputXGradient, LayerIntegratedGradients
from matplotlib.figure import Figure
from PIL import Image
from scipy.stats import spearmanr

from demos.inside.layers import readable
from demos.why_this_prediction import similarity as sim
from demos.why_this_prediction.common import (
    Prediction,
    embedding_layer,
    hookable,
    read_prediction,
    read_tokens,
    scores_at,
    word_id,
    word_text,
)
from hub.checks import check_choice, check_int
from hub.errors import HubError
from hub.figures import figure_png
from hub.inside import DECODER, Tokens, Transformer

METHODS = ("integrated_gradients", "input_x_gradient", "occlusion")
METHOD_NAMES = {
    "integrated_gradients": "Integrated gradients",
    "input_x_gradient": "Gradient × input",
    "occlusion": "Occlusion",
}
MIN_STEPS, MAX_STEPS = 2, 128
# Integration steps run through the model in batches of about this many token rows (steps x tokens): the backward
# pass keeps every layer's activations, so 128 steps x 64 tokens at once would hold gigabytes, while 32 steps of a
# 20-token prompt (640 rows, under a gigabyte for GPT-2 124M) go in one batch.
IG_TOKEN_ROWS = 1024


@dataclass
class Question:
    """What is explained: the score of one word (minus a second word's) at the prediction's position."""

    prediction: Prediction
    target_id: int
    contrast_id: int | None
    baseline_id: int  # the token that stands for "no word here"
    baseline_ids: torch.Tensor  # the input with every ordinary token replaced by it; special tokens kept

    @property
    def tokens(self) -> Tokens:
        return self.prediction.tokens

    @property
    def ids(self) -> torch.Tensor:
        return self.prediction.tokens.ids

    @property
    def position(self) -> int:
        return self.prediction.position

    def f(self, t: Transformer, **inputs: torch.Tensor) -> torch.Tensor:
        """What integrated gradients and gradient x input explain, per row: logit(A), or logit(A) - logit(B)."""
        return logit_score(self, scores_at(t, self.position, **inputs))

    def watched(self, t: Transformer, ids: torch.Tensor) -> torch.Tensor:
        """What occlusion watches, per row: p(A), or p(A) - p(B)."""
        return probability_score(self, scores_at(t, self.position, input_ids=ids))


@dataclass
class SimilarityQuestion:
    """What is explained in similarity mode: cos(text, A), or cos(text, A) - cos(text, B) (see similarity.py)."""

    tokens: Tokens
    similarity: sim.Similarity
    baseline_id: int
    baseline_ids: torch.Tensor
    value: float  # f of the text itself

    @property
    def ids(self) -> torch.Tensor:
        return self.tokens.ids

    def f(self, t: Transformer, **inputs: torch.Tensor) -> torch.Tensor:
        return self.similarity.run(t, **inputs)

    def watched(self, t: Transformer, ids: torch.Tensor) -> torch.Tensor:
        """Occlusion watches the similarity itself: there is no probability."""
        return self.f(t, input_ids=ids)


def baseline_token(t: Transformer) -> int:
    """GPT-2 has no padding token: its end-of-text token is its "nothing". BERT's is [PAD]."""
    return t.tokenizer.eos_token_id if t.kind == DECODER else t.tokenizer.pad_token_id


def baseline_name(t: Transformer) -> str:
    kept = "" if t.kind == DECODER else " ([CLS], [SEP] and the mask stay)"
    return f"every token replaced by {t.tokenizer.convert_ids_to_tokens(baseline_token(t))}{kept}"


def baseline_input(t: Transformer, ids: torch.Tensor) -> torch.Tensor:
    """The input with every ordinary token replaced by the baseline token; special tokens kept."""
    special = torch.tensor(t.tokenizer.all_special_ids, device=ids.device)
    return torch.where(torch.isin(ids, special), ids, torch.full_like(ids, baseline_token(t)))


def ask(t: Transformer, text: Any, target: Any = None, contrast: Any = None) -> Question | SimilarityQuestion:
    """The question for a text: the target is the model's top word unless one is named (in similarity mode, the
    target is the sentence to compare with, and the contrast a second sentence)."""
    if sim.is_similarity(t):
        tokens = read_tokens(t, text)
        s = sim.read_similarity(t, target, contrast)
        with torch.inference_mode():
            value = float(s.run(t, input_ids=tokens.ids)[0])
        return SimilarityQuestion(tokens, s, baseline_token(t), baseline_input(t, tokens.ids), value)
    prediction = read_prediction(t, text)
    target_id = int(prediction.logits.argmax()) if target in (None, "") else word_id(t, target, "Target")
    contrast_id = None if contrast in (None, "") else word_id(t, contrast, "Contrast")
    if contrast_id == target_id:
        raise HubError("Contrast must be another word than the target: 'why A rather than B' needs two words.")
    return Question(prediction, target_id, contrast_id, baseline_token(t), baseline_input(t, prediction.tokens.ids))


def logit_score(q: Question, at: torch.Tensor) -> torch.Tensor:
    """f: logit(A), or logit(A) - logit(B), per row of a batch of scores at the prediction's position."""
    return at[:, q.target_id] - (at[:, q.contrast_id] if q.contrast_id is not None else 0)


def probability_score(q: Question, at: torch.Tensor) -> torch.Tensor:
    """What occlusion watches: p(A), or p(A) - p(B)."""
    probs = at.softmax(-1)
    return probs[:, q.target_id] - (probs[:, q.contrast_id] if q.contrast_id is not None else 0)


def integrated_gradients(t: Transformer, q: Question | SimilarityQuestion, steps: int) -> tuple[list[float], float]:
    """Captum's LayerIntegratedGradients on the token embeddings, from the baseline input to the real one: the
    scores add up to f(input) - f(baseline) up to the convergence delta it reports."""
    with hookable(t) as view, torch.enable_grad():
        lig = LayerIntegratedGradients(lambda ids: q.f(view, input_ids=ids), embedding_layer(view))
        scores, delta = lig.attribute(
            q.ids,
            baselines=q.baseline_ids,
            n_steps=steps,
            return_convergence_delta=True,
            internal_batch_size=max(1, IG_TOKEN_ROWS // q.ids.shape[1]),
        )
    return scores.sum(-1)[0].float().tolist(), float(delta[0])


def input_x_gradient(t: Transformer, q: Question | SimilarityQuestion) -> list[float]:
    """Captum's InputXGradient on the token embeddings: each embedding times the gradient of f, summed over width."""
    with hookable(t) as view, torch.enable_grad():
        embeddings = embedding_layer(view)(q.ids).detach().requires_grad_()
        scores = InputXGradient(lambda inputs_embeds: q.f(view, inputs_embeds=inputs_embeds)).attribute(embeddings)
    return scores.sum(-1)[0].float().tolist()


def occlusion(t: Transformer, q: Question | SimilarityQuestion) -> list[float]:
    """Each token replaced by the baseline token, one at a time (Captum's FeatureAblation, all in one batch): how
    much the target's probability drops (with a contrast, p(A) - p(B); in similarity mode, the similarity). Special
    tokens are kept: 0."""

    def f(ids: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return q.watched(t, ids)

    ablation = FeatureAblation(f)
    scores = ablation.attribute(q.ids, baselines=q.baseline_ids, perturbations_per_eval=q.ids.shape[1])
    return scores[0].float().tolist()


def check_method(method: Any) -> str:
    return check_choice(method, "Method", METHODS)


def check_steps(steps: Any) -> int:
    return check_int(steps, "Steps", MIN_STEPS, MAX_STEPS)


def attribute(
    t: Transformer, q: Question | SimilarityQuestion, method: str, steps: int = 32
) -> tuple[list[float], float | None]:
    """Only the method asked for runs."""
    if method == "integrated_gradients":
        return integrated_gradients(t, q, steps)
    if method == "input_x_gradient":
        return input_x_gradient(t, q), None
    return occlusion(t, q), None


def target_probability(q: Question) -> float:
    return float(q.prediction.logits.softmax(-1)[q.target_id])


def attribution(
    t: Transformer,
    text: Any,
    target: Any = None,
    contrast: Any = None,
    method: Any = "integrated_gradients",
    steps: Any = 32,
) -> dict:
    """One method's score for each input token (the endpoint's answer). In similarity mode "target" is the sentence
    compared with, "target_probability" is None (there is no probability) and "similarity" holds f(text)."""
    method, steps = check_method(method), check_steps(steps)
    q = ask(t, text, target, contrast)
    scores, delta = attribute(t, q, method, steps)
    if isinstance(q, SimilarityQuestion):
        target_text, probability = q.similarity.compare_with, None
    else:
        target_text, probability = word_text(t, q.target_id), target_probability(q)
    answer = {"tokens": q.tokens.tokens, "target": target_text, "scores": scores, "delta": delta,
              "target_probability": probability}  # fmt: skip
    if isinstance(q, SimilarityQuestion):
        answer["similarity"] = q.value
    return answer


@dataclass
class Comparison:
    question: Question | SimilarityQuestion
    scores: dict[str, list[float]]  # method -> one score per token
    delta: float
    agreement: dict[tuple[str, str], float]  # Spearman rank correlation of each pair of methods
    baseline: str


def agreement(scores: dict[str, list[float]]) -> dict[tuple[str, str], float]:
    """Spearman's rank correlation between each pair of methods, over the tokens (NaN where one is constant)."""
    names = list(scores)
    pairs = {}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            pairs[(a, b)] = float(spearmanr(scores[a], scores[b]).statistic) if len(scores[a]) > 1 else float("nan")
    return pairs


def compare_methods(t: Transformer, text: Any, target: Any = None, contrast: Any = None, steps: Any = 32) -> Comparison:
    """All three methods on one question, side by side (what the tab shows)."""
    steps = check_steps(steps)
    q = ask(t, text, target, contrast)
    ig, delta = integrated_gradients(t, q, steps)
    scores = {"integrated_gradients": ig, "input_x_gradient": input_x_gradient(t, q), "occlusion": occlusion(t, q)}
    return Comparison(q, scores, delta, agreement(scores), baseline_name(t))


def question_words(t: Transformer, q: Question | SimilarityQuestion) -> str:
    if isinstance(q, SimilarityQuestion):
        return q.similarity.words()
    target = repr(word_text(t, q.target_id))
    return target if q.contrast_id is None else f"{target} rather than {word_text(t, q.contrast_id)!r}"


def comparison_figure(t: Transformer, c: Comparison) -> Image.Image:
    """One bar chart per method over the input tokens; red helps the target, blue works against it."""
    q, labels = c.question, [readable(t, token) for token in c.question.tokens.tokens]
    similar = isinstance(q, SimilarityQuestion)
    if similar:
        explained, drop = "similarity" + (" difference" if q.similarity.b is not None else ""), "similarity drop"
        title = f"Why is {question_words(t, q)} = {q.value:.3f}?"
    else:
        explained, drop = "logit" + (" difference" if q.contrast_id is not None else ""), "probability drop, points"
        where = "next token" if t.kind == DECODER else "word at the mask"
        title = f"Why {question_words(t, q)} as the {where} ({100 * target_probability(q):.1f}%)?"
    units = {"integrated_gradients": explained, "input_x_gradient": explained, "occlusion": drop}
    fig = Figure(figsize=(max(6.0, 0.55 * len(labels) + 2), 6.4))
    axes = fig.subplots(3, 1, sharex=True)
    for ax, (method, scores) in zip(axes, c.scores.items()):
        values = np.array(scores) * (100 if method == "occlusion" and not similar else 1)
        ax.bar(range(len(values)), values, color=["#c0392b" if v >= 0 else "#2e86c1" for v in values])
        ax.axhline(0, color="#444", lw=0.8)
        ax.set_ylabel(units[method], fontsize=8)
        ax.set_title(METHOD_NAMES[method], fontsize=9, loc="left")
    axes[-1].set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=8)
    axes[-1].set_xlabel("input token")
    fig.suptitle(f"{title} red = pushes towards it, blue = against", fontsize=9)
    return figure_png(fig)


def attribution_code(
    t: Transformer, text: str, q: Question | SimilarityQuestion, steps: int, dtype: torch.dtype
) -> str:
    """Library code that prints the three methods' scores (and the delta) the tab shows, from the same weights."""
    if isinstance(q, SimilarityQuestion):
        return sim.attribution_code(t, text, q.similarity, q.baseline_id, steps, dtype)
    auto = "AutoModelForCausalLM" if t.kind == DECODER else "AutoModelForMaskedLM"
    where = (
        "inputs.input_ids.shape[1] - 1  # the next token"
        if t.kind == DECODER
        else ("int((inputs.input_ids[0] == tokenizer.mask_token_id).nonzero()[0, 0])  # the first mask")
    )
    contrast = f" - logits[:, position, {q.contrast_id}]" if q.contrast_id is not None else ""
    p_contrast = f" - probs[:, {q.contrast_id}]" if q.contrast_id is not None else ""
    return f"""import torch
from captum.attr import FeatureAblation, InputXGradient, LayerIntegratedGradients
from transformers import {auto}, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained({t.name!r})
model = {auto}.from_pretrained({t.name!r}, dtype={dtype}).eval()
inputs = tokenizer({text!r}, return_tensors="pt")
ids = inputs.input_ids
position = {where}
target = {q.target_id}  # {word_text(t, q.target_id)!r}
# The baseline: every token replaced by {t.tokenizer.convert_ids_to_tokens(q.baseline_id)!r}, special tokens kept
special = torch.tensor(tokenizer.all_special_ids)
baseline = torch.where(torch.isin(ids, special), ids, torch.full_like(ids, {q.baseline_id}))


def f(logits):  # the logit of the target{" minus the contrast's" if contrast else ""}
    return logits[:, position, target].float(){contrast}


lig = LayerIntegratedGradients(lambda x: f(model(input_ids=x).logits), model.get_input_embeddings())
ig, delta = lig.attribute(ids, baselines=baseline, n_steps={steps}, return_convergence_delta=True)
print("integrated_gradients", [round(s, 4) for s in ig.sum(-1)[0].tolist()], "delta", round(float(delta[0]), 6))

embeddings = model.get_input_embeddings()(ids).detach().requires_grad_()
ixg = InputXGradient(lambda e: f(model(inputs_embeds=e).logits)).attribute(embeddings)
print("input_x_gradient", [round(s, 4) for s in ixg.sum(-1)[0].tolist()])


def probability(x):  # what occlusion watches
    with torch.no_grad():
        probs = model(input_ids=x).logits[:, position].float().softmax(-1)
    return probs[:, target]{p_contrast}


drops = FeatureAblation(probability).attribute(ids, baselines=baseline)
print("occlusion", [round(s, 6) for s in drops[0].tolist()])
"""
