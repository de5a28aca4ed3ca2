"""A Bayesian output layer for the router: the posterior over π(x) that VI and NUTS sample alongside the heads.

The router's hidden layer stays a point estimate (learned jointly, type-II MAP); its output layer (K × hidden
weights and K biases) gets the router's Gaussian prior N(0, router_prior_scale²) and becomes latent. Without it
the credible intervals of P(a_w ≻ a_l) ignore the router's error and cover the truth far less often than stated.
Static routers (``none``) and single heads are left as they are.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, PyroSample
from pyro.nn.module import to_pyro_module_

from bayesmicro.models.mixture import BTMixture

OUTPUT_LAYER = "net.2"  # Router.net = Sequential(Linear, ReLU, Linear)
ROUTER_SITES = {"weight": f"mix.router.{OUTPUT_LAYER}.weight", "bias": f"mix.router.{OUTPUT_LAYER}.bias"}
HEADS_SITE = "mix.heads"


def has_bayesian_router(model: BTMixture) -> bool:
    return model.router.reads_input and model.k > 1


class LatentRouterMixture(PyroModule):
    """Wraps a ``BTMixture`` whose router ``layers`` (default: the output layer) are latent. Sample sites:
    ``mix.heads`` and, for routed mixtures, ``mix.router.net.<i>.weight`` and ``.bias`` for i in ``layers``."""

    def __init__(self, mix: BTMixture, latent_router: bool = True, layers: tuple[int, ...] = (2,)):
        super().__init__()
        self.latent_router = latent_router and has_bayesian_router(mix)
        self.init_values, self.layers = {}, []
        if self.latent_router:
            net = mix.router.net
            to_pyro_module_(net)
            mix.router.net = net  # re-attach so the converted layers share the root's sample cache
            # SVI keeps the hidden layer a point estimate (a low-rank guide over it failed to fit; PSIS k > 0.7);
            # NUTS can sample it too (layers (0, 2)), the reference for the Laplace over every layer.
            self.layers = list(layers)
            scale = mix.router_prior_scale
            for i in self.layers:
                layer = net[i]
                for name in ("weight", "bias"):
                    value = getattr(layer, name).detach().clone()
                    self.init_values[f"mix.router.net.{i}.{name}"] = value
                    setattr(layer, name, PyroSample(dist.Normal(0.0, scale).expand(list(value.shape))
                                                    .to_event(value.dim())))
        self.mix = mix

    def forward(self, diff: torch.Tensor, router_input: torch.Tensor | None = None,
                size: int | None = None) -> torch.Tensor:
        for i in self.layers:  # read the global sites before the model enters its data plate
            _ = self.mix.router.net[i].weight, self.mix.router.net[i].bias
        return self.mix(diff, router_input, size)


def router_draw_tensors(samples: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """{router state key: (S, ...) draws} from a dict of site samples; empty when the router is a point estimate."""
    return {site.removeprefix("mix.router."): v for site, v in samples.items() if site.startswith("mix.router.")}
