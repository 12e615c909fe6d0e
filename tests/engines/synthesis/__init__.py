"""Tests of resources.synthesis."""
