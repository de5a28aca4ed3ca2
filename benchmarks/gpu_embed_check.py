"""One-go GPU check of the embedding extraction (issue 32): correctness of every batching mode on the card, then the
throughput table of ``bayesmicro bench speed --device cuda`` (one-text loop, plain length-sorted token-budget loop,
library; tokens/s, TFLOP/s, share of the measured bf16 matmul peak) and a token-budget sweep of the library.

    BAYESMICRO_HH_DATA=.cache/hh_rlhf_helpful_harmless.jsonl.gz python benchmarks/gpu_embed_check.py --out DIR

(copy ``../shared/data/hh_rlhf_helpful_harmless.jsonl.gz`` to ``.cache/`` first and carry it: the device machine has
no shared folder; without it the texts are seeded random words). Needs torch with CUDA (≥ 2.9 for the varlen kernel;
older torch falls back to packed rows) and transformers ≥ 5. About 3–5 minutes on one H100: building and saving the
random 1B model (three loads), 1,000 texts through three loops, a sweep of three budgets.

Writes DIR/gpu_embed_check.json and DIR/gpu_embed_check.md; prints the table; exits 1 when a batching mode disagrees
with one text at a time beyond bf16 tolerance (the throughput target, ≥ 50 % of the matmul peak, is reported only).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bayesmicro.bench import embed_throughput as et  # noqa: E402
from bayesmicro.embed.extract import Extractor, tokenize  # noqa: E402
from bayesmicro.embed.template import pair_text  # noqa: E402

BF16_TOLERANCE = 5e-2  # relative L2 error of a pooled row, packed/varlen/padded vs one text alone


def agreement(folder: Path, n: int, device: torch.device, dtype: torch.dtype) -> dict:
    """Every mode the card supports vs one text per forward pass, last-token pooling, relative L2 per row."""
    from transformers import AutoModel, AutoTokenizer

    prompts, responses, _ = et.sample_texts(n)
    out = {}
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    ids = tokenize(tokenizer, [pair_text(tokenizer, p, a) for p, a in zip(prompts, responses)], 1024)
    model = AutoModel.from_pretrained(folder, dtype=dtype, local_files_only=True).to(device).eval()
    with torch.inference_mode():
        alone = torch.stack([model(input_ids=torch.tensor([x], device=device), use_cache=False)
                             .last_hidden_state[0, -1].float() for x in ids])
    for mode in ("varlen", "packed", "padded"):
        try:
            extractor = Extractor(model, tokenizer.pad_token_id, "last", 1024, device, mode=mode)
        except Exception as exc:  # the probe refused the mode on this card
            out[mode] = {"available": False, "why": f"{type(exc).__name__}: {exc}"[:300]}
            continue
        buffer = torch.zeros(len(ids), extractor.dim, device=device)
        for batch in extractor.batches(ids, [f"{i:05d}" for i in range(len(ids))], list(range(len(ids)))):
            extractor.run(batch, buffer)
        error = ((buffer - alone).norm(dim=1) / alone.norm(dim=1).clamp_min(1e-12)).max().item()
        out[mode] = {"available": True, "max_relative_l2": error, "ok": error <= BF16_TOLERANCE,
                     "max_batch_tokens": extractor.max_batch_tokens}
        model.set_attn_implementation(extractor.base_attention)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--texts", type=int, default=1000)
    parser.add_argument("--sweep", default="8192,16384,32768", help="library token budgets to time ('' = none)")
    parser.add_argument("--device", default="cuda", help="cuda (the check) or cpu (a smoke test of this script)")
    parser.add_argument("--size", default="1b", help="1b (the check) or small")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device")
    dtype = et.compute_dtype(device)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    import transformers

    report: dict = {"torch": torch.__version__, "transformers": transformers.__version__,
                    "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu"}
    tmp = tempfile.TemporaryDirectory()
    models = {}
    for size in dict.fromkeys(("small", args.size)):
        folder = Path(tmp.name) / size
        models[size] = (folder, et.build_model(folder, size, dtype))
    report["agreement"] = {f"{size}_{str(dtype).removeprefix('torch.')}": agreement(folder, 64, device, dtype)
                           for size, (folder, _) in models.items()}
    print(json.dumps(report["agreement"], indent=1), flush=True)
    result = et.measure(args.device, args.size, args.texts, model=models[args.size])
    report["throughput"] = result
    print(et.markdown(result), flush=True)
    report["sweep"] = {}
    for budget in [int(b) for b in args.sweep.split(",") if b]:
        swept = et.measure(args.device, args.size, args.texts, max_batch_tokens=budget, model=models[args.size])
        report["sweep"][budget] = {k: swept["library"][k] for k in ("tokens_per_second", "tflops", "share_of_peak")}
        print(f"library ≤ {budget} tokens: {swept['library']['tokens_per_second']:.0f} tokens/s, "
              f"{100 * swept['library']['share_of_peak']:.1f} % of peak", flush=True)
    share = result["library"]["share_of_peak"]
    report["target"] = {"library_share_of_peak": share, "met": share >= 0.5}
    report["seconds"] = time.perf_counter() - start
    (args.out / "gpu_embed_check.json").write_text(json.dumps(report, indent=1, default=str))
    (args.out / "gpu_embed_check.md").write_text(et.markdown(result) + "\n")
    tmp.cleanup()
    print(f"target ≥ 50 % of the matmul peak: {'met' if share >= 0.5 else 'NOT met'} ({100 * share:.1f} %); "
          f"{report['seconds']:.0f} s", flush=True)
    bad = [f"{size}/{mode}" for size, modes in report["agreement"].items() for mode, r in modes.items()
           if r.get("available") and not r["ok"]]
    if bad:
        sys.exit(f"batching modes disagree with one text at a time: {bad}")


if __name__ == "__main__":
    main()
