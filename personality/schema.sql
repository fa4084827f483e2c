-- carelog personality tables, beside Trillian's own tables in the same database.
-- Applied automatically by carelog-log on start; safe to apply again.

-- The Trillian tree that holds each log (one per origin), so a restart reuses it.
CREATE TABLE IF NOT EXISTS carelog_trees (
  origin    VARCHAR(255) NOT NULL,
  tree_id   BIGINT NOT NULL,
  PRIMARY KEY (origin)
);

-- Every checkpoint the log signed. A row is written, durably, before the
-- checkpoint is published; the log never signs one smaller than, or
-- inconsistent with, the latest row here.
CREATE TABLE IF NOT EXISTS carelog_checkpoints (
  origin      VARCHAR(255) NOT NULL,
  size        BIGINT UNSIGNED NOT NULL,
  root        VARBINARY(32) NOT NULL,
  note        BLOB NOT NULL,
  signed_at   BIGINT NOT NULL,
  PRIMARY KEY (origin, size)
);

-- The latest signed checkpoint per log, updated by compare-and-swap.
CREATE TABLE IF NOT EXISTS carelog_latest (
  origin    VARCHAR(255) NOT NULL,
  size      BIGINT UNSIGNED NOT NULL,
  root      VARBINARY(32) NOT NULL,
  PRIMARY KEY (origin)
);

-- Patient pseudonym -> leaf index, built from the tree by the indexer, so
-- a patient portal can list a patient's events with proofs.
CREATE TABLE IF NOT EXISTS carelog_patient_index (
  origin      VARCHAR(255) NOT NULL,
  pseudonym   VARCHAR(64) NOT NULL,
  leaf_index  BIGINT UNSIGNED NOT NULL,
  PRIMARY KEY (origin, pseudonym, leaf_index)
);

-- How far the indexer has read the tree.
CREATE TABLE IF NOT EXISTS carelog_index_state (
  origin      VARCHAR(255) NOT NULL,
  next_index  BIGINT UNSIGNED NOT NULL,
  PRIMARY KEY (origin)
);
