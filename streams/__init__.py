"""Pantau's stream layer: settings, topics, the pure stages, replay, the Faust app, the CLI."""
