"""Small GPT-2-shaped decoders (transformers' GPT2Config) trained on the corpus's bytes: the sizes, one training run
with its validation loss at token checkpoints, and the count of non-embedding parameters the laws are written in.

The grid script and the live run call the same `train`, so a live run of a grid size with the grid's seed lands on
the grid's own point. A run is deterministic from its seed: the model's initial weights come from the seed, the
batches from a generator seeded with it, and nothing else is random (no dropout).

    run = train(SIZES_BY_NAME["2 x 64"], tokens=65_536, checkpoints=[32_768, 65_536])
    run.checkpoints  # [(32768, 2.41...), (65536, 2.18...)]: validation loss in nats per byte
"""

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from demos.scaling_laws.corpus import VOCAB_SIZE, load_corpus


@dataclass(frozen=True)
class Size:
    layers: int
    width: int
    heads: int

    @property
    def name(self) -> str:
        return f"{self.layers} x {self.width}"


# The grid's sizes: from 1.9 thousand to 336 thousand non-embedding parameters (176 times).
GRID_SIZES = (Size(1, 12, 2), Size(1, 24, 2), Size(2, 32, 2), Size(2, 64, 4), Size(3, 96, 4))
# Sizes a visitor can also train live, between the grid's: the law never saw them, so its value there is a prediction.
BETWEEN_SIZES = (Size(1, 16, 2), Size(2, 48, 4), Size(3, 64, 4))
SIZES = tuple(sorted(GRID_SIZES + BETWEEN_SIZES, key=lambda s: (s.layers * s.width**2, s.layers)))
SIZES_BY_NAME = {size.name: size for size in SIZES}


@dataclass(frozen=True)
class Settings:
    """How every model here is trained; the grid's JSON records these values."""

    context: int = 64  # bytes per training sequence
    batch_size: int = 16  # sequences per step: 1,024 tokens
    learning_rate: float = 2e-3  # AdamW, constant after a linear warm-up
    warmup_steps: int = 10
    weight_decay: float = 0.0
    eval_windows: int = 64  # held-out windows of `context` bytes, evenly spaced over the validation text
    seed: int = 0

    @property
    def tokens_per_step(self) -> int:
        return self.context * self.batch_size


SETTINGS = Settings()


def config(size: Size, settings: Settings = SETTINGS) -> GPT2Config:
    return GPT2Config(
        vocab_size=VOCAB_SIZE,
        n_positions=settings.context,
        n_embd=size.width,
        n_layer=size.layers,
        n_head=size.heads,
        resid_pdrop=0.0,  # no dropout: a run is a function of its seed alone
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
    )


_seed_lock = threading.Lock()


def build_model(size: Size, settings: Settings = SETTINGS, seed: int | None = None) -> GPT2LMHeadModel:
    """A freshly initialised model; its initial weights depend only on the seed."""
    with _seed_lock, torch.random.fork_rng(devices=[]):  # other threads' random state is left as it was
        torch.manual_seed(settings.seed if seed is None else seed)
        model = GPT2LMHeadModel(config(size, settings))
    model.loss_type = "ForCausalLM"  # the loss it uses anyway; said, so that transformers does not warn it guessed
    return model


def non_embedding_parameters(model: GPT2LMHeadModel) -> int:
    """Kaplan et al.'s N: every parameter except the token and position embedding tables (the output head is tied
    to the token table, so it is not counted either)."""
    embeddings = {id(model.transformer.wte.weight), id(model.transformer.wpe.weight)}
    return sum(p.numel() for p in model.parameters() if id(p) not in embeddings)


def size_parameters(size: Size, settings: Settings = SETTINGS) -> int:
    return non_embedding_parameters(build_model(size, settings))


def validation_windows(validation: torch.Tensor, settings: Settings = SETTINGS) -> torch.Tensor:
    """`eval_windows` windows of `context` bytes, evenly spaced over the held-out text (the same for every run)."""
    starts = torch.linspace(0, len(validation) - settings.context, settings.eval_windows).long()
    return torch.stack([validation[s : s + settings.context] for s in starts.tolist()]).long()


@torch.no_grad()
def validation_loss(model: GPT2LMHeadModel, windows: torch.Tensor) -> float:
    """Mean next-byte cross-entropy on the held-out windows, in nats."""
    model.eval()
    loss = model(input_ids=windows, labels=windows).loss.item()
    model.train()
    return loss


@dataclass
class Run:
    size: Size
    tokens: int  # the budget asked for
    seed: int
    parameters: int  # non-embedding
    tokens_per_step: int
    step: int = 0
    total_steps: int = 0
    train_losses: list[float] = field(default_factory=list)
    checkpoints: list[tuple[int, float]] = field(default_factory=list)  # (tokens seen, validation loss)
    seconds: float = 0.0
    stopped: str = ""  # why the run ended before its budget, if it did

    @property
    def tokens_seen(self) -> int:
        return self.step * self.tokens_per_step

    @property
    def done(self) -> bool:
        return self.step == self.total_steps and bool(self.checkpoints) and self.checkpoints[-1][0] == self.tokens

    def snapshot(self) -> "Run":
        copy = Run(**{**self.__dict__})
        copy.train_losses, copy.checkpoints = list(self.train_losses), list(self.checkpoints)
        return copy


def train(
    size: Size,
    tokens: int,
    checkpoints: list[int] | None = None,
    seed: int | None = None,
    settings: Settings = SETTINGS,
    should_stop: Callable[[], str] = lambda: "",
    on_step: Callable[[Run], None] = lambda run: None,
) -> Run:
    """Train `size` on `tokens` training bytes (a multiple of the tokens per step), measuring the validation loss
    after each checkpoint's number of tokens (and at the end). `should_stop` is checked between steps and says why to
    stop ("" = go on): a stopped run keeps what it measured and gets a last checkpoint where it stopped. `on_step`
    sees the run after every step and once at the end."""
    seed = settings.seed if seed is None else seed
    corpus = load_corpus()
    model = build_model(size, settings, seed)
    run = Run(
        size,
        tokens,
        seed,
        non_embedding_parameters(model),
        settings.tokens_per_step,
        total_steps=tokens // settings.tokens_per_step,
    )
    windows = validation_windows(corpus.validation, settings)
    at_tokens = sorted({t for t in (checkpoints or []) if 0 < t <= tokens} | {tokens})
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=settings.learning_rate, betas=(0.9, 0.95), weight_decay=settings.weight_decay
    )
    warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / settings.warmup_steps))
    batches = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    model.train()
    for step in range(run.total_steps):
        reason = should_stop()
        if reason:
            run.stopped = reason
            if run.step and (not run.checkpoints or run.checkpoints[-1][0] != run.tokens_seen):
                run.checkpoints.append((run.tokens_seen, validation_loss(model, windows)))
            break
        offsets = torch.randint(0, len(corpus.train) - settings.context, (settings.batch_size,), generator=batches)
        batch = torch.stack([corpus.train[o : o + settings.context] for o in offsets.tolist()]).long()
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        warmup.step()
        optimizer.zero_grad(set_to_none=True)
        run.step = step + 1
        run.train_losses.append(loss.item())
        if run.tokens_seen in at_tokens:
            run.checkpoints.append((run.tokens_seen, validation_loss(model, windows)))
        run.seconds = time.perf_counter() - start
        on_step(run)
    run.seconds = time.perf_counter() - start
    on_step(run)
    return run
