# HF Lab — `make run` starts the lab, `make test` runs the whole suite, `make bench` the benchmarks.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cksum requirements.txt | cut -d' ' -f1)
PORT   ?= 8501
ADDRESS ?= 127.0.0.1

.PHONY: setup run test test-long test-core test-research test-bench mutants bench bench-papers bench-autoencoders \
	bench-rnn-cost bench-curvature bench-class bench-peers research report clean

setup: $(STAMP)

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# uv installs the pinned set in parallel (~10 s against pip's ~30 s on 2 cores); pip when uv
	@# cannot be installed or cannot reach the index
	($(PY) -m pip install --disable-pip-version-check -q --no-compile uv && \
		$(VENV)/bin/uv pip install -q --python $(PY) -r requirements.txt) || \
		$(PY) -m pip install --disable-pip-version-check -q --no-compile -r requirements.txt
	@# bytecode compiled on every core (pip compiles on one: 54 s against 28 + 16 s on 2 cores);
	@# a few files the packages ship as examples do not compile, which changes nothing
	-$(PY) -m compileall -q -j 0 $(VENV)/lib >/dev/null 2>&1
	rm -f $(VENV)/.installed-* && touch $(STAMP)

run: $(STAMP)
	@case "$(ADDRESS)" in 127.*|localhost|::1) ;; *) echo "WARNING: HF Lab has no login —" \
		"anyone who can reach $(ADDRESS):$(PORT) can start runs and read every stored run;" \
		"for a class, keep it on loopback behind the password-asking proxy of" \
		"examples/class/Caddyfile (README: A lab for a class)." >&2 ;; esac
	$(PY) -m streamlit run app.py --server.port $(PORT) --server.address $(ADDRESS) \
		--server.headless true --browser.gatherUsageStats false

# two workers, one file each at a time (a file's tests share its fixtures and servers): compiling
# is single-threaded, so the two cores overlap one file's compilation with another's
test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile --ignore=tests/long tests

# long checks (minutes each): the lab solving a pathological RNN problem through the CLI; the
# class recipe (Caddy in front of the lab; needs Debian's caddy, skipped without it); four browser
# sessions at once on one server
test-long: $(STAMP)
	$(PY) -m pytest -q tests/long

# the numerical core (no app, no browser), with 4 host devices for the in-process mesh test
CORE_TESTS = tests/test_losses.py tests/test_models.py tests/test_cg.py tests/test_hf.py \
	tests/test_manual.py tests/test_core_parallel.py tests/test_curvature.py \
	tests/test_transform.py tests/test_spectra.py tests/test_kfac.py tests/test_modern_optimizers.py \
	tests/test_density.py
# (two workers, one file each at a time: compiling is single-threaded, so the two cores overlap
# one file's compilation with another's)
test-core: $(STAMP)
	XLA_FLAGS=--xla_force_host_platform_device_count=4 $(PY) -m pytest -q -n 2 --dist loadfile \
		$(CORE_TESTS)

# the studies' own code (research/: tiny versions of each study's measurement), not the product
test-research: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile research/tests

# the benchmark tooling: the report's tables and figures from records, the GPU script
test-bench: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile benchmarks/tests

# each mutant of tests/mutation/mutants.py against the core tier, in a copy of the tree
mutants: $(STAMP)
	$(PY) tests/mutation/run.py

bench: $(STAMP)
	$(PY) -m benchmarks $(if $(FULL),--full,)

# paper-scale RNN problems (T = 20 … 200, 3 seeds, 30 minutes a run: tens of hours on 2 cores);
# HFLAB_PAPERS_PROBLEMS / _T / _SEEDS / _OPTIMIZERS / _BUDGET pick a subset, _SETTINGS (JSON of
# RunConfig fields) runs a labelled variant
bench-papers: $(STAMP)
	$(PY) -m benchmarks --only rnn_papers

# deep autoencoders at real budgets (CURVES-like and MNIST, HF / Adam / momentum, 3 seeds,
# 10 minutes a run: 3 hours on 2 cores); HFLAB_AE_TASKS / _SEEDS / _OPTIMIZERS / _BUDGET / _SETTINGS
bench-autoencoders: $(STAMP)
	$(PY) -m benchmarks --only autoencoder_papers

# HF Lab against the two HF peers, one core each (~10 minutes): hessianfree from PyPI, and
# PyTorchHessianFree from a checkout named by HFLAB_PYTORCH_HF_SOURCE (left out without it)
bench-peers: $(STAMP)
	$(PY) -m benchmarks --only peer

# where an RNN CG iteration's time goes, against the matmul roofline (T = 20 and 100, ~3 minutes)
bench-rnn-cost: $(STAMP)
	$(PY) -m benchmarks --only rnn_cost

# the curvature instrument: SLQ density cost at 10³…10⁶ parameters, and the edge of stability
bench-curvature: $(STAMP)
	$(PY) -m benchmarks --only curvature_instrument

# a class on one server: 1, 4, 8, 16 browser sessions starting comparisons at once (chromium)
bench-class: $(STAMP)
	$(PY) -m benchmarks --only class_load

# a study: make research STUDY=gradient_signal (records/<study>.jsonl, then the report)
research: $(STAMP)
	$(PY) -m research --only $(STUDY)

# the generated report (docs/benchmarks.md, docs/studies/, the README's results summary)
report: $(STAMP)
	$(PY) -m benchmarks.report

clean:
	rm -rf $(VENV) runs .pytest_cache
