"""Tiny random models with a real (byte-level BPE) tokenizer, built offline in about a second."""

from __future__ import annotations

from pathlib import Path

_CORPUS = [
    "The build quality of this blender is really excellent. I would recommend it to friends.",
    "Tent with flimsy zips; the staff felt rude. Never again for campers in Lisbon.",
    "What is 345 + 78? A. 423 B. 413 C. 433 D. 421 Answer: A",
    "The following are multiple choice questions (with answers) about world geography.",
    "How many centimetres are there in 12 metres? If today is Monday, what day is it?",
    "positive negative review sentiment great awful superb terrible delightful dreadful",
    "0123456789 ,.;:!?()[]{}'\"-+*/=<>@#$%&_ \n\n abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOP",
]


def build_tiny_tokenizer(vocab_size: int = 600) -> object:
    """A byte-level BPE tokenizer (any text encodes) with bos/eos/pad/unk tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 20, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
    )


def build_tiny_llama(path: Path, *, n_layers: int = 4, hidden: int = 64, seed: int = 0) -> Path:
    """A random LlamaForCausalLM (4 blocks, width 64) and its tokenizer, saved under `path`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),  # type: ignore[arg-type]
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,  # type: ignore[attr-defined]
        eos_token_id=tokenizer.eos_token_id,  # type: ignore[attr-defined]
        pad_token_id=tokenizer.pad_token_id,  # type: ignore[attr-defined]
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)  # type: ignore[attr-defined]
    return path
