"""Continuous batching of generation: everyone generating from one model at the same time shares one forward pass
per token (a decode step) on the model thread; a new visitor joins at the next step, one who is done or stopped
leaves it. Between two steps the model thread serves other work.

Each visitor gets the tokens they would get alone with the same settings and seed: the prompts of those who join at
the same step are read in one forward pass (padded on the left, the padding masked out, positions their own, the
next token's logits only, as `generate` reads a prompt); in a decode step each row is one visitor's sequence
(padded and masked the same way); each row's logits go through that visitor's own logits processors; a sampled
token is drawn with the visitor's own torch.Generator, seeded as `set_seed(seed)` seeds torch's, so `multinomial`
draws the numbers it draws in `generate`. (In float32 the tokens are the same; in bfloat16 a batched product rounds
differently from a single row's, so at a near-tie a row can pick the other token.)

transformers' own manager (`model.init_continuous_batching()`) is not used: it samples every request from one
random generator (a visitor's text would depend on who else is generating, so a seed could not reproduce it), has
no repetition penalty per request, and runs its loop in a thread of its own.
"""

import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from transformers import LogitsProcessorList, PreTrainedModel

from hub import model_thread

MAX_ROWS = 16  # the most sequences one decode step runs; more visitors wait to join
PREFILL_POSITIONS = 2048  # the most padded prompt positions read in one forward pass: one step's wait stays short


@dataclass(eq=False)
class Decoding:
    """One visitor's generation. The model thread appends to `new_ids` and calls `on_token(new_ids)` after each
    token, checks `should_stop()` after each token, and sets `ended` when it is done (`error` says if it failed)."""

    prompt_ids: torch.Tensor  # (1, n), on the model's device
    max_new_tokens: int
    processors: LogitsProcessorList = field(default_factory=LogitsProcessorList)
    random: torch.Generator | None = None  # draws sampled tokens; None = greedy (the most likely token)
    eos_token_ids: frozenset[int] = frozenset()
    should_stop: Callable[[], bool] = lambda: False
    on_token: Callable[[list[int]], None] = lambda new_ids: None
    new_ids: list[int] = field(default_factory=list)
    ended: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None

    def __post_init__(self) -> None:
        self._ids = self.prompt_ids  # prompt + new tokens: what the processors read (a repetition penalty)

    @property
    def length(self) -> int:
        return self._ids.shape[1]

    def take(self, logits: torch.Tensor) -> None:
        """Choose the next token from this sequence's logits (1, vocab), as `generate` does."""
        scores = self.processors(self._ids, logits.to(dtype=torch.float32, copy=True))
        if self.random is None:
            token = torch.argmax(scores, dim=-1)
        else:
            token = torch.multinomial(F.softmax(scores, dim=-1), num_samples=1, generator=self.random).squeeze(1)
        self._ids = torch.cat([self._ids, token[:, None]], dim=-1)
        self.new_ids.append(int(token))
        self.on_token(self.new_ids)

    @property
    def done(self) -> bool:
        return (
            len(self.new_ids) >= self.max_new_tokens
            or (bool(self.new_ids) and self.new_ids[-1] in self.eos_token_ids)
            or self.should_stop()
        )


