"""The one place partitions are defined: one per domain listed in domains.yaml."""

import dagster as dg

from reer_assets.lib.domains import domain_names

domain_partitions = dg.StaticPartitionsDefinition(domain_names())
