"""Asset tests: assets materialized directly with test resources; code versions of each setting."""
