"""The endpoints of "Why this prediction": /attribution, /patching, /induction, /branches, /continue_from."""

import time
from collections.abc import Callable, Iterator
from typing import Any

import gradio as gr

from demos.why_this_prediction import attribution as attr
from demos.why_this_prediction import branches as br
from demos.why_this_prediction import induction as ind
from demos.why_this_prediction import patching as pat
from hub.errors import HubError
from hub.inside import DECODER, load_transformer
from hub.jobs import Job
from hub.models import ModelStore
from hub.ui import show_errors

TIME_LIMIT_S = 120  # generation for one request never runs longer than this, whoever asked for it


def run_as_job(work: Callable[[Callable[[], bool]], Any], outputs: int) -> Iterator[tuple]:
    """Run `work(should_stop)` as a job (stopped by a cancel, a visitor who leaves, or the time limit); while it
    runs, yield "nothing changed" for each of the event's outputs; return its result."""
    result = {}
    job = Job(TIME_LIMIT_S)
    for _ in job.run(
        lambda job: result.update(value=work(job.should_stop)), name="branches", heartbeat=True, on_model_thread=True
    ):
        yield tuple(gr.skip() for _ in range(outputs))
    return result["value"]


def text_generation_decoder(store: ModelStore) -> br.Decoder:
    loaded = store.get("text-generation")
    return br.Decoder(loaded.model, loaded.tokenizer)


def deadline() -> Callable[[], bool]:
    end = time.monotonic() + TIME_LIMIT_S
    return lambda: time.monotonic() > end


