"""Tests of resources.evaluation."""
