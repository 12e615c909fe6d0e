"""Tests of resources.storage."""
