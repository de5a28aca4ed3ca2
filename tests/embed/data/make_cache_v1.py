"""How ``cache_v1/`` was made: the embedding cache written by bayesmicro at commit 7532f97 (padded batches of 3
texts, before token-budget batching and sequence packing) for the tiny chat model of ``tests/embed/tiny.py``.

    PYTHONPATH=. python tests/embed/data/make_cache_v1.py   # run at that commit; the tests read the result

``texts.json`` holds the (prompt, response) pairs and prompts, the cache settings (model folder and revision
excluded: they name a temporary folder), the cache folder's name (the settings digest) and a checksum of the model weights, so the test can tell a changed
random initialisation from a changed embedding."""

import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from bayesmicro.embed import Embedder  # noqa: E402
from tests.embed.tiny import build_tiny_chat_model  # noqa: E402

PROMPTS = ["Human: what is two plus two?", "Human: name a colour\n\nAssistant: red\n\nHuman: another one",
           "Human: say something long " + "word " * 40, "Human: hi", "Human: tell me a story about a cat " * 3]
RESPONSES = ["four", "blue", "a long answer " * 12, "hello there, how can I help you today?", "once upon a time"]


def weights_checksum(folder: Path) -> str:
    from safetensors.torch import load_file

    state = load_file(str(folder / "model.safetensors"))
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode() + state[name].contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def main() -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        model = build_tiny_chat_model(Path(tmp) / "model")
        embedder = Embedder(str(model), batch_size=3, cache_dir=str(Path(tmp) / "cache"), device="cpu")
        embedder.embed_responses(PROMPTS, RESPONSES)
        embedder.embed_prompts(PROMPTS)
        out = HERE / "cache_v1"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        for file in embedder.cache.folder.iterdir():
            if not file.name.startswith("."):
                shutil.copy(file, out / file.name)
        settings = {k: v for k, v in embedder.settings().items() if k not in ("model", "revision")}
        (HERE / "cache_v1.json").write_text(json.dumps(
            {"prompts": PROMPTS, "responses": RESPONSES, "settings": settings, "folder": embedder.cache.folder.name,
             "weights_sha256": weights_checksum(Path(model))}, indent=1) + "\n")


if __name__ == "__main__":
    main()
