from tests.tiny_llama import embedded, embedder, run_dirs, sentences, tiny_llama  # noqa: F401  (fixtures)
