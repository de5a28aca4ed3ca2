"""A tiny randomly initialised Llama-style causal LM with its own word-level tokenizer and a chat template, saved to
a folder that transformers loads offline (``AutoModel``, ``AutoModelForCausalLM``, ``AutoModelForSequenceClassification``)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import BertConfig, BertModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from bayesmicro.data.embedded import EmbeddedPairs
from bayesmicro.infer.api import fit
from bayesmicro.integrations.backbone import BackboneEmbedder

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


def build_tiny_bert(folder: Path, hidden: int = 32, seed: int = 0) -> Path:
    """A tiny random BERT encoder (no chat template: pairs read as ``prompt\\n\\nresponse``) with the word-level
    tokenizer, whose post-processor adds [CLS] … [SEP] as BERT's does."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    vocab = {tok: i for i, tok in enumerate(specials + sorted(set(WORDS)))}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    raw.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2),
                                                                                                ("[SEP]", 3)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="[PAD]", unk_token="[UNK]",
                                        cls_token="[CLS]", sep_token="[SEP]")
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(vocab), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                        num_attention_heads=4, max_position_embeddings=256, pad_token_id=0)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# -- fixtures (import them into a test module or conftest to use them) -----------------------------------------
def sentences(n: int, seed: int, length: int = 5) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(length)) for _ in range(n)]


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "llama")


@pytest.fixture(scope="session")
def embedder(tiny_llama):
    return BackboneEmbedder(str(tiny_llama), pooling="last", local_files_only=True)


@pytest.fixture(scope="session")
def embedded(embedder):
    """40 text pairs embedded by the tiny backbone, with one context string per pair."""
    prompts, chosen, rejected = sentences(40, 1), sentences(40, 2), sentences(40, 3)
    contexts = [random.Random(i).choice(["be concise", "be formal", "be friendly"]) for i in range(40)]
    return EmbeddedPairs(chosen=embedder.embed_responses(prompts, chosen),
                         rejected=embedder.embed_responses(prompts, rejected),
                         prompt=embedder.embed_prompts(prompts), context=embedder.embed_texts(contexts),
                         meta={"embedding": embedder.settings()})


@pytest.fixture(scope="session")
def run_dirs(embedded, tmp_path_factory):
    """Saved runs: prompt-routed MAP, the same with 5 perturbed head draws, context-routed MAP."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    prompt_run = fit(embedded, k=2, router="prompt", restarts=1)
    prompt_run.summary["embedding"] = embedded.meta["embedding"]
    out["prompt"] = prompt_run.save(root / "prompt")
    g = torch.Generator().manual_seed(0)
    draws = prompt_run.heads + 0.3 * torch.randn(5, *prompt_run.heads.shape[1:], generator=g)
    type(prompt_run)(prompt_run.config, draws, prompt_run.router_state, prompt_run.summary).save(root / "draws")
    out["draws"] = root / "draws"
    context_run = fit(embedded, k=2, router="context", restarts=1)
    context_run.summary["embedding"] = embedded.meta["embedding"]
    out["context"] = context_run.save(root / "context")
    return out
