"""The C modules `pip install` builds (sensor/_paths.c, sensor/_decode.c, sensor/_event_wire.c):
imported here, so a source tree the package was not installed from fails with the command that
builds them."""

try:
    from . import _decode, _event_wire, _paths
except ImportError as exc:
    raise ImportError(f"{exc}: sensor/_paths.c, sensor/_decode.c and sensor/_event_wire.c are not compiled; "
                      "run `make setup` (or `pip install -e .`) in the source tree") from exc

__all__ = ["_decode", "_event_wire", "_paths"]
