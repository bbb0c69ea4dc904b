-- Which of the host's registered providers (by name) hold a room's dedicated shard, bucket and
-- key, so one host can keep rooms on several database servers and buckets. Rows from before
-- this migration were all on the host's one provider of each kind: 'default'.
ALTER TABLE roomshard_placements ADD COLUMN shards_provider TEXT NOT NULL DEFAULT 'default';
ALTER TABLE roomshard_placements ADD COLUMN media_provider TEXT NOT NULL DEFAULT 'default';
ALTER TABLE roomshard_placements ADD COLUMN keys_provider TEXT NOT NULL DEFAULT 'default';
