"""Tests of resources.generation (and resources.quiet)."""
