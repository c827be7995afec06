"""The one analysis engine behind ``detect``, ``--qc`` and ``monitor``."""
