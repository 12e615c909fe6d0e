"""Tests of resources.training."""
