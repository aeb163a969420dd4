"""Grafana dashboards and Prometheus alerting rules for Pantau, as code (`pantau dashboards`)."""
