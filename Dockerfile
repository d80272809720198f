# syntax=docker/dockerfile:1
# One image for every role of the compose deployment: the tuner server (`tuner serve`), the
# Ray head, the Ray workers, and the MLflow tracking server.
#
# Base: python:3.11-slim, not a CUDA image. PyTorch's default Linux x86_64 wheel on PyPI is the
# CUDA build and carries its own CUDA runtime and cuDNN (the nvidia-* wheels), so a slim Python
# image runs on GPUs as long as the host has the NVIDIA driver and the container toolkit
# (compose's `deploy.resources.reservations.devices` hands the GPUs to the container).
# Python 3.11 and the Ray version are pinned because every node of a Ray cluster, and every
# driver that joins it, must run the same Python minor version and the same Ray version.
#
# Build arguments (docker compose build --build-arg NAME=VALUE, or podman build):
#   BASE_IMAGE         a Debian-based image with Python 3.11 and venv (default python:3.11-slim)
#   RAY_VERSION        match an existing cluster's Ray
#   TORCH_REQUIREMENT  e.g. "torch==2.13.0+cpu" for a CPU-only image (with PIP_OPTIONS naming
#                      where that wheel is: --extra-index-url https://download.pytorch.org/whl/cpu
#                      or --find-links DIR)
#   PIP_OPTIONS        extra pip options for every install (--cert, --find-links, an index)
#   EXTRAS             the package's optional extras to install, comma-separated (default
#                      "rl": gymnasium, for the cartpole-reinforce task; "" for none)

ARG BASE_IMAGE=python:3.11-slim

# The runtime dependencies, read from pyproject.toml's [project] table and the EXTRAS: the slow
# layer below (torch, Ray, MLflow) is rebuilt only when they change, not on every edit of
# pyproject.toml.
FROM ${BASE_IMAGE} AS requirements
ARG EXTRAS=rl
COPY pyproject.toml /pyproject.toml
RUN EXTRAS="$EXTRAS" python3 -c "import os, tomllib; p = tomllib.load(open('/pyproject.toml', 'rb'))['project']; deps = p['dependencies'] + [d for e in filter(None, os.environ['EXTRAS'].split(',')) for d in p['optional-dependencies'][e.strip()]]; open('/requirements.txt', 'w').write(chr(10).join(deps) + chr(10))"

# The image: one stage, the virtual environment built where it runs (a second stage would copy
# its 2 GB once more on every rebuild). Layers from the slowest-changing to the fastest.
FROM ${BASE_IMAGE}
# ray[default] adds the dashboard (port 8265) and the node agents; ray[tune] is the package's own
# requirement.
ARG RAY_VERSION=2.60.0
ARG TORCH_REQUIREMENT=torch==2.13.0
ARG PIP_OPTIONS=
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# The dependencies, and the build backend (the project is installed without build isolation:
# one set of pip options, no second download of setuptools). pip's download cache lives in a
# build cache mount.
COPY --from=requirements /requirements.txt /tmp/requirements.txt
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install $PIP_OPTIONS "setuptools>=69" "$TORCH_REQUIREMENT" \
      "ray[default,tune]==${RAY_VERSION}" -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

LABEL org.opencontainers.image.title="tuner" \
      org.opencontainers.image.description="Hyperparameter tuning of torch.optim optimizers on Optuna, Ray and MLflow"
# A non-root user; /mlartifacts is created here so a fresh named volume inherits its owner.
RUN useradd --create-home --uid 1000 --shell /usr/sbin/nologin tuner \
 && mkdir -p /mlartifacts /home/tuner/.tuner \
 && chown tuner:tuner /mlartifacts /home/tuner/.tuner
COPY deploy/tuner-entrypoint.sh /usr/local/bin/tuner-entrypoint
RUN chmod 0755 /usr/local/bin/tuner-entrypoint

# Then the project itself, without touching its dependencies.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY tuner ./tuner
COPY workers ./workers
COPY search_spaces ./search_spaces
RUN pip install $PIP_OPTIONS --no-deps --no-build-isolation . \
 && pip check \
 && cd / && rm -rf /src

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    TUNER_HOME=/home/tuner/.tuner \
    RAY_USAGE_STATS_ENABLED=0

USER tuner
WORKDIR /home/tuner

EXPOSE 8000
# Meaningful for the default command (the tuner server); docker-compose.yml gives the Ray and
# MLflow services their own checks. The slim image has no curl: Python's urllib does the probe.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=5 \
  CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://localhost:8000/healthz', timeout=4)"]

# No secrets in the image: TUNER_API_TOKEN, database passwords and the Ray token come from the
# environment at run time (docker-compose.yml reads them from .env).
ENTRYPOINT ["tuner-entrypoint"]
CMD ["tuner", "serve", "--host", "0.0.0.0", "--port", "8000"]
