"""Encoder `hf` (optional extra): a Hugging Face `transformers` model loaded from a local
directory (never downloaded), its last hidden state as the sequence representation (the
encoder's, for an encoder-decoder checkpoint).

polytask pads token ids with PAD_ID = 0, so the checkpoint's tokenizer must pad with 0 too
(the BERT family does); its attention mask comes from the ids (x != 0).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

import torch
from torch import Tensor, nn

from polytask.models.encoders._base import Encoder, Features, InputShape, join_mask
from polytask.models.encoders._transformer import attention_keys, check_tokens
from polytask.tasks._kinds._base import PAD_ID

INSTALL = "pip install 'polytask[transformers]'"


def _transformers() -> Any:
    """The transformers module, or a ValueError saying how to install it."""
    try:
        return importlib.import_module("transformers")
    except ImportError:
        raise ValueError(
            f"encoder 'hf' needs the transformers package, which is not installed: {INSTALL} "
            "(or use encoder transformer, which needs nothing extra)"
        ) from None


def _folder(path: str) -> Path:
    """The local checkpoint directory, or a ValueError (no hub names: nothing is downloaded)."""
    folder = Path(path).expanduser()
    if not folder.is_dir() or not (folder / "config.json").is_file():
        raise ValueError(
            f"encoder 'hf' loads a model from a local directory only (nothing is downloaded), "
            f"and {path!r} is not a directory holding a config.json: save one first, e.g. "
            "AutoModel.from_pretrained(name).save_pretrained(dir) with its tokenizer, on a "
            "machine that can download"
        )
    return folder


class HFEncoder(Encoder):
    """`transformers.AutoModel` from the directory `path`: its last hidden state, zeroed at
    padding, with the mask channel (N, L, hidden + 1). `freeze`: the backbone is not trained
    (no gradients, always in evaluation mode: no dropout)."""

    def __init__(
        self, input_shape: Sequence[int] | InputShape, path: str, freeze: bool = False
    ) -> None:
        super().__init__()
        shape = tuple(input_shape)
        if len(shape) != 1 or shape[0] < 1:
            raise ValueError(
                f"encoder 'hf' takes token ids: input_shape must be (max_length,), got {shape}"
            )
        transformers = _transformers()
        folder = _folder(path)
        config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
        pad = getattr(config, "pad_token_id", None)
        if pad != PAD_ID:
            raise ValueError(
                f"encoder 'hf': the checkpoint in {str(folder)!r} pads with token id {pad} "
                f"(config.pad_token_id), but polytask pads token ids with {PAD_ID}: use a "
                "checkpoint whose tokenizer pads with id 0 (the BERT family: bert, distilbert, "
                "electra, ...)"
            )
        self.vocab_size = int(config.vocab_size)
        given = input_shape.vocab_size if isinstance(input_shape, InputShape) else None
        if given is not None and given > self.vocab_size:
            raise ValueError(
                f"encoder 'hf': the data's vocabulary has {given} token ids, the checkpoint's "
                f"{self.vocab_size}: tokenize the text with the checkpoint's own tokenizer"
            )
        self.max_length = shape[0]
        limit = getattr(config, "max_position_embeddings", None)
        if isinstance(limit, int) and self.max_length > limit:
            raise ValueError(
                f"encoder 'hf': max_length {self.max_length} exceeds the checkpoint's "
                f"{limit} positions (config.max_position_embeddings): truncate the text to "
                f"at most {limit} tokens"
            )
        model = transformers.AutoModel.from_pretrained(folder, local_files_only=True)
        if getattr(config, "is_encoder_decoder", False):  # T5, BART: their encoder alone
            model = model.get_encoder()
        self.model: nn.Module = model.float()  # float32 like the heads, whatever was saved
        if getattr(self.model, "pooler", None) is not None:  # unused: last hidden state only
            self.model.pooler = None
        self.path, self.freeze = str(folder), freeze
        if freeze:
            self.model.requires_grad_(False)
            self.model.eval()
        self._declare(shape, Features(int(config.hidden_size), sequence=True))

    def train(self, mode: bool = True) -> Self:
        super().train(mode)
        if self.freeze:  # a frozen backbone runs as in evaluation (no dropout)
            self.model.eval()
        return self

    def forward(self, x: Tensor) -> Tensor:
        ids = check_tokens("hf", x, self.max_length, self.vocab_size)
        mask = ids != PAD_ID
        keys = attention_keys(mask).long()  # an all-padding row attends to its first token
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            hidden: Tensor = self.model(input_ids=ids, attention_mask=keys).last_hidden_state
        return join_mask(hidden, mask)


def build_hf(
    input_shape: Sequence[int] | InputShape, /, *, path: str, freeze: bool = False
) -> HFEncoder:
    """`hf`: the Hugging Face transformers model saved in the local directory `path` (its
    last hidden state per token; the tokenizer must pad with id 0, as BERT's does), trained
    with the heads unless `freeze`; needs `pip install 'polytask[transformers]'`."""
    return HFEncoder(input_shape, path, freeze)
