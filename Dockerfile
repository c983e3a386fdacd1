# Image of the matcher worker, the trainer and the simulator (all are the `tickmatch` console script).
# The build context is the repository (see .dockerignore); `pip install` builds the wheel from pyproject.toml, so the
# image holds exactly the packages the wheel ships, under the one import root `tickmatch` (no hand-kept folder list).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
COPY . /src
RUN pip install /src && rm -rf /src && useradd --create-home tickmatch
USER tickmatch
WORKDIR /home/tickmatch
ENV TICKMATCH_DATA_DIR=/home/tickmatch/data NUMBA_CACHE_DIR=/home/tickmatch/.numba
ENTRYPOINT ["tickmatch"]
CMD ["worker"]
