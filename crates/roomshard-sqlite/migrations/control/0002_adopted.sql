-- Which of a room's dedicated resources are a customer's own (bring your own): roomshard uses
-- them but never creates or deletes them. Three flags, one column each, all off for rows from
-- before this migration (everything they name was created by roomshard).
ALTER TABLE roomshard_placements ADD COLUMN adopted_shard INTEGER NOT NULL DEFAULT 0 CHECK (adopted_shard IN (0, 1));
ALTER TABLE roomshard_placements ADD COLUMN adopted_bucket INTEGER NOT NULL DEFAULT 0 CHECK (adopted_bucket IN (0, 1));
ALTER TABLE roomshard_placements ADD COLUMN adopted_key INTEGER NOT NULL DEFAULT 0 CHECK (adopted_key IN (0, 1));
