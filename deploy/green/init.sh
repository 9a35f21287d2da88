#!/usr/bin/env bash
# Green: the same schema as blue, empty; blueshift's backfill copies blue's rows.
set -euo pipefail
pgbench -i -I dtp -q "$POSTGRES_DB"
psql -v ON_ERROR_STOP=1 -d "$POSTGRES_DB" -c \
    "ALTER TABLE pgbench_history ADD COLUMN id bigserial PRIMARY KEY"
