"""Tests of resources.experiment."""
