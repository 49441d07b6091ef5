"""Text generation: GPT-2 continues a prompt one token at a time, and shows how likely each token was. The model,
then the work: checked settings, a prompt that fits, streamed generation, each token's probability, the code that
reproduces it. The tab that shows it is text_generation_tab.py."""

import threading
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    LogitsProcessorList,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from hub import tiny
from hub.checks import check_choice, check_int, check_number, check_text
from hub.continuous_batching import Decoding, batcher_for
from hub.errors import HubError
from hub.jobs import Job, running_jobs

DEMO_ID = "text-generation"
DEFAULT_MODEL = "openai-community/gpt2"
MAX_PROMPT_CHARS = 20_000  # longer prompts are refused; long-but-allowed ones are cut to fit the context
MAX_NEW_TOKENS = 512
DECODING = ("sampling", "greedy")
TIME_LIMIT_S = 180  # a generation never runs longer than this, whoever asked for it
UPDATE_EVERY_S = 0.1  # streamed updates are batched: each one costs CPU time the model thread needs
FIRST_TOKEN_LOOK_S = 0.01  # how often a stream looks for its first token (a cheap check while the prompt is read)
UPDATES_PER_S = 40  # in all, at most about this many while many generate at once: each of 16 streams gets 2.5 a second


# ---------------------------------------------------------------------------------------------------------
# The model


@dataclass
class TextGenerator:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    source: str

    @property
    def context(self) -> int:
        """How many positions (prompt + new tokens) the model can attend to; 1024 for GPT-2."""
        return context_of(self.model.config)


def context_of(config: PretrainedConfig) -> int:
    """Positions the model reads, whatever its config calls them (GPT-2: n_positions)."""
    return getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", 1024)


def configured_context(source: str) -> int | None:
    """The model's context from its config.json alone, where that file is on this machine (a folder, or the Hub
    cache): no weights load and nothing downloads, so the tab can size its slider before the model's first use."""
    try:
        return context_of(AutoConfig.from_pretrained(source, local_files_only=True))
    except Exception:  # not built or not downloaded yet: the model itself tells after its first load
        return None


def load_text_generator(source: str, dtype: torch.dtype = torch.float32, device: str = "cpu") -> TextGenerator:
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, use_safetensors=True).to(device).eval()
    return TextGenerator(model, tokenizer, source)


def build_tiny_gpt2(folder: Path) -> None:
    tokenizer = tiny.gpt2_tokenizer(max_length=256)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=256,
        n_embd=32,
        n_layer=tiny.LAYERS,
        n_head=tiny.HEADS,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


# ---------------------------------------------------------------------------------------------------------
# The work: checked settings, a prompt that fits, streamed generation, and what each token's probability was


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 50
    decoding: str = "sampling"  # or "greedy": always the most likely token
    temperature: float = 0.8
    top_k: int = 50  # 0 = no top-k cut
    top_p: float = 0.95
    repetition_penalty: float = 1.0
    seed: int = 0

    def generate_kwargs(self) -> dict:
        """The arguments of `model.generate` these settings stand for."""
        kwargs = {"max_new_tokens": self.max_new_tokens, "repetition_penalty": self.repetition_penalty}
        if self.decoding == "greedy":
            return {**kwargs, "do_sample": False}
        return {**kwargs, "do_sample": True, "temperature": self.temperature, "top_k": self.top_k, "top_p": self.top_p}


DEFAULTS = GenerationSettings()  # the one source of each default: sliders, the endpoint, the Code accordion
SLIDER_MAX_NEW_TOKENS = 256  # the slider's maximum while the model's context is not known yet


def most_new_tokens(context: int | None) -> int:
    """The largest max-new-tokens a model with this context accepts (fit_prompt keeps one position for the
    prompt), and the hub's own limit; the slider offers no more."""
    if context is None:
        return SLIDER_MAX_NEW_TOKENS
    return min(MAX_NEW_TOKENS, context - 1)


