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

-- Batched sequencing (PREORDERED_LOG trees): the log assigns each entry its
-- index here, durably, before acknowledging it, then hands the entries to
-- Trillian with AddSequencedLeaves. This table is the source of truth for
-- what was acknowledged; on start the sequencer re-sends to Trillian every
-- entry beyond Trillian's tree, so a crash between the two writes loses
-- nothing and leaves no gap.
CREATE TABLE IF NOT EXISTS carelog_leaves (
  origin         VARCHAR(255) NOT NULL,
  leaf_index     BIGINT UNSIGNED NOT NULL,
  identity_hash  VARBINARY(32) NOT NULL,
  leaf_hash      VARBINARY(32) NOT NULL,
  leaf_value     BLOB NOT NULL,
  accepted_at    BIGINT NOT NULL,
  PRIMARY KEY (origin, leaf_index),
  UNIQUE KEY carelog_leaves_identity (origin, identity_hash),
  KEY carelog_leaves_hash (origin, leaf_hash)
);

-- Entries accepted by a replica that does not hold the sequencer lease,
-- waiting for the sequencer to give them an index.
CREATE TABLE IF NOT EXISTS carelog_queue (
  origin         VARCHAR(255) NOT NULL,
  identity_hash  VARBINARY(32) NOT NULL,
  leaf_value     BLOB NOT NULL,
  accepted_at    BIGINT NOT NULL,
  PRIMARY KEY (origin, identity_hash)
);

-- The sequencer lease: only its holder, at its epoch, may assign indices.
-- Every batch is written in a transaction that locks and checks this row,
-- so a replica that lost the lease cannot write a single index.
CREATE TABLE IF NOT EXISTS carelog_sequencer_lease (
  origin      VARCHAR(255) NOT NULL,
  holder      VARCHAR(64) NOT NULL,
  epoch       BIGINT NOT NULL,
  expires_at  BIGINT NOT NULL,
  PRIMARY KEY (origin)
);

-- The latest checkpoint that meets the witness policy, with the witnesses'
-- cosignatures attached: what GET /checkpoint serves.
CREATE TABLE IF NOT EXISTS carelog_cosigned (
  origin    VARCHAR(255) NOT NULL,
  size      BIGINT UNSIGNED NOT NULL,
  note      BLOB NOT NULL,
  PRIMARY KEY (origin)
);
