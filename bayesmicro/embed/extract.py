"""Fast extraction: token-budget batches, sequence packing, no per-batch synchronisation, tokenization overlapped.

Work is cut into **blocks** (the missing texts sorted by character length, longest first, ties by cache key; a block
is one cache shard and one device→host copy). Inside a block the texts are tokenized, sorted by token length and cut
into **batches** of at most ``max_batch_tokens`` tokens, laid out by one of three **batching modes**:

``varlen``  every sequence of the batch back to back in one row, per-sequence position ids, and an attention function
            registered with transformers' ``AttentionInterface`` that calls ``torch.nn.attention.varlen.varlen_attn``
            with the sequences' cumulative lengths (CUDA, causal decoders): no padding, no mask, no wasted attention.
``packed``  rows of ``PACK_ROW_TOKENS`` tokens (by default half the hidden size, 128–1024) filled with whole
            sequences, per-sequence position ids and no 2-D attention mask: transformers
            (``masking_utils.find_packed_sequence_indices``) then builds a block-diagonal causal (or, for encoders,
            bidirectional) mask for the sdpa/eager/flex attention paths. Padding only at row ends.
``padded``  length-sorted batches padded to their longest with an attention mask (every model; at most
            ``MAX_PADDING`` of a batch is padding).

``auto`` takes the first mode of (varlen, packed, padded) that the loaded model supports, checked by a probe: three
sequences run in the mode and one at a time must give the same hidden states (to fp32 or half-precision tolerance).
A model whose mask ignores packed position ids fails the probe and gets padded batches.

A producer thread tokenizes, plans and collates the batches (pinned memory on CUDA) while the main thread loads the
model and runs the forward passes; inputs go to the device with ``non_blocking`` copies, pooled vectors stay on the
device in a per-block buffer and come back in one copy per block. A planned block is the unit of the cache, of
resumption and of multi-process work (rank r takes blocks r, r + W, …), so every process count writes the same cache.
"""

from __future__ import annotations

import bisect
import math
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from bayesmicro.embed import distributed
from bayesmicro.embed.cache import EmbeddingCache
from bayesmicro.embed.pooling import check_pooling
from bayesmicro.embed.template import Text
from bayesmicro.errors import BadInput
from bayesmicro.methods import Batching, Pooling

MODES = tuple(member.value for member in Batching)
MAX_PADDING = 0.2  # padded mode: at most this share of a batch's padded tokens is padding
CPU_BATCH_TOKENS = 1024  # tokens per CPU batch: larger activations fall out of cache (measured: 16 × 256 tokens ran
#                          slower batched than one text at a time on a 1-thread CPU; 16 × 64 ran 1.5× faster)
GPU_BATCH_TOKENS = (4096, 32768)  # bounds of the default CUDA token budget (sized to free memory in between)
PACK_ROW_TOKENS: int | None = None  # packed mode: row length; None = hidden size / 2 within 128…1024. A masked row
#   of R tokens costs about R / (6 × hidden) of the matmuls in attention (≤ 8 %); measured on CPU with the bench's
#   small model (hidden 256, HH texts): rows of 128 ran 1.5–2× faster than rows of 1024 and than padded batches.
BLOCK_TEXTS = 4096  # at most this many texts per block (cache shard, device→host copy)
MIN_BLOCK_TEXTS = 256  # at least this many (unless fewer are missing); in between, a job makes MIN_BLOCKS blocks
MIN_BLOCKS = 8
QUEUE_BATCHES = 4  # collated batches the producer may hold ahead of the device
VARLEN_ATTENTION = "bayesmicro_varlen"


@dataclass
class ExtractStats:
    texts: int = 0  # distinct texts requested
    cache_hits: int = 0  # of those, already in the cache
    computed: int = 0  # embedded by this run (all ranks)
    tokens: int = 0  # tokens run through the backbone by this run (all ranks, no padding)
    max_batch_tokens: int = 0  # final token budget (smaller than asked after an out-of-memory back-off)
    mode: str = ""  # batching mode used: varlen, packed or padded
    extra: dict = field(default_factory=dict)


