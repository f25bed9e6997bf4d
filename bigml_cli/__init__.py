"""bigml: train, evaluate, run and export deep-learning models from the command line."""

__version__ = "0.1.0"
