# One image for the store and the workers (`corral store serve`, `corral worker`).
#   docker build -t corral .                          # onnxruntime backend (CPU), numpy as the reference
#   docker build -t corral-gpu --build-arg EXTRAS=torch .   # adds torch (its wheels bring CUDA)
FROM python:3.11-slim

ARG EXTRAS=""
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CORRAL_CACHE_DIR=/cache

WORKDIR /app
# Only what the package needs: a code change does not invalidate the dependency layer below
# more than it must, and tests, benchmarks and local state stay out (see .dockerignore).
COPY pyproject.toml README.md ./
COPY engine ./engine
COPY scheduler ./scheduler
COPY workers ./workers
COPY store ./store
RUN pip install ".${EXTRAS:+[$EXTRAS]}"

# Run unprivileged; the volumes the compose file mounts are created owned by this user.
RUN useradd --create-home --uid 10001 corral \
    && mkdir -p /data /models /cache \
    && chown corral:corral /data /models /cache
USER corral

ENTRYPOINT ["corral"]
CMD ["--help"]
