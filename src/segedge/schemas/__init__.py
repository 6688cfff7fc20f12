"""Each family's own checks of ``segedge.json`` (:mod:`segedge.manifest_schema` runs the common ones first)."""
