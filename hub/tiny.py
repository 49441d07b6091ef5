"""The tiny preset (--preset tiny): real tokenizers trained in a second on a small corpus, and small random-weight
models built with them. Nothing here needs a network."""

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import BertConfig, CLIPTokenizer, PreTrainedTokenizerFast

CORPUS = Path(__file__).resolve().parent.parent / "assets" / "tiny_corpus.txt"
# Every tiny GPT-2 and BERT has this many layers of this many heads: the views size their sliders from it before the
# model is built (hub.inside.configured_layers_and_heads).
LAYERS, HEADS = 2, 2


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
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=64,
        max_position_embeddings=tokenizer.model_max_length,
        pad_token_id=tokenizer.pad_token_id,
    )


def clip_tokenizer() -> CLIPTokenizer:
    """A CLIP tokenizer (lower-cased byte-level BPE with </w> word ends), for the tiny text-to-image pipeline."""
    tokenizer = CLIPTokenizer().train_new_from_iterator(corpus_lines(), vocab_size=400)
    tokenizer.model_max_length = 77
    return tokenizer


def sd_turbo_pipeline(vae, text_encoder, tokenizer, unet):
    """A Stable Diffusion pipeline around these parts, with sd-turbo's scheduler (Euler with "trailing" timesteps,
    so a single step starts from pure noise) and no safety checker."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", timestep_spacing="trailing", steps_offset=1
    )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def build_stable_diffusion(folder: Path, autoencoder_folder: Path) -> None:
    """A Stable Diffusion pipeline of the sd-turbo kind with random weights, and a tiny autoencoder beside it."""
    import torch
    from diffusers import (
        AutoencoderKL,
        AutoencoderTiny,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    tokenizer = clip_tokenizer()
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    # 512 px images make 64x64 latents; attention only at 32x32 keeps a tiny UNet fast at that size.
    unet = UNet2DConditionModel(
        sample_size=64,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
        use_linear_projection=True,
    )
    # Four levels, like the real autoencoders: 8x fewer pixels per side in the latents.
    vae = AutoencoderKL(
        block_out_channels=(8, 8, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=512,
    )
    pipe = sd_turbo_pipeline(vae, text_encoder, tokenizer, unet)
    pipe.save_pretrained(folder, safe_serialization=True)
    tiny_autoencoder = AutoencoderTiny(
        encoder_block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        num_encoder_blocks=(1, 1, 1, 1),
        num_decoder_blocks=(1, 1, 1, 1),
    )
    # The default init shrinks the signal layer by layer until every picture is flat grey; He init keeps the
    # random pictures varied, so tests that compare images compare something.
    for module in tiny_autoencoder.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    last_conv = tiny_autoencoder.decoder.layers[-1]
    last_conv.weight.data.mul_(0.05)  # the decoder's output 0..1 maps to black..white: centre it on grey
    last_conv.bias.data.fill_(0.5)
    tiny_autoencoder.save_pretrained(autoencoder_folder, safe_serialization=True)
