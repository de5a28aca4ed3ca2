"""The registry from ``methods.Inference`` to the class that fits it (``infer.fitter``)."""

from __future__ import annotations

from bayesmicro.infer.fitter import EMFitter, Fitter, MAPFitter, NUTSFitter, StreamedFitter, VIFitter
from bayesmicro.methods import Inference

FITTERS: dict[Inference, type[Fitter]] = {
    Inference.MAP: MAPFitter,
    Inference.VI: VIFitter,
    Inference.NUTS: NUTSFitter,
    Inference.EM: EMFitter,
}


def fitter_for(inference: str | Inference) -> Fitter:
    """The fitter of ``inference`` (a member or its string)."""
    return FITTERS[Inference(inference)]()


__all__ = ["FITTERS", "Fitter", "StreamedFitter", "fitter_for"]
