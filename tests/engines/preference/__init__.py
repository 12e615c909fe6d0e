"""Tests of resources.preference."""
