"""Host-only conversion: export, calibration, quantization, verification."""
