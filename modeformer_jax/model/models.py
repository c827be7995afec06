"""ModEFormer in flax.linen: modality-preserving audio and video encoders.

Each modality has its own tower, and the two towers never see each other's input:

* audio  E_a: ResNet18-like 2D CNN on a mel window ``[B, 80, 16, 1]`` (freq, time, 1).
  Strides pool frequency only, so every one of the 16 mel frames keeps a feature:
  ``[B, 16, C]``.
* video  E_v: ResNet18-like 3D CNN on lip frames ``[B, 5, 48, 96, 3]`` with temporal
  stride 1 everywhere, so every frame keeps a feature: ``[B, 5, C]``.
* P_a, P_v: a learned class token is prepended, fixed sinusoidal position encodings are
  added, and a pre-LN transformer encoder runs; the class token's output is the
  embedding. The 3D-SyncNet ablation (``use_transformer=False``) mean-pools the CNN
  features over time instead.

``ModEFormer`` is a thin functional wrapper: parameters are a plain pytree
``{'audio': ..., 'video': ...}`` and ``embed_audio`` only ever receives the audio half,
which is what makes one video embedding reusable against thousands of audio windows.

Normalisation: GroupNorm by default, so nothing is shared across the contrastive batch.
BatchNorm is an option; its statistics are reduced over ``bn_axis_name`` (the mesh's data
axis) when that is set, and live in a separate ``batch_stats`` collection.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from modeformer_jax.model.windows import MEL_WINDOW, WINDOW_FRAMES

Array = jax.Array
PyTree = Any

# Input geometry fixed by the feature pipeline: a window is WINDOW_FRAMES (5) video frames
# and MEL_WINDOW (16) mel frames (modeformer_jax.model.windows); 80 mel bins, 48x96 lip crops.
NUM_MEL = 80
LIP_HEIGHT = 48
LIP_WIDTH = 96


def _dtype(name: str | Any) -> Any:
  return jnp.dtype(name) if isinstance(name, str) else name


def _norm(kind: str, groups: int, train: bool, bn_axis_name: str | None,
          dtype: Any, param_dtype: Any, name: str | None = None) -> nn.Module:
  """Returns a normalisation layer that does not mix examples unless asked to."""
  if kind == "group":
    return _GroupNormAuto(groups=groups, dtype=dtype, param_dtype=param_dtype, name=name)
  if kind == "layer":
    return nn.LayerNorm(dtype=dtype, param_dtype=param_dtype, name=name)
  if kind == "batch":
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                        axis_name=bn_axis_name, dtype=dtype, param_dtype=param_dtype,
                        name=name)
  raise ValueError(f"unknown norm {kind!r}; expected 'group', 'layer' or 'batch'")


class _GroupNormAuto(nn.Module):
  """GroupNorm whose group count shrinks to divide the channel count (tiny widths)."""
  groups: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    channels = x.shape[-1]
    g = min(self.groups, channels)
    while channels % g:
      g -= 1
    return nn.GroupNorm(num_groups=g, dtype=self.dtype, param_dtype=self.param_dtype)(x)


# How 3D convolutions with a temporal kernel run: "native" (one 3D convolution), "2d" (a sum
# of 2D convolutions over the time taps, time folded into the batch) or "auto". The two are
# the same function (tests/test_models.py). Measured per layer on XLA:CPU
# (`bench/conv3d_layers.py [--grad]`, bench/RESULTS.md "CPU speed"):
# - forward: the 2D form is 1.1-2.5x faster for the stems and the stride-1 layers on maps of
#   at least 3x3, but XLA's 2D convolution collapses on tiny maps (2x3: 9 GFLOP/s against
#   36 for the 3D conv; 88x slower on the paper model's 512-wide last stage) and loses on
#   wide stride-2 layers;
# - backward: XLA's input gradient of a strided 3D conv is 10-50x slower than the 2D form's,
#   and both forms' gradients are slow on tiny maps and for the kernel of strided layers.
#   There the gradients are plain matmuls: the kernel's against the input's patches
#   (``conv3d_dw_matmul``) and the input's scattered back from the output's
#   (``conv3d_dx_matmul``), 2-10x faster than either conv form on those layers (paper
#   stage-4 stride-2 input gradient: 12.5 ms against 132 native and 414 in 2D, 8 windows;
#   `bench.conv3d_layers --split_grads`).
# So "auto" decides per layer, on the CPU backend only, and a layer may run its forward and
# its two gradients in different forms (an exact custom VJP).
CONV3D_IMPL = "auto"          # 'auto' | 'native' | '2d'
AUTO_2D_MIN_MAP = 3           # "auto": the 2D form needs maps at least 3x3 ...
AUTO_2D_STRIDED_MAX_IN = 32   # ... and a strided forward at most this many input channels
# A stem (few input channels): its kernel gradient as a matmul only from this many outputs
# (paper stem, 64: 136 ms against 252 in 2D; tiny stem, 16: 54 against 18).
AUTO_STEM_MATMUL_MIN_OUT = 64
_STEM_MAX_IN = 4
# Stride 1 on maps >= 3x3: the kernel gradient native from this many channels (paper stage
# 1, 64: 47 ms against 69 in 2D; 128 and 256: even), the 2D form below (tiny, 16: 4 vs 10).
AUTO_NATIVE_DW_MIN_IN = 64


def conv3d_forms(impl: str, x_shape: tuple[int, ...], strides: tuple[int, ...],
                  features: int) -> tuple[str, str, str]:
  """Forms of (forward, input gradient, kernel gradient) for a 3D conv with a temporal
  kernel > 1 on ``x_shape``: each 'native', '2d' or 'matmul' (gradients only)."""
  if impl not in ("auto", "native", "2d"):
    raise ValueError(f"CONV3D_IMPL must be 'auto', 'native' or '2d', got {impl!r}")
  if impl != "auto":
    return (impl,) * 3
  if jax.default_backend() != "cpu":
    return ("native",) * 3
  h, w, cin = x_shape[-3:]
  strided = max(strides[1:]) > 1
  tiny = min(h, w) < AUTO_2D_MIN_MAP
  fwd = "2d" if not tiny and (not strided or cin <= AUTO_2D_STRIDED_MAX_IN) else "native"
  dx = "matmul" if strided or tiny else fwd
  stem = cin <= _STEM_MAX_IN
  if tiny or (strided and (not stem or features >= AUTO_STEM_MATMUL_MIN_OUT)):
    dw = "matmul"
  elif not strided and cin >= AUTO_NATIVE_DW_MIN_IN:
    dw = "native"
  else:
    dw = fwd
  return fwd, dx, dw


def conv3d_native(x: Array, kernel: Array, strides: tuple[int, ...]) -> Array:
  return jax.lax.conv_general_dilated(x, kernel, strides, "SAME",
                                      dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))


def conv3d_2d(x: Array, kernel: Array, strides: tuple[int, ...]) -> Array:
  """``y[t] = sum_d conv2d(x[t + d - p], k[d])``, zero frames beyond the clip."""
  b, t = x.shape[:2]
  kt = kernel.shape[0]
  lo = (kt - 1) // 2
  xp = jnp.pad(x, ((0, 0), (lo, kt - 1 - lo)) + ((0, 0),) * 3)
  out = None
  for d in range(kt):
    y = jax.lax.conv_general_dilated(
        xp[:, d:d + t].reshape(b * t, *x.shape[2:]), kernel[d], strides[1:], "SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    out = y if out is None else out + y
  return out.reshape(b, t, *out.shape[1:])


def _same_padding(size: int, k: int, s: int) -> tuple[int, int, int]:
  """(low pad, high pad, output size) of XLA's SAME padding along one axis."""
  out = -(-size // s)
  total = max((out - 1) * s + k - size, 0)
  return total // 2, total - total // 2, out


def conv3d_dw_matmul(x: Array, g: Array, kshape: tuple[int, ...],
                      strides: tuple[int, ...]) -> Array:
  """Kernel gradient of the SAME 3D conv: the output gradient ``g`` against the input's
  patches (every tap's strided slice side by side in the channels), one matmul."""
  pads = [_same_padding(n, k, s) for n, k, s in zip(x.shape[1:4], kshape, strides)]
  xp = jnp.pad(x, ((0, 0), *[(lo, hi) for lo, hi, _ in pads], (0, 0)))
  outs = [o for _, _, o in pads]
  taps = [jax.lax.slice(xp, (0, a, b, c, 0),
                        (x.shape[0], *[o0 + (o - 1) * s + 1 for o0, o, s in
                                       zip((a, b, c), outs, strides)], x.shape[-1]),
                        (1, *strides, 1))
          for a in range(kshape[0]) for b in range(kshape[1]) for c in range(kshape[2])]
  dw = jnp.einsum("nthwp,nthwo->po", jnp.concatenate(taps, axis=-1), g)
  return dw.reshape(*kshape, x.shape[-1], g.shape[-1])


def conv3d_dx_matmul(x_shape: tuple[int, ...], g: Array, kernel: Array,
                      strides: tuple[int, ...]) -> Array:
  """Input gradient of the SAME 3D conv: every output position's gradient times the kernel
  (one matmul), each tap's share added back at its strided place in the padded input."""
  kshape = kernel.shape[:3]
  pads = [_same_padding(n, k, s) for n, k, s in zip(x_shape[1:4], kshape, strides)]
  full = [n + lo + hi for n, (lo, hi, _) in zip(x_shape[1:4], pads)]
  cols = jnp.einsum("nthwo,abcio->nthwabci", g, kernel)
  acc = jnp.zeros((x_shape[0], *full, x_shape[-1]), g.dtype)
  zero = jnp.zeros((), g.dtype)
  for a in range(kshape[0]):
    for b in range(kshape[1]):
      for c in range(kshape[2]):
        # Interior padding places the tap's values every ``stride`` positions from its offset.
        cfg = [(0, 0, 0)] + [(o0, n - o0 - (o - 1) * s - 1, s - 1) for o0, n, o, s in
                             zip((a, b, c), full, g.shape[1:4], strides)] + [(0, 0, 0)]
        acc = acc + jax.lax.pad(cols[:, :, :, :, a, b, c], zero, cfg)
  return acc[:, pads[0][0]:pads[0][0] + x_shape[1], pads[1][0]:pads[1][0] + x_shape[2],
             pads[2][0]:pads[2][0] + x_shape[3]]


CONV3D_FORWARD = {"native": conv3d_native, "2d": conv3d_2d}


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv3d_mixed(x: Array, kernel: Array, strides: tuple[int, ...],
                  forms: tuple[str, str, str]) -> Array:
  """The conv with its forward and its two gradients each in its own form (one linear map)."""
  return CONV3D_FORWARD[forms[0]](x, kernel, strides)


def conv3d_mixed_fwd(x, kernel, strides, forms):
  return conv3d_mixed(x, kernel, strides, forms), (x, kernel)


def conv3d_mixed_bwd(strides, forms, res, g):
  x, kernel = res
  _, dx_form, dw_form = forms
  # The conv is linear, so a VJP never uses its primal: XLA drops that computation, and the
  # input gradient of a stem (whose input is data) is dropped as unused.
  if dx_form == "matmul":
    dx = conv3d_dx_matmul(x.shape, g, kernel, strides)
  else:
    dx = jax.vjp(lambda a: CONV3D_FORWARD[dx_form](a, kernel, strides), x)[1](g)[0]
  if dw_form == "matmul":
    dw = conv3d_dw_matmul(x, g, kernel.shape[:3], strides)
  else:
    dw = jax.vjp(lambda k: CONV3D_FORWARD[dw_form](x, k, strides), kernel)[1](g)[0]
  return dx, dw.astype(kernel.dtype)


conv3d_mixed.defvjp(conv3d_mixed_fwd, conv3d_mixed_bwd)


class Conv(nn.Module):
  """``nn.Conv`` without bias and with SAME padding (same parameter tree: ``kernel``), whose
  3D form with a temporal kernel > 1 and temporal stride 1 picks a form for its forward and
  for each gradient (``conv3d_forms``): native, 2D convolutions or matmuls."""
  features: int
  kernel_size: tuple[int, ...]
  strides: tuple[int, ...] | None = None
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    nd = len(self.kernel_size)
    strides = tuple(self.strides or (1,) * nd)
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (*self.kernel_size, x.shape[-1], self.features), self.param_dtype)
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    if nd == 3 and self.kernel_size[0] > 1 and strides[0] == 1:
      forms = conv3d_forms(CONV3D_IMPL, x.shape, strides, self.features)
      if len(set(forms)) > 1:
        return conv3d_mixed(x, kernel, strides, forms)
      return CONV3D_FORWARD[forms[0]](x, kernel, strides)
    spec = "NDHWC" if nd == 3 else "NHWC"
    return jax.lax.conv_general_dilated(x, kernel, strides, "SAME",
                                        dimension_numbers=(spec, spec[1:-1] + "IO", spec))


