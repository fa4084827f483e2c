-- carelog tlog-tiles tables: the stored hashes of each log's Merkle tree, as
-- C2SP tlog-tiles hash tiles. Created by the tiles package on start (CREATE
-- TABLE IF NOT EXISTS); safe to apply again.

-- How far the tiles of each log go. Tiles, bundles and proofs are served up
-- to size, whose root was checked against a signed checkpoint. Hashes are
-- stored up to pending (at least size): a catch-up in progress, resumed from
-- there, and not served until a checkpoint's root confirms it.
CREATE TABLE IF NOT EXISTS carelog_tile_state (
  origin   VARCHAR(255) NOT NULL,
  size     BIGINT UNSIGNED NOT NULL,
  root     VARBINARY(32) NOT NULL,
  pending  BIGINT UNSIGNED NOT NULL,
  PRIMARY KEY (origin)
);

-- Hash tile tile_index of level tile_level: the concatenated 32-byte hashes,
-- 8192 bytes once full (and then never changed), fewer while it is the
-- rightmost, growing tile of its level. A partial tile of width W is the
-- first 32*W bytes.
CREATE TABLE IF NOT EXISTS carelog_tile_hashes (
  origin      VARCHAR(255) NOT NULL,
  tile_level  TINYINT UNSIGNED NOT NULL,
  tile_index  BIGINT UNSIGNED NOT NULL,
  hashes      VARBINARY(8192) NOT NULL,
  PRIMARY KEY (origin, tile_level, tile_index)
);
