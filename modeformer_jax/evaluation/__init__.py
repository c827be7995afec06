"""The evaluation layer: embedding clips and scoring them with the literature's protocol.

``embedding`` (``Embedder``: jitted, sharded, fixed-size chunks), ``protocol`` (sync accuracy
over score matrices, and the one vote rule that the analysis uses too), ``plots``.
"""
