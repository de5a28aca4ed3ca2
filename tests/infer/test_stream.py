"""Streaming fit over a shard store: likelihood scaling, recovery, exact resume after SIGKILL, checkpoints, CUDA."""

from __future__ import annotations

import functools
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pyro
import pytest
import torch

from bayesmicro.data.shards import write_shards
from bayesmicro.data.synthetic import PopulationSpec, make_population
from bayesmicro.errors import BadInput
from bayesmicro.evaluate.metrics import score
from bayesmicro.infer.api import fit
from bayesmicro.infer.stream import (StreamSchedule, Staging, _build, _config, epoch_order,
                                     fit_stream, prefetched)
from tests.common import child_env, assert_close, small_pairs

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def population():
    return make_population(PopulationSpec(n_pairs=3000, dim=12, prompt_dim=6, context_dim=6, k=3), 0)



def test_block_losses_average_to_the_full_data_loss(tmp_path):
    """Plate size N with subsample B: every minibatch loss is an unbiased (here: exactly averaging) estimate."""
    store = write_shards(small_pairs(n=60, d=5, d_p=3, d_c=None, seed=1), tmp_path / "s", rows_per_shard=20)
    config = _config(store, 3, "prompt", 0.5, 1.0, 0.3, 16, 0)
    _, elbo, _ = _build(store, config, 0, StreamSchedule(), torch.device("cpu"))
    staging = Staging(torch.device("cpu"), True, False)
    blocks = store.blocks(10)
    with torch.no_grad():
        losses = [float(elbo(*staging(store.read(b)), size=60)) / 60 for b in blocks]
        whole = store.to_pairs()
        full = float(elbo(whole.diff(), whole.prompt.float(), size=60)) / 60
    assert len(blocks) == 6
    assert_close(sum(losses) / len(losses), full, atol=1e-5, rtol=1e-5)


def test_prefetch_keeps_order_and_values_and_raises_reader_errors():
    blocks = [{"x": torch.full((3 + i % 2, 2), float(i), dtype=torch.float16)} for i in range(9)]
    got = [b["x"].clone() for b in prefetched(iter(blocks), depth=2, copy=True)]
    assert len(got) == 9 and all(torch.equal(g, b["x"]) for g, b in zip(got, blocks))

    def broken():
        yield blocks[0]
        raise OSError("disk went away")

    with pytest.raises(OSError, match="disk went away"):
        list(prefetched(broken(), depth=1, copy=True))


def test_prefetch_depth_does_not_change_the_fit(tmp_path):
    store = write_shards(small_pairs(n=90, d=4, d_p=3, d_c=None, seed=5), tmp_path / "s", rows_per_shard=30)
    fits = [fit_stream(store, k=2, schedule=StreamSchedule(epochs=2, batch_size=20, prefetch=depth))
            for depth in (0, 1, 3)]
    assert all(torch.equal(f.heads, fits[0].heads) for f in fits[1:])


def test_epoch_order_depends_on_seed_and_epoch_only():
    assert epoch_order(50, 3, 1) == epoch_order(50, 3, 1)
    assert sorted(epoch_order(50, 3, 1)) == list(range(50))
    assert epoch_order(50, 3, 1) != epoch_order(50, 3, 2) and epoch_order(50, 3, 1) != epoch_order(50, 4, 1)


@functools.cache
def in_memory_accuracy(router: str) -> float:
    """Test accuracy of the in-memory L-BFGS MAP fit (the reference the streamed fit is held to)."""
    data, _ = make_population(PopulationSpec(n_pairs=3000, dim=12, prompt_dim=6, context_dim=6, k=3), 0)
    return score(fit(data, k=3, router=router, restarts=1).predict_proba(data.part("test")), None)["accuracy"]


@pytest.mark.parametrize("router, router_dtype", [("prompt", "float32"), ("context", "float32"),
                                                  ("context", "bfloat16")],
                         ids=["prompt-router", "context-router", "context-router-bf16"])
def test_streaming_fit_recovers_like_the_in_memory_fit(tmp_path, population, router, router_dtype):
    data, truth = population
    train, test = data.part("train"), data.part("test")
    store = write_shards(train, tmp_path / "s", rows_per_shard=500)  # 9 blocks of 250
    schedule = StreamSchedule(epochs=15, batch_size=250, lr=8e-2, router_dtype=router_dtype)
    streamed = fit_stream(store, k=3, router=router, schedule=schedule)
    acc = {"stream": score(streamed.predict_proba(test), None)["accuracy"], "memory": in_memory_accuracy(router)}
    assert acc["stream"] >= acc["memory"] - 0.03, acc
    if router == "context":  # the context router sees what the truth routes on; the prompt router only partly
        assert acc["stream"] >= score(truth.prob(test), None)["accuracy"] - 0.08, acc
    assert streamed.summary["train_pairs"] == len(train) and streamed.summary["steps"] == 15 * 9


