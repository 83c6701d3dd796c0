# lark_webhooks: signed webhook delivery for Lark workflow events

MODULE_big = lark_webhooks
OBJS = \
	src/functions.o \
	src/http.o \
	src/lark_webhooks.o \
	src/netpolicy.o \
	src/worker.o

EXTENSION = lark_webhooks
DATA = sql/lark_webhooks--1.0.sql
PGFILEDESC = "lark_webhooks - signed webhook delivery for Lark workflow events"

# pg_regress suite: sql/NAME.sql against expected/NAME.out.  It runs in its
# own database, which the worker does not serve, so deliveries stay pending.
REGRESS = api validation payload signing

SHLIB_LINK += -lcurl -lcrypto
PG_CPPFLAGS += -Isrc
PG_CFLAGS += -Wall -Wmissing-prototypes -Werror=vla

# Debian can hold several major versions; build for 15 unless told otherwise.
PG_CONFIG ?= $(firstword $(wildcard /usr/lib/postgresql/15/bin/pg_config) pg_config)
PGXS := $(shell $(PG_CONFIG) --pgxs 2>/dev/null)

# On a fresh machine the server headers arrive with 'make deps'; until then
# only the targets below, which install them first, are available.
ifneq ($(wildcard $(PGXS)),)
include $(PGXS)
endif

.PHONY: deps test demo bench

# Install the Debian packages a fresh machine lacks (needs root).
deps:
	@bash test/deps.sh

# Build, install, start a throwaway cluster and run every suite.
test: deps
	@bash test/run.sh

# A throwaway cluster, a receiver on loopback, real signed deliveries.
demo: deps
	@bash demo/demo.sh

# The benchmark described in bench/README.md.
bench: deps
	@bash bench/run.sh
