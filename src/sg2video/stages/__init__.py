"""The pipeline's stages: each reads the config, trains or evaluates, and writes into the run dir."""
