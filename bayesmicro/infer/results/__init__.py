"""What inference returns: one result family (``results.base.Posterior``: predict, reward, draws, save, load) for
the embedded mixture (``results.mixture.Fit``) and the per-user latent-class model
(``results.latent_class.LatentClassResult``); ``results.load.load`` reads either from its run folder."""
