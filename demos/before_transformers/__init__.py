"""Before transformers: an RNN, a CNN and a small self-attention encoder of about the same size race on one task
that needs information from far back, trained live; accuracy against length and what each pays to read a sequence.

    task.py     the task ("what was symbol number i?") and its seeded data
    models.py   the three models, their parameter counts, the CNN's receptive field, sequential steps, longest path
    race.py     training, held-out evaluation and timing: the JSON /sequence_race returns
    figures.py  the two figures drawn from that JSON
    code.py     the Code accordion's script (the same source, run as shown)
    tab.py      the tab and its endpoint /sequence_race
"""

from demos.before_transformers.code import reproduce_code
from demos.before_transformers.models import (
    KINDS,
    build_model,
    cnn_receptive_field,
    longest_path,
    parameter_count,
    sequential_steps,
)
from demos.before_transformers.race import (
    DEFAULTS,
    Stopped,
    check_settings,
    held_out_accuracy,
    ms_per_sequence,
    one_torch_thread,
    sequence_race,
    training_losses,
)
from demos.before_transformers.tab import DEMO
from demos.before_transformers.task import CHANCE, make_batch, race_lengths

__all__ = [
    "CHANCE",
    "DEFAULTS",
    "DEMO",
    "KINDS",
    "Stopped",
    "build_model",
    "check_settings",
    "cnn_receptive_field",
    "held_out_accuracy",
    "longest_path",
    "make_batch",
    "ms_per_sequence",
    "one_torch_thread",
    "parameter_count",
    "race_lengths",
    "reproduce_code",
    "sequence_race",
    "sequential_steps",
    "training_losses",
]
