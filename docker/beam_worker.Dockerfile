# Worker image for data preparation on Apache Beam (Dataflow, Flink, Spark): Beam's own
# Python 3.11 SDK image, whose /opt/apache/beam/boot entrypoint starts the SDK worker, plus
# this package and MediaPipe (lip landmarks; its wheel carries the face models). Build it
# from the repository root, with the same code and Beam version as the launching machine:
#
#   docker build -f docker/beam_worker.Dockerfile -t IMAGE .
#   docker push IMAGE
#
# Not built or run on the development machine (it has no Docker): untested as an image.
ARG BEAM_VERSION=2.77.0
FROM apache/beam_python3.11_sdk:${BEAM_VERSION}

WORKDIR /opt/modeformer_jax
COPY setup.py ./
COPY modeformer_jax modeformer_jax
COPY data_prep data_prep
# A regular (not editable) install: the image holds its own copy of the code.
RUN pip install --no-cache-dir ".[beam]" \
 && pip install --no-cache-dir --no-deps mediapipe==0.10.21
