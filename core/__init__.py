"""The torch-free bottom layer: what every package may import and what imports nothing of ours.

``errors`` (the one-line errors), ``candidate`` (the contract between search and harness), ``data``
(datasets), ``tflite_model`` (the TFLite reader), ``size_model`` (the size bound and the entropy
figures), ``units`` (sizes as users write them) and ``paper`` (the UDC paper's Table 3 rows).
"""
