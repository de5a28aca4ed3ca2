"""A tiny suite for CLI tests: the irreducible study on one small population."""

from bayesmicro.bench import irreducible


def run(seeds=1, out_dir=None, **_):
    pops = (irreducible.StudyPopulation(k=2, spread=1.0, dim=3),)
    return irreducible.run(seeds=seeds, out_dir=out_dir, populations=pops, sizes=(300, 3000), n_eval=5000,
                           restarts=1)
