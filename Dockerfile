# The Pantau image: `pantau worker` by default; any verb works (`docker run pantau simulate ...`).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    OMP_NUM_THREADS=1

WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY streams ./streams
COPY models ./models
COPY rules ./rules
COPY dashboards ./dashboards
RUN pip install -c constraints.txt . \
    && useradd --system --uid 10001 --home-dir /app pantau

USER pantau
EXPOSE 6066 9464
ENTRYPOINT ["pantau"]
CMD ["worker"]
