.PHONY: run test lint format

# Run the product on its embedded default (SQLite): http://127.0.0.1:8000/
run:
	scripts/run.sh

# The whole test suite: lint, types, SQLite, PostgreSQL, browser, coverage gate.
test:
	scripts/test.sh

lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy .

format:
	.venv/bin/ruff check --fix . && .venv/bin/ruff format .