def check_settings(max_new_tokens: float = DEFAULTS.max_new_tokens, decoding: str = DEFAULTS.decoding,
                   temperature: float = DEFAULTS.temperature, top_k: float = DEFAULTS.top_k,
                   top_p: float = DEFAULTS.top_p, repetition_penalty: float = DEFAULTS.repetition_penalty,
                   seed: float = DEFAULTS.seed) -> GenerationSettings:  # fmt: skip
    return GenerationSettings(
        max_new_tokens=check_int(max_new_tokens, "Max new tokens", 1, MAX_NEW_TOKENS),
        decoding=check_choice(decoding, "Decoding", DECODING),
        temperature=check_number(temperature, "Temperature", 0.05, 2.0),
        top_k=check_int(top_k, "Top-k", 0, 1000),
        top_p=check_number(top_p, "Top-p", 0.05, 1.0),
        repetition_penalty=check_number(repetition_penalty, "Repetition penalty", 1.0, 2.0),
        seed=check_int(seed, "Seed", 0, 2**31 - 1),
    )


@dataclass
class Prompt:
    input_ids: torch.Tensor  # shape (1, n)
    cut_tokens: int  # tokens dropped from the left so that prompt + new tokens fit the context


def fit_prompt(generator: TextGenerator, prompt: str, max_new_tokens: int) -> Prompt:
    """Tokenize the prompt, keeping only its last tokens if prompt + new tokens would overflow the context."""
    if max_new_tokens >= generator.context:
        raise HubError(f"Max new tokens must be below the model's context of {generator.context} tokens.")
    ids = generator.tokenizer(prompt, return_tensors="pt").input_ids
    room = generator.context - max_new_tokens
    cut = max(0, ids.shape[1] - room)
    return Prompt(ids[:, cut:], cut)


def eos_token_ids(model: PreTrainedModel) -> frozenset[int]:
    """The tokens that end a generation, as `generate` reads them from the model's generation config."""
    eos = model.generation_config.eos_token_id
    return frozenset([] if eos is None else [eos] if isinstance(eos, int) else eos)


# Generation threads running now; tests read it to check that Stop really stops them.
running_generations = running_jobs


@dataclass
class Generation:
    """The continuation so far: its text, the exact token ids behind it, and how the run ended."""

    text: str
    prompt_ids: list[int]
    new_ids: list[int]
    cut_tokens: int  # prompt tokens dropped to fit the context
    max_new_tokens: int = DEFAULTS.max_new_tokens
    stopped: str | None = None  # "stop" (Stop, a cancel) or "time limit" when that ended it early; else None
    seconds: float = 0.0  # from the start of `generate` to the last token


def generate_stream(
    generator: TextGenerator,
    prompt: str,
    settings: GenerationSettings = GenerationSettings(),
    stop: threading.Event | None = None,
    update_every_s: float | None = None,
    job: Job | None = None,
) -> Iterator[Generation]:
    """Yield the continuation so far while the generation runs as a job (`job`, or a new one with `stop` and the
    time limit), starting with the empty one, every `update_every_s` (or update_interval's); closing the iterator
    stops it. The tokens are those of `set_seed(seed); model.generate(...)`; they are made on the model thread, in
    decode steps shared with everyone generating at the same time (hub.continuous_batching)."""
    fitted = fit_prompt(generator, check_text(prompt, "Prompt", MAX_PROMPT_CHARS), settings.max_new_tokens)
    model, input_ids = generator.model, fitted.input_ids.to(generator.model.device)
    prompt_ids = fitted.input_ids[0].tolist()
    job = job or Job(TIME_LIMIT_S, stop)
    ended = {"stopped": None, "seconds": 0.0}

    def generate(job: Job) -> None:
        started = time.perf_counter()
        decoding = Decoding(
            input_ids,
            settings.max_new_tokens,
            sampling_processors(settings),
            # what set_seed(seed) does to torch's own generator, for this visitor alone
            torch.Generator(model.device).manual_seed(settings.seed) if settings.decoding == "sampling" else None,
            eos_token_ids(model),
            should_stop=job.should_stop,  # checked after each token, as a stopping criterion of `generate` is
            on_token=lambda new_ids: job.post(list(new_ids)),  # wakes nobody: the reader looks a few times a second
        )
        batcher_for(model).start(decoding)
        decoding.ended.wait()
        if decoding.error is not None:
            raise decoding.error
        ended["seconds"] = time.perf_counter() - started
        if len(job.progress or []) < settings.max_new_tokens and job.should_stop():
            ended["stopped"] = "time limit" if job.out_of_time() else "stop"
        job.post(job.progress)  # the end: the reader sees the last tokens even if none came since its last look

    def so_far(new_ids: list[int], text: str) -> Generation:
        return Generation(text, prompt_ids, new_ids, fitted.cut_tokens, settings.max_new_tokens, **ended)

    shown, new_ids = 0, []
    yield so_far([], "")
    interval = update_every_s or (lambda: update_interval(model, started=job.posts > 0))
    with closing(job.run(generate, name="generate", update_every_s=interval)) as posts:  # closing stops it
        for posted in posts:
            new_ids = list(posted or [])
            text = generator.tokenizer.decode(new_ids, skip_special_tokens=True)
            if len(new_ids) != shown and not text.endswith("\ufffd"):  # wait for the rest of a split character
                shown = len(new_ids)
                yield so_far(new_ids, text)
    yield so_far(new_ids, generator.tokenizer.decode(new_ids, skip_special_tokens=True))