def register_api(store: ModelStore) -> None:
    def attribution_api(
        text: str,
        model: str = DECODER,
        target: str | None = None,
        contrast: str | None = None,
        method: str = "integrated_gradients",
        steps: int = 32,
    ) -> dict:
        """Which input tokens made the model predict a word (or, on MiniLM, made the text close to a sentence): one score per input token.

        Args:
            text: The text, at most 64 tokens, sent to the model exactly as given. The decoder predicts the next token; for the encoder, hide one word with [MASK] (or <mask>, ___). "minilm" needs no mask.
            model: "decoder" (GPT-2, the text-generation model; the default), "encoder" (BERT, the fill-mask model) or "minilm" (all-MiniLM-L6-v2, a sentence encoder without a word head; works offline, and is what "encoder" falls back to where BERT cannot be loaded). An encoder without a word head runs in similarity mode: what is explained is the cosine similarity between the text's sentence embedding (the mean of the last layer's hidden states over the tokens, as sentence-transformers pools all-MiniLM-L6-v2) and the target sentence's.
            target: The word to explain, one token of the model (e.g. " Paris" with GPT-2's leading space, or "ĠParis"); empty or null = the model's top word. Similarity mode: the sentence to compare the text with (required).
            contrast: Optional second word B: the scores then explain logit(target) - logit(B), "why A rather than B". Similarity mode: an optional second sentence B: the scores explain cos(text, target) - cos(text, B), "why closer to A than to B".
            method: "integrated_gradients" (Captum's LayerIntegratedGradients on the token embeddings, from a baseline of every token replaced by GPT-2's <|endoftext|> or BERT's [PAD], special tokens kept; the default), "input_x_gradient" (Captum's InputXGradient on the token embeddings) or "occlusion" (each token replaced by the baseline token: the drop in the target's probability, or of p(A) - p(B); similarity mode: the drop in the similarity). Only the method asked for runs.
            steps: Integration steps of integrated gradients, 2 to 128. Default 32.

        Returns:
            {"tokens": the model's tokens, "target": the explained word (similarity mode: the target sentence), "scores": one number per token (logit units, or similarity units in similarity mode; occlusion: a probability drop as a fraction, or a similarity drop), "delta": integrated gradients' convergence delta (the scores add up to f(input) - f(baseline) + delta, f = the target's logit, logit(A) - logit(B), or the similarity explained) or null, "target_probability": the target's probability as a fraction from 0 to 1 (null in similarity mode)}; in similarity mode also "similarity": f of the text, cos(text, A) or cos(text, A) - cos(text, B).
        """
        return attr.attribution(load_transformer(store, model), text, target, contrast, method, steps)

    def patching_api(
        clean: str, corrupted: str, model: str = DECODER, target: str | None = None, foil: str | None = None
    ) -> dict:
        """Activation patching: where in the model the clean prompt's answer is decided.

        Args:
            clean: The clean prompt, at most 32 tokens (e.g. "The Eiffel Tower is in the city of"); the encoder needs a [MASK] ("minilm" does not).
            corrupted: The corrupted prompt: the same number of tokens, one or a few changed (e.g. "The Colosseum is in the city of").
            model: "decoder" (GPT-2; the default), "encoder" (BERT) or "minilm" (all-MiniLM-L6-v2, works offline). An encoder without a word head (MiniLM) runs in similarity mode: what is measured is the cosine similarity between the prompt's sentence embedding (mean over its tokens of the last layer's hidden states) and the target sentence's, minus the foil sentence's if one is given.
            target: The clean answer, one token; empty = the clean prompt's top word. Similarity mode: the sentence to compare with (required).
            foil: The word it is compared with, one token; empty = the corrupted prompt's top word (or the clean prompt's second, where both agree). Similarity mode: an optional second sentence.

        Returns:
            {"tokens": the clean prompt's tokens, "layers": the model's number of layers, "restored": (layers + 1) rows x one number per position, row 0 = the embeddings, row l = the residual stream after layer l, each (diff_patched - corrupted_diff) / (clean_diff - corrupted_diff) (1 = the clean answer restored), "clean_diff", "corrupted_diff": logit(target) - logit(foil) of each run (similarity mode: cos(prompt, target), minus cos(prompt, foil) if given)}.
        """
        result = pat.patching(load_transformer(store, model), clean, corrupted, target, foil)
        return {key: result[key] for key in pat.API_KEYS}

    def induction_api(length: int = 50, seed: int = 0, model: str = DECODER) -> dict:
        """Induction heads: random tokens repeated twice, the model's loss on each half, and each head's induction score.

        Args:
            length: How many random tokens in each half, 4 to 200. Default 50.
            seed: The random seed that picks the tokens, 0 to 2**31 - 1. Default 0.
            model: "decoder" (GPT-2), the only choice: induction is how a decoder copies.

        Returns:
            {"loss_first_half", "loss_second_half": the mean next-token loss (nats) on each half's tokens, "scores": one list per layer of one number per head (model order; the page counts from 1): the mean attention from each second-half token to the token right after its earlier copy}.
        """
        t = load_transformer(store, DECODER)  # induction() refuses any other model with a message
        return ind.summary(ind.induction(t, length, seed, model))

    def branches_api(
        prompt: str, temperatures: list[float] | None = None, max_new_tokens: int = 24, seed: int = 0
    ) -> dict:
        """The same prompt continued by GPT-2 at several temperatures, side by side, and where they part.

        Args:
            prompt: The prompt, at most 256 tokens, sent exactly as given.
            temperatures: 1 to 6 temperatures from 0 to 2; 0 = greedy (the same as plain generate), otherwise plain sampling (no top-k or top-p). Default [0.0, 0.7, 1.2].
            max_new_tokens: New tokens per run, 1 to 64. Default 24.
            seed: The seed set before each run, 0 to 2**31 - 1. Default 0.

        Returns:
            {"runs": [{"temperature", "text": the continuation, "tokens": its model tokens}], "diverge_at": per run, the index of its first new token that differs from the first run's (its length where none does)}.
        """
        temperatures = [0.0, 0.7, 1.2] if temperatures is None else temperatures
        return br.branches(text_generation_decoder(store), prompt, temperatures, max_new_tokens, seed, deadline())

    def continue_from_api(
        prompt: str,
        prefix_tokens: list[str] | None = None,
        alternative: str = "",
        max_new_tokens: int = 24,
        seed: int = 0,
        temperature: float = 0.7,
    ) -> dict:
        """Continue a generation from an alternative token: a branch.

        Args:
            prompt: The prompt the run started from.
            prefix_tokens: The generated tokens kept before the branch, as /branches returns them (model tokens such as "ĠParis"); empty = branch at the first new token.
            alternative: The token chosen instead, a model token (e.g. "ĠLondon").
            max_new_tokens: New tokens after the alternative, 1 to 64. Default 24.
            seed: The seed set before generating. Default 0.
            temperature: 0 = greedy, otherwise plain sampling at this temperature (0 to 2). Default 0.7.

        Returns:
            {"branch_at": the index of the alternative among the tokens, "temperature", "text": the kept tokens, the alternative and the new tokens as text, "tokens": the same as model tokens}.
        """
        if not alternative:
            raise HubError("Alternative: name the token to continue from (a model token, e.g. 'ĠLondon').")
        decoder = text_generation_decoder(store)
        return br.continue_from(decoder, prompt, prefix_tokens, alternative, max_new_tokens, seed, temperature,
                                deadline())  # fmt: skip

    gr.api(show_errors(attribution_api), api_name="attribution", concurrency_limit=1, concurrency_id="why-heavy")
    gr.api(show_errors(patching_api), api_name="patching", concurrency_limit=1, concurrency_id="why-heavy")
    gr.api(show_errors(induction_api), api_name="induction", concurrency_limit=1, concurrency_id="why-heavy")
    gr.api(show_errors(branches_api), api_name="branches", concurrency_limit=1, concurrency_id="why-heavy")
    gr.api(show_errors(continue_from_api), api_name="continue_from", concurrency_limit=1, concurrency_id="why-heavy")