def tokenize(tokenizer, texts: Sequence[Text], max_length: int) -> list[list[int]]:
    """Token ids per text, truncated to ``max_length`` (the start is cut, so the last token survives)."""
    ids: list[list[int] | None] = [None] * len(texts)
    for special in (True, False):
        index = [i for i, t in enumerate(texts) if t.special == special]
        if index:
            encoded = tokenizer([texts[i].text for i in index], add_special_tokens=special, truncation=True,
                                max_length=max_length)["input_ids"]
            for i, row in zip(index, encoded):
                ids[i] = list(row)
    return ids  # type: ignore[return-value]


# -- planning -----------------------------------------------------------------------------------------------------
def block_size(n: int) -> int:
    """Texts per block for a job of ``n`` missing texts (a function of n only: every process count agrees)."""
    return max(1, min(BLOCK_TEXTS, max(MIN_BLOCK_TEXTS, math.ceil(n / MIN_BLOCKS))))


def plan_blocks(texts: Sequence[Text], keys: Sequence[str]) -> list[list[int]]:
    """Longest text (in characters) first, ties by key, cut into blocks of ``block_size`` texts."""
    order = sorted(range(len(texts)), key=lambda i: (-len(texts[i].text), keys[i]))
    size = block_size(len(order))
    return [order[i:i + size] for i in range(0, len(order), size)]


def plan_batches(lengths: Sequence[int], keys: Sequence[str], batch_size: int | None,
                 max_padding: float | None = None, max_tokens: int | None = None) -> list[list[int]]:
    """Padded mode. Longest first (an OOM shows at once), ties by key: the same texts always give the same batches.

    A batch takes the next text only while at most ``max_padding`` of its padded tokens would be padding (padding is
    computed and thrown away) and, when ``max_tokens`` is given, while its padded size stays within it.
    """
    max_padding = MAX_PADDING if max_padding is None else max_padding
    cap = batch_size or len(lengths) or 1
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], keys[i]))
    batches: list[list[int]] = []
    for i in order:
        batch = batches[-1] if batches else None
        if batch is not None and len(batch) < cap:
            longest = lengths[batch[0]]
            real = sum(lengths[j] for j in batch) + lengths[i]
            fits = max_tokens is None or longest * (len(batch) + 1) <= max_tokens
            if fits and real >= (1.0 - max_padding) * longest * (len(batch) + 1):
                batch.append(i)
                continue
        batches.append([i])
    return batches


def pack_rows(lengths: Sequence[int], keys: Sequence[str], row_tokens: int,
              row_texts: int | None = None) -> list[list[int]]:
    """Rows of at most ``row_tokens`` tokens (a longer sequence gets a row of its own) and ``row_texts`` sequences:
    each row starts with the longest sequence left and is filled with the longest that still fit (ties by key)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], keys[i]))[::-1]  # ascending, ties key-descending
    left = [lengths[i] for i in order]
    rows: list[list[int]] = []
    while order:
        row, space = [order.pop()], row_tokens - left.pop()
        while space > 0 and left and (row_texts is None or len(row) < row_texts):
            j = bisect.bisect_right(left, space) - 1
            if j < 0:
                break
            row.append(order.pop(j))
            space -= left.pop(j)
        rows.append(row)
    return rows


def plan_packed(lengths: Sequence[int], keys: Sequence[str], max_tokens: int, row_tokens: int,
                batch_size: int | None) -> list[list[list[int]]]:
    """Packed mode: batches of rows; a batch holds at most ``max_tokens`` padded tokens (rows × widest row) and, as
    in padded mode, at most ``MAX_PADDING`` of it is row-end padding (rows of similar fill go together)."""
    rows = pack_rows(lengths, keys, row_tokens, batch_size)
    fills = [sum(lengths[i] for i in row) for row in rows]
    order = sorted(range(len(rows)), key=lambda r: -fills[r])  # stable: ties keep the (deterministic) row order
    batches: list[list[list[int]]] = []
    widest = real = texts = 0
    for r in order:
        if batches:
            grown = widest * (len(batches[-1]) + 1)
            if (grown <= max_tokens and real + fills[r] >= (1.0 - MAX_PADDING) * grown
                    and (batch_size is None or texts + len(rows[r]) <= batch_size)):
                batches[-1].append(rows[r])
                real, texts = real + fills[r], texts + len(rows[r])
                continue
        batches.append([rows[r]])
        widest, real, texts = fills[r], fills[r], len(rows[r])
    return batches


def plan_varlen(lengths: Sequence[int], keys: Sequence[str], max_tokens: int,
                batch_size: int | None) -> list[list[int]]:
    """Varlen mode: longest first, a batch takes texts while their total stays within ``max_tokens``."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], keys[i]))
    batches: list[list[int]] = []
    total = 0
    for i in order:
        if batches and total + lengths[i] <= max_tokens and (batch_size is None or len(batches[-1]) < batch_size):
            batches[-1].append(i)
            total += lengths[i]
        else:
            batches.append([i])
            total = lengths[i]
    return batches


