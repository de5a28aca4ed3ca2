"""The ``export`` job (``bayesmicro export``, ``bayesmicro.run(ExportConfig(...))``): a run as a standard scalar reward
model (a transformers sequence classifier)."""

from __future__ import annotations

from bayesmicro.config import ExportConfig


def run_export(job: ExportConfig) -> dict:
    """``bayesmicro.integrations.export.export_reward_model`` with the job's settings; what it wrote."""
    from bayesmicro.integrations.export import export_reward_model

    return export_reward_model(job.run, job.backbone, job.out, context=job.context, weights=job.weights,
                               prompt=job.prompt, revision=job.revision, overwrite=job.overwrite)
