"""Real tokenizers trained in a second on a small corpus, for the tiny random-weight models (--preset tiny)."""

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import BertConfig, CLIPTokenizer, PreTrainedTokenizerFast

CORPUS = Path(__file__).resolve().parent.parent / "assets" / "tiny_corpus.txt"


def corpus_lines() -> list[str]:
    return [line for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]


def train_byte_level_bpe(vocab_size: int = 400, special_tokens: tuple[str, ...] = ("<|endoftext|>",)) -> Tokenizer:
    """A GPT-2 style tokenizer: byte-level BPE, so any text (emoji included) can be encoded."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(corpus_lines(), trainer)
    return tokenizer


def train_wordpiece(vocab_size: int = 400) -> Tokenizer:
    """A BERT style tokenizer: lower-cased WordPiece with [CLS] ... [SEP] around each text."""
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.train_from_iterator(
        corpus_lines(), trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=special)
    )
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return tokenizer


def bert_tokenizer(max_length: int = 128) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_object=train_wordpiece(),
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=max_length,
    )


def gpt2_tokenizer(max_length: int = 256) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_object=train_byte_level_bpe(),
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        model_max_length=max_length,
    )


def bert_config(tokenizer: PreTrainedTokenizerFast) -> BertConfig:
    """A two-layer, 32-wide BERT for the tiny fill-mask model and the tiny fine-tune backbone."""
    return BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=tokenizer.model_max_length,
        pad_token_id=tokenizer.pad_token_id,
    )


def clip_tokenizer() -> CLIPTokenizer:
    """A CLIP tokenizer (lower-cased byte-level BPE with </w> word ends), for the tiny text-to-image pipeline."""
    tokenizer = CLIPTokenizer().train_new_from_iterator(corpus_lines(), vocab_size=400)
    tokenizer.model_max_length = 77
    return tokenizer
