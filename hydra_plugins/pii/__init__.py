"""pii's Hydra plugins. Hydra finds plugins only under the `hydra_plugins` package: the sweeper's
logic is pii.run.sweep; here are the classes Hydra instantiates (conf/hydra/sweeper/pii.yaml,
conf/hydra/launcher/ray.yaml)."""
