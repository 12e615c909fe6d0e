"""Tests of resources.influence."""
