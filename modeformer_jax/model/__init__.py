"""The model layer: what a sample is and what the network does with it.

``windows`` (the 25-fps clock and the 5-frame / 16-mel-frame window contract, numpy only),
``input_spec`` (what a model expects: fps, mel, lip size, crop method), ``models`` (the towers
and ``ModEFormer``), ``losses`` (InfoNCE with hard and easy negatives), ``checkpoints``
(orbax checkpoints, ``load_model``, exported weights).
"""
