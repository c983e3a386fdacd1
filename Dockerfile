# Image of the matcher worker and the simulator (both are the `tickmatch` console script).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY stream ./stream
COPY agents ./agents
COPY matching ./matching
COPY market ./market
COPY outcomes ./outcomes
RUN pip install . && useradd --create-home tickmatch
USER tickmatch
ENV TICKMATCH_DATA_DIR=/home/tickmatch/data NUMBA_CACHE_DIR=/home/tickmatch/.numba
ENTRYPOINT ["tickmatch"]
CMD ["worker"]