class ResidualBlock(nn.Module):
  """Basic (two-conv) ResNet block for 2D or 3D inputs, chosen by ``len(kernel)``."""
  features: int
  strides: tuple[int, ...]
  kernel: tuple[int, ...]
  norm: str = "group"
  norm_groups: int = 32
  bn_axis_name: str | None = None
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    conv = functools.partial(Conv, dtype=self.dtype, param_dtype=self.param_dtype)
    norm = functools.partial(_norm, self.norm, self.norm_groups, train, self.bn_axis_name,
                             self.dtype, self.param_dtype)
    residual = x
    y = conv(self.features, self.kernel, strides=self.strides, name="conv1")(x)
    y = nn.relu(norm(name="norm1")(y))
    y = conv(self.features, self.kernel, name="conv2")(y)
    y = norm(name="norm2")(y)
    if residual.shape != y.shape:
      residual = conv(self.features, (1,) * len(self.kernel), strides=self.strides,
                      name="proj")(residual)
      residual = norm(name="proj_norm")(residual)
    return nn.relu(y + residual)


class ResNet(nn.Module):
  """ResNet18-like trunk shared by both modalities (2D for audio, 3D for video).

  The stride tuples say which axes are pooled; the audio tower pools frequency only and
  the video tower pools space only, so their time axes survive untouched.
  """
  widths: Sequence[int]
  blocks: Sequence[int]
  stem_kernel: tuple[int, ...]
  stem_strides: tuple[int, ...]
  pool_strides: tuple[int, ...]
  stage_strides: tuple[int, ...]  # stride of the first block of stages 2..4
  norm: str = "group"
  norm_groups: int = 32
  bn_axis_name: str | None = None
  remat: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    nd = len(self.stem_kernel)
    x = Conv(self.widths[0], self.stem_kernel, strides=self.stem_strides, dtype=self.dtype,
             param_dtype=self.param_dtype, name="stem_conv")(x)
    x = _norm(self.norm, self.norm_groups, train, self.bn_axis_name, self.dtype,
              self.param_dtype, name="stem_norm")(x)
    x = nn.relu(x)
    x = nn.max_pool(x, (3,) * nd if nd == 2 else (1, 3, 3), strides=self.pool_strides,
                    padding="SAME")
    # static_argnums=(2,) keeps `train` a Python bool under remat.
    block_cls = nn.remat(ResidualBlock, static_argnums=(2,)) if self.remat else ResidualBlock
    kernel = (3,) * nd
    for stage, (width, n) in enumerate(zip(self.widths, self.blocks)):
      for b in range(n):
        strides = self.stage_strides if (stage > 0 and b == 0) else (1,) * nd
        x = block_cls(width, strides, kernel, self.norm, self.norm_groups, self.bn_axis_name,
                      self.dtype, self.param_dtype, name=f"stage{stage + 1}_block{b + 1}")(x, train)
    return x