# -- collation ----------------------------------------------------------------------------------------------------
@dataclass
class Batch:
    """Inputs of one forward pass (CPU, pinned on CUDA) and where its pooled rows go in the block buffer."""

    dest: torch.Tensor  # (n,) rows of the block buffer, in sequence order
    ids: list[list[int]]  # token ids per sequence (for an out-of-memory re-split)
    input_ids: torch.Tensor  # (r, T)
    attention_mask: torch.Tensor | None  # (r, T) in padded mode
    position_ids: torch.Tensor | None  # (r, T) in packed/varlen mode
    last: torch.Tensor  # (n,) flat index (into r × T) of each sequence's last token
    segment: torch.Tensor  # (r × T,) sequence number of each token, n for padding
    lengths: torch.Tensor  # (n,) float32
    cu_seqlens: torch.Tensor | None  # (n + 1,) int32 in varlen mode
    max_seqlen: int
    tokens: int  # real tokens

    def to(self, device: torch.device) -> "Batch":
        if device.type == "cpu":
            return self
        move = {name: getattr(self, name) for name in ("dest", "input_ids", "attention_mask", "position_ids", "last",
                                                        "segment", "lengths", "cu_seqlens")}
        moved = {k: None if v is None else v.to(device, non_blocking=True) for k, v in move.items()}
        return Batch(ids=self.ids, max_seqlen=self.max_seqlen, tokens=self.tokens, **moved)

    def pin(self) -> "Batch":
        for name in ("dest", "input_ids", "attention_mask", "position_ids", "last", "segment", "lengths",
                     "cu_seqlens"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value.pin_memory())
        return self


def collate(ids: list[list[int]], rows: list[list[int]], dest: list[int], mode: str, pad_id: int) -> Batch:
    """One batch from sequences ``ids`` laid out in ``rows`` (lists of sequence numbers); ``dest``: block rows."""
    n = len(ids)
    lengths = [len(x) for x in ids]
    width = max(sum(lengths[i] for i in row) for row in rows)
    flat_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    segment = torch.full((len(rows), width), n, dtype=torch.long)
    positions = torch.zeros(len(rows), width, dtype=torch.long) if mode != Batching.PADDED else None
    mask = torch.zeros(len(rows), width, dtype=torch.long) if mode == Batching.PADDED else None
    last = torch.empty(n, dtype=torch.long)
    for r, row in enumerate(rows):
        start = 0
        for i in row:
            length = lengths[i]
            flat_ids[r, start:start + length] = torch.tensor(ids[i], dtype=torch.long)
            segment[r, start:start + length] = i
            if positions is not None:
                positions[r, start:start + length] = torch.arange(length)
            if mask is not None:
                mask[r, start:start + length] = 1
            last[i] = r * width + start + length - 1
            start += length
        if positions is not None and start < width:  # row-end padding: a sequence of its own, never read
            positions[r, start:] = torch.arange(width - start)
    cu = None
    if mode == Batching.VARLEN:
        cu = torch.zeros(n + 1, dtype=torch.int32)
        cu[1:] = torch.cumsum(torch.tensor([lengths[i] for i in rows[0]]), 0)
    return Batch(dest=torch.tensor(dest, dtype=torch.long), ids=ids, input_ids=flat_ids, attention_mask=mask,
                 position_ids=positions, last=last, segment=segment.reshape(-1),
                 lengths=torch.tensor(lengths, dtype=torch.float32), cu_seqlens=cu,
                 max_seqlen=max(lengths), tokens=sum(lengths))


