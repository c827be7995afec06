"""Drawing the frames: a face filling the 160x160 frame whose mouth follows the mouth tracks.

The face is LRS2-like (eyes at ~1/3 of the height, mouth at ~0.57). Per frame the lips, mouth
interior, teeth and tongue are drawn for that frame's opening and rounding, the jaw drops with
the opening, the eyes blink now and then, the head moves a little and the light drifts slowly.
"""
from __future__ import annotations

import cv2
import numpy as np

from data_prep.synthetic.constants import FPS, FRAME_SIZE
from data_prep.synthetic.seeds import smooth_noise
from data_prep.synthetic.speakers import SceneParams, SpeakerParams

_SUB = 16           # cv2 drawing with 4 fractional bits: smooth sub-pixel lip motion
_AA = cv2.LINE_AA


def _pts(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
  return np.round(np.stack([xs, ys], -1) * _SUB).astype(np.int32)


def _face_base(sp: SpeakerParams, scene: SceneParams, rng: np.random.Generator,
               blink: float) -> np.ndarray:
  """The still face (no mouth) as float32 RGB; ``blink`` in [0, 1] closes the eyelids."""
  s = FRAME_SIZE
  yy = np.linspace(0, 1, s, dtype=np.float32)[:, None, None]
  img = np.asarray(scene.bg_top, np.float32) * (1 - yy) + np.asarray(scene.bg_bottom) * yy
  img = np.ascontiguousarray(np.broadcast_to(img, (s, s, 3)), np.float32)
  # Soft blotches so the background is not flat.
  blot = cv2.resize(rng.uniform(-18, 18, (5, 5, 3)).astype(np.float32), (s, s),
                    interpolation=cv2.INTER_CUBIC)
  img += blot
  cx, cy = 80.0, sp.face_cy
  fw, fh = sp.face_half_width, sp.face_half_height
  skin = sp.skin
  dark_skin = tuple(c * 0.8 for c in skin)
  # Shoulders and neck, then hair behind the head.
  cv2.ellipse(img, (80, 186), (95, 50), 0, 0, 360, scene.clothes, -1, _AA)
  cv2.rectangle(img, (int(cx - fw * 0.55), int(cy + fh * 0.5)), (int(cx + fw * 0.55), s),
                dark_skin, -1)
  hair = sp.hair
  if sp.hair_style > 0:     # longer hair falls beside the face
    cv2.ellipse(img, (int(cx), int(cy - 5)), (int(fw + 9), int(fh * (0.8 + 0.15 * sp.hair_style))),
                0, 0, 360, hair, -1, _AA)
  cv2.ellipse(img, (int(cx), int(cy - fh * 0.35)), (int(fw + 6), int(fh * 0.75)), 0, 180, 360,
              hair, -1, _AA)
  # Ears, face, with a darker rim so the face looks round.
  for side in (-1, 1):
    cv2.ellipse(img, (int(cx + side * fw), int(sp.eye_y + 8)), (6, 11), 0, 0, 360, dark_skin,
                -1, _AA)
  mask = np.zeros((s, s), np.float32)
  cv2.ellipse(mask, (int(round(cx)), int(round(cy))), (int(round(fw)), int(round(fh))), 0, 0,
              360, 1.0, -1, _AA)
  xs = (np.arange(s, dtype=np.float32) - cx) / fw
  ys = (np.arange(s, dtype=np.float32) - cy) / fh
  shade = 1.0 - 0.22 * np.clip(xs[None, :] ** 2 + 0.6 * ys[:, None] ** 2, 0, 1.5) ** 2
  face = np.asarray(skin, np.float32) * shade[..., None]
  face += cv2.GaussianBlur(rng.normal(0, 4, (s, s, 1)).astype(np.float32), (0, 0), 1.2)[..., None]
  img = img * (1 - mask[..., None]) + face * mask[..., None]
  # Fringe over the forehead.
  cv2.ellipse(img, (int(cx), int(cy - fh * 0.62)), (int(fw * 0.95), int(fh * 0.32)), 0, 180,
              360, hair, -1, _AA)
  cv2.ellipse(img, (int(cx), int(cy - fh * 0.62)), (int(fw * 0.95), int(fh * 0.12)), 0, 0,
              180, hair, -1, _AA)
  # Eyes and brows.
  for side in (-1, 1):
    ex, ey = cx + side * sp.eye_dx, sp.eye_y
    cv2.ellipse(img, (int(ex * _SUB), int(ey * _SUB)), (9 * _SUB, 4 * _SUB), 0, 0, 360,
                (235, 235, 230), -1, _AA, 4)
    cv2.circle(img, (int(ex * _SUB), int(ey * _SUB)), int(3.6 * _SUB), sp.iris, -1, _AA, 4)
    cv2.circle(img, (int(ex * _SUB), int(ey * _SUB)), int(1.7 * _SUB), (10, 10, 10), -1, _AA, 4)
    if blink > 0:
      cv2.ellipse(img, (int(ex * _SUB), int((ey - 4 + 4 * blink) * _SUB)),
                  (10 * _SUB, int((0.5 + 4.5 * blink) * _SUB)), 0, 0, 360, skin, -1, _AA, 4)
    cv2.ellipse(img, (int(ex * _SUB), int((ey + 4 * blink) * _SUB)), (9 * _SUB, 4 * _SUB), 0,
                190, 350, (40, 30, 30), 1, _AA, 4)
    cv2.ellipse(img, (int(ex * _SUB), int((ey - sp.brow_gap + 5) * _SUB)), (12 * _SUB, 5 * _SUB),
                0, 200, 340, tuple(c * 0.7 for c in hair), 3, _AA, 4)
  # Nose: shading down the side, nostrils, a highlight on the tip.
  ny = sp.nose_y
  cv2.line(img, (int((cx - 5) * _SUB), int((sp.eye_y + 6) * _SUB)),
           (int((cx - 7) * _SUB), int((ny - 3) * _SUB)), dark_skin, 2, _AA, 4)
  for side in (-1, 1):
    cv2.ellipse(img, (int((cx + side * 5) * _SUB), int(ny * _SUB)), (3 * _SUB, int(1.6 * _SUB)),
                0, 0, 360, tuple(c * 0.45 for c in skin), -1, _AA, 4)
  cv2.circle(img, (int(cx * _SUB), int((ny - 4) * _SUB)), 3 * _SUB,
             tuple(min(255.0, c * 1.1) for c in skin), -1, _AA, 4)
  # Folds from the nose towards the mouth corners, and the chin crease.
  for side in (-1, 1):
    cv2.ellipse(img, (int((cx + side * 10) * _SUB), int((ny + 14) * _SUB)),
                (int(10 * _SUB), int(14 * _SUB)), 0, 180 + side * 60 if side < 0 else 300,
                240 if side < 0 else 360, tuple(c * 0.86 for c in skin), 1, _AA, 4)
  return img


def _draw_mouth(img: np.ndarray, sp: SpeakerParams, cx: float, cy: float, opening: float,
                rounding: float) -> None:
  """Lips, mouth interior, teeth and tongue, drawn in place (float32 RGB)."""
  rnd, spread = max(rounding, 0.0), max(-rounding, 0.0)
  a = sp.mouth_half_width * (1 - 0.32 * rnd + 0.1 * spread) * (1 + 0.04 * opening)
  h = sp.max_open * max(opening, 0.0)
  ai = a * (0.88 - 0.3 * rnd)
  tu = sp.upper_lip * (1 + 0.45 * rnd)
  tl = sp.lower_lip * (1 + 0.45 * rnd) * (1 - 0.15 * min(opening, 1.0))
  k = 21
  x = np.linspace(-1, 1, k, dtype=np.float32)
  xo = x * a
  inner = np.clip(1 - (xo / ai) ** 2, 0, 1) ** 0.7
  thick = 0.15 + 0.85 * np.sqrt(np.clip(1 - x ** 2, 0, 1))
  bow = 1.2 * np.exp(-(x / 0.14) ** 2) * tu / 4.5
  up_in, lo_in = cy - 0.45 * h * inner, cy + 0.55 * h * inner
  up_out = up_in - tu * thick + bow
  lo_out = lo_in + tl * thick
  lip = sp.lip
  outline = np.concatenate([_pts(cx + xo, up_out), _pts(cx + xo[::-1], lo_out[::-1])])
  cv2.fillPoly(img, [outline], lip, _AA, 4)
  # Highlight on the lower lip.
  cv2.ellipse(img, (int(cx * _SUB), int((lo_in[k // 2] + 0.55 * tl) * _SUB)),
              (int(a * 0.4 * _SUB), int(max(tl * 0.22, 0.5) * _SUB)), 0, 0, 360,
              tuple(min(255.0, c * 1.3 + 15) for c in lip), -1, _AA, 4)
  if h > 0.6:
    sel = np.abs(xo) <= ai
    xi, ui, li = xo[sel], up_in[sel], lo_in[sel]
    hole = np.concatenate([_pts(cx + xi, ui), _pts(cx + xi[::-1], li[::-1])])
    cv2.fillPoly(img, [hole], (28, 8, 12), _AA, 4)
    if h > 7:   # tongue at the bottom of a wide-open mouth
      cv2.ellipse(img, (int(cx * _SUB), int((cy + 0.55 * h) * _SUB)),
                  (int(ai * 0.6 * _SUB), int(0.25 * h * _SUB)), 0, 180, 360, (120, 40, 50),
                  -1, _AA, 4)
    # Upper teeth hang from the upper lip; lower teeth show only when wide open.
    tsel = np.abs(xi) <= 0.72 * ai
    tx, tu_in = xi[tsel], ui[tsel]
    th = min(0.22 * h, 3.0)
    teeth = np.concatenate([_pts(cx + tx, tu_in), _pts(cx + tx[::-1], (tu_in + th)[::-1])])
    cv2.fillPoly(img, [teeth], sp.teeth, _AA, 4)
    if h > 11:
      tl_in = li[tsel]
      lth = min(0.12 * h, 2.0)
      teeth = np.concatenate([_pts(cx + tx, tl_in - lth), _pts(cx + tx[::-1], tl_in[::-1])])
      cv2.fillPoly(img, [teeth], tuple(c * 0.85 for c in sp.teeth), _AA, 4)
  # The line where the lips meet (dark at the corners, across the mouth when closed).
  seam = tuple(c * 0.4 for c in lip)
  cv2.polylines(img, [_pts(cx + xo, up_in + (0.45 * h * inner if h <= 0.6 else 0))], False,
                seam, 1, _AA, 4)


def render_video(sp: SpeakerParams, scene: SceneParams, opening: np.ndarray,
                 rounding: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Frames ``uint8 [T, 160, 160, 3]`` (RGB) for per-frame mouth opening and rounding."""
  n = len(opening)
  s = FRAME_SIZE
  base_seed = int(rng.integers(2 ** 31))
  # Three eyelid states share one texture (same seed), so a blink changes only the eyes.
  bases = [_face_base(sp, scene, np.random.default_rng(base_seed), b) for b in (0.0, 0.55, 1.0)]
  blink = np.zeros(n, np.int64)
  t = int(rng.integers(5, 60))
  while t < n:
    for j, state in enumerate((1, 2, 2, 1)):
      if t + j < n:
        blink[t + j] = state
    t += int(rng.integers(50, 130))
  # Head motion (pixels, degrees, scale) and light drift: smooth and small.
  tx = 1.5 * smooth_noise(rng, n, 0.8, FPS) + scene.dx
  ty = 1.0 * smooth_noise(rng, n, 0.8, FPS) + scene.dy
  rot = 2.0 * smooth_noise(rng, n, 0.6, FPS)
  scl = scene.scale * (1 + 0.015 * smooth_noise(rng, n, 0.5, FPS))
  gain = scene.gain * (1 + 0.06 * smooth_noise(rng, n, 0.5, FPS))
  gx = scene.light_x + 0.05 * smooth_noise(rng, n, 0.4, FPS)
  lin = np.linspace(-1, 1, s, dtype=np.float32)
  grid_y, grid_x = np.meshgrid(np.arange(s, dtype=np.float32), np.arange(s, dtype=np.float32),
                               indexing="ij")
  # Rows below the mouth follow the jaw: weight 0 above the mouth, 1 from 18 px below it.
  jaw_w = np.clip((grid_y - sp.mouth_y) / 18.0, 0, 1)
  out = np.empty((n, s, s, 3), np.uint8)
  cx = 80.0
  for i in range(n):
    h = sp.max_open * max(float(opening[i]), 0.0)
    drop = 0.45 * h
    img = bases[blink[i]]
    if drop > 0.05:
      img = cv2.remap(img, grid_x, grid_y - drop * jaw_w, cv2.INTER_LINEAR,
                      borderMode=cv2.BORDER_REPLICATE)
    else:
      img = img.copy()
    _draw_mouth(img, sp, cx, sp.mouth_y, float(opening[i]), float(rounding[i]))
    m = cv2.getRotationMatrix2D((80.0, sp.mouth_y - 10), float(rot[i]), float(scl[i]))
    m[0, 2] += tx[i]
    m[1, 2] += ty[i]
    img = cv2.warpAffine(img, m, (s, s), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    light = gain[i] * (1 + gx[i] * lin[None, :] + scene.light_y * lin[:, None])
    np.multiply(img, light[..., None], out=img)
    np.clip(img, 0, 255, out=img)
    out[i] = img
  return out
