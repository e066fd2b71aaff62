# HistoGen Lab app image. Build: docker build -t histogen-lab .
# Run:   docker run --init -p 8501:8501 -v $PWD/runs:/app/runs -v $PWD/data:/app/data histogen-lab
# (--init reaps the training processes the app starts; runs/ and data/ are volumes so nothing is lost.)
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HISTOGEN_RUNS=/app/runs \
    HISTOGEN_DATA=/app/data

RUN apt-get update \
    && apt-get install -y --no-install-recommends curl tini \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .
RUN mkdir -p /app/runs /app/data

EXPOSE 8501
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD curl --fail http://localhost:8501/_stcore/health || exit 1

ENTRYPOINT ["tini", "--"]
CMD ["streamlit", "run", "app.py", "--server.address=0.0.0.0", "--server.port=8501", "--server.headless=true"]