# -- varlen attention ---------------------------------------------------------------------------------------------
VARLEN_KERNEL: Callable | None = None  # (q, k, v, cu_seqlens, max_seqlen, scale, causal) → out; None = torch's (CUDA)


def torch_varlen_kernel(q, k, v, cu_seqlens, max_seqlen, scale, causal):
    """(T, H, D) q and (T, H_kv, D) k, v of sequences back to back → (T, H, D): ``varlen_attn`` (flash/cuDNN)."""
    from torch.nn.attention.varlen import varlen_attn

    return varlen_attn(q, k, v, cu_seqlens, cu_seqlens, max_seqlen, max_seqlen, scale=scale,
                       window_size=(-1, 0) if causal else (-1, -1), enable_gqa=q.shape[1] != k.shape[1])


def varlen_kernel(device: torch.device) -> Callable | None:
    """The kernel the varlen mode uses on ``device`` (None: no varlen mode there)."""
    if VARLEN_KERNEL is not None:
        return VARLEN_KERNEL
    if device.type != "cuda":
        return None
    try:
        from torch.nn.attention.varlen import varlen_attn  # noqa: F401  (torch ≥ 2.9)
    except ImportError:
        return None
    return torch_varlen_kernel


def reference_varlen_kernel(q, k, v, cu_seqlens, max_seqlen, scale, causal):
    """The same computation sequence by sequence with ``scaled_dot_product_attention`` (any device; for tests)."""
    out = torch.empty_like(q)
    bounds = cu_seqlens.tolist()
    for a, b in zip(bounds[:-1], bounds[1:]):
        part = torch.nn.functional.scaled_dot_product_attention(
            q[a:b].transpose(0, 1), k[a:b].transpose(0, 1), v[a:b].transpose(0, 1), is_causal=causal, scale=scale,
            enable_gqa=q.shape[1] != k.shape[1])
        out[a:b] = part.transpose(0, 1)
    return out


def varlen_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """A transformers attention function (``AttentionInterface``): (1, H, T, D) states of sequences packed in one
    row, split by ``cu_seq_lens_q`` (passed through the model's forward kwargs) → ((1, T, H, D), None)."""
    cu = kwargs.get("cu_seq_lens_q")
    if cu is None or query.shape[0] != 1 or getattr(module, "sliding_window", None):
        raise RuntimeError("varlen attention needs one packed row, cu_seq_lens_q and no sliding window")
    q, k, v = (x[0].transpose(0, 1).contiguous() for x in (query, key, value))
    kernel = varlen_kernel(query.device)
    if kernel is None:
        raise RuntimeError(f"no varlen attention kernel on {query.device}")
    out = kernel(q, k, v, cu, int(kwargs["max_length_q"]), scaling, getattr(module, "is_causal", True))
    return out.unsqueeze(0), None


def register_varlen_attention() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(VARLEN_ATTENTION, varlen_attention)


