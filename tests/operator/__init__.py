"""Helpers for the operator's tests: kmock's Kubernetes emulator set up for streamscale."""