class ContinuousBatcher:
    """The decode loop of one model. `start(decoding)` returns at once; the model thread runs the decoding, a
    step at a time, together with the others running."""

    def __init__(self, model: PreTrainedModel, max_rows: int = MAX_ROWS):
        self.model, self.max_rows = model, max_rows
        self.step_sizes: dict[int, int] = {}  # rows in a decode step -> how many steps had that many
        self.prompt_reads: dict[int, int] = {}  # prompts read in one forward pass -> how many passes read that many
        self._lock = threading.Lock()
        self._joining: list[Decoding] = []
        self._scheduled = False
        # The model thread's alone: the rows decoding now, their key/value cache and attention mask (B, T).
        self._rows: list[Decoding] = []
        self._cache = None
        self._mask: torch.Tensor | None = None

    def start(self, decoding: Decoding) -> None:
        with self._lock:
            self._joining.append(decoding)
            schedule, self._scheduled = not self._scheduled, True
        if schedule:
            model_thread.submit(self._step)

    @property
    def generating(self) -> int:
        """How many sequences are decoding or waiting to join."""
        return len(self._rows) + len(self._joining)

    def _step(self) -> None:
        """One token for every row, then the waiting prompts read; again later while anyone is left."""
        try:
            with torch.inference_mode():
                self._decode()
                self._admit()
        except Exception as error:  # a failed forward pass fails everyone in it; the loop starts clean
            with self._lock:
                failed, self._joining = self._rows + self._joining, []
            self._rows, self._cache, self._mask = [], None, None
            for decoding in failed:
                decoding.error = error
                decoding.ended.set()
        finally:
            with self._lock:
                self._scheduled = bool(self._rows or self._joining)
                if self._scheduled:  # to the back of the queue: others' work runs between two steps
                    model_thread.submit(self._step)

    def _decode(self) -> None:
        self._keep([i for i, row in enumerate(self._rows) if not self._end_if_done(row)])  # stopped meanwhile
        if not self._rows:
            return
        rows = len(self._rows)
        self.step_sizes[rows] = self.step_sizes.get(rows, 0) + 1
        device = self._mask.device
        mask = torch.cat([self._mask, self._mask.new_ones(rows, 1)], dim=1)
        out = self.model(
            input_ids=torch.tensor([[row.new_ids[-1]] for row in self._rows], device=device),
            attention_mask=mask,
            position_ids=torch.tensor([[row.length - 1] for row in self._rows], device=device),
            past_key_values=self._cache,
            use_cache=True,
        )
        self._cache, self._mask = out.past_key_values, mask
        logits = out.logits[:, -1]
        for i, row in enumerate(self._rows):
            row.take(logits[i : i + 1])
        self._keep([i for i, row in enumerate(self._rows) if not self._end_if_done(row)])

    def _admit(self) -> None:
        with self._lock:
            room = self.max_rows - len(self._rows)
            joining, self._joining = self._joining[:room], self._joining[room:]
        joining = [decoding for decoding in joining if not self._end_if_done(decoding)]  # stopped before it started
        while joining:
            group, joining = self._prefill_group(joining)
            self._read_prompts(group)

    @staticmethod
    def _prefill_group(joining: list[Decoding]) -> tuple[list[Decoding], list[Decoding]]:
        """The first joiners whose prompts, padded to the longest, fit in one forward pass of PREFILL_POSITIONS."""
        count, longest = 0, 0
        for decoding in joining:
            longest = max(longest, decoding.prompt_ids.shape[1])
            if count and (count + 1) * longest > PREFILL_POSITIONS:
                break
            count += 1
        return joining[:count], joining[count:]

    def _read_prompts(self, group: list[Decoding]) -> None:
        """Read the prompts of these joiners in one forward pass (shorter ones padded on the left, as the rows are),
        take each one's first token, and add those not done yet to the rows."""
        self.prompt_reads[len(group)] = self.prompt_reads.get(len(group), 0) + 1
        longest = max(decoding.prompt_ids.shape[1] for decoding in group)
        ids = torch.cat([F.pad(d.prompt_ids, (longest - d.prompt_ids.shape[1], 0)) for d in group])
        mask = torch.cat([F.pad(torch.ones_like(d.prompt_ids), (longest - d.prompt_ids.shape[1], 0)) for d in group])
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=(mask.cumsum(-1) - 1).clamp(min=0),  # each prompt counts from 0 at its first token
            use_cache=True,
            # as `generate` reads a prompt: the next token's logits only
            **({"logits_to_keep": 1} if self.model._supports_logits_to_keep() else {}),
        )
        cache = out.past_key_values
        if not bool(mask.all()):
            self._pad_left(cache, 0, mask)  # what the padded positions wrote is masked out: zeros, never NaN
        for i, decoding in enumerate(group):
            decoding.take(out.logits[i : i + 1, -1])
        staying = [i for i, decoding in enumerate(group) if not self._end_if_done(decoding)]
        if staying:
            self._join([group[i] for i in staying], cache, mask, staying)

    def _end_if_done(self, decoding: Decoding) -> bool:
        if decoding.done:
            decoding.ended.set()
            return True
        return False

    def _join(self, joining: list[Decoding], cache, mask: torch.Tensor, rows: list[int]) -> None:
        """Add sequences whose prompts were just read to the rows: `rows` of `cache` and `mask` (B, positions), which
        hold their prompts (every token but the newest)."""
        if len(rows) < mask.shape[0]:
            index = torch.tensor(rows, device=mask.device)
            mask = mask[index]
            for layer in cache.layers:
                layer.keys, layer.values = layer.keys[index], layer.values[index]
        if self._cache is None:
            self._rows, self._cache, self._mask = list(joining), cache, mask
            return
        width, length = self._mask.shape[1], mask.shape[1]
        if length > width:  # the rows so far get more padding on the left
            self._pad_left(self._cache, length - width)
            self._mask = F.pad(self._mask, (length - width, 0))
        elif length < width:
            self._pad_left(cache, width - length)
            mask = F.pad(mask, (width - length, 0))
        for layer, new in zip(self._cache.layers, cache.layers):
            layer.keys = torch.cat([layer.keys, new.keys])
            layer.values = torch.cat([layer.values, new.values])
        self._mask = torch.cat([self._mask, mask])
        self._rows += joining

    @staticmethod
    def _pad_left(cache, columns: int, mask: torch.Tensor | None = None) -> None:
        """Add `columns` positions of padding on the left of every row (and zero the positions `mask` hides)."""
        for layer in cache.layers:  # (batch, heads, positions, head size): zeros the mask hides
            if mask is not None:
                hidden = ~mask.bool()[:, None, :, None]
                layer.keys, layer.values = layer.keys.masked_fill(hidden, 0), layer.values.masked_fill(hidden, 0)
            layer.keys = F.pad(layer.keys, (0, 0, columns, 0))
            layer.values = F.pad(layer.values, (0, 0, columns, 0))

    def _keep(self, indices: list[int]) -> None:
        """Keep these rows only, and drop the columns that are padding in every row left."""
        if len(indices) == len(self._rows):
            return
        if not indices:
            self._rows, self._cache, self._mask = [], None, None
            return
        index = torch.tensor(indices, device=self._mask.device)
        mask = self._mask[index]
        first = int(mask.any(dim=0).nonzero()[0])  # the first column some row still reads
        self._mask = mask[:, first:]
        for layer in self._cache.layers:
            layer.keys = layer.keys[index, :, first:]
            layer.values = layer.values[index, :, first:]
        self._rows = [self._rows[i] for i in indices]


_batchers: "weakref.WeakKeyDictionary[PreTrainedModel, ContinuousBatcher]" = weakref.WeakKeyDictionary()
_batchers_lock = threading.Lock()


def batcher_for(model: PreTrainedModel) -> ContinuousBatcher:
    """The one decode loop of this model, shared by everyone generating from it."""
    with _batchers_lock:
        if model not in _batchers:
            _batchers[model] = ContinuousBatcher(model)
        return _batchers[model]
