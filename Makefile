# Wrappers around the inv tasks. Every target installs what it needs first (venv, Debian packages).
# Run as root on the lab host. `make help` lists them.
SHELL := /bin/bash
VENV := .venv
INV := $(VENV)/bin/inv
PYTHON := $(VENV)/bin/python
BUILD := .lab/build
PROMTOOL := .lab/tools/promtool
INVENTORY ?= hosts.yaml
VERSION ?= v1
BINARY ?=
STREAM_BINARY ?=
ARGS ?=

.PHONY: help venv host-deps lab-up lab-status lab-down lab-purge common-setup haproxy-setup haproxy-status \
        api-setup api-deploy backend-api-deploy api-rollback api-status stream-setup stream-deploy stream-rollback \
        stream-status test-failover demo-binaries demo test test-unit bench load keepalived-setup lb-status \
        test-lb-failover test-host-failover test-reload bench-failover bench-lb bench-canary site-setup monitor-setup monitor-status monitor-rules bench-alerts lab-inventory bench-scale bench-inventory bench-remote lock-status lock-release audit inventory-show

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | column -t -s $$'\t'

$(INV): requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements.txt
	touch $(INV)

venv: $(INV) ## Python venv with the pinned Fabric/Invoke set

host-deps: $(PROMTOOL) ## Debian packages the tests and stand-in builds use (haproxy, socat, Go, Rust, make; promtool)
	@command -v haproxy >/dev/null && command -v socat >/dev/null && command -v go >/dev/null && command -v cargo >/dev/null || \
	  { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q haproxy socat golang-go cargo make >/dev/null; }

