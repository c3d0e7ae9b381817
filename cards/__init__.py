"""The dataset card templates, installed as the package `coevol_hf.cards`."""
