# One image for every service of docker-compose.yml (web, workers, corpus, migrate).
# Debian packages: WordNet and the offline image web's sources; Python 3.11 with the pinned
# PyTorch build first, then the project (the same two pip lines as scripts/setup.sh).
FROM python:3.11-slim-bookworm

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    TOKENIZERS_PARALLELISM=false \
    IE_DATA_DIR=/data

RUN apt-get update -q \
 && apt-get install -y -q --no-install-recommends \
      wordnet-base wordnet-sense-index openclipart-png openclipart-svg tuxpaint-stamps-default \
      nodejs npm \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY ie_engine ie_engine
COPY app app
COPY worker worker
RUN python -m pip install -q --upgrade pip \
 && python -m pip install -q torch==2.14.1 torchvision==0.29.1 \
 && python -m pip install -q -e .

COPY alembic.ini package.json package-lock.json ./
COPY migrations migrations
COPY templates templates
COPY static static
COPY scripts scripts
RUN bash scripts/vendor-static.sh

VOLUME ["/data"]
EXPOSE 8000
CMD ["uvicorn", "app.main:create_app", "--factory", "--host", "0.0.0.0", "--port", "8000"]
