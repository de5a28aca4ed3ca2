import pyro

# Every bayesmicro PyroModule keeps its parameters on the module (the modern Pyro style), not in the global store.
pyro.settings.set(module_local_params=True)
