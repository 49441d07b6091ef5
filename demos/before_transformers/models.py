"""The three contestants, of about the same size (each ~48k parameters), all reading the same input: each token's
embedding plus a learned position embedding, and all answering from the last token (the question).

    RNN        an LSTM: one step per token, everything it knows about the past is in its state vector
    CNN        causal 1-D convolutions: each layer looks k tokens back, so it sees only the last
               1 + layers * (k - 1) tokens (its receptive field)
    Attention  a transformer encoder (torch's own layers): every token can look at every other in one step
"""

import math

import torch
from torch import nn

from demos.before_transformers.task import MAX_LENGTH, SYMBOLS, VOCABULARY

KINDS = ("rnn", "cnn", "attention")
NAMES = {"rnn": "RNN (LSTM)", "cnn": "CNN (1-D convolutions)", "attention": "Self-attention (transformer encoder)"}
RNN_WIDTH, RNN_HIDDEN = 48, 76
CNN_WIDTH, CNN_LAYERS, CNN_KERNEL = 44, 4, 5
ATTENTION_WIDTH, ATTENTION_LAYERS, ATTENTION_HEADS = 48, 2, 4


class Embed(nn.Module):
    """Token embedding + learned position embedding: the input every model reads."""

    def __init__(self, width: int):
        super().__init__()
        self.token = nn.Embedding(VOCABULARY, width)
        self.position = nn.Embedding(MAX_LENGTH, width)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.token(tokens) + self.position.weight[: tokens.shape[1]]


class RNN(nn.Module):
    def __init__(self, width: int = RNN_WIDTH, hidden: int = RNN_HIDDEN):
        super().__init__()
        self.embed = Embed(width)
        self.lstm = nn.LSTM(width, hidden, batch_first=True)
        self.answer = nn.Linear(hidden, SYMBOLS)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        states, _ = self.lstm(self.embed(tokens))
        return self.answer(states[:, -1])  # the state after reading the question


class CNN(nn.Module):
    def __init__(self, width: int = CNN_WIDTH, layers: int = CNN_LAYERS, kernel: int = CNN_KERNEL):
        super().__init__()
        self.kernel = kernel
        self.embed = Embed(width)
        self.convolutions = nn.ModuleList(nn.Conv1d(width, width, kernel) for _ in range(layers))
        self.answer = nn.Linear(width, SYMBOLS)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens).transpose(1, 2)  # batch x channels x length
        for convolution in self.convolutions:
            # padded on the left only: position t sees tokens t-k+1..t (causal), and the length stays the same
            h = h + torch.relu(convolution(nn.functional.pad(h, (self.kernel - 1, 0))))
        return self.answer(h[:, :, -1])  # the question's position


class Attention(nn.Module):
    def __init__(self, width: int = ATTENTION_WIDTH, layers: int = ATTENTION_LAYERS, heads: int = ATTENTION_HEADS):
        super().__init__()
        self.embed = Embed(width)
        layer = nn.TransformerEncoderLayer(width, heads, 2 * width, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.answer = nn.Linear(width, SYMBOLS)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.answer(self.encoder(self.embed(tokens))[:, -1])  # the question's position


def build_model(kind: str, seed: int) -> nn.Module:
    """A freshly initialised model: the same seed gives the same starting weights."""
    torch.manual_seed(seed)
    return {"rnn": RNN, "cnn": CNN, "attention": Attention}[kind]()


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def cnn_receptive_field(layers: int = CNN_LAYERS, kernel: int = CNN_KERNEL) -> int:
    """How many tokens the CNN's last position sees: itself plus k-1 more per layer."""
    return 1 + layers * (kernel - 1)


def sequential_steps(kind: str, length: int) -> int:
    """Steps that must run one after another to read `length` tokens: an RNN waits for each token's state; a
    CNN or attention layer handles all positions at once, so it takes one step per layer."""
    return {"rnn": length, "cnn": CNN_LAYERS, "attention": ATTENTION_LAYERS}[kind]


def longest_path(kind: str, length: int) -> int:
    """Operations between the first and the last token (the path length of Vaswani et al. 2017, Table 1): n-1
    state updates for an RNN, ceil((n-1)/(k-1)) stacked convolutions (more than this CNN's layers = beyond its
    receptive field), one attention step."""
    return {
        "rnn": length - 1,
        "cnn": math.ceil((length - 1) / (CNN_KERNEL - 1)),
        "attention": 1,
    }[kind]
