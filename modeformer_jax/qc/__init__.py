"""Sync QC of long videos and folders: streaming mel (``stream``), faces through a video
(``tracking``), offset over time and drift (``sync_qc``), broadcast tolerances
(``tolerances``), folders and lists (``qc_batch``) and HTML reports (``report``)."""
