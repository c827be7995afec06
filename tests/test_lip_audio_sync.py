"""The model-free sync check of bench.lip_audio_sync: its sign and precision."""
import numpy as np
import pytest

from bench import lip_audio_sync


@pytest.mark.parametrize("lag_ms", [-120.0, -30.0, 0.0, 45.0, 100.0])
def test_sync_lag_recovers_a_known_delay_of_the_sound(lag_ms):
  rng = np.random.default_rng(0)
  fps, hop = 25.0, lip_audio_sync.MEL_HOP_S
  # A smooth random "mouth opening"; the loudness is the same curve, delayed by lag_ms.
  knots = rng.standard_normal(int(8.0 * 6) + 2)
  curve = lambda t: np.interp(t, np.linspace(0, 8.0, knots.size), knots)
  opening = curve(np.arange(int(8.0 * fps)) / fps)
  loudness = curve(np.arange(int(8.0 / hop)) * hop - lag_ms / 1000.0)
  got, peak = lip_audio_sync.sync_lag(opening, loudness)
  assert abs(got - lag_ms) <= hop * 1000 / 2, (got, lag_ms)
  assert peak > 0.8


def test_sync_lag_refuses_a_peak_at_the_edge_and_a_missing_face():
  x = np.sin(np.arange(400) * 0.05)
  # Loudness falling while the mouth opens wider: anti-correlated at every lag inside
  # +-300 ms, so the best lag is the search's edge, which is no measurement.
  with pytest.raises(ValueError, match="edge"):
    lip_audio_sync.sync_lag(np.arange(100.0), -np.arange(320.0))
  with pytest.raises(ValueError, match="fewer than 10"):
    lip_audio_sync.sync_lag(np.full(100, np.nan), x)
