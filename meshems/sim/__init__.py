"""Simulated field devices: pure physics and Modbus servers that serve it."""
