"""Pantau's data contracts and fraud model."""
