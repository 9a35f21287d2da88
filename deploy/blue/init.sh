#!/usr/bin/env bash
# Blue's application: pgbench's tables with rows, run once by the postgres image at first start.
set -euo pipefail
pgbench -i -s 5 -q --foreign-keys "$POSTGRES_DB"
# pgbench_history has no key: give it one, so that its UPDATE and DELETE could be replicated.
psql -v ON_ERROR_STOP=1 -d "$POSTGRES_DB" -c \
    "ALTER TABLE pgbench_history ADD COLUMN id bigserial PRIMARY KEY"