def update_interval(model: PreTrainedModel, started: bool = True) -> float:
    """Seconds between a stream's updates: UPDATE_EVERY_S, longer while many generate at once. Every update costs
    CPU time (decoding the text, Gradio's diff and event) taken from the decode steps on a machine's few cores.
    Until its first token a stream looks often, so that the first token shows as soon as it is made."""
    if not started:
        return FIRST_TOKEN_LOOK_S
    return max(UPDATE_EVERY_S, batcher_for(model).generating / UPDATES_PER_S)


def run_summary(generation: Generation) -> str:
    """The line under the continuation: how the run ended, and after how many of the asked tokens."""
    made, asked = len(generation.new_ids), generation.max_new_tokens
    if generation.stopped == "time limit":
        return f"Stopped after {made} of {asked} tokens: the time limit ran out after {generation.seconds:.1f} s."
    if generation.stopped:
        return f"Stopped after {made} of {asked} tokens."
    speed = f" in {generation.seconds:.1f} s ({made / generation.seconds:.1f} tokens/s)" if generation.seconds else ""
    if made < asked:
        return f"{made} of {asked} tokens{speed}: the model wrote its end-of-text token."
    return f"{made} new tokens{speed}."


def stopped_generation(job: Job, tokenizer: PreTrainedTokenizerBase) -> Generation:
    """A job ended by Stop: the last Generation its stream showed, completed with the tokens made since."""
    shown: Generation = job.shown
    new_ids = list(job.progress or shown.new_ids)
    text = tokenizer.decode(new_ids, skip_special_tokens=True)
    return Generation(text, shown.prompt_ids, new_ids, shown.cut_tokens, shown.max_new_tokens, "stop", shown.seconds)


# The table of the model's top choices; the empty table shows these headers before a run.
ALTERNATIVE_COLUMNS = ["token", "model probability %", "after sampling settings %", "chosen"]


@dataclass
class TokenProbabilities:
    """For each generated token: its text, the model's probability for it, and the top alternatives."""

    tokens: list[str]
    probabilities: list[float]  # softmax of the model's logits at that position
    alternatives: list[pd.DataFrame]  # token, model probability and after the sampling settings (percent), chosen


def sampling_processors(settings: GenerationSettings) -> LogitsProcessorList:
    """The same logits processors `generate` applies for these settings, to show what sampling draws from."""
    processors = LogitsProcessorList()
    if settings.repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(settings.repetition_penalty))
    if settings.decoding == "sampling":
        processors.append(TemperatureLogitsWarper(settings.temperature))
        if settings.top_k > 0:
            processors.append(TopKLogitsWarper(settings.top_k))
        if settings.top_p < 1.0:
            processors.append(TopPAfterTopK(settings.top_p))
    return processors


