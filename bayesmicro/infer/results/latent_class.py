"""``LatentClassResult``: the typed, saveable result of a per-user latent class fit on a comparisons table.

Like ``Fit`` (and cmdstanpy's fit objects): arrays (``heads`` (K, d), ``responsibilities`` (U, K), ``users`` (U,),
``worths()`` (K, n_items)), a ``summary`` dict, ``save()`` and ``load()`` that rebuilds it from a run folder. It keeps
the table's coding (items with the last as reference, covariate columns and levels, column names), so new rows of a
comparisons table can be scored: per-user class posteriors and P(item1 ≻ item2).

Run folder: ``config.json`` (format, sizes, coding), ``params.safetensors`` (``heads``, ``responsibilities``,
``router.*``, float64), ``users.json``, ``summary.json``; ``bayesmicro fit --format comparisons`` adds
``metrics.json``. Written atomically, never pickled.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bayesmicro._io import atomic_dir, read_json, read_tensors, write_json, write_tensors
from bayesmicro.data.pairs import read_table
from bayesmicro.data.protocols.comparisons import ComparisonRows, encode_rows
from bayesmicro.errors import BadInput
from bayesmicro.infer.results.base import Posterior
from bayesmicro.infer.latent_class import LatentClassFit
from bayesmicro.models.bt import bt_log_prob
from bayesmicro.models.latent_class import LinearRouter, component_log_lik, make_router, user_log_lik

LATENT_CLASS_FORMAT = "bayesmicro.latent_class/1"
CONFIG_FILE, PARAMS_FILE, USERS_FILE, SUMMARY_FILE = "config.json", "params.safetensors", "users.json", "summary.json"
DEFAULT_COLUMNS = {"item1": "item1", "item2": "item2", "outcome": "outcome", "user": "subject"}


@dataclass
class LatentClassResult(Posterior):
    """A per-user latent class BT mixture with the coding of the table it was fitted on.

    heads (K, d) item worths of each class (d = n_items − 1, the reference item's worth is 0); responsibilities
    (U, K) P(class | the user's training comparisons); users (U,); router: π(c_u) from the user's covariates.
    """

    heads: torch.Tensor
    router: torch.nn.Module
    responsibilities: torch.Tensor
    users: np.ndarray
    loglik: float
    n_pairs: int
    items: list[str]
    covariate_spec: list[dict]
    columns: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_COLUMNS))
    summary: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_fit(cls, fit: LatentClassFit, meta: dict, columns: Mapping[str, str] | None = None,
                 summary: dict | None = None) -> "LatentClassResult":
        """Wrap ``fit_latent_class``'s output with the table coding in ``EmbeddedPairs.meta`` of
        ``load_comparisons`` (``items``, ``covariate_spec``)."""
        return cls(fit.heads.double(), fit.router.double(), fit.responsibilities.double(), np.asarray(fit.users),
                   float(fit.loglik), int(fit.n_pairs), list(meta["items"]), list(meta.get("covariate_spec", [])),
                   {**DEFAULT_COLUMNS, **(columns or {})}, {**fit.summary, **(summary or {})})

    def __repr__(self) -> str:  # the dataclass repr prints every tensor
        return (f"LatentClassResult(k={self.k}, items={len(self.items)}, users={len(self.users)}, "
                f"pairs={self.n_pairs}, loglik={self.loglik:.2f})")

    # -- arrays -------------------------------------------------------------------------------------------------
    @property
    def k(self) -> int:
        return self.heads.shape[0]

    def draws(self) -> dict[str, torch.Tensor]:
        """The point estimate as one draw: {"heads": (1, K, d), "router.<state key>": (1, ...)}."""
        return {"heads": self.heads[None],
                **{f"router.{key}": value[None] for key, value in self.router.state_dict().items()}}

    @torch.no_grad()
    def reward(self, features: torch.Tensor, router_input: torch.Tensor | None = None) -> torch.Tensor:
        """Per-class rewards w_kᵀx of coded item rows ``features`` (n, d): (n, K); with covariate rows
        ``router_input`` (n, p), the mixture Σ_k π_k(c) w_kᵀx: (n,)."""
        rewards = features.double() @ self.heads.T
        if router_input is None:
            return rewards
        return (self.prior_weights(router_input) * rewards).sum(-1)

    def worths(self) -> torch.Tensor:
        """(K, n_items) log-worth of every item per class, the reference (last) item at 0."""
        return torch.cat([self.heads, self.heads.new_zeros(self.k, 1)], 1)

    def class_sizes(self) -> torch.Tensor:
        """(K,) expected number of training users in each class."""
        return self.responsibilities.sum(0)

    # -- new rows -----------------------------------------------------------------------------------------------
    def rows(self, table: str | os.PathLike | Mapping[str, list]) -> ComparisonRows:
        """Code a comparisons table (a file or name → column values) like the training table."""
        source = str(table) if not isinstance(table, Mapping) else "<comparisons>"
        if not isinstance(table, Mapping):
            data = read_table(table)
            table = {name: data[name] for name in data.column_names}
        c = self.columns
        return encode_rows(dict(table), items=self.items, covariate_spec=self.covariate_spec, item1_col=c["item1"],
                           item2_col=c["item2"], user_col=c["user"], outcome_col=c["outcome"], source=source)

    @torch.no_grad()
    def prior_weights(self, covariates: torch.Tensor) -> torch.Tensor:
        """(n, K) π(c) of the router for covariate rows (n, p)."""
        return self.router.log_weights(covariates.double(), covariates.shape[0]).exp()

    @torch.no_grad()
    def class_posteriors(self, table: str | os.PathLike | Mapping[str, list] | None = None
                         ) -> tuple[np.ndarray, torch.Tensor]:
        """(users (U,), P(class | comparisons) (U, K)). No table: the training responsibilities. A table: each of
        its users' posterior from the router prior π(c_u) and that user's comparisons in the table (ties carry no
        information; a user with only ties keeps the prior)."""
        if table is None:
            return self.users, self.responsibilities
        users, covariates, comp = self._evidence(self.rows(table))
        return users, torch.softmax(self.prior_weights(covariates).log() + comp, -1)

    @torch.no_grad()
    def log_lik(self, table: str | os.PathLike | Mapping[str, list]) -> float:
        """Σ_u log Σ_k π_k(c_u) Π_i σ(±Δ_ik) over the table's non-tie rows (natural log): the fit's ``loglik`` on
        its training table."""
        _, covariates, comp = self._evidence(self.rows(table))
        return float(user_log_lik(self.prior_weights(covariates).log(), comp).sum())

    @torch.no_grad()
    def predict_proba(self, table: str | os.PathLike | Mapping[str, list]) -> torch.Tensor:
        """(n,) P(item1 ≻ item2) of every row = Σ_k w_uk σ(w_kᵀ(x_item1 − x_item2)); w_u is the user's training
        responsibilities for a user the fit has seen, the router prior π(c_u) for a new one."""
        rows = self.rows(table)
        weights = self.prior_weights(rows.covariates)
        known = {str(u): i for i, u in enumerate(self.users.tolist())}
        seen = np.asarray([str(u) in known for u in rows.user.tolist()], dtype=bool)
        if seen.any():
            where = torch.as_tensor([known[str(u)] for u in rows.user[seen].tolist()], dtype=torch.long)
            weights[torch.from_numpy(seen)] = self.responsibilities[where]
        return (weights * bt_log_prob(rows.diff @ self.heads.T).exp()).sum(-1)

    def _evidence(self, rows: ComparisonRows) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
        """(users (U,), covariates (U, p), Σ_i log σ(±Δ_ik) over each user's non-tie rows (U, K))."""
        if rows.outcome is None:
            raise BadInput(f"this needs the outcome column '{self.columns['outcome']}' (+1, -1 or 0)")
        users, index, covariates = _group_users(rows)
        won = torch.from_numpy(np.sign(rows.outcome).astype(np.float64))  # +1 item1, −1 item2, 0 tie
        keep = won != 0
        comp = component_log_lik(self.heads, rows.diff[keep] * won[keep, None], torch.from_numpy(index)[keep],
                                 len(users))
        return users, covariates, comp

    # -- disk ---------------------------------------------------------------------------------------------------
    def config(self) -> dict:
        """Everything besides the tensors that rebuilds the model and the table coding."""
        return {"format": LATENT_CLASS_FORMAT, "k": self.k, "dim": self.heads.shape[1],
                "covariate_dim": _covariate_dim(self.covariate_spec), "hidden": _hidden(self.router),
                "items": self.items, "covariate_spec": self.covariate_spec, "columns": self.columns,
                "loglik": self.loglik, "n_pairs": self.n_pairs}

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the run folder atomically (it appears complete or not at all); ``overwrite`` as ``Fit.save``."""
        with atomic_dir(path, "run", overwrite=overwrite) as tmp:
            self.write_into(tmp)
        return Path(path)

    def write_into(self, folder: Path) -> None:
        """Write config.json, params.safetensors, users.json and summary.json into an existing (temporary) folder."""
        tensors = {"heads": self.heads.double(), "responsibilities": self.responsibilities.double(),
                   **{f"router.{n}": v.double() for n, v in self.router.state_dict().items()}}
        write_tensors(Path(folder) / PARAMS_FILE, tensors)
        write_json(Path(folder) / CONFIG_FILE, self.config())
        write_json(Path(folder) / USERS_FILE, [str(u) for u in self.users.tolist()])
        write_json(Path(folder) / SUMMARY_FILE, self.summary)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "LatentClassResult":
        """Rebuild from a run folder; any missing, damaged or inconsistent file is a one-line BadInput."""
        path = Path(path)
        if not path.is_dir():
            raise BadInput("not a run folder (expected the --out folder of `bayesmicro fit --format comparisons`)",
                           source=str(path))
        config = _read_config(path)
        tensors = read_tensors(path / PARAMS_FILE)
        heads, resp = _tensor(tensors, "heads", path), _tensor(tensors, "responsibilities", path)
        users = read_json(path / USERS_FILE)
        k, dim = config["k"], config["dim"]
        if tuple(heads.shape) != (k, dim):
            raise _bad(path, PARAMS_FILE, f"heads have shape {tuple(heads.shape)}, expected ({k}, {dim})")
        if not isinstance(users, list) or not all(isinstance(u, str) for u in users):
            raise _bad(path, USERS_FILE, "expected a JSON list of user labels")
        if tuple(resp.shape) != (len(users), k):
            raise _bad(path, PARAMS_FILE, f"responsibilities have shape {tuple(resp.shape)}, expected "
                                          f"({len(users)}, {k}) for the {len(users)} users of '{USERS_FILE}'")
        router = _load_router(tensors, config, path)
        summary = read_json(path / SUMMARY_FILE)
        return cls(heads, router, resp, np.asarray(users), float(config["loglik"]), int(config["n_pairs"]),
                   list(config["items"]), list(config["covariate_spec"]), dict(config["columns"]),
                   summary if isinstance(summary, dict) else {})


def _bad(path: Path, name: str, message: str) -> BadInput:
    return BadInput(f"'{name}' {message}", source=str(path))


def _read_config(path: Path) -> dict:
    """config.json, checked field by field."""
    raw = read_json(path / CONFIG_FILE)
    if not isinstance(raw, dict) or raw.get("format") != LATENT_CLASS_FORMAT:
        raise _bad(path, CONFIG_FILE, f"is not a latent-class run config ({LATENT_CLASS_FORMAT})")
    for name, least in (("k", 1), ("dim", 1), ("covariate_dim", 0), ("hidden", 0), ("n_pairs", 0)):
        value = raw.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise _bad(path, CONFIG_FILE, f"field '{name}' is {value!r}, expected an integer ≥ {least}")
    if not isinstance(raw.get("loglik"), (int, float)) or isinstance(raw.get("loglik"), bool):
        raise _bad(path, CONFIG_FILE, f"field 'loglik' is {raw.get('loglik')!r}, expected a number")
    items = raw.get("items")
    if not isinstance(items, list) or len(items) != raw["dim"] + 1 or not all(isinstance(i, str) for i in items):
        raise _bad(path, CONFIG_FILE, f"field 'items' must list dim + 1 = {raw['dim'] + 1} item names")
    spec = raw.get("covariate_spec")
    if not _valid_spec(spec) or _covariate_dim(spec) != raw["covariate_dim"]:
        raise _bad(path, CONFIG_FILE, "field 'covariate_spec' does not describe 'covariate_dim' router columns")
    columns = raw.get("columns")
    if not isinstance(columns, dict) or set(columns) != set(DEFAULT_COLUMNS) or \
            not all(isinstance(v, str) for v in columns.values()):
        raise _bad(path, CONFIG_FILE, f"field 'columns' must name {sorted(DEFAULT_COLUMNS)}")
    return raw


def _valid_spec(spec: Any) -> bool:
    return isinstance(spec, list) and all(
        isinstance(s, dict) and isinstance(s.get("column"), str) and s.get("kind") in ("numeric", "text")
        and isinstance(s.get("levels"), list) and all(isinstance(v, str) for v in s["levels"]) for s in spec)


def _covariate_dim(spec: list[dict]) -> int:
    return sum(1 if s["kind"] == "numeric" else max(len(s["levels"]) - 1, 0) for s in spec)


def _hidden(router: torch.nn.Module) -> int:
    return 0 if isinstance(router, LinearRouter) else router.net[0].out_features


def _tensor(tensors: dict[str, torch.Tensor], name: str, path: Path) -> torch.Tensor:
    value = tensors.get(name)
    if value is None:
        raise _bad(path, PARAMS_FILE, f"has no tensor '{name}'")
    if not value.is_floating_point() or not bool(torch.isfinite(value).all()):
        raise _bad(path, PARAMS_FILE, f"tensor '{name}' is not finite floating point (dtype {value.dtype})")
    return value.double()


def _load_router(tensors: dict[str, torch.Tensor], config: dict, path: Path) -> torch.nn.Module:
    router = make_router(config["k"], config["covariate_dim"], config["hidden"]).double()
    state = {n.removeprefix("router."): v.double() for n, v in tensors.items() if n.startswith("router.")}
    try:
        router.load_state_dict(state)
    except RuntimeError as exc:
        raise _bad(path, PARAMS_FILE, f"router does not match '{CONFIG_FILE}' ({str(exc).splitlines()[0]})") from None
    if not all(bool(torch.isfinite(v).all()) for v in state.values()):
        raise _bad(path, PARAMS_FILE, "router tensors are not finite")
    return router.eval()


def _group_users(rows: ComparisonRows) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """(users (U,), row → user index (n,), covariates (U, p)); a user's covariates must not vary."""
    users, index = np.unique(rows.user, return_inverse=True)
    first = np.zeros(len(users), dtype=np.int64)
    first[index[::-1]] = np.arange(len(index))[::-1]
    covariates = rows.covariates[torch.from_numpy(first)]
    varying = (rows.covariates != covariates[torch.from_numpy(index)]).any(1)
    if bool(varying.any()):
        row = int(varying.nonzero()[0])
        raise BadInput(f"covariates of user {str(rows.user[row])!r} differ between its rows (one vector per user)")
    return users, index, covariates