def sinusoidal_positions(length: int, width: int) -> np.ndarray:
  """Fixed sine/cosine position table ``[length, width]`` (Vaswani et al.)."""
  pos = np.arange(length, dtype=np.float64)[:, None]
  i = np.arange(width // 2, dtype=np.float64)[None, :]
  angle = pos / np.power(10000.0, 2.0 * i / width)
  table = np.zeros((length, width), dtype=np.float32)
  table[:, 0::2] = np.sin(angle)
  table[:, 1::2] = np.cos(angle)[:, : (width - width // 2)]
  return table


class TransformerBlock(nn.Module):
  """Pre-LN transformer encoder layer."""
  width: int
  heads: int
  mlp_dim: int
  dropout: float = 0.0
  attention_dropout: float = 0.0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    deterministic = not train
    y = nn.LayerNorm(dtype=self.dtype, param_dtype=self.param_dtype, name="ln_attn")(x)
    y = nn.MultiHeadDotProductAttention(
        num_heads=self.heads, dtype=self.dtype, param_dtype=self.param_dtype,
        dropout_rate=self.attention_dropout, deterministic=deterministic, name="attn")(y, y)
    x = x + nn.Dropout(self.dropout)(y, deterministic=deterministic)
    y = nn.LayerNorm(dtype=self.dtype, param_dtype=self.param_dtype, name="ln_mlp")(x)
    y = nn.Dense(self.mlp_dim, dtype=self.dtype, param_dtype=self.param_dtype,
                 name="mlp_in")(y)
    y = nn.gelu(y)
    y = nn.Dropout(self.dropout)(y, deterministic=deterministic)
    y = nn.Dense(self.width, dtype=self.dtype, param_dtype=self.param_dtype, name="mlp_out")(y)
    return x + nn.Dropout(self.dropout)(y, deterministic=deterministic)


class ClassTokenTransformer(nn.Module):
  """P_a / P_v: class token + sinusoidal positions + pre-LN encoder; returns the token."""
  width: int
  depth: int
  heads: int
  mlp_dim: int
  dropout: float = 0.0
  attention_dropout: float = 0.0
  remat: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    b, t, c = x.shape
    if c != self.width:
      x = nn.Dense(self.width, dtype=self.dtype, param_dtype=self.param_dtype,
                   name="input_proj")(x)
    cls = self.param("cls", nn.initializers.normal(0.02), (1, 1, self.width), self.param_dtype)
    x = jnp.concatenate([jnp.broadcast_to(cls.astype(x.dtype), (b, 1, self.width)), x], axis=1)
    x = x + jnp.asarray(sinusoidal_positions(t + 1, self.width), x.dtype)[None]
    x = nn.Dropout(self.dropout)(x, deterministic=not train)
    block_cls = nn.remat(TransformerBlock, static_argnums=(2,)) if self.remat else TransformerBlock
    for i in range(self.depth):
      x = block_cls(self.width, self.heads, self.mlp_dim, self.dropout, self.attention_dropout,
                    self.dtype, self.param_dtype, name=f"layer{i + 1}")(x, train)
    x = nn.LayerNorm(dtype=self.dtype, param_dtype=self.param_dtype, name="ln_out")(x)
    return x[:, 0]


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Model hyper-parameters; field comments say what each one changes.

  The defaults are the paper's model (variant ``paper``, see ``MODEL_VARIANTS``).
  """
  cnn_widths: tuple[int, ...] = (64, 128, 256, 512)  # channels of the four ResNet stages
  cnn_blocks: tuple[int, ...] = (2, 2, 2, 2)         # basic blocks per stage (ResNet18)
  video_stem_kernel: tuple[int, int, int] = (3, 7, 7)  # (time, h, w) of the 3D stem conv
  # Stride of the 3D stem conv. (1, 2, 2) is ResNet's; (1, 4, 4) quarters the video
  # trunk's cost for small CPU models (lip detail at 12x24 is enough for them).
  video_stem_strides: tuple[int, int, int] = (1, 2, 2)
  video_channels: int = 3                            # lip frame channels (3 = RGB)
  norm: str = "group"                                # 'group' | 'layer' | 'batch'
  norm_groups: int = 32                              # GroupNorm groups (shrunk to divide)
  bn_axis_name: str | None = None                    # mesh axis BatchNorm syncs over
  use_transformer: bool = True                       # False = 3D-SyncNet ablation
  width: int = 512                                   # transformer width = embedding size
  depth: int = 4                                     # transformer layers per modality
  heads: int = 8                                     # attention heads
  mlp_dim: int = 768                                 # transformer MLP hidden size
  dropout: float = 0.1                               # residual/MLP dropout
  attention_dropout: float = 0.0                     # attention-probability dropout
  dtype: str = "float32"                             # compute dtype ('bfloat16' for mixed)
  param_dtype: str = "float32"                       # parameter storage dtype
  remat: bool = False                                # rematerialise every block

  @classmethod
  def from_mapping(cls, cfg: Mapping[str, Any]) -> "ModelConfig":
    """Builds from a dict / ConfigDict, rejecting unknown keys so typos fail loudly."""
    cfg = dict(cfg)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(cfg) - names)
    if unknown:
      raise ValueError(f"unknown model config keys {unknown}; known: {sorted(names)}")
    for k in ("cnn_widths", "cnn_blocks", "video_stem_kernel", "video_stem_strides"):
      if k in cfg:
        cfg[k] = tuple(cfg[k])
    return cls(**cfg)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @property
  def embed_dim(self) -> int:
    return self.width if self.use_transformer else self.cnn_widths[-1]


# Named model variants: the fields each one changes from ModelConfig's defaults.
MODEL_VARIANTS: dict[str, dict[str, Any]] = {
    # The paper's model. ResNet18 trunks: 2D audio (11.2M), 3D video with 3x3x3 kernels
    # (33.2M); two 4-layer pre-LN transformers of width 512 with 8 heads and an MLP of 768
    # (7.35M each). Total 59.1M, within 0.2% of the paper's 59.0M. A ViT-Base MLP ratio of
    # 4 (mlp_dim=2048) would give 69.6M, so the paper's "lighter ViT-Base" is narrower.
    "paper": {},
    # 3D-SyncNet ablation: the same CNNs, no transformers, time-pooled CNN features.
    "syncnet3d": dict(use_transformer=False),
    # Small enough to train on 2 CPU cores in minutes. The stride-4 video stem cuts the
    # video trunk (80% of a CPU step at stride 2) by 4x: 0.30 s vs 1.15 s fwd+bwd for 32 clips.
    "tiny": dict(cnn_widths=(16, 32, 64, 96), cnn_blocks=(1, 1, 1, 1),
                 video_stem_kernel=(3, 5, 5), video_stem_strides=(1, 4, 4), norm_groups=8,
                 width=96, depth=2, heads=4, mlp_dim=192, dropout=0.0),
    # For one accelerator for minutes (faces_v3, ``train_device``): 3.43M parameters, whose
    # float32 model file (13.7 MB) fits the 16 MiB a device run may return per file. The
    # stride-2 video stem keeps 24x48 lip maps (tiny: 12x24); 2.2 GFLOP per train example
    # with 4 hard negatives, 3.7x tiny. Dropout as the paper's: many passes over few clips.
    "small": dict(cnn_widths=(24, 48, 96, 160), cnn_blocks=(1, 1, 1, 1),
                  video_stem_kernel=(3, 5, 5), video_stem_strides=(1, 2, 2), norm_groups=8,
                  width=160, depth=3, heads=4, mlp_dim=320, dropout=0.1),
    # Smallest model that still has every part; for scale tests (B=2000 on CPU).
    "micro": dict(cnn_widths=(4, 4, 8, 8), cnn_blocks=(1, 1, 1, 1),
                  video_stem_kernel=(1, 3, 3), norm_groups=4, width=8, depth=1, heads=2,
                  mlp_dim=16, dropout=0.0),
}


def model_config(variant: str, **overrides: Any) -> ModelConfig:
  """The ModelConfig of a named variant, with optional field ``overrides``."""
  if variant not in MODEL_VARIANTS:
    raise ValueError(f"unknown model variant {variant!r}; known: {sorted(MODEL_VARIANTS)}")
  return ModelConfig.from_mapping({**MODEL_VARIANTS[variant], **overrides})


class _Tower(nn.Module):
  """One modality: CNN trunk, then the class-token transformer or mean pooling."""
  cfg: ModelConfig
  modality: str  # 'audio' | 'video'

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    cfg = self.cfg
    dtype, param_dtype = _dtype(cfg.dtype), _dtype(cfg.param_dtype)
    common = dict(widths=cfg.cnn_widths, blocks=cfg.cnn_blocks, norm=cfg.norm,
                  norm_groups=cfg.norm_groups, bn_axis_name=cfg.bn_axis_name,
                  remat=cfg.remat, dtype=dtype, param_dtype=param_dtype)
    x = x.astype(dtype)
    if self.modality == "audio":
      # [B, F=80, T=16, 1]: stride 2 on frequency, 1 on time.
      cnn = ResNet(stem_kernel=(7, 7), stem_strides=(2, 1), pool_strides=(2, 1),
                   stage_strides=(2, 1), name="cnn", **common)
      feats = cnn(x, train).mean(axis=1)              # pool frequency -> [B, 16, C]
    else:
      # [B, T=5, H=48, W=96, C]: stride 1 on time, 2 on space.
      cnn = ResNet(stem_kernel=cfg.video_stem_kernel, stem_strides=cfg.video_stem_strides,
                   pool_strides=(1, 2, 2), stage_strides=(1, 2, 2), name="cnn", **common)
      feats = cnn(x, train).mean(axis=(2, 3))         # pool space -> [B, 5, C]
    self.sow("intermediates", "cnn_features", feats)
    if cfg.use_transformer:
      emb = ClassTokenTransformer(cfg.width, cfg.depth, cfg.heads, cfg.mlp_dim, cfg.dropout,
                                  cfg.attention_dropout, cfg.remat, dtype, param_dtype,
                                  name="transformer")(feats, train)
    else:
      emb = feats.mean(axis=1)
    return emb.astype(jnp.float32)


AudioEncoder = functools.partial(_Tower, modality="audio")
VideoEncoder = functools.partial(_Tower, modality="video")


def cosine_similarity(a: Array, b: Array, eps: float = 1e-6) -> Array:
  """Row-wise cosine similarity of ``[..., D]`` arrays."""
  a = a / jnp.maximum(jnp.linalg.norm(a, axis=-1, keepdims=True), eps)
  b = b / jnp.maximum(jnp.linalg.norm(b, axis=-1, keepdims=True), eps)
  return jnp.sum(a * b, axis=-1)


class ModEFormer:
  """Functional ModEFormer: ``init`` returns a params pytree; every method is pure.

  ``params = {'audio': <audio tower params>, 'video': <video tower params>}``. With
  ``norm='batch'`` the towers also keep ``batch_stats`` with the same two keys.
  """

  def __init__(self, config: ModelConfig | Mapping[str, Any]):
    self.config = config if isinstance(config, ModelConfig) else ModelConfig.from_mapping(config)
    self.audio_net = AudioEncoder(self.config, name=None)
    self.video_net = VideoEncoder(self.config, name=None)

  # Shapes of one example, without the batch axis.
  @property
  def audio_shape(self) -> tuple[int, ...]:
    return (NUM_MEL, MEL_WINDOW, 1)

  @property
  def video_shape(self) -> tuple[int, ...]:
    return (WINDOW_FRAMES, LIP_HEIGHT, LIP_WIDTH, self.config.video_channels)

  @property
  def has_batch_stats(self) -> bool:
    return self.config.norm == "batch"

  def init_variables(self, rng: Array, batch: int = 1) -> dict[str, PyTree]:
    """All variables: ``{'params': {...}, 'batch_stats': {...}}`` (stats only with BN)."""
    ra, rv = jax.random.split(rng)
    va = self.audio_net.init(ra, jnp.zeros((batch, *self.audio_shape), jnp.float32))
    vv = self.video_net.init(rv, jnp.zeros((batch, *self.video_shape), jnp.float32))
    out = {"params": {"audio": va["params"], "video": vv["params"]}}
    if self.has_batch_stats:
      out["batch_stats"] = {"audio": va["batch_stats"], "video": vv["batch_stats"]}
    return out

  def init(self, rng: Array) -> PyTree:
    """Parameters only: ``{'audio': ..., 'video': ...}``."""
    return self.init_variables(rng)["params"]

  def _apply(self, net: nn.Module, params: PyTree, x: Array, train: bool,
             rng: Array | None, batch_stats: PyTree | None):
    variables = {"params": params}
    if batch_stats is not None:
      variables["batch_stats"] = batch_stats
    rngs = {"dropout": rng} if (train and rng is not None) else None
    if train and self.has_batch_stats:
      emb, upd = net.apply(variables, x, True, rngs=rngs, mutable=["batch_stats"])
      return emb, upd["batch_stats"]
    if train and rng is None and (self.config.dropout or self.config.attention_dropout):
      raise ValueError("train=True with dropout needs an rng")
    emb = net.apply(variables, x, train, rngs=rngs)
    return emb, batch_stats

  def apply_audio(self, params: PyTree, mel: Array, *, train: bool = False,
                  rng: Array | None = None, batch_stats: PyTree | None = None):
    """Audio tower on ``[B, 80, 16]`` or ``[B, 80, 16, 1]``; returns (emb, batch_stats)."""
    if mel.ndim == 3:
      mel = mel[..., None]
    return self._apply(self.audio_net, params, mel, train, rng, batch_stats)

  def apply_video(self, params: PyTree, frames: Array, *, train: bool = False,
                  rng: Array | None = None, batch_stats: PyTree | None = None):
    """Video tower on ``[B, 5, 48, 96, C]`` (uint8 or float); returns (emb, batch_stats)."""
    return self._apply(self.video_net, params, normalize_frames(frames), train, rng,
                       batch_stats)

  def embed_audio(self, params: PyTree, mel: Array) -> Array:
    """Inference embedding ``[B, D]`` of mel windows; ``params`` is the full tree."""
    return self.apply_audio(params["audio"], mel)[0]

  def embed_video(self, params: PyTree, frames: Array) -> Array:
    """Inference embedding ``[B, D]`` of 5-frame lip clips; ``params`` is the full tree."""
    return self.apply_video(params["video"], frames)[0]

  @staticmethod
  def sync_score(audio_emb: Array, video_emb: Array) -> Array:
    """Cosine similarity of paired embeddings: higher = more in sync."""
    return cosine_similarity(audio_emb, video_emb)


def normalize_frames(frames: Array) -> Array:
  """Maps uint8 pixels to roughly zero-mean unit-range floats; floats pass through."""
  if frames.dtype == jnp.uint8:
    return frames.astype(jnp.float32) / 127.5 - 1.0
  return frames


def count_params(tree: PyTree) -> int:
  """Number of scalars in a pytree of arrays or ShapeDtypeStructs."""
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))
