# One image for every Pooch Predictor service: `docker run <image> python -m services.<name>`
# (the default command runs the collector; compose and the Helm chart set the command per service).
#
# Two stages: the builder resolves the pinned dependencies (constraints.txt) into a virtualenv and
# installs the project as a wheel; the final stage copies only that virtualenv, so no pip cache,
# compiler or build backend ships. No HEALTHCHECK: the orchestrator probes /healthz and /readyz
# (compose healthchecks and Kubernetes probes), which know the service's port.
# Linted by hadolint in tests/deploy/test_dockerfile.py.

# Exact tag; CI that can reach a registry should pin the digest as well (docs/operations.md).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/pooch
# Dependencies first: this layer is reused until pyproject.toml or constraints.txt change. Only
# the runtime dependencies of pyproject.toml, at the versions constraints.txt pins (the dev tools
# that constraints.txt also pins stay out of the image).
COPY pyproject.toml constraints.txt README.md ./
RUN python -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"], sep="\n")' > runtime.txt \
 && /opt/pooch/bin/pip install -c constraints.txt -r runtime.txt
COPY schemas/ schemas/
COPY libs/ libs/
COPY services/ services/
COPY tooling/ tooling/
COPY sniffable/ sniffable/
# --no-deps: every dependency is already installed at its pinned version above.
RUN /opt/pooch/bin/pip install --no-deps . \
 && /opt/pooch/bin/python -m compileall -q /opt/pooch/lib

FROM ${PYTHON_IMAGE}
# LightGBM's library links libgomp (OpenMP); nothing else is added to the base.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1=12.2.0-14+deb12u1 \
 && rm -rf /var/lib/apt/lists/*
# A fixed numeric uid, so Kubernetes' runAsNonRoot can verify it without a passwd lookup.
RUN groupadd --system --gid 10001 pooch \
 && useradd --system --uid 10001 --gid pooch --no-create-home --home-dir /nonexistent pooch
COPY --from=build /opt/pooch /opt/pooch
ENV PATH=/opt/pooch/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    POOCH_LOG_FORMAT=json
WORKDIR /tmp
USER 10001:10001
EXPOSE 8001 8002 8003 8004 8005
CMD ["python", "-m", "services.collector"]
