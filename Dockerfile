# Pulse: one image for the API, the worker and the one-shot migration.
FROM python:3.11-slim AS build
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy
RUN pip install --no-cache-dir uv==0.13.9
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY pulse ./pulse
COPY sql ./sql
RUN uv sync --frozen --no-dev --no-editable

FROM python:3.11-slim
RUN useradd --system --uid 10001 pulse
COPY --from=build /app/.venv /app/.venv
ENV PATH="/app/.venv/bin:$PATH" PULSE_HTTP_HOST=0.0.0.0 PULSE_HTTP_PORT=8000
USER pulse
WORKDIR /home/pulse
EXPOSE 8000
ENTRYPOINT ["pulse"]
CMD ["api"]
