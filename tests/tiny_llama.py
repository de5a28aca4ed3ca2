"""A tiny randomly initialised Llama-style causal LM with its own word-level tokenizer and a chat template, saved to
a folder that transformers loads offline (``AutoModel``, ``AutoModelForCausalLM``, ``AutoModelForSequenceClassification``)."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

WORDS = ("hello how are you today the answer is yes no maybe please explain briefly in detail thanks good bad "
         "write a short poem about cats dogs weather sun rain code python fast slow kind rude helpful safe "
         "be concise formal friendly user assistant").split()
CHAT_TEMPLATE = ("{% for m in messages %}<s> {{ m['role'] }} : {{ m['content'] }} </s> {% endfor %}"
                 "{% if add_generation_prompt %}<s> assistant : {% endif %}")


def build_tiny_llama(folder: Path, hidden: int = 32, seed: int = 0) -> Path:
    specials = ["[PAD]", "[UNK]", "<s>", "</s>", ":", "."]
    vocab = {tok: i for i, tok in enumerate(specials + sorted(set(WORDS)))}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="[PAD]", unk_token="[UNK]", bos_token="<s>",
                                        eos_token="</s>")
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256, pad_token_id=0, bos_token_id=2, eos_token_id=3,
                         tie_word_embeddings=False)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = 0
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
