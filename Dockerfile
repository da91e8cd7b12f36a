# The Tether worker, console and CLI image.
FROM python:3.11.7-slim
WORKDIR /app
COPY constraints.txt pyproject.toml README.md ./
COPY tether ./tether
COPY workflows ./workflows
COPY activities ./activities
COPY governance ./governance
COPY verification ./verification
COPY worker.py ./
RUN pip install --no-cache-dir -c constraints.txt . \
    && useradd --system --uid 10001 --home /var/lib/tether tether \
    && mkdir -p /var/lib/tether && chown tether /var/lib/tether
# The app the stack runs: the accounts-payable example, declared in tether.toml ([app]).
COPY examples ./examples
COPY tether.toml ./
USER tether
CMD ["tether", "worker"]
