"""Registration engines. Each public module (or package) here registers itself with
``core.engine_api.register_engine``; ``core.registration`` imports them all on first use."""
