"""Pure data: the spec, the lock, environment facts, reports, the target. No IO."""
