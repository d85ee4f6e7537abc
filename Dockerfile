# One image for every Embedding Studio service (and the MLflow server of docker-compose.yml).
# TORCH_SPEC picks the torch build: the CPU wheel by default; "torch==2.13.0" from the CUDA index
# (e.g. --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128) for trainer images on GPU nodes.
FROM python:3.11-slim
ARG TORCH_SPEC=torch==2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 ES_STATE_DIR=/var/lib/embedding-studio ES_PLUGINS_PATH=/app/plugins
WORKDIR /app
RUN pip install --index-url "$TORCH_INDEX" "$TORCH_SPEC"
COPY pyproject.toml README.md constraints.txt ./
COPY services ./services
COPY plugins ./plugins
RUN pip install -c constraints.txt . && mkdir -p "$ES_STATE_DIR" && chown nobody "$ES_STATE_DIR"
USER nobody
ENTRYPOINT ["es"]