KILLED_RUN = textwrap.dedent("""
    import os, signal, sys, torch
    torch.set_num_threads(1)
    from bayesmicro.infer.stream import StreamSchedule, fit_stream
    from tests.infer.test_stream import SCHEDULE
    def on_step(step, loss):
        if step == int(sys.argv[3]):
            os.kill(os.getpid(), signal.SIGKILL)
    fit_stream(sys.argv[1], k=3, router="prompt", seed=7, schedule=SCHEDULE, checkpoint_dir=sys.argv[2],
               on_step=on_step)
""")
SCHEDULE = StreamSchedule(epochs=2, batch_size=25, lr=5e-2, checkpoint_every=4)


def test_sigkilled_run_resumes_to_the_same_parameters(tmp_path):
    store = write_shards(small_pairs(n=240, d=6, d_p=4, d_c=None, seed=2), tmp_path / "s", rows_per_shard=60)
    steps_per_epoch = len(store.blocks(25))
    assert steps_per_epoch == 12  # 4 shards of 60 rows, blocks of 25, 25, 10 → mid-epoch kills land mid-shard
    kill_at = steps_per_epoch + 7  # in the second epoch, three steps after the checkpoint at 16
    env = child_env()
    proc = subprocess.run([sys.executable, "-c", KILLED_RUN, str(tmp_path / "s"), str(tmp_path / "ck"),
                           str(kill_at)], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    resumed = fit_stream(tmp_path / "s", k=3, router="prompt", seed=7, schedule=SCHEDULE,
                         checkpoint_dir=tmp_path / "ck")
    pyro.clear_param_store()
    straight = fit_stream(tmp_path / "s", k=3, router="prompt", seed=7, schedule=SCHEDULE)
    assert resumed.summary["resumed_from_step"] == 16
    assert resumed.summary["steps"] == straight.summary["steps"] == 2 * steps_per_epoch
    assert torch.equal(resumed.heads, straight.heads)
    assert resumed.router_state.keys() == straight.router_state.keys()
    for key in straight.router_state:
        assert torch.equal(resumed.router_state[key], straight.router_state[key]), key
    assert resumed.summary["loss_per_pair"] == straight.summary["loss_per_pair"]
    # a finished run resumes to its end without another step
    again = fit_stream(tmp_path / "s", k=3, router="prompt", seed=7, schedule=SCHEDULE, checkpoint_dir=tmp_path / "ck")
    assert again.summary["resumed_from_step"] == 24 and torch.equal(again.heads, straight.heads)
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["latest.json", "step-00000024"]


def test_resuming_a_different_fit_is_bad_input(tmp_path):
    store = write_shards(small_pairs(n=40, d_c=None), tmp_path / "s", rows_per_shard=20)
    fit_stream(store, k=2, schedule=StreamSchedule(batch_size=10), checkpoint_dir=tmp_path / "ck")
    with pytest.raises(BadInput, match="different fit.*schedule"):
        fit_stream(store, k=2, schedule=StreamSchedule(batch_size=10, lr=1e-2), checkpoint_dir=tmp_path / "ck")


def test_bad_arguments_are_bad_input(tmp_path):
    store = write_shards(small_pairs(n=20, d_c=None), tmp_path / "s", rows_per_shard=20)
    with pytest.raises(BadInput, match="router 'context' needs a 'context'"):
        fit_stream(store, k=2, router="context")
    with pytest.raises(BadInput, match="router 'user' reads labels, which a shard store does not keep"):
        fit_stream(store, k=2, router="user")
    with pytest.raises(BadInput, match="batch_size must be ≥ 1"):
        fit_stream(store, k=2, schedule=StreamSchedule(batch_size=0))
    with pytest.raises(BadInput, match="router_dtype must be one of"):
        fit_stream(store, k=2, schedule=StreamSchedule(router_dtype="float16"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_fit_keeps_everything_on_the_gpu(tmp_path):
    store = write_shards(small_pairs(n=200, d=6, d_p=4, d_c=None, seed=3), tmp_path / "s", rows_per_shard=50)
    config = _config(store, 3, "prompt", 0.5, 1.0, 0.3, 16, 0)
    device = torch.device("cuda")
    with torch.device(device):
        model, elbo, opt = _build(store, config, 0, StreamSchedule(), device)
        diff, router_x = Staging(device, True, False)(store.read(store.blocks(50)[0]))
        assert diff.is_cuda and router_x.is_cuda and diff.dtype == torch.float32
        trace = pyro.poutine.trace(elbo.guide).get_trace(diff, router_x, size=200)
        model_trace = pyro.poutine.trace(pyro.poutine.replay(model, trace=trace)).get_trace(diff, router_x, size=200)
    for tr in (trace, model_trace):
        for name, site in tr.nodes.items():
            if site["type"] == "sample":
                assert site["value"].is_cuda, name
    assert all(p.is_cuda for p in elbo.parameters()) and all(b.is_cuda for b in model.buffers())
    gpu = fit_stream(store, k=3, schedule=StreamSchedule(epochs=3, batch_size=50), device="cuda")
    cpu = fit_stream(store, k=3, schedule=StreamSchedule(epochs=3, batch_size=50), device="cpu")
    assert gpu.heads.device.type == "cpu"
    assert_close(gpu.heads, cpu.heads, atol=1e-3, rtol=1e-3)
