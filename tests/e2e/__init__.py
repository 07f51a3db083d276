"""End-to-end tests: real Reflex apps driven by headless Debian chromium."""
