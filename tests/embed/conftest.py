import pytest

from tests.embed.tiny import build_tiny_chat_model


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """Folder of a tiny random Llama with a chat-template tokenizer (shared by every embed test)."""
    return str(build_tiny_chat_model(tmp_path_factory.mktemp("tiny_llama")))