# -- the extractor ------------------------------------------------------------------------------------------------
class Extractor:
    """A loaded backbone that turns batches of token ids into pooled (n, d) float32 vectors on its device."""

    def __init__(self, model, pad_id: int | None, pooling: str, max_length: int, device: torch.device,
                 batch_size: int | None = None, max_batch_tokens: int | None = None, mode: str = "auto"):
        # no tokenizer here: the producer thread owns it during an extraction (fast tokenizers are not thread-safe)
        if mode not in MODES:
            raise BadInput(f"--batching must be one of {list(MODES)}, got {mode!r}")
        self.model, self.pooling = model, check_pooling(pooling)
        self.max_length, self.device, self.batch_size = max_length, device, batch_size
        self.dim = int(model.config.hidden_size)
        self.pad_id = pad_id if pad_id is not None else 0
        self.base_attention = model.config._attn_implementation
        self.max_batch_tokens = max_batch_tokens or default_batch_tokens(model, device)  # a longer text runs alone
        self.mode = self._choose(mode)

    # modes
    def _choose(self, requested: str) -> str:
        candidates = [requested] if requested != Batching.AUTO else [Batching.VARLEN.value, Batching.PACKED.value, Batching.PADDED.value]
        for mode in candidates:
            if mode == Batching.PADDED or self._supports(mode):
                self._set_attention(mode)
                return mode
        if requested != Batching.AUTO:
            raise BadInput(f"--batching {requested}: this model/device does not give the same features packed "
                           "as one text at a time (use auto or padded)")
        return "padded"  # pragma: no cover - the loop returns

    def _set_attention(self, mode: str) -> None:
        wanted = VARLEN_ATTENTION if mode == Batching.VARLEN else self.base_attention
        if self.model.config._attn_implementation != wanted:
            self.model.set_attn_implementation(wanted)

    def _supports(self, mode: str) -> bool:
        """Probe: three sequences laid out in ``mode`` vs each run alone (no padding, no mask), all tokens."""
        if mode == Batching.VARLEN:
            if varlen_kernel(self.device) is None:
                return False
            try:
                register_varlen_attention()
            except Exception:
                return False
        g = torch.Generator().manual_seed(0)
        vocab = int(self.model.config.vocab_size)
        ids = [torch.randint(0, vocab, (n,), generator=g).tolist() for n in (13, 6, 9)]
        try:
            self._set_attention("padded")
            alone = [self._hidden(collate([x], [[0]], [0], "padded", self.pad_id).to(self.device))[0]
                     for x in ids]
            self._set_attention(mode)
            rows = [[0, 1, 2]] if mode == Batching.VARLEN else [[0, 1], [2]]
            batch = collate(ids, rows, [0, 1, 2], mode, self.pad_id).to(self.device)
            hidden, _ = self._hidden(batch)
        except Exception:
            self._set_attention("padded")
            return False
        self._set_attention("padded")
        flat = hidden.reshape(-1, hidden.shape[-1]).float()
        tolerance = 1e-4 if next(self.model.parameters()).dtype == torch.float32 else 5e-2
        for i, reference in enumerate(alone):
            got = flat[batch.segment == i].float()
            reference = reference.reshape(-1, reference.shape[-1]).float()
            if got.shape != reference.shape:
                return False
            error = (got - reference).norm() / reference.norm().clamp_min(1e-12)
            if not bool(torch.isfinite(error)) or float(error) > tolerance:
                return False
        return True

    # forward
    def _hidden(self, batch: Batch) -> tuple[torch.Tensor, Batch]:
        kwargs = {}
        if batch.attention_mask is not None:
            kwargs["attention_mask"] = batch.attention_mask
        if batch.position_ids is not None:
            kwargs["position_ids"] = batch.position_ids
        if batch.cu_seqlens is not None:
            kwargs.update(cu_seq_lens_q=batch.cu_seqlens, cu_seq_lens_k=batch.cu_seqlens,
                          max_length_q=batch.max_seqlen, max_length_k=batch.max_seqlen)
        with torch.inference_mode():
            out = self.model(input_ids=batch.input_ids, use_cache=False, **kwargs)
        return out.last_hidden_state, batch

    def forward(self, batch: Batch) -> torch.Tensor:
        """(n, d) float32 pooled vectors of a batch already on the device (no synchronisation)."""
        hidden, _ = self._hidden(batch)
        with torch.inference_mode():
            flat = hidden.reshape(-1, hidden.shape[-1])
            if self.pooling == Pooling.LAST:
                return flat.index_select(0, batch.last).float()
            n = batch.lengths.shape[0]
            sums = torch.zeros(n + 1, flat.shape[1], dtype=torch.float32, device=flat.device)
            sums.index_add_(0, batch.segment, flat.float())
            return sums[:n] / batch.lengths.unsqueeze(1)

    def plan(self, ids: list[list[int]], keys: list[str]) -> list[tuple[list[list[int]], list[int]]]:
        """(rows, sequence numbers) per batch, in the current mode and token budget."""
        lengths = [len(x) for x in ids]
        budget = max(self.max_batch_tokens, max(lengths, default=1))
        if self.mode == Batching.VARLEN:
            return [([batch], batch) for batch in plan_varlen(lengths, keys, budget, self.batch_size)]
        if self.mode == Batching.PACKED:
            row = min(PACK_ROW_TOKENS or max(128, min(1024, self.dim // 2)), budget)
            return [(rows, [i for r in rows for i in r]) for rows in plan_packed(lengths, keys, budget, row,
                                                                                  self.batch_size)]
        return [([[i] for i in batch], batch) for batch in plan_batches(lengths, keys, self.batch_size,
                                                                          max_tokens=budget)]

    def batches(self, ids: list[list[int]], keys: list[str], dest: list[int]) -> list[Batch]:
        out = []
        for rows, members in self.plan(ids, keys):
            local = {i: j for j, i in enumerate(members)}
            batch = collate([ids[i] for i in members], [[local[i] for i in r] for r in rows],
                            [dest[i] for i in members], self.mode, self.pad_id)
            out.append(batch.pin() if self.device.type == "cuda" else batch)
        return out

    def run(self, batch: Batch, buffer: torch.Tensor) -> None:
        """Pool a (CPU) batch into ``buffer`` rows; on out-of-memory halve the token budget and re-split it."""
        try:
            on_device = batch.to(self.device)
            buffer.index_copy_(0, on_device.dest, self.forward(on_device))
            return
        except (torch.OutOfMemoryError, RuntimeError) as exc:
            if not _is_oom(exc):
                raise
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        if len(batch.ids) == 1:
            raise BadInput(f"out of memory on a single text of {len(batch.ids[0])} tokens; lower --max-length")
        self.max_batch_tokens = max(1, min(self.max_batch_tokens, batch.input_ids.numel()) // 2)
        self.batch_size = min(self.batch_size or len(batch.ids), max(1, len(batch.ids) // 2))
        keys = [f"{i:09d}" for i in range(len(batch.ids))]
        for part in self.batches(batch.ids, keys, batch.dest.tolist()):
            self.run(part, buffer)


def default_batch_tokens(model, device: torch.device) -> int:
    """Tokens per forward pass: ``CPU_BATCH_TOKENS`` on CPU; on CUDA, a third of the free memory over an estimate of
    one layer's live activations per token ((8 × hidden + 3 × MLP width) values), within ``GPU_BATCH_TOKENS``."""
    if device.type != "cuda":
        return CPU_BATCH_TOKENS
    config = model.config
    hidden = int(getattr(config, "hidden_size", 1024))
    width = int(getattr(config, "intermediate_size", None) or 4 * hidden)
    element = next(model.parameters()).element_size()
    free, _ = torch.cuda.mem_get_info(device)
    tokens = int(free / 3 / (element * (8 * hidden + 3 * width)))
    low, high = GPU_BATCH_TOKENS
    return max(low, min(high, tokens // 1024 * 1024))


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


class _Bar:
    """rich progress on stderr with pairs/s and tokens/s (rank 0 only)."""

    def __init__(self, enabled: bool, n_pairs: int, n_texts: int):
        self.enabled, self.n_pairs, self.n_texts = enabled, max(n_pairs, 1), max(n_texts, 1)
        self.start = time.perf_counter()

    def __enter__(self) -> "_Bar":
        if self.enabled:
            self.progress = Progress(TextColumn("embedding"), BarColumn(), TextColumn("{task.fields[rate]}"),
                                     TimeElapsedColumn(), console=Console(stderr=True), transient=False)
            self.progress.__enter__()
            self.task = self.progress.add_task("embedding", total=self.n_pairs, rate="")
        return self

    def update(self, texts_done: int, tokens_done: int) -> None:
        if not self.enabled:
            return
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        pairs_done = self.n_pairs * texts_done / self.n_texts
        self.progress.update(self.task, completed=pairs_done,
                             rate=f"{pairs_done / elapsed:.1f} pairs/s · {tokens_done / elapsed:.0f} tokens/s")

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.progress.__exit__(*exc)


class _Producer(threading.Thread):
    """Tokenizes this rank's blocks, then (once the model is loaded) plans and collates their batches into a
    bounded queue: items are (block number, batch) and (block number, None) at a block's end."""

    def __init__(self, blocks: list[tuple[int, list[Text], list[str]]], tokenize: Callable[[list[Text]], list],
                 ready: threading.Event, holder: dict):
        super().__init__(daemon=True, name="bayesmicro-embed-producer")
        self.blocks, self.tokenize, self.ready, self.holder = blocks, tokenize, ready, holder
        self.queue: queue.Queue = queue.Queue(maxsize=QUEUE_BATCHES)
        self.stop = threading.Event()

    def _put(self, item) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run(self) -> None:
        try:
            for number, texts, keys in self.blocks:
                ids = self.tokenize(texts)
                while not self.ready.wait(0.1):
                    if self.stop.is_set():
                        return
                extractor = self.holder.get("extractor")
                if extractor is None:  # the model failed to load; the main thread reports it
                    return
                for batch in extractor.batches(ids, keys, list(range(len(ids)))):
                    if not self._put((number, batch)):
                        return
                if not self._put((number, sum(len(x) for x in ids))):
                    return
        except BaseException as exc:  # handed to the main thread
            self._put(exc)

    def get(self):
        item = self.queue.get()
        if isinstance(item, BaseException):
            raise item
        return item


def extract(
    cache: EmbeddingCache,
    texts: Sequence[Text],
    keys: Sequence[str],
    load: Callable[[], Extractor],
    tokenize: Callable[[list[Text]], list[list[int]]],
    progress: bool = False,
    n_pairs: int = 0,
) -> ExtractStats:
    """Embed every text whose key is not in ``cache`` and store it there, one shard per planned block.

    Distributed: every rank plans the same blocks; rank r embeds blocks r, r + W, …; rank 0 writes them to the
    cache in plan order, so the cache equals a one-process run's. All ranks return after the cache is complete.
    """
    unique: dict[str, Text] = {}
    for key, text in zip(keys, texts):
        unique.setdefault(key, text)
    stats = ExtractStats(texts=len(unique))
    rank, world = distributed.rank(), distributed.world_size()
    lock = cache.locked() if rank == 0 else _nullcontext()
    with lock:
        if rank == 0:
            cache.remove_stale_temp_files()
            cache.reload()
        distributed.barrier()
        if rank != 0:
            cache.reload()
        missing = [k for k in unique if k not in cache]
        stats.cache_hits = stats.texts - len(missing)
        if missing:
            _extract_missing(cache, [unique[k] for k in missing], missing, load, tokenize, stats,
                             progress and rank == 0, n_pairs)
        distributed.barrier()
    if rank != 0 and missing and cache.folder is not None:
        cache.reload()
    return stats


def _extract_missing(cache: EmbeddingCache, texts: list[Text], keys: list[str], load, tokenize, stats: ExtractStats,
                     progress: bool, n_pairs: int) -> None:
    rank, world = distributed.rank(), distributed.world_size()
    plan = plan_blocks(texts, keys)
    mine = [(b, [texts[i] for i in plan[b]], [keys[i] for i in plan[b]]) for b in range(rank, len(plan), world)]
    ready, holder = threading.Event(), {}
    producer = _Producer(mine, tokenize, ready, holder)
    producer.start()  # tokenization overlaps the model load
    try:
        try:
            holder["extractor"] = extractor = load()
        finally:
            ready.set()
        capacity = max(len(block) for block in plan)
        tokens = 0
        with _Bar(progress, n_pairs, len(texts)) as bar:
            for first in range(0, len(plan), world):
                number = first + rank
                rows = None
                if number < len(plan):
                    buffer = torch.zeros(len(plan[number]), extractor.dim, dtype=torch.float32,
                                         device=extractor.device)
                    while True:
                        got, item = producer.get()
                        assert got == number, "producer and consumer disagree on the block order"
                        if isinstance(item, int):
                            tokens += item
                            break
                        extractor.run(item, buffer)
                    rows = buffer.cpu()  # the one device→host copy (and synchronisation) of the block
                blocks = distributed.gather_rows(rows, capacity, extractor.dim) if world > 1 else [rows]
                for offset, block in enumerate(blocks):
                    done = first + offset
                    if done >= len(plan):
                        break
                    stats.computed += len(plan[done])
                    if rank == 0 or cache.folder is None:
                        cache.put([keys[i] for i in plan[done]], block)
                bar.update(stats.computed, stats.tokens + tokens * world)
        stats.tokens += distributed.sum_int(tokens)
        stats.max_batch_tokens, stats.mode = extractor.max_batch_tokens, extractor.mode
    finally:
        producer.stop.set()
        producer.join(timeout=5)


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False
