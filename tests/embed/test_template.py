"""Chat templates and the prompt/assistant boundary, checked on a real tokenizer and a real decoder."""

import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from bayesmicro.data.protocols.transcript import parse_transcript, render_transcript
from bayesmicro.embed import Embedder
from bayesmicro.embed.template import boundary_index, pair_text, prompt_text
from tests.common import assert_close

DIALOGUE = "Human: hi there\n\nAssistant: hello, how can I help?\n\nHuman: name a red fruit"
RESPONSE = "a ripe strawberry"


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    return AutoTokenizer.from_pretrained(tiny_model, local_files_only=True)


def test_transcript_round_trip():
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"}, {"role": "user", "content": "bye"}]
    text = render_transcript(messages)
    assert text == "System: be brief\n\nHuman: hi\n\nAssistant: hello\n\nHuman: bye"
    assert parse_transcript(text) == messages
    assert parse_transcript("just a question") == [{"role": "user", "content": "just a question"}]


def test_pair_and_prompt_text_follow_the_chat_template(tokenizer):
    assert pair_text(tokenizer, DIALOGUE, RESPONSE).text == (
        "<|user|>hi there<|end|><|assistant|>hello, how can I help?<|end|><|user|>name a red fruit<|end|>"
        "<|assistant|>a ripe strawberry<|end|>")
    head = prompt_text(tokenizer, DIALOGUE)
    assert head.text.endswith("<|user|>name a red fruit<|end|><|assistant|>") and not head.special


def test_plain_format_without_a_template():
    from bayesmicro.embed.backbone import default_model_path

    plain = AutoTokenizer.from_pretrained(default_model_path(), local_files_only=True)
    pair = pair_text(plain, "Human: q", "a")
    assert pair.text == "Human: q\n\na" and pair.special
    with pytest.raises(ValueError, match="no chat template"):
        boundary_index(plain, "q", "a")


def test_boundary_is_the_assistant_start_token(tokenizer):
    ids = tokenizer(pair_text(tokenizer, DIALOGUE, RESPONSE).text, add_special_tokens=False)["input_ids"]
    b = boundary_index(tokenizer, DIALOGUE, RESPONSE)
    assistant = tokenizer.convert_tokens_to_ids("<|assistant|>")
    last_assistant = max(i for i, t in enumerate(ids) if t == assistant)  # brute force: the last assistant tag
    assert b == last_assistant
    response_ids = tokenizer(RESPONSE, add_special_tokens=False)["input_ids"]
    assert ids[b + 1:b + 1 + len(response_ids)] == response_ids
    assert b != 2  # the official code's len(tokenizer_output_dict)


def test_router_input_and_response_feature_positions_in_the_model(tiny_model, tokenizer, tmp_path):
    """e(x) = hidden state at the boundary token, h(x, a) = at the last token, of the full pair sequence."""
    model = AutoModel.from_pretrained(tiny_model, local_files_only=True).eval()
    ids = tokenizer(pair_text(tokenizer, DIALOGUE, RESPONSE).text, add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**ids).last_hidden_state[0]
    b = boundary_index(tokenizer, DIALOGUE, RESPONSE)
    embedder = Embedder(tiny_model, cache_dir=str(tmp_path), device="cpu")  # bit-exact against the CPU reference
    assert embedder.pooling == "last"
    e_x = embedder.embed_prompts([DIALOGUE])[0]
    h_xa = embedder.embed_responses([DIALOGUE], [RESPONSE])[0]
    # stored in fp16: compare to the fp16 rounding of the reference
    assert_close(e_x, hidden[b].half().float(), atol=0, rtol=0)
    assert_close(h_xa, hidden[-1].half().float(), atol=0, rtol=0)
    assert not torch.allclose(e_x, hidden[b - 1].half().float())
