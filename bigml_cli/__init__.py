"""bigml: train, evaluate, run and export deep-learning models from the command line."""

import os

__version__ = "0.1.0"
DISTRIBUTION = "bigml-keras"  # the name pip knows it by; `bigml` on PyPI is another project

# TensorFlow leaves its oneDNN kernels off on x86 CPUs without AVX-512 VNNI/BF16/AMX; on, they train the
# convolutional nets faster (docs/speed.md). It must be set before TensorFlow is imported; a user's own setting wins, and
# BIGML_TF_DEFAULTS=1 (which `bigml bench` gives the hand-written baseline) leaves TensorFlow's default.
USER_ONEDNN = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
if not os.environ.get("BIGML_TF_DEFAULTS"):
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
