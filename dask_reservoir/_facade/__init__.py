"""The facade's method groups: mixins of ``AsyncReservoir``, one concern each."""