class TopPAfterTopK(TopPLogitsWarper):
    """transformers' top-p with the same result, faster after a top-k cut. The library sorts the whole vocabulary
    (50,257 tokens: ~3 ms a token, more than a 16-visitor decode step's share of the forward pass); after top-k all
    but k scores are -inf, which sort first and are all removed. So this sorts the k others and puts the -inf ones
    before them: the same sorted scores, the same cumulative probabilities. Only where the cut falls inside a group
    of equal scores does the order within the group (the library's unstable sort's) decide which of them stay:
    there, and for one row of mostly finite scores or any NaN, it runs the library's own code."""

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        allowed = scores[0] != self.filter_value if scores.shape[0] == 1 else None
        if allowed is None or 2 * int(allowed.sum()) > scores.shape[1] or bool(scores.isnan().any()):
            return super().__call__(input_ids, scores)
        kept_ids = allowed.nonzero().squeeze(1)
        kept_sorted, order = torch.sort(scores[0, kept_ids])
        removed = scores.shape[1] - kept_ids.numel()
        sorted_logits = torch.cat([scores.new_full((removed,), self.filter_value), kept_sorted])[None]
        sorted_indices = torch.cat([(~allowed).nonzero().squeeze(1), kept_ids[order]])[None]
        # from here on, the library's lines
        cumulative_probs = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        sorted_indices_to_remove = cumulative_probs <= (1 - self.top_p)
        sorted_indices_to_remove[..., -self.min_tokens_to_keep :] = 0
        cut = int(sorted_indices_to_remove[0].sum())  # the first kept position: the removed ones come first
        if 0 < cut and sorted_logits[0, cut - 1] == sorted_logits[0, cut]:  # the cut splits equal scores
            return super().__call__(input_ids, scores)
        indices_to_remove = sorted_indices_to_remove.scatter(1, sorted_indices, sorted_indices_to_remove)
        return scores.masked_fill(indices_to_remove, self.filter_value)


def token_probabilities(
    generator: TextGenerator, generation: Generation, settings: GenerationSettings, top: int = 5
) -> TokenProbabilities:
    """Score the generated tokens with one forward pass over prompt + continuation."""
    ids = torch.tensor([generation.prompt_ids + generation.new_ids], device=generator.model.device)
    with torch.inference_mode():
        logits = generator.model(ids).logits[0].float()
    processors = sampling_processors(settings)
    start = len(generation.prompt_ids)
    tokens, probabilities, alternatives = [], [], []
    for position in range(start, ids.shape[1]):
        step_logits = logits[position - 1 : position]
        model_probs = step_logits.softmax(-1)[0]
        sampling_probs = processors(ids[:, :position], step_logits.clone())[0].softmax(-1)
        chosen = int(ids[0, position])
        tokens.append(generator.tokenizer.decode([chosen]))
        probabilities.append(float(model_probs[chosen]))
        top_ids = model_probs.topk(min(top, model_probs.numel())).indices.tolist()
        if chosen not in top_ids:
            top_ids.append(chosen)
        percent = [[round(100 * float(probs[i]), 2) for i in top_ids] for probs in (model_probs, sampling_probs)]
        decoded = [repr(generator.tokenizer.decode([i])) for i in top_ids]
        marks = ["<-" if i == chosen else "" for i in top_ids]
        alternatives.append(pd.DataFrame(dict(zip(ALTERNATIVE_COLUMNS, [decoded, *percent, marks]))))
    return TokenProbabilities(tokens, probabilities, alternatives)


def reproduce_code(source: str, prompt: str, settings: GenerationSettings, dtype: torch.dtype, cut: int) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in settings.generate_kwargs().items())
    prompt_line = f"inputs = tokenizer({prompt!r}, return_tensors='pt')"
    if cut:
        prompt_line += f"\ninputs = {{k: v[:, {cut}:] for k, v in inputs.items()}}  # keep what fits the context"
    return f"""import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

tokenizer = AutoTokenizer.from_pretrained({source!r})
model = AutoModelForCausalLM.from_pretrained({source!r}, dtype={dtype})
{prompt_line}
set_seed({settings.seed})
output = model.generate(**inputs, {args}, pad_token_id=tokenizer.eos_token_id)
print(tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
"""
