"""What is QC's own on top of the analysis (``modeformer_jax.analysis``): broadcast
tolerances (``tolerances``), folders and lists with resume and workers (``qc_batch``) and
HTML reports (``report``)."""
