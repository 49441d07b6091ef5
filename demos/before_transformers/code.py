"""The Code accordion's script: the task, the three models and the training loop exactly as the race runs them
(their source, copied from task.py, models.py and race.py), then a race with the visitor's settings. Run as shown,
it prints the same accuracies."""

import inspect

from demos.before_transformers import models, race, task

CONSTANTS = {
    task: ("SYMBOLS", "MAX_LENGTH", "QUESTIONS", "VOCABULARY"),
    models: (
        "RNN_WIDTH",
        "RNN_HIDDEN",
        "CNN_WIDTH",
        "CNN_LAYERS",
        "CNN_KERNEL",
        "ATTENTION_WIDTH",
        "ATTENTION_LAYERS",
        "ATTENTION_HEADS",
    ),
    race: ("BATCH", "LEARNING_RATE", "HELD_OUT"),
}
SOURCES = (
    task.make_batch,
    task.race_lengths,
    task.training_data_seed,
    task.held_out_data_seed,
    models.Embed,
    models.RNN,
    models.CNN,
    models.Attention,
    models.build_model,
    models.parameter_count,
    race.training_losses,
    race.held_out_accuracy,
)


def reproduce_code(length_max: int, seed: int, steps: int) -> str:
    constants = "\n".join(
        f"{name} = {getattr(module, name)!r}" for module, names in CONSTANTS.items() for name in names
    )
    sources = "\n\n".join(inspect.getsource(item) for item in SOURCES)
    return f"""from collections.abc import Iterator

import torch
from torch import nn

torch.set_num_threads(1)  # as the race runs: the same sums in the same order, so the same numbers on any machine
{constants}


{sources}

lengths = race_lengths({length_max})
accuracy = {{}}
for kind in ("rnn", "cnn", "attention"):
    model = build_model(kind, seed={seed})
    for loss in training_losses(model, {seed}, {steps}, lengths):
        pass
    accuracy[kind] = held_out_accuracy(model, {seed}, lengths)
    print(kind, parameter_count(model), "parameters:", dict(zip(lengths, (f"{{a:.1%}}" for a in accuracy[kind]))))
"""
