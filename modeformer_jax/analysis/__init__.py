"""The one analysis engine behind plain ``detect``, ``detect --qc`` and ``monitor``.

Every front end uses the names below and nothing else of this package:

* ``AnalysisOptions`` and ``add_flags`` / ``options_from_flags``: the options, defined once
  (same names, defaults and help in every command).
* ``Analyzer(checkpoint, options)``: a loaded model; ``analyze(path)`` measures a file
  (``analyze_shifts`` several injected offsets in one pass), ``detect_file`` gives plain
  ``detect``'s answer.
* ``Evidence(analyzer, info)``: the streaming analysis of one source, for live use:
  ``push(chunk)``, ``latest_window()`` (the newest window: offset, confidence, reliability,
  speaking face, sound character and the reason when it is not measurable), ``finish()``,
  ``close()``, and ``hop_frames`` / ``num_frames``.
* ``describe``, ``describe_plain``, ``refusal``, ``plain_answer``: the words for people.
* ``load_detector`` (a shipped model, an export, a training run), ``DEFAULT_MODEL``,
  ``LAYOUT_CHOICES``: the one model loader of every front end and bench.

Inside, by job: ``options``; ``evidence`` (per face track and per block, the similarity of
every lip window with the audio around it, as the source streams); ``lane`` (one version of
the audio: mel, embeddings, voice activity, sound levels, the per-block sums); ``sound`` (speech,
silence, music: one decision for files and live); ``estimate`` (the vote, the sub-frame
peak, the file's one offset, drift, reliability); ``files`` (the file driver); ``words``;
``tracking`` (faces, shot cuts, lip crops per track); ``detectors`` (loading a model).
"""
from modeformer_jax.analysis.detectors import DEFAULT_MODEL, LAYOUT_CHOICES, load_detector
from modeformer_jax.analysis.evidence import Evidence
from modeformer_jax.analysis.files import Analyzer, detect_file, detect_shifted
from modeformer_jax.analysis.options import AnalysisOptions, add_flags, options_from_flags
from modeformer_jax.analysis.words import describe, describe_plain, plain_answer, refusal

__all__ = ["DEFAULT_MODEL", "LAYOUT_CHOICES", "AnalysisOptions", "Analyzer", "Evidence",
           "add_flags", "describe", "describe_plain", "detect_file", "detect_shifted",
           "load_detector", "options_from_flags", "plain_answer", "refusal"]
