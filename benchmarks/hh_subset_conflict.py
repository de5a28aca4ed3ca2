"""HH-RLHF helpful vs harmless: a single BT on all pairs vs per-subset BTs, evaluated on each subset's held-out pairs.

Reads an embedded-pairs folder from `bayesmicro embed … --protocol hh_rlhf` (group = subset). A BT fitted on one
subset and scored on the other shows the known conflict (below chance); a routed mixture is listed for reference.

    python benchmarks/hh_subset_conflict.py EMBEDDED_DIR [--test-fraction 0.2] [--seed 0] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bayesmicro as bm  # noqa: E402
from bayesmicro.evaluate.metrics import score  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = bm.EmbeddedPairs.load(args.data).with_split(args.test_fraction, args.seed)
    subsets = sorted(set(data.group))
    test = data.part("test")
    models = {"single_bt_all": bm.fit(data, k=1, router="none", seed=args.seed)}
    for subset in subsets:
        models[f"single_bt_{subset}"] = bm.fit(data.subset(np.flatnonzero(data.group == subset)), k=1,
                                               router="none", seed=args.seed)
    models["mixture_k2_prompt"] = bm.fit(data, k=2, router="prompt", seed=args.seed, restarts=1)
    results = {"pairs": len(data), "train_pairs": len(data.part("train")), "test_pairs": len(test),
               "embedding": data.meta.get("embedding"), "accuracy": {}}
    for name, model in models.items():
        row = {}
        for subset in subsets:
            part = test.subset(np.flatnonzero(test.group == subset))
            row[subset] = score(model.predict_proba(part))["accuracy"]
        row["all"] = score(model.predict_proba(test))["accuracy"]
        results["accuracy"][name] = row
    results["test_pairs_by_subset"] = {str(s): int((test.group == s).sum()) for s in subsets}
    if args.json:
        print(json.dumps(results))
        return
    print(f"held-out accuracy ({len(test)} test pairs: {results['test_pairs_by_subset']})")
    print(f"{'fitted on':24s}" + "".join(f"{s:>16s}" for s in (*subsets, "all")))
    for name, row in results["accuracy"].items():
        print(f"{name:24s}" + "".join(f"{row[s]:16.4f}" for s in (*subsets, "all")))


if __name__ == "__main__":
    main()
