# SalUn Lab. `make app` installs everything and starts the app; `make test` installs everything and runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install app warm test browser fashion-mnist bench bench-app clean

install: $(VENV)/.installed fashion-mnist

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

# The server starts at once; the warm store (core/warm.py: Retrain and SalUn for every digit, the Diffusion
# before-grid) fills in the background at low priority, the default digit first, and stops with the app.
app: install
	@nice -n 19 $(BIN)/python -m core.cli warm --quiet & warm=$$!; trap 'kill $$warm 2>/dev/null' EXIT INT TERM; \
		$(BIN)/streamlit run app.py

# Compute the warm store now (about 4 min on a quiet 2-core machine; what is stored already is skipped).
warm: install
	$(BIN)/python -m core.cli warm

# The end-to-end test drives Debian's Chromium; install it when it is missing and we may.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
		echo "chromium not installed: the browser test will be skipped"

# Full Fashion-MNIST (70,000 images) ships as Debian's dataset-fashion-mnist; install it when it is missing and we may.
fashion-mnist:
	@[ -f /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz ] || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null; } || \
		echo "dataset-fashion-mnist not installed: --dataset fashion_mnist needs --data-root (or SALUN_DATA_ROOT)"

test: install browser
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python bench/bench_mask.py
	$(BIN)/python bench/bench_classification.py
	$(BIN)/python bench/bench_classwise_all.py
	$(BIN)/python bench/bench_load.py
	$(BIN)/python bench/bench_generation.py

# What a visitor waits for, in a real browser on the real server, and the CLI's SalUn / Retrain time ratio.
bench-app: install browser
	$(BIN)/python bench/bench_app.py

clean:
	rm -rf $(VENV) .pytest_cache
