"""The demo sample, installed as the package `coevol_hf.demo_data`."""
