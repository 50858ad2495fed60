"""Registration engines. Each module registers itself in ``core.registration.ENGINES``."""
