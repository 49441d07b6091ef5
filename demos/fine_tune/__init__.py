"""Fine-tune: train a small pretrained transformer on labelled texts, live, and compare it before and after.

    data.py      the built-in dataset or a visitor's CSV (checked by hub.tables), split into train and held out
    model.py     the backbone (MiniLM, offline), a new head per run, each visitor's fine-tuned model
    training.py  the settings, the training loop (run as a hub.jobs.Job by the tab), evaluation, metrics, code
    views.py     what the tab shows of a run: its status line, loss and accuracy series, tables
    attention.py how fine-tuning changed the attention heads, and its section of the tab (/fine_tune_attention)
    tab.py       the tab and its endpoints /fine_tune and /fine_tune_predict

Below: the names other modules, the tests and the benchmark use.
"""

from demos.fine_tune.data import (
    BUILTIN,
    DEFAULT_PROBES,
    UPLOAD,
    LabelledTexts,
    builtin_dataset,
    guess_columns,
    read_csv_dataset,
)
from demos.fine_tune.model import (
    DEFAULT_MODEL,
    FineTuned,
    SessionModels,
    backbone_hub_repos,
    load_backbone,
    packaged_minilm,
    predict,
    resolve_backbone,
    save_for_download,
)
from demos.fine_tune.tab import DEMO
from demos.fine_tune.training import TrainingSettings, check_settings, running_trainings, train_stream

__all__ = [
    "BUILTIN",
    "DEFAULT_MODEL",
    "DEFAULT_PROBES",
    "DEMO",
    "UPLOAD",
    "FineTuned",
    "LabelledTexts",
    "SessionModels",
    "TrainingSettings",
    "backbone_hub_repos",
    "builtin_dataset",
    "check_settings",
    "guess_columns",
    "load_backbone",
    "packaged_minilm",
    "predict",
    "read_csv_dataset",
    "resolve_backbone",
    "running_trainings",
    "save_for_download",
    "train_stream",
]
