# AI4Life-MDC24 Grand Challenge algorithm: a W2S U-Net denoiser (entrypoint: submission/inference.py).
#
# `make docker-build MODEL=...` first writes build/submission/context/ (a wheelhouse, the project wheel and
# the packaged model with its manifest), then builds this file with the repository root as context (see
# .dockerignore: nothing else is sent). Once that folder exists, a plain
# `docker build --platform=linux/amd64 -t NAME .` builds the same image. No step needs a package index.
#
# BASE_IMAGE: a PyTorch CUDA runtime, so the challenge's T4 GPU is used. Machines that cannot reach a
# registry build a local Debian base (debootstrap + python3) instead and put a CPU torch in the wheelhouse.
ARG BASE_IMAGE=pytorch/pytorch:2.7.0-cuda12.8-cudnn9-runtime
FROM --platform=linux/amd64 ${BASE_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Runtime dependencies (submission/requirements.txt) into a venv that also sees the base image's packages,
# so a base's CUDA torch is kept. The copied requirements.txt lists the wheelhouse's files and checksums:
# this layer is rebuilt exactly when the wheels change. The wheels are bind-mounted, never stored in a layer.
COPY build/submission/context/requirements.txt /opt/w2s/requirements.txt
RUN --mount=type=bind,source=build/submission/context/wheels,target=/opt/w2s/wheels \
    groupadd -r user && useradd -m --no-log-init -r -g user user \
    && python3 -m venv --system-site-packages /opt/venv \
    && /opt/venv/bin/pip install --no-index --find-links /opt/w2s/wheels -r /opt/w2s/requirements.txt

# The project without its dependencies (only the inference path runs here), then the model. The self-check
# verifies every model file against the manifest's checksums and runs the model on a synthetic stack, so a
# missing or corrupt model fails this build instead of a challenge job.
COPY build/submission/context/dist/ /opt/w2s/dist/
COPY build/submission/context/model/ /opt/w2s/model/
RUN /opt/venv/bin/pip install --no-index --no-deps /opt/w2s/dist/*.whl \
    && /opt/venv/bin/python -m submission.inference --self-check --model-dir /opt/w2s/model

ARG MODEL_SHA256=unknown
ARG MODEL_RUN_ID=unknown
ARG CODE_VERSION=unknown
LABEL org.opencontainers.image.title="w2s-denoise: AI4Life-MDC24 denoising algorithm" \
      w2s.model.sha256="${MODEL_SHA256}" \
      w2s.model.run_id="${MODEL_RUN_ID}" \
      w2s.code_version="${CODE_VERSION}"

ENV PATH=/opt/venv/bin:$PATH \
    W2S_MODEL_DIR=/opt/w2s/model
USER user
WORKDIR /opt/app
ENTRYPOINT ["/opt/venv/bin/python", "-m", "submission.inference"]
