"""Packaging for modeformer_jax (ModEFormer lip-sync detection in JAX/Flax)."""
from setuptools import find_packages, setup

setup(
    name="modeformer_jax",
    version="0.1.0",
    description="ModEFormer: modality-preserving audio-visual sync detection in JAX/Flax",
    python_requires=">=3.11",
    packages=find_packages(include=["modeformer_jax*", "data_prep*"]),
    # The shipped GRID detector (model.json, MODEL_CARD.md and the orbax params tree).
    package_data={"modeformer_jax": ["weights/*/*", "weights/*/params/*",
                                     "weights/*/params/*/*", "weights/*/params/*/*/*"]},
    install_requires=[
        "jax>=0.10.2",
        "flax>=0.12.8",
        "optax>=0.2.8",
        "orbax-checkpoint>=0.12.8",
        "ml-collections>=1.1.0",
        "grain>=0.2.18",
        "array-record>=0.8.6",
        # The TFDS builder (data_prep/tfds_builder.py); builds and reads without TensorFlow.
        "tensorflow-datasets>=4.9.10",
        # TFDS 4.9.10 imports it for builders defined in a package but declares it only for
        # Python < 3.9.
        "importlib-resources>=6.0",
        "librosa>=0.11.0",   # the mel filterbank
        "soxr>=0.5",          # audio resampling
        "scipy>=1.13",        # synthetic speech filters
        "msgpack>=1.0",       # record encoding
        "av>=18.1.0",
        "opencv-python-headless>=4.10,<5",  # 5.x wheels dropped the bundled Haar cascades used for face detection
        "numpy>=2.0",
        # MediaPipe 0.10.21 (lip landmarks) is installed by the Makefile with --no-deps: its
        # metadata pins numpy<2 and protobuf<5 but it runs with numpy 2 and protobuf 6.33
        # (not 5.x, not 7.x). These are the dependencies it really needs.
        "protobuf>=6.33,<6.34",
        "attrs>=23.0",
        "flatbuffers>=24.0",
        "matplotlib>=3.9",
        "tqdm>=4.66",
        "absl-py>=2.1",
        "tensorboardX>=2.6.2",
        "prometheus-client>=0.20",   # the live monitor's metrics (modeformer_jax/monitor.py)
    ],
    extras_require={
        "dev": ["pytest>=8.0", "pytest-timeout>=2.3"],
        # Data preparation on Apache Beam (data_prep/beam_prepare.py): DirectRunner, Dataflow,
        # Flink, Spark. Optional: local preparation and everything else run without it.
        "beam": ["apache-beam>=2.77.0"],
        # Deviceless compilation for TPU targets (python -m modeformer_jax.plan --target
        # v5e-256): the TPU compiler, libtpu, for exactly this jax (modeformer_jax.training.aot's
        # JAX_VERSION). The GPU compiler is installed beside it by `make aot`, outside
        # site-packages (a CUDA plugin there would load into every JAX process).
        "aot": ["jax[tpu]==0.10.2"],
    },
)