# promtool for the alert rules' unit tests, taken out of Debian's prometheus package (the version the monitor
# host runs) without installing it: installing would start a Prometheus daemon on this machine.
$(PROMTOOL):
	@mkdir -p $(@D)/deb && rm -f $(@D)/deb/*.deb
	@cd $(@D)/deb && { apt-get download -q prometheus >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null && apt-get download -q prometheus >/dev/null 2>&1; }; }
	dpkg-deb --fsys-tarfile $(@D)/deb/prometheus_*.deb | tar -xO ./usr/bin/promtool > $@.tmp
	@chmod 0755 $@.tmp && mv -f $@.tmp $@ && rm -rf $(@D)/deb

lab-up: venv ## Build/start the local Incus lab (installs Incus, image, containers)
	$(INV) lab.up --inventory $(INVENTORY)

lab-status: venv ## Containers, addresses and active role services
	$(INV) lab.status --inventory $(INVENTORY)

lab-down: venv ## Delete the lab containers
	$(INV) lab.down --inventory $(INVENTORY)

lab-purge: venv ## Delete containers, image, network and pool
	$(INV) lab.down --purge --inventory $(INVENTORY)

common-setup: venv ## Baseline on every host
	$(INV) common.setup --inventory $(INVENTORY) $(ARGS)

haproxy-setup: venv ## Baseline + HAProxy, config validated, reloaded only on change
	$(INV) haproxy.setup --inventory $(INVENTORY) $(ARGS)

haproxy-status: venv ## Pools and server states from the runtime API
	$(INV) haproxy.status --inventory $(INVENTORY)

monitor-setup: venv ## Node exporters everywhere; Prometheus + Alertmanager + alert webhook on the monitor host
	$(INV) monitor.setup --inventory $(INVENTORY) $(ARGS)

monitor-status: venv ## Firing alerts and scrape target health (exit 1 unless both are clean)
	$(INV) monitor.status --inventory $(INVENTORY) $(ARGS)

monitor-rules: venv ## Write the alert rules + scrape jobs for an existing Prometheus into OUT (default reports/monitoring)
	$(INV) monitor.rules --out $(or $(OUT),reports/monitoring) --inventory $(INVENTORY)

keepalived-setup: venv ## keepalived on the balancer pair (lb_vip): VRRP unicast, config checked, reload on change
	$(INV) keepalived.setup --inventory $(INVENTORY) $(ARGS)

lb-status: venv ## Who holds the VIP; VRRP state, priority, keepalived and HAProxy per balancer
	$(INV) lb.status --inventory $(INVENTORY)

METHOD ?= incus
HOST_METHOD ?= stop

test-lb-failover: venv ## Kill the VIP holder (METHOD=incus|process) under load; reports/lb-failover.json + .svg
	@mkdir -p reports
	$(INV) test.lb-failover --method $(METHOD) --inventory $(INVENTORY) --report reports/lb-failover.json \
	  --plot reports/lb-failover.svg $(ARGS)

test-host-failover: venv ## Take the second Incus host out (HOST_METHOD=stop|freeze|cut) under load; reports/host-failover.json + .svg
	@mkdir -p reports
	$(INV) test.host-failover --method $(HOST_METHOD) --inventory $(INVENTORY) --report reports/host-failover.json \
	  --plot reports/host-failover.svg $(ARGS)

test-reload: venv ## Reload HAProxy N times on every balancer under mixed load (ARGS="--reloads N"); reports/reload.json + .svg
	@mkdir -p reports
	$(INV) test.reload --inventory $(INVENTORY) --report reports/reload.json --plot reports/reload.svg $(ARGS)

site-setup: venv ## The whole stack in one parallel play (common, haproxy, api, stream), like site.yml
	$(INV) site.setup --inventory $(INVENTORY) $(ARGS)

inventory-show: venv ## What the inventory loader resolved (ARGS="--graph" or ARGS="--host NAME"), secrets masked
	$(INV) inventory.show --inventory $(INVENTORY) $(ARGS)

lock-status: venv ## The deploy lock: holder, task, sha256, heartbeat (stale?)
	$(INV) lock.status --inventory $(INVENTORY)

lock-release: venv ## Release your own leftover deploy lock (ARGS=--force: any lock)
	$(INV) lock.release --inventory $(INVENTORY) $(ARGS)

audit: venv ## The last deploy events from the balancer's audit trail (ARGS="--last N")
	$(INV) audit --inventory $(INVENTORY) $(ARGS)

api-setup: venv ## veza-api user, dirs, env file, hardened unit
	$(INV) api.setup --inventory $(INVENTORY) $(ARGS)

# The seed's target: build the Go API when its source is here, else deploy BINARY=path.
backend-api-deploy: venv ## Build (veza-backend-api/ if present) or take BINARY=path, then rolling deploy
	@if [ -d veza-backend-api ]; then $(MAKE) -C veza-backend-api build VERSION=$(VERSION) && \
	  $(INV) api.deploy --binary veza-backend-api/bin/veza-api --inventory $(INVENTORY) $(ARGS); \
	elif [ -n "$(BINARY)" ]; then $(INV) api.deploy --binary "$(BINARY)" --inventory $(INVENTORY) $(ARGS); \
	else echo "error: no veza-backend-api/ here; pass BINARY=path/to/veza-api" >&2; exit 2; fi

api-deploy: backend-api-deploy ## Same as backend-api-deploy

api-rollback: venv ## Back to each instance's previous binary, in batches (ARGS="--batch N|P%"), same gates
	$(INV) api.rollback --inventory $(INVENTORY) $(ARGS)

api-status: venv ## Deployed sha256/version, unit and HAProxy state per instance
	$(INV) api.status --inventory $(INVENTORY)

stream-setup: venv ## veza-stream user, dirs, env file, hardened unit
	$(INV) stream.setup --inventory $(INVENTORY) $(ARGS)

stream-deploy: venv ## Rolling deploy of STREAM_BINARY=path to the stream servers
	@[ -n "$(STREAM_BINARY)" ] || { echo "error: pass STREAM_BINARY=path/to/stream-server" >&2; exit 2; }
	$(INV) stream.deploy --binary "$(STREAM_BINARY)" --inventory $(INVENTORY) $(ARGS)

stream-rollback: venv ## Back to each stream server's previous binary
	$(INV) stream.rollback --inventory $(INVENTORY) $(ARGS)

stream-status: venv ## Per stream server: sha256, version, unit, HAProxy state
	$(INV) stream.status --inventory $(INVENTORY)

test-failover: venv ## The Day-19 acceptance gate against the lab
	@mkdir -p reports
	$(INV) test.failover --inventory $(INVENTORY) --report reports/failover.json --plot reports/failover.svg $(ARGS)

RATE ?= 200
DURATION ?= 30
SCENARIO ?= api,hls,ws

load: venv ## Nightly open-model load through HAProxy (RATE, DURATION, SCENARIO); reports/load.json + .svg; exit 99 on a breached threshold
	@mkdir -p reports
	$(INV) test.load --inventory $(INVENTORY) --scenario $(SCENARIO) --rate $(RATE) --duration $(DURATION) \
	  --threshold 'p99<50ms' --threshold 'p90<=20ms' --threshold 'errors<0.1%' --threshold 'api:rate>=100' \
	  --report reports/load.json --plot reports/load.svg $(ARGS)

demo-binaries: venv host-deps ## Build the stand-in API (Go) and stream server (Rust), version VERSION
	@mkdir -p $(BUILD)
	$(PYTHON) scripts/build-demo-api --version $(VERSION) -o $(BUILD)/veza-api-$(VERSION)
	$(PYTHON) scripts/build-demo-stream --version $(VERSION) -o $(BUILD)/stream-server-$(VERSION)

demo: venv lab-up demo-binaries ## The main job on the local lab: lab, HAProxy, API + stream deploys, failover gate
	@mkdir -p reports
	$(INV) haproxy.setup --inventory $(INVENTORY)
	$(INV) api.setup --inventory $(INVENTORY)
	$(INV) api.deploy --binary $(BUILD)/veza-api-$(VERSION) --inventory $(INVENTORY) --report reports/api-deploy.json
	$(INV) stream.setup --inventory $(INVENTORY)
	$(INV) stream.deploy --binary $(BUILD)/stream-server-$(VERSION) --inventory $(INVENTORY) --report reports/stream-deploy.json
	$(INV) haproxy.status --inventory $(INVENTORY)
	@# The monitoring group (hosts.yaml): Prometheus + Alertmanager; the gates then check their alerts.
	@if grep -Eq '^[[:space:]]*monitoring:' $(INVENTORY); then $(INV) monitor.setup --inventory $(INVENTORY); fi
	$(INV) test.failover --inventory $(INVENTORY) --report reports/failover.json --plot reports/failover.svg
	@# A balancer pair (lb_vip in the inventory): its state, then the VIP failover gate.
	@if grep -Eq '^[[:space:]]*lb_vip:[[:space:]]*[0-9]' $(INVENTORY); then \
	  $(INV) lb.status --inventory $(INVENTORY) && \
	  $(INV) test.lb-failover --method incus --inventory $(INVENTORY) --report reports/lb-failover.json \
	    --plot reports/lb-failover.svg; fi

test-unit: venv host-deps ## Unit tests only (no lab)
	$(VENV)/bin/pytest -m "not lab" $(ARGS)

test: venv host-deps lab-up ## Unit + lab integration tests (what CI runs)
	$(VENV)/bin/pytest $(ARGS)

FILE ?= tests/test_deploy_unit.py
N ?= 50

.PHONY: test-repeat
test-repeat: venv ## Run one test file N times in fresh processes and count the failed runs (FILE=..., N=50)
	$(PYTHON) scripts/test_repeat.py --file $(FILE) --runs $(N) $(ARGS)

bench-failover: venv lab-up ## Backend failover per stop method (incus, unit, freeze, drop) at 20 and 200 req/s: DOWN, failed GETs, POSTs caught, WebSocket
	$(PYTHON) scripts/bench_failover.py $(INVENTORY)

bench-canary: venv lab-up ## Canary figures: good / 500s / slow / crashing builds, default and 5 s intervals, under load through the VIP
	$(PYTHON) scripts/bench_canary.py $(INVENTORY)

bench-lb: venv lab-up ## VIP failover per advert interval (1, 0.5, 0.3 s) and kill method, per client kind; 60 s CPU saturation -> VRRP state changes; 6 config-changing haproxy.setup runs under mixed load
	$(PYTHON) scripts/bench_lb_failover.py $(INVENTORY)

# The ansible-inventory bench-inventory compares with: ANSIBLE_VENV=DIR (a venv holding ansible-core 2.19.14, kept
# outside the repo: python3 -m venv DIR && DIR/bin/pip install ansible-core==2.19.14), else ansible-inventory on PATH.
ANSIBLE_VENV ?=
bench-inventory: venv ## inventory.show vs ansible-inventory --list: 2,000 hosts, 50 groups, group_vars folders, vault (ANSIBLE_VENV=DIR; no lab)
	ANSIBLE_INVENTORY="$(if $(ANSIBLE_VENV),$(ANSIBLE_VENV)/bin/ansible-inventory,$$ANSIBLE_INVENTORY)" $(PYTHON) scripts/bench_inventory.py $(ARGS)

bench-alerts: venv lab-up ## Alert latencies: stop a backend, a stream server, a balancer, keepalived on both (ROUNDS, default 1)
	$(PYTHON) scripts/bench_alerts.py $(INVENTORY) $(or $(ROUNDS),1)

bench: venv lab-up ## Start-up, haproxy.setup and site.setup vs Ansible (fresh/no-op), deploy phases for a 20 MB binary, remote Incus vs local
	scripts/bench_startup.sh
	$(PYTHON) scripts/bench_ansible.py
	$(PYTHON) scripts/bench_site.py
	$(PYTHON) scripts/bench.py
	$(PYTHON) scripts/bench_remote.py

bench-remote: venv lab-up ## One command local API / remote CLI / remote API (500 in a loop, hangs counted); no-op site.setup a third remote vs all local
	$(PYTHON) scripts/bench_remote.py

API_INSTANCES ?= 12
SCALE_INVENTORY ?= .lab/hosts-$(API_INSTANCES).yaml

lab-inventory: venv ## Write SCALE_INVENTORY: INVENTORY with API_INSTANCES (default 12) API instances
	$(PYTHON) scripts/lab_inventory.py --from $(INVENTORY) --api-instances $(API_INSTANCES) -o $(SCALE_INVENTORY)

bench-scale: lab-inventory ## Pools of 12: setup over 2/6/12 instances, deploys at batch 1/25%/50%, min UP, failed requests
	$(INV) lab.up --inventory $(SCALE_INVENTORY)
	$(INV) site.setup --inventory $(SCALE_INVENTORY)
	$(PYTHON) scripts/bench_scale.py --inventory $(SCALE_INVENTORY)
