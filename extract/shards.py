"""The shard rule, as the extraction stage has always exported it; it lives in ``thinkjepa.shards``
(the core), shared with the encode stage and the pipeline."""

from thinkjepa.shards import parse_part_name, part_name, plan_shards, select_shard, shard_of, validate_shard

__all__ = ["parse_part_name", "part_name", "plan_shards", "select_shard", "shard_of", "validate_shard"]
