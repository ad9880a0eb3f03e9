# Biogram Messaging. `make run` serves; `make test` runs the whole suite. See README.md.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
HOST   ?= 127.0.0.1
PORT   ?= 8000
export HOST PORT

PG_URL_BASE ?= postgres://postgres@127.0.0.1:5432
TEST_REDIS  ?= redis://127.0.0.1:6379/15


.PHONY: run dev cluster test test-fast test-default test-postgres lint format services install install-dev audit clean distclean browser axe js nginx screenshots

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.installed: $(PY) requirements.txt
	$(PY) -m pip install -q -r requirements.txt
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

## run: install, migrate, and serve HTTP + WebSocket on $HOST:$PORT with uvicorn.
run: install
	@$(PY) manage.py preflight
	$(PY) manage.py migrate --noinput
	$(PY) manage.py collectstatic --noinput -v0
	exec $(PY) manage.py serve --host $(HOST) --port $(PORT)

## cluster: N processes (default 2) on PORT, PORT+1, … sharing DATABASE_URL and REDIS_URL (default:
## this machine's PostgreSQL database `biogram`, created if missing, and Redis db 0); NGINX=1 puts
## nginx in front on NGINX_PORT (8080); REDIS_CLUSTER=1 shares a Redis Cluster instead: the one
## REDIS_CLUSTER_NODES names, or three masters and three replicas started on REDIS_CLUSTER_PORT
## (7000) to +5. Foreground; Ctrl-C stops all. docs/deployment.md.
cluster: install $(if $(and $(DATABASE_URL),$(REDIS_URL)),,services) $(if $(filter 1,$(NGINX)),nginx)
	N="$(N)" NGINX="$(NGINX)" NGINX_PORT="$(NGINX_PORT)" REDIS_CLUSTER="$(REDIS_CLUSTER)" \
	REDIS_CLUSTER_PORT="$(REDIS_CLUSTER_PORT)" deploy/cluster.sh

## dev: Django's autoreloading runserver (daphne), for development only.
dev: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py runserver $(HOST):$(PORT)

lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install-dev
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

## services: start the machine's PostgreSQL and Redis if they are down.
services:
	@pg_isready -q -h 127.0.0.1 -p 5432 || pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start
	@for i in $$(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
	@redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 || redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
	@for i in $$(seq 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 1; done

## test-fast: everything but the live, cluster and browser tests, on the embedded default (about a minute);
## the client package's type checks are among them (`js` installs its pinned typescript).
test-fast: install-dev js
	env -u DATABASE_URL -u REDIS_URL $(PY) -m pytest -n 2 -m "not live and not cluster and not browser"

## test: lint, then the suite on the embedded default and on PostgreSQL + Redis, the two passes
## side by side (most of a test's time is a socket or a process waiting: one pass alone keeps
## the two cores a third busy). The second pass runs all but the Chromium tests of the page,
## which run once, in the first: they test the page, and every REST and socket path they use is
## tested on both; and but the tests marked engine_independent, which prove nothing a database
## or channel layer changes. Each pass's output comes whole when it ends (-O); TEST_JOBS=1 runs
## them one after the other.
TEST_JOBS ?= 2
test: lint install-dev services browser nginx axe js
	$(MAKE) --no-print-directory -j$(TEST_JOBS) -O test-default test-postgres

test-default: install-dev browser axe js
	env -u DATABASE_URL -u REDIS_URL $(PY) -m pytest

test-postgres: install-dev services browser nginx axe js
	DATABASE_URL=$(PG_URL_BASE)/biogram_ci_$$$$ REDIS_URL=$(TEST_REDIS) \
	CHANNEL_LAYER_PREFIX=biogram-test-$$$$ $(PY) -m pytest --create-db -m "not browser and not engine_independent"

## browser: Debian's Chromium for the browser tests (Playwright drives it; it downloads no browser).
browser:
	@test -x /usr/bin/chromium || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

## axe: axe-core (npm, pinned in messaging/tests/axe/package-lock.json) for the browser tests' accessibility audits.
AXE_DIR := messaging/tests/axe
$(AXE_DIR)/node_modules/.installed: $(AXE_DIR)/package-lock.json
	cd $(AXE_DIR) && npm ci --no-audit --no-fund --loglevel=error
	touch $@
axe: $(AXE_DIR)/node_modules/.installed

## js: the client package's dev dependencies (typescript, ws, @types; pinned in clients/js/package-lock.json),
## installed again only when the lock changes, for its type checks and Node tests (messaging/tests/test_js_client.py).
JS_DIR := clients/js
$(JS_DIR)/node_modules/.installed: $(JS_DIR)/package-lock.json
	cd $(JS_DIR) && npm ci --no-audit --no-fund --loglevel=error
	touch $@
js: $(JS_DIR)/node_modules/.installed

## nginx: Debian's nginx, for `make cluster NGINX=1` and the cluster tests (which skip without it).
nginx:
	@command -v nginx >/dev/null || test -x /usr/sbin/nginx || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light; }

## screenshots: run the browser tests and keep their screenshots in docs/screenshots/.
screenshots: install-dev browser axe
	env -u DATABASE_URL -u REDIS_URL BIOGRAM_SCREENSHOTS=docs/screenshots $(PY) -m pytest -m browser

## audit: the pinned requirements against an advisory database; fails, saying so, when it could not
## check every package (pip-audit alone "passes" having audited nothing when offline).
audit: install-dev
	$(PY) -m biogram.audit requirements.txt

## bench: benchmark the server against the Channels tutorial consumer (bench/README.md).
## Pass options with BENCH_ARGS, e.g. make bench BENCH_ARGS="--config pg2 --output out.json".
.PHONY: bench
bench: install-dev
	$(PY) bench/run.py $(BENCH_ARGS)

## clean: what `make` builds (the virtualenv, collected static files, caches, node_modules);
## keeps var/ (the database and the secret key). distclean removes var/ too, saying so.
clean:
	rm -rf $(VENV) staticfiles .pytest_cache .ruff_cache .hypothesis
	find . -name node_modules -type d -prune -exec rm -rf {} +

distclean: clean
	@echo "distclean: deleting var/ (the SQLite database $$(ls var/db.sqlite3 2>/dev/null), the secret key and the VAPID key: logins and tokens end)"
	rm -rf var
