"""Process-level concerns of the daemon: systemd integration, logging, the instance lock."""
