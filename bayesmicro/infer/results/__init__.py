"""What inference returns: one result family (``results.base.Posterior``) for the embedded mixture (``Fit``) and
the per-user latent-class model (``LatentClassResult``), and ``load`` for either."""
